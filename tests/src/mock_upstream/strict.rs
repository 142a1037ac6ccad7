//! What the real APIs refuse about a conversation's shape and a translator could get wrong: a tool result
//! whose call is not in the assistant turn right before it (and a call left unanswered), in each API's
//! words; and a model the upstream does not serve, when the mock is given a model list.

use hyper::Response;
use serde_json::{json, Value};

use super::{error_response, json_response, Api, Ctx, RespBody};

fn blocks(message: &Value) -> &[Value] {
    message.get("content").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

/// `(index, id)` of the blocks of `kind` in `message`, their id read from `id_field`.
fn block_ids<'a>(message: &'a Value, kind: &str, id_field: &str) -> Vec<(usize, &'a str)> {
    blocks(message)
        .iter()
        .enumerate()
        .filter(|(_, block)| block.get("type").and_then(Value::as_str) == Some(kind))
        .map(|(index, block)| (index, block.get(id_field).and_then(Value::as_str).unwrap_or("")))
        .collect()
}

/// Messages API: every `tool_result` answers a `tool_use` of the assistant message right before it, and
/// every `tool_use` followed by another message is answered in that next message.
pub fn anthropic_tool_pairs(messages: &[Value]) -> Result<(), String> {
    for (index, message) in messages.iter().enumerate() {
        let results = block_ids(message, "tool_result", "tool_use_id");
        let previous_calls: Vec<&str> = match index.checked_sub(1).map(|i| &messages[i]) {
            Some(previous) if role(previous) == Some("assistant") => {
                block_ids(previous, "tool_use", "id").into_iter().map(|(_, id)| id).collect()
            }
            _ => Vec::new(),
        };
        if let Some((block, id)) = results.iter().find(|(_, id)| !previous_calls.contains(id)) {
            return Err(format!(
                "messages.{index}.content.{block}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                 Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            ));
        }
        let calls = block_ids(message, "tool_use", "id");
        if let (Some("assistant"), Some(next)) = (role(message), messages.get(index + 1)) {
            let answered: Vec<&str> =
                block_ids(next, "tool_result", "tool_use_id").into_iter().map(|(_, id)| id).collect();
            let missing: Vec<&str> = calls.iter().map(|(_, id)| *id).filter(|id| !answered.contains(id)).collect();
            if !missing.is_empty() {
                return Err(format!(
                    "messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. \
                     Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Chat Completions: every `tool` message answers a `tool_calls` id of the assistant message it follows
/// (other tool messages may come between), and every such id is answered before the next other message.
/// Errs with (message, param).
pub fn openai_tool_pairs(messages: &[Value]) -> Result<(), (String, String)> {
    // The latest assistant message with tool calls: its index and the ids not answered yet.
    let mut open: Option<(usize, Vec<&str>)> = None;
    let unanswered = |at: usize, ids: &[&str]| {
        (
            format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each \
                 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                ids.join(", ")
            ),
            format!("messages.[{at}].role"),
        )
    };
    for (index, message) in messages.iter().enumerate() {
        if role(message) == Some("tool") {
            let id = message.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
            match open.as_mut() {
                Some((_, ids)) if ids.contains(&id) => ids.retain(|pending| *pending != id),
                Some(_) => {
                    return Err((
                        format!("Invalid parameter: 'tool_call_id' of '{id}' not found in 'tool_calls' of previous message."),
                        format!("messages.[{index}].tool_call_id"),
                    ))
                }
                None => {
                    return Err((
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".into(),
                        format!("messages.[{index}].role"),
                    ))
                }
            }
            continue;
        }
        if let Some((at, ids)) = open.take() {
            if !ids.is_empty() {
                return Err(unanswered(at, &ids));
            }
        }
        let calls: Vec<&str> = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| calls.iter().map(|call| call.get("id").and_then(Value::as_str).unwrap_or("")).collect())
            .unwrap_or_default();
        if role(message) == Some("assistant") && !calls.is_empty() {
            open = Some((index, calls));
        }
    }
    match open {
        Some((at, ids)) if !ids.is_empty() => Err(unanswered(at, &ids)),
        _ => Ok(()),
    }
}

/// 404 in the API's shape when the mock serves a list of models and `model` is not on it.
pub fn served_model(ctx: &Ctx, api: Api, model: &str) -> Result<(), Response<RespBody>> {
    let served = ctx.shared.lock().served_models.clone();
    let Some(served) = served else { return Ok(()) };
    if served.iter().any(|m| m == model) {
        return Ok(());
    }
    Err(match api {
        Api::OpenAi => json_response(
            404,
            &json!({"error": {"message": format!("The model `{model}` does not exist or you do not have access to it."),
                "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
        ),
        Api::Anthropic => error_response(api, 404, Some(&format!("model: {model}")), None),
    })
}
