//! Anthropic Messages request → OpenAI chat request: system first, assistant turns with their tool calls,
//! tool results as `tool` messages right after them, `thinking` as `reasoning_effort` where the target
//! takes it. Content without an OpenAI equivalent is refused by name.

use serde_json::{json, Map, Value};

use super::{is_reasoning_model, openai_output_field, unmapped, Translated};
use crate::api::anthropic::{self, Block, Content, DocumentSource, ImageSource, MessagesRequest, ToolResultContent};
use crate::error::{GatewayError, GatewayResult};

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

fn no_equivalent(at: &str, what: &str) -> GatewayError {
    GatewayError::invalid_param(
        "messages",
        format!("{at}: {what} has no equivalent for this model's provider (OpenAI-compatible)"),
    )
}

/// Anthropic Messages request → OpenAI chat request (streaming requests ask for the usage chunk).
pub fn anthropic_to_openai(request: MessagesRequest, upstream_model: &str) -> GatewayResult<Translated> {
    let mut dropped = unmapped(&request.other);
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
    let sampling = [("temperature", request.temperature), ("top_p", request.top_p)];
    insert_reasoning_and_sampling(&mut body, request.thinking.as_ref(), sampling, upstream_model, &mut dropped);
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
    dropped.sort();
    Ok(Translated { body: Value::Object(body), dropped })
}

/// `thinking` as `reasoning_effort`, which only OpenAI's reasoning models take (others refuse the field);
/// `temperature` and `top_p`, which those models take only at their default (1) and refuse otherwise.
fn insert_reasoning_and_sampling(
    body: &mut Map<String, Value>,
    thinking: Option<&anthropic::Thinking>,
    sampling: [(&str, Option<f64>); 2],
    upstream_model: &str,
    dropped: &mut Vec<String>,
) {
    let reasoning_model = is_reasoning_model(upstream_model);
    if let Some(thinking) = thinking.filter(|t| t.enabled()) {
        if reasoning_model {
            let effort = match thinking.budget_tokens.unwrap_or(0) {
                0..4096 => "low",
                4096..16_384 => "medium",
                _ => "high",
            };
            body.insert("reasoning_effort".into(), json!(effort));
        } else {
            dropped.push("thinking".to_owned());
        }
    }
    for (param, value) in sampling {
        match value {
            Some(value) if reasoning_model && value != 1.0 => dropped.push(param.to_owned()),
            Some(value) => {
                body.insert(param.into(), json!(value));
            }
            None => {}
        }
    }
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
