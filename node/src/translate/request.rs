//! Request translation between the OpenAI Chat Completions and Anthropic Messages dialects.
//! The traps: system messages move to a top-level `system`; tool results are `user` turns
//! made of `tool_result` blocks (consecutive results merged); Anthropic needs strictly alternating roles
//! and a `max_tokens`.

use serde_json::{json, Map, Value};

use crate::api::openai::{ChatRequest, MessageContent};
use crate::error::{GatewayError, GatewayResult};

/// A translated request body and the caller's parameters it could not carry (README, "Translation": a
/// parameter the target's API has no equivalent for is dropped and named in `x-tollgate-dropped-params`;
/// one whose absence would change what the caller gets back in a way it cannot detect is refused).
#[derive(Debug)]
pub struct Translated {
    pub body: Value,
    pub dropped: Vec<String>,
}

/// Fields of an OpenAI request handled outside the translation (the stream's usage chunk).
const HANDLED_ELSEWHERE: &[&str] = &["stream_options"];

/// The caller's fields the typed request does not model, when set: the target has no equivalent.
fn unmapped(other: &Map<String, Value>) -> Vec<String> {
    other
        .iter()
        .filter(|(key, value)| !value.is_null() && !HANDLED_ELSEWHERE.contains(&key.as_str()))
        .map(|(key, _)| key.clone())
        .collect()
}

/// OpenAI chat request → Anthropic Messages request.
pub fn openai_to_anthropic(
    request: ChatRequest,
    upstream_model: &str,
    default_max_tokens: u64,
) -> GatewayResult<Translated> {
    if request.n.unwrap_or(1) > 1 {
        return Err(GatewayError::invalid_param("n", "`n` > 1 is not supported by this model's provider"));
    }
    let mut dropped = unmapped(&request.other);
    if request.messages.iter().any(|message| message.name.is_some()) {
        dropped.push("messages[].name".to_owned());
    }
    let (mut system_parts, turns) = anthropic_turns(request.messages)?;
    if turns.is_empty() {
        return Err(GatewayError::invalid_param("messages", "at least one user or assistant message is required"));
    }

    if let Some(format) = &request.response_format {
        if let Some(instruction) = json_mode_instruction(format) {
            system_parts.push(instruction);
        }
        // The schema travels as an instruction: the model is asked, not constrained.
        if format.pointer("/json_schema/strict").and_then(Value::as_bool) == Some(true) {
            dropped.push("response_format.json_schema.strict".to_owned());
        }
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(upstream_model));
    let max_tokens = request.max_completion_tokens.or(request.max_tokens).unwrap_or(default_max_tokens);
    body.insert("max_tokens".into(), json!(max_tokens));
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
    if let Some(effort) = request.reasoning_effort.as_deref() {
        insert_thinking(&mut body, effort, max_tokens, &mut dropped)?;
    }
    dropped.sort();
    Ok(Translated { body: Value::Object(body), dropped })
}

/// `reasoning_effort` as an Anthropic thinking budget: `minimal`/`low` 1,024 tokens (Anthropic's least),
/// `medium` 4,096, `high` 16,384, always below `max_tokens` (which covers thinking, as OpenAI's
/// `max_completion_tokens` covers reasoning). Thinking excludes a temperature, a `top_p` under 0.95 and a
/// forced tool: those are dropped with it on, and a forced tool or a `max_tokens` too small for 1,024
/// thinking tokens drops `reasoning_effort` instead. So does a tool loop: with thinking on, Anthropic
/// wants the last assistant turn that calls tools to start with its signed thinking block, which an OpenAI
/// caller cannot send back (it never had the signature).
fn insert_thinking(
    body: &mut Map<String, Value>,
    effort: &str,
    max_tokens: u64,
    dropped: &mut Vec<String>,
) -> GatewayResult<()> {
    let wanted: u64 = match effort {
        "none" => return Ok(()),
        "minimal" | "low" => 1024,
        "medium" => 4096,
        "high" => 16_384,
        other => {
            return Err(GatewayError::invalid_param(
                "reasoning_effort",
                format!("reasoning_effort: `{other}` is not one of none, minimal, low, medium, high"),
            ))
        }
    };
    let forced_tool = body
        .get("tool_choice")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t == "any" || t == "tool");
    let budget = wanted.min(max_tokens.saturating_sub(1));
    if forced_tool || budget < 1024 || last_assistant_turn_calls_tools(body) {
        dropped.push("reasoning_effort".to_owned());
        return Ok(());
    }
    if body.remove("temperature").is_some() {
        dropped.push("temperature".to_owned());
    }
    if body.get("top_p").and_then(Value::as_f64).is_some_and(|p| p < 0.95) {
        body.remove("top_p");
        dropped.push("top_p".to_owned());
    }
    body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    Ok(())
}

