//! Documents and files as the real APIs check them: an Anthropic `document` block's source (base64 PDFs
//! only, plain text as a `text` source), and an OpenAI `file` part (a `file_id`, or inline `file_data` as a
//! base64 data URL with its `filename`).

use serde_json::Value;

fn parts(message: &Value) -> &[Value] {
    message.get("content").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn of_type<'a>(messages: &'a [Value], kind: &'a str) -> impl Iterator<Item = (usize, usize, &'a Value)> + 'a {
    messages.iter().enumerate().flat_map(move |(index, message)| {
        parts(message)
            .iter()
            .enumerate()
            .filter(move |(_, part)| part.get("type").and_then(Value::as_str) == Some(kind))
            .map(move |(part_index, part)| (index, part_index, part))
    })
}

/// Messages API: each document's source, in the API's (pydantic) words.
pub fn anthropic_documents(messages: &[Value]) -> Result<(), String> {
    for (index, block_index, block) in of_type(messages, "document") {
        let at = format!("messages.{index}.content.{block_index}.document.source");
        let Some(source) = block.get("source") else { return Err(format!("{at}: Field required")) };
        let field = |name: &str| source.get(name).and_then(Value::as_str);
        let kind = field("type").unwrap_or("");
        match kind {
            "base64" | "text" => {
                let wanted = if kind == "base64" { "application/pdf" } else { "text/plain" };
                if field("media_type") != Some(wanted) {
                    return Err(format!("{at}.{kind}.media_type: Input should be '{wanted}'"));
                }
                if field("data").is_none() {
                    return Err(format!("{at}.{kind}.data: Field required"));
                }
            }
            "url" if field("url").is_none() => return Err(format!("{at}.url.url: Field required")),
            "url" | "content" | "file" => {}
            other => {
                return Err(format!(
                    "{at}: Input tag '{other}' found using 'type' does not match any of the expected tags: 'base64', 'content', 'file', 'text', 'url'"
                ))
            }
        }
    }
    Ok(())
}

/// Chat Completions: a file part is a `file_id`, or `file_data` (a base64 data URL) with a `filename`.
/// Returns OpenAI's message and `param`.
pub fn openai_file_parts(messages: &[Value]) -> Result<(), (String, String)> {
    for (index, part_index, part) in of_type(messages, "file") {
        let at = format!("messages[{index}].content[{part_index}].file");
        let Some(file) = part.get("file") else {
            return Err((format!("Missing required parameter: '{at}'."), at));
        };
        if file.get("file_id").and_then(Value::as_str).is_some() {
            continue;
        }
        let data = file.get("file_data").and_then(Value::as_str);
        if data.is_none() || file.get("filename").and_then(Value::as_str).is_none() {
            let param = format!("{at}.file_id");
            return Err((format!("Missing required parameter: '{param}'."), param));
        }
        let data_url = data.and_then(|d| d.strip_prefix("data:")).and_then(|d| d.split_once(";base64,"));
        if data_url.is_none() {
            let param = format!("{at}.file_data");
            return Err((format!("Invalid '{param}': expected a base64-encoded data URL."), param));
        }
    }
    Ok(())
}
