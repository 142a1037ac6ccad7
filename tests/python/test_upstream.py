"""The official OpenAI and Anthropic Python SDKs through a Tollgate node to the test mock upstream over a
socket (OpenAI- and Anthropic-kind providers, both directions), with tools.

Reads TOLLGATE_URL (…/v1), TOLLGATE_KEY and MOCK_URL (the `tollgate-mock-upstream` process). Every
answer is checked against what the upstream generated (the mock's own counts, `/_mock/stats`), not
against the gateway's word. Exits non-zero on the first failed check.
"""
import json
import os
import urllib.request

import anthropic
import openai

from checks import check

URL = os.environ["TOLLGATE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
BASE = URL.removesuffix("/v1")
MOCK = os.environ["MOCK_URL"]
REPLY = "Hello from the mock upstream! This is a deterministic answer."

oa = openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)

WEATHER_OA = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER_AN = [{"name": "get_weather", "description": "Weather in a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def mock(method, path, body=None):
    request = urllib.request.Request(f"{MOCK}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def generated_by(action):
    """Runs `action` and returns (its result, the output tokens the upstream generated meanwhile)."""
    before = mock("GET", "/_mock/stats")["output_tokens"]
    result = action()
    return result, mock("GET", "/_mock/stats")["output_tokens"] - before


def script(**fields):
    mock("POST", "/_mock/script", fields)


# --- Plain text, both SDKs, both provider kinds: exact text and usage equal to what the upstream made ---
for model in ("gpt-4o-mini", "claude-3-5-haiku"):
    r, made = generated_by(lambda: oa.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]))
    check(f"openai sdk -> {model}: the upstream's text", r.choices[0].message.content == REPLY, r)
    check(f"openai sdk -> {model}: completion_tokens = generated", r.usage.completion_tokens == made == 12,
          (r.usage, made))
    m, made = generated_by(lambda: an.messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}]))
    check(f"anthropic sdk -> {model}: the upstream's text", m.content[0].text == REPLY and m.stop_reason == "end_turn",
          m)
    check(f"anthropic sdk -> {model}: output_tokens = generated", m.usage.output_tokens == made, (m.usage, made))


# --- OpenAI SDK with tools ---
def openai_stream_calls(chunks):
    calls = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                entry["name"] += call.function.name or "" if call.function else ""
                entry["arguments"] += call.function.arguments or "" if call.function else ""
    return [calls[i] for i in sorted(calls)]


for model in ("gpt-4o-mini", "claude-3-5-haiku"):
    script(tool_call=["get_weather", '{"city": "Paris"}'])
    r = oa.chat.completions.create(model=model, tools=WEATHER_OA,
                                   messages=[{"role": "user", "content": "Weather in Paris?"}])
    call = (r.choices[0].message.tool_calls or [None])[0]
    check(f"openai sdk tools -> {model}: a tool call",
          call is not None and call.function.name == "get_weather"
          and json.loads(call.function.arguments) == {"city": "Paris"}, r)
    check(f"openai sdk tools -> {model}: finish_reason tool_calls", r.choices[0].finish_reason == "tool_calls", r)

    script(tool_call=["get_weather", '{"city": "Oslo"}'])
    chunks, made = generated_by(lambda: list(oa.chat.completions.create(
        model=model, tools=WEATHER_OA, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Weather in Oslo?"}])))
    calls = openai_stream_calls(chunks)
    check(f"openai sdk streamed tools -> {model}: one whole call",
          len(calls) == 1 and calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
          and calls[0]["id"], calls)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(f"openai sdk streamed tools -> {model}: finish_reason", finishes == ["tool_calls"], finishes)
    check(f"openai sdk streamed tools -> {model}: usage = generated", chunks[-1].usage.completion_tokens == made,
          (chunks[-1].usage, made))

    # The tool's answer goes back; the upstream sees it paired with its call in its own API's shape.
    first = r.choices[0].message
    r = oa.chat.completions.create(model=model, tools=WEATHER_OA, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}])
    sent = mock("GET", "/_mock/stats")["last_request"]["messages"]
    if model == "claude-3-5-haiku":
        result = sent[-1]["content"][0]
        paired = result["type"] == "tool_result" and result["tool_use_id"] == sent[-2]["content"][-1]["id"]
    else:
        paired = sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == sent[-2]["tool_calls"][0]["id"]
    check(f"openai sdk tool result -> {model}: paired with its call upstream", paired, sent)
    check(f"openai sdk tool result -> {model}: answered", r.choices[0].message.content == REPLY, r)

# Parallel calls from an OpenAI-kind upstream, streamed with their argument chunks interleaved.
script(tool_call=["get_weather", '{"city": "Rome"}'], second_tool_call=["get_weather", '{"city": "Lima"}'])
calls = openai_stream_calls(oa.chat.completions.create(
    model="gpt-4o-mini", tools=WEATHER_OA, stream=True, messages=[{"role": "user", "content": "Rome and Lima?"}]))
check("openai sdk parallel tool calls", [json.loads(c["arguments"])["city"] for c in calls] == ["Rome", "Lima"],
      calls)


# --- Anthropic SDK with tools ---
for model in ("claude-3-5-haiku", "gpt-4o-mini"):
    script(tool_call=["get_weather", '{"city": "Kyoto"}'])
    m = an.messages.create(model=model, max_tokens=200, tools=WEATHER_AN,
                           messages=[{"role": "user", "content": "Weather in Kyoto?"}])
    uses = [b for b in m.content if b.type == "tool_use"]
    check(f"anthropic sdk tools -> {model}: a tool_use block",
          len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == {"city": "Kyoto"}, m)
    check(f"anthropic sdk tools -> {model}: stop_reason tool_use", m.stop_reason == "tool_use", m)

    script(tool_call=["get_weather", '{"city": "Lagos"}'], preamble="Let me look that up.")
    with an.messages.stream(model=model, max_tokens=200, tools=WEATHER_AN,
                            messages=[{"role": "user", "content": "Weather in Lagos?"}]) as stream:
        final = stream.get_final_message()
    kinds = [b.type for b in final.content]
    check(f"anthropic sdk streamed text + tool_use -> {model}",
          kinds == ["text", "tool_use"] and final.content[0].text == "Let me look that up."
          and final.content[1].input == {"city": "Lagos"} and final.stop_reason == "tool_use", final)

    m2 = an.messages.create(model=model, max_tokens=200, tools=WEATHER_AN, messages=[
        {"role": "user", "content": "Weather in Kyoto?"},
        {"role": "assistant", "content": [u.model_dump() for u in uses]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "9 C, rain"}]}])
    sent = mock("GET", "/_mock/stats")["last_request"]["messages"]
    if model == "gpt-4o-mini":
        paired = sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == sent[-2]["tool_calls"][0]["id"] \
            and sent[-1]["content"] == "9 C, rain"
    else:
        paired = sent[-1]["content"][0]["tool_use_id"] == sent[-2]["content"][0]["id"]
    check(f"anthropic sdk tool result -> {model}: paired with its call upstream", paired, sent)
    check(f"anthropic sdk tool result -> {model}: answered", m2.content[0].text == REPLY, m2)

print(f"all {check.count} SDK checks through the mock upstream passed")
