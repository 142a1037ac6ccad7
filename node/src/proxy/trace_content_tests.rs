use super::*;

fn capture() -> ContentCapture {
    let secrets = secret_detector().cloned().into_iter();
    let email = PiiDetector::new(&[EntityKind::Email], Replacement::Label).into_iter();
    ContentCapture { span: TraceSpan::none(), detectors: secrets.chain(email).collect() }
}

fn texts(messages: &[Message]) -> Vec<String> {
    let text = |part: &Part| match part {
        Part::Text(text) => text.clone(),
        Part::Other(kind) => format!("<{kind}>"),
    };
    messages.iter().map(|m| m.parts.iter().map(text).collect::<Vec<_>>().join("|")).collect()
}

#[test]
fn secrets_and_the_guardrails_pii_are_redacted_before_anything_is_cut() {
    let key = format!("sk-proj-{}", "a1B2c3D4e5F6g7H8".repeat(3));
    let body = json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": format!("my key is {key}, mail bob@example.com")},
                                      {"type": "image_url", "image_url": {"url": "data:..."}}]},
    ]});
    let messages: Vec<Message> = body["messages"].as_array().unwrap_or(&Vec::new()).iter().map(message).collect();
    let (kept, truncated) = capture().capped(messages);
    let texts = texts(&kept);
    assert!(!truncated);
    assert_eq!(texts[0], "be brief");
    assert!(!texts[1].contains(&key) && !texts[1].contains("bob@example.com"), "{texts:?}");
    assert!(texts[1].contains("[REDACTED:API_KEY]") && texts[1].ends_with("|<image_url>"), "{texts:?}");
    assert_eq!(kept[1].role, "user");
}

#[test]
fn text_is_capped_newest_message_first_on_a_character_boundary() {
    let old = Message { role: "user".into(), parts: vec![Part::Text("old".into())] };
    let long = "é".repeat(CAP_BYTES); // two bytes each: twice the cap
    let new = Message { role: "user".into(), parts: vec![Part::Text(long)] };
    let (kept, truncated) = capture().capped(vec![old, new]);
    assert!(truncated);
    assert_eq!(kept.len(), 1, "the older message is dropped once the budget is spent");
    let texts = texts(&kept);
    assert_eq!(texts[0].len(), CAP_BYTES);
    assert!(texts[0].chars().all(|c| c == 'é'));
}

#[test]
fn anthropic_blocks_keep_text_and_tool_results_and_name_the_rest() {
    let content = json!([
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]},
    ]);
    let message = Message { role: "user".into(), parts: parts(&content) };
    assert_eq!(texts(&[message]), ["hi|<tool_use>|42"]);
    assert_eq!(floor_char_boundary("aé", 2), 1);
}