/// An Anthropic `thinking` setting once the budget's output cap has lowered `max_tokens` (same-protocol
/// routes): Anthropic refuses a thinking budget that is not below `max_tokens`, or under 1,024.
#[derive(Debug, PartialEq)]
pub enum CappedThinking {
    /// Off, or already below the cap: sent as the caller wrote it.
    AsSent,
    /// The setting with its budget lowered to just below the cap.
    Lowered(Value),
    /// No room left for 1,024 thinking tokens: left off, and named as dropped.
    Off,
}

pub fn cap_thinking(thinking: Option<&str>, max_tokens: u64) -> CappedThinking {
    let Some(mut thinking) = thinking.and_then(|raw| serde_json::from_str::<Value>(raw).ok()) else {
        return CappedThinking::AsSent;
    };
    match thinking["budget_tokens"].as_u64() {
        Some(budget) if thinking["type"] == "enabled" && budget >= max_tokens => {
            if max_tokens > 1024 {
                thinking["budget_tokens"] = json!(max_tokens - 1);
                CappedThinking::Lowered(thinking)
            } else {
                CappedThinking::Off
            }
        }
        _ => CappedThinking::AsSent,
    }
}

fn last_assistant_turn_calls_tools(body: &Map<String, Value>) -> bool {
    let turns = body.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    turns
        .iter()
        .rev()
        .find(|turn| turn["role"] == "assistant")
        .and_then(|turn| turn["content"].as_array())
        .is_some_and(|blocks| blocks.iter().any(|block| block["type"] == "tool_use"))
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

/// The output-limit field an OpenAI-compatible model takes: reasoning models (o1, o3, o4, gpt-5…) refuse
/// `max_tokens` and take `max_completion_tokens`, which also covers their reasoning tokens; other models
/// get whichever the caller used (`max_tokens` by default, which every OpenAI-compatible server knows).
pub fn openai_output_field(upstream_model: &str, caller_used_completion: bool) -> &'static str {
    if is_reasoning_model(upstream_model) || caller_used_completion {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

/// OpenAI's reasoning families (o1, o3, o4, gpt-5…), by the model name's last path segment.
fn is_reasoning_model(upstream_model: &str) -> bool {
    let model = upstream_model.rsplit('/').next().unwrap_or(upstream_model);
    ["o1", "o3", "o4", "gpt-5"].iter().any(|family| {
        model.strip_prefix(family).is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || rest.starts_with('.'))
    })
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

/// An OpenAI `file` part as an Anthropic `document` block. Anthropic reads inline PDFs (a base64 source)
/// and plain text (a `text` source holding the decoded text; it refuses base64 text); other file types
/// have no equivalent. A `file_id` lives in OpenAI's file store, which an Anthropic upstream cannot read.
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
    let source = match media_type {
        "application/pdf" => json!({"type": "base64", "media_type": media_type, "data": data}),
        "text/plain" => {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| invalid("`file_data` of a text/plain file must be base64-encoded UTF-8 text"))?;
            json!({"type": "text", "media_type": media_type, "data": text})
        }
        other => {
            return Err(invalid(&format!(
                "`{other}` files have no equivalent for this model's provider (Anthropic), which reads PDF and plain-text documents"
            )))
        }
    };
    let mut block = json!({"type": "document", "source": source});
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

#[path = "request_to_openai.rs"]
mod to_openai;
pub use to_openai::anthropic_to_openai;

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
