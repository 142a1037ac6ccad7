//! Request translation between the OpenAI Chat Completions and Anthropic Messages dialects.
//! The traps: system messages move to a top-level `system`; tool results are `user` turns
//! made of `tool_result` blocks (consecutive results merged); Anthropic needs strictly alternating roles
//! and a `max_tokens`.

use serde_json::{json, Map, Value};

use crate::api::anthropic::{self, Block, Content, DocumentSource, ImageSource, MessagesRequest, ToolResultContent};
use crate::api::openai::{ChatRequest, MessageContent};
use crate::error::{GatewayError, GatewayResult};

/// OpenAI chat request → Anthropic Messages request.
pub fn openai_to_anthropic(
    request: ChatRequest,
    upstream_model: &str,
    default_max_tokens: u64,
) -> GatewayResult<Value> {
    if request.n.unwrap_or(1) > 1 {
        return Err(GatewayError::invalid_param("n", "`n` > 1 is not supported by this model's provider"));
    }
    let (mut system_parts, turns) = anthropic_turns(request.messages)?;
    if turns.is_empty() {
        return Err(GatewayError::invalid_param("messages", "at least one user or assistant message is required"));
    }

    if let Some(format) = &request.response_format {
        if let Some(instruction) = json_mode_instruction(format) {
            system_parts.push(instruction);
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(upstream_model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_completion_tokens.or(request.max_tokens).unwrap_or(default_max_tokens)),
    );
    body.insert(
        "messages".into(),
        Value::Array(turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect()),
    );
    if !system_parts.is_empty() {
        body.insert("system".into(), json!(system_parts.join("\n\n")));
    }
    insert_sampling(&mut body, request.temperature, request.top_p)?;
    if let Some(stop) = request.stop {
        let stop = stop.into_vec();
        if let Some(blank) = stop.iter().find(|s| s.trim().is_empty()) {
            return Err(GatewayError::invalid_param(
                "stop",
                format!("stop: {blank:?} is only whitespace, which this model's provider (Anthropic) does not accept as a stop sequence"),
            ));
        }
        body.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(tools) = request.tools {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|tool| {
                let mut out = json!({
                    "name": tool.function.name,
                    "input_schema": tool.function.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(description) = tool.function.description {
                    out["description"] = json!(description);
                }
                out
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = anthropic_tool_choice(request.tool_choice.as_ref(), request.parallel_tool_calls)? {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(user) = request.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if request.stream.unwrap_or(false) {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// Temperature (OpenAI's range is 0..2, Anthropic's 0..1) and `top_p`. Newer Claude models refuse both
/// together: a `top_p` of 1 (no effect) is left out; a real one next to a temperature is refused here, with
/// a reason, rather than by the provider.
fn insert_sampling(body: &mut Map<String, Value>, temperature: Option<f64>, top_p: Option<f64>) -> GatewayResult<()> {
    let top_p = top_p.filter(|p| *p < 1.0);
    if let (Some(_), Some(_)) = (temperature, top_p) {
        return Err(GatewayError::invalid_param(
            "top_p",
            "set `temperature` or `top_p`, not both: this model's provider (Anthropic) refuses the two together",
        ));
    }
    if let Some(temperature) = temperature {
        body.insert("temperature".into(), json!(temperature.clamp(0.0, 1.0)));
    }
    if let Some(top_p) = top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    Ok(())
}

/// One Anthropic user turn as OpenAI messages: tool results become `tool` messages (which must directly
/// follow the assistant's tool calls), the rest one user message. Content with no OpenAI equivalent is
/// refused by name.
fn user_turn(blocks: Vec<Block>, index: usize, messages: &mut Vec<Value>) -> GatewayResult<()> {
    let mut parts: Vec<Value> = Vec::new();
    for (block_index, block) in blocks.into_iter().enumerate() {
        let at = format!("messages[{index}].content[{block_index}]");
        match block {
            Block::ToolResult { tool_use_id, content, is_error } => {
                if let Some(ToolResultContent::Blocks(inner)) = &content {
                    if inner.iter().any(|b| !matches!(b, Block::Text { .. })) {
                        return Err(no_equivalent(&at, "tool_result content other than text (an image or document)"));
                    }
                }
                let mut text = content.map(|c| c.text()).unwrap_or_default();
                if is_error == Some(true) && !text.starts_with("Error") {
                    text = format!("Error: {text}");
                }
                messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": text}));
            }
            Block::Text { text } => parts.push(json!({"type": "text", "text": text})),
            Block::Image { source } => match source {
                ImageSource::Base64 { media_type, data } => parts.push(
                    json!({"type": "image_url", "image_url": {"url": format!("data:{media_type};base64,{data}")}}),
                ),
                ImageSource::Url { url } => parts.push(json!({"type": "image_url", "image_url": {"url": url}})),
                ImageSource::Other => return Err(no_equivalent(&at, "an image from Anthropic's Files API")),
            },
            Block::Document { source, title } => match source {
                DocumentSource::Base64 { media_type, data } => parts.push(json!({"type": "file", "file": {
                    "file_data": format!("data:{media_type};base64,{data}"),
                    "filename": title.unwrap_or_else(|| "document.pdf".to_owned()),
                }})),
                DocumentSource::Text { data } => parts.push(json!({"type": "text", "text": data})),
                DocumentSource::Url { .. } => return Err(no_equivalent(&at, "a document by URL (send it as base64)")),
                DocumentSource::Other => return Err(no_equivalent(&at, "this document source")),
            },
            Block::ToolUse { .. } | Block::Thinking { .. } => {}
            Block::Other => return Err(no_equivalent(&at, "this content block type")),
        }
    }
    if !parts.is_empty() {
        let content = if parts.iter().all(|p| p["type"] == "text") {
            json!(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
        } else {
            Value::Array(parts)
        };
        messages.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// The output-limit field an OpenAI-compatible model takes: reasoning models (o1, o3, o4, gpt-5…) refuse
/// `max_tokens` and take `max_completion_tokens`, which also covers their reasoning tokens; other models
/// get whichever the caller used (`max_tokens` by default, which every OpenAI-compatible server knows).
pub fn openai_output_field(upstream_model: &str, caller_used_completion: bool) -> &'static str {
    let model = upstream_model.rsplit('/').next().unwrap_or(upstream_model);
    let reasoning = ["o1", "o3", "o4", "gpt-5"].iter().any(|family| {
        model.strip_prefix(family).is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || rest.starts_with('.'))
    });
    if reasoning || caller_used_completion {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

fn no_equivalent(at: &str, what: &str) -> GatewayError {
    GatewayError::invalid_param(
        "messages",
        format!("{at}: {what} has no equivalent for this model's provider (OpenAI-compatible)"),
    )
}

/// Anthropic turns: (role, content blocks).
type Turns = Vec<(String, Vec<Value>)>;

/// OpenAI messages as Anthropic turns: system and developer messages become the top-level system text,
/// tool results `user` turns of `tool_result` blocks, and consecutive same-role turns merge (Anthropic
/// needs strictly alternating roles).
fn anthropic_turns(messages: Vec<crate::api::openai::ChatMessage>) -> GatewayResult<(Vec<String>, Turns)> {
    let mut system_parts: Vec<String> = Vec::new();
    let mut turns: Turns = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        match message.role.as_str() {
            "system" | "developer" => {
                if let Some(content) = &message.content {
                    system_parts.push(content.text());
                }
            }
            "user" => {
                let blocks = match message.content {
                    Some(content) => user_blocks(content, index)?,
                    None => Vec::new(),
                };
                if blocks.is_empty() {
                    return Err(GatewayError::invalid_param(
                        "messages",
                        format!("messages[{index}]: a user message needs non-empty content"),
                    ));
                }
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                if let Some(content) = &message.content {
                    let text = content.text();
                    if !text.is_empty() {
                        blocks.push(json!({"type": "text", "text": text}));
                    }
                }
                for call in message.tool_calls.unwrap_or_default() {
                    let input: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|err| {
                            GatewayError::invalid_param(
                                "messages",
                                format!("messages[{index}].tool_calls: `arguments` is not valid JSON: {err}"),
                            )
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" | "function" => {
                let tool_use_id = message.tool_call_id.ok_or_else(|| {
                    GatewayError::invalid_param(
                        "messages",
                        format!("messages[{index}].tool_call_id: required for role `tool`"),
                    )
                })?;
                let text = message.content.map(|c| c.text()).unwrap_or_default();
                push_turn(
                    &mut turns,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": text})],
                );
            }
            other => {
                return Err(GatewayError::invalid_param(
                    "messages",
                    format!("messages[{index}].role: unknown role `{other}`"),
                ));
            }
        }
    }
    Ok((system_parts, turns))
}

/// Appends blocks to the last turn when it has the same role (Anthropic rejects consecutive same-role turns).
fn push_turn(turns: &mut Vec<(String, Vec<Value>)>, role: &str, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some((last_role, last_blocks)) if last_role == role => last_blocks.extend(blocks),
        _ => turns.push((role.to_owned(), blocks)),
    }
}

/// A user message's content as Anthropic blocks. Whitespace-only text is left out (Anthropic refuses empty
/// text blocks); a part with no Anthropic equivalent is refused with 400 naming it, never dropped.
fn user_blocks(content: MessageContent, index: usize) -> GatewayResult<Vec<Value>> {
    let text_block = |text: String| (!text.trim().is_empty()).then(|| json!({"type": "text", "text": text}));
    match content {
        MessageContent::Text(text) => Ok(text_block(text).into_iter().collect()),
        MessageContent::Parts(parts) => {
            let mut blocks = Vec::new();
            for (part_index, part) in parts.into_iter().enumerate() {
                let at = format!("messages[{index}].content[{part_index}]");
                match part.kind.as_str() {
                    "text" => blocks.extend(part.text.and_then(text_block)),
                    "image_url" => match part.image_url {
                        Some(image) => blocks.push(image_block(&image.url, index)?),
                        None => {
                            return Err(GatewayError::invalid_param(
                                "messages",
                                format!("{at}: `image_url` is missing"),
                            ))
                        }
                    },
                    "file" => blocks.push(document_block(part.file, &at)?),
                    other => {
                        return Err(GatewayError::invalid_param(
                            "messages",
                            format!("{at}: `{other}` parts have no equivalent for this model's provider (Anthropic)"),
                        ))
                    }
                }
            }
            Ok(blocks)
        }
    }
}

/// An OpenAI `file` part as an Anthropic `document` block (inline base64 data: PDFs and plain text).
/// A `file_id` lives in OpenAI's file store, which an Anthropic upstream cannot read.
fn document_block(file: Option<crate::api::openai::FilePart>, at: &str) -> GatewayResult<Value> {
    let invalid = |why: &str| GatewayError::invalid_param("messages", format!("{at}: {why}"));
    let file = file.ok_or_else(|| invalid("`file` is missing"))?;
    let Some(data_url) = file.file_data else {
        return Err(invalid("a `file_id` refers to OpenAI's file store, which this model's provider (Anthropic) cannot read; send the file inline as `file_data`"));
    };
    let (media_type, data) = data_url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .ok_or_else(|| invalid("`file_data` must be a base64 data URL (data:application/pdf;base64,…)"))?;
    let mut block = json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}});
    if let Some(name) = file.filename {
        block["title"] = json!(name);
    }
    Ok(block)
}

fn image_block(url: &str, index: usize) -> GatewayResult<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest.split_once(";base64,").ok_or_else(|| {
            GatewayError::invalid_param("messages", format!("messages[{index}]: image data URL must be base64"))
        })?;
        return Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

fn json_mode_instruction(format: &Value) -> Option<String> {
    match format.get("type").and_then(Value::as_str) {
        Some("json_object") => Some("Respond with a single valid JSON object and nothing else.".to_owned()),
        Some("json_schema") => {
            let schema = format.get("json_schema").and_then(|s| s.get("schema")).cloned().unwrap_or(json!({}));
            Some(format!(
                "Respond with a single valid JSON object that conforms to this JSON Schema, and nothing else: {schema}"
            ))
        }
        _ => None,
    }
}

fn anthropic_tool_choice(choice: Option<&Value>, parallel: Option<bool>) -> GatewayResult<Option<Value>> {
    let mut out = match choice {
        None => {
            if parallel == Some(false) {
                json!({"type": "auto"})
            } else {
                return Ok(None);
            }
        }
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(GatewayError::invalid_param("tool_choice", format!("invalid `tool_choice`: `{other}`")))
            }
        },
        Some(Value::Object(object)) => {
            let name =
                object.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
                    GatewayError::invalid_param("tool_choice", "`tool_choice.function.name` is required")
                })?;
            json!({"type": "tool", "name": name})
        }
        Some(_) => return Err(GatewayError::invalid_param("tool_choice", "invalid `tool_choice`")),
    };
    if parallel == Some(false) && out["type"] != "none" {
        out["disable_parallel_tool_use"] = json!(true);
    }
    Ok(Some(out))
}

/// Anthropic Messages request → OpenAI chat request (streaming requests ask for the usage chunk).
pub fn anthropic_to_openai(request: MessagesRequest, upstream_model: &str) -> GatewayResult<Value> {
    let mut messages: Vec<Value> = Vec::new();
    if let Some(system) = &request.system {
        let text = system.text();
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    for (index, message) in request.messages.into_iter().enumerate() {
        let blocks = match message.content {
            Content::Text(text) => {
                messages.push(json!({"role": message.role, "content": text}));
                continue;
            }
            Content::Blocks(blocks) => blocks,
        };
        if message.role == "assistant" {
            messages.push(assistant_message(blocks));
            continue;
        }
        user_turn(blocks, index, &mut messages)?;
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(upstream_model));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(max_tokens) = request.max_tokens {
        body.insert(openai_output_field(upstream_model, false).into(), json!(max_tokens));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if let Some(stop) = request.stop_sequences {
        if stop.len() > 4 {
            return Err(GatewayError::invalid_param(
                "stop_sequences",
                format!("stop_sequences: {} given; OpenAI-compatible providers take at most 4", stop.len()),
            ));
        }
        if !stop.is_empty() {
            body.insert("stop".into(), json!(stop));
        }
    }
    if let Some(tools) = request.tools {
        if let Some((index, tool)) =
            tools.iter().enumerate().find(|(_, tool)| tool.kind.as_deref().is_some_and(|kind| kind != "custom"))
        {
            return Err(GatewayError::invalid_param(
                "tools",
                format!(
                    "tools[{index}]: `{}` is an Anthropic server tool (type `{}`); this model's provider (OpenAI-compatible) cannot run it",
                    tool.name,
                    tool.kind.as_deref().unwrap_or_default()
                ),
            ));
        }
        let tools: Vec<Value> = tools.into_iter().map(openai_tool).collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let (openai_choice, parallel) = openai_tool_choice(choice)?;
        if let Some(openai_choice) = openai_choice {
            body.insert("tool_choice".into(), openai_choice);
        }
        if parallel == Some(false) {
            body.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(user) = request.metadata.and_then(|m| m.user_id) {
        body.insert("user".into(), json!(user));
    }
    if request.stream.unwrap_or(false) {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

fn assistant_message(blocks: Vec<Block>) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block {
            Block::Text { text: piece } => text.push_str(&piece),
            Block::ToolUse { id, name, input } => tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    message
}

fn openai_tool(tool: anthropic::Tool) -> Value {
    let mut function = json!({
        "name": tool.name,
        "parameters": tool.input_schema.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(description) = tool.description {
        function["description"] = json!(description);
    }
    json!({"type": "function", "function": function})
}

fn openai_tool_choice(choice: &Value) -> GatewayResult<(Option<Value>, Option<bool>)> {
    let parallel = choice.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|disabled| !disabled);
    let mapped = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Some(json!("auto")),
        Some("any") => Some(json!("required")),
        Some("none") => Some(json!("none")),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| GatewayError::invalid_param("tool_choice", "tool_choice.name: Field required"))?;
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        _ => {
            return Err(GatewayError::invalid_param("tool_choice", "tool_choice.type: must be auto, any, tool or none"))
        }
    };
    Ok((mapped, parallel))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
