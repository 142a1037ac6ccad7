"""The official OpenAI and Anthropic Python SDKs against a running Tollgate node.

Reads TOLLGATE_URL (…/v1) and TOLLGATE_KEY from the environment (as written by `tollgate dev --env-file`).
Exits non-zero on the first failed check.
"""
import asyncio
import json
import os
import time
import urllib.error
import urllib.request

import anthropic
import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from checks import check

URL = os.environ["TOLLGATE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
BASE = URL.removesuffix("/v1")
ADMIN_URL = os.environ["TOLLGATE_ADMIN_URL"]
ADMIN_TOKEN = os.environ["TOLLGATE_ADMIN_TOKEN"]

oa = openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)


# --- OpenAI SDK ---
r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello SDK"}])
check("openai non-stream", "Hello SDK" in r.choices[0].message.content and r.usage.completion_tokens > 0, r)
check("openai finish_reason", r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)

chunks = list(oa.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}],
    stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("openai stream text", "stream please" in text, text)
check("openai stream usage chunk", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, chunks[-1])

r = oa.chat.completions.create(model="claude-3-5-haiku", messages=[
    {"role": "system", "content": "be brief"}, {"role": "user", "content": "cross protocol"}])
check("openai sdk -> anthropic-style upstream", "cross protocol" in r.choices[0].message.content, r)

chunks = list(oa.chat.completions.create(model="claude-3-5-haiku",
                                         messages=[{"role": "user", "content": "across the protocols"}],
                                         stream=True, stream_options={"include_usage": True}))
check("openai sdk stream -> anthropic-style upstream", chunks[-1].usage.prompt_tokens > 0, chunks[-1])
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("openai sdk stream -> anthropic-style upstream text", "across the protocols" in text, text)
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
check("openai sdk stream -> anthropic-style upstream finish_reason", finishes == ["stop"], finishes)

# Without include_usage: the text and one finish reason, and no usage chunk (the gateway meters it anyway).
chunks = list(oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "no usage"}],
                                         stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("openai stream without include_usage: text", "no usage" in text, text)
check("openai stream without include_usage: no usage chunk", all(c.usage is None for c in chunks), chunks[-1])
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
check("openai stream without include_usage: finish_reason", finishes == ["stop"], finishes)

models = [m.id for m in oa.models.list()]
check("openai models.list", "gpt-4o-mini" in models and "claude-3-5-haiku" in models, models)

e = oa.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
check("openai embeddings", len(e.data) == 2 and len(e.data[0].embedding) > 0, e)

try:
    oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    check("openai unknown model raises", False)
except openai.NotFoundError as err:
    check("openai unknown model raises NotFoundError", err.status_code == 404, err)

try:
    openai.OpenAI(base_url=URL, api_key="wrong", max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    check("openai bad key raises", False)
except openai.AuthenticationError as err:
    check("openai bad key raises AuthenticationError", err.status_code == 401, err)

try:
    oa.chat.completions.create(model="gpt-4o-mini", messages="not a list")
    check("openai bad request raises", False)
except openai.BadRequestError as err:
    check("openai bad request raises BadRequestError", "messages" in str(err), err)

# --- Anthropic SDK ---
m = an.messages.create(model="claude-3-5-haiku", max_tokens=100, system="be brief",
                       messages=[{"role": "user", "content": "Hello Claude"}])
check("anthropic non-stream", "Hello Claude" in m.content[0].text and m.stop_reason == "end_turn", m)
check("anthropic usage", m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage)

with an.messages.stream(model="claude-3-5-haiku", max_tokens=100,
                        messages=[{"role": "user", "content": "stream it"}]) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check("anthropic stream text", "stream it" in text, text)
check("anthropic stream usage summed", final.usage.input_tokens > 0 and final.usage.output_tokens > 0, final.usage)

with an.messages.stream(model="gpt-4o-mini", max_tokens=100,
                        messages=[{"role": "user", "content": "via openai"}]) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check("anthropic sdk stream -> openai-style upstream", "via openai" in text and final.stop_reason == "end_turn", final)

m = an.messages.create(model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "plain"}])
check("anthropic sdk -> openai-style upstream", "plain" in m.content[0].text, m)

c = an.messages.count_tokens(model="claude-3-5-haiku", messages=[{"role": "user", "content": "count me"}])
check("anthropic count_tokens", c.input_tokens > 0, c)

try:
    an.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    check("anthropic unknown model raises", False)
except anthropic.NotFoundError as err:
    check("anthropic unknown model raises NotFoundError", err.status_code == 404, err)

try:
    anthropic.Anthropic(base_url=BASE, api_key="wrong", max_retries=0).messages.create(
        model="claude-3-5-haiku", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    check("anthropic bad key raises", False)
except anthropic.AuthenticationError as err:
    check("anthropic bad key raises AuthenticationError", err.status_code == 401, err)


# --- The async clients ---
async def async_clients():
    aoa = openai.AsyncOpenAI(base_url=URL, api_key=KEY, max_retries=0)
    aan = anthropic.AsyncAnthropic(base_url=BASE, api_key=KEY, max_retries=0)
    r = await aoa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "async hi"}])
    check("async openai non-stream", "async hi" in r.choices[0].message.content, r)
    text = ""
    async for chunk in await aoa.chat.completions.create(
            model="claude-3-5-haiku", messages=[{"role": "user", "content": "async stream"}], stream=True):
        text += "".join(c.delta.content or "" for c in chunk.choices)
    check("async openai stream -> anthropic-style upstream", "async stream" in text, text)
    m = await aan.messages.create(model="gpt-4o-mini", max_tokens=100,
                                  messages=[{"role": "user", "content": "async claude"}])
    check("async anthropic -> openai-style upstream", "async claude" in m.content[0].text, m)
    async with aan.messages.stream(model="claude-3-5-haiku", max_tokens=100,
                                   messages=[{"role": "user", "content": "async events"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    check("async anthropic stream", "async events" in text and final.stop_reason == "end_turn", final)


asyncio.run(async_clients())


# --- Request limits: 413 and 415 ---
def raw_post(path, body, content_type, key=KEY):
    request = urllib.request.Request(f"{BASE}{path}", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


try:
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * (11 * 1024 * 1024)}])
    check("openai body over max_body_bytes raises", False)
except openai.APIStatusError as err:
    check("openai body over max_body_bytes raises 413", err.status_code == 413, err)
status, body = raw_post("/v1/chat/completions", b"model=gpt-4o-mini", "application/x-www-form-urlencoded")
check("a form body is refused with 415", status == 415 and body["error"]["type"] == "invalid_request_error", body)


# --- A budget refusal (429) in each SDK's terms: a key of a new org whose budget is one token ---
def admin(method, path, body=None):
    request = urllib.request.Request(f"{ADMIN_URL}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


admin("PUT", "/admin/v1/orgs/tight", {})
tight_key = admin("POST", "/admin/v1/keys", {"org": "tight", "name": "tight"})["key"]
admin("PUT", "/admin/v1/budgets", {"scope": {"org": "tight"}, "limit_tokens": 1, "period": "day"})
tight_oa = openai.OpenAI(base_url=URL, api_key=tight_key, max_retries=0)
deadline = time.monotonic() + 20
while True:  # until the new key and its budget have reached the node that answers
    try:
        tight_oa.chat.completions.create(model="gpt-4o-mini", max_tokens=10,
                                         messages=[{"role": "user", "content": "x"}])
    except openai.RateLimitError as err:
        check("openai budget refusal raises RateLimitError",
              err.status_code == 429 and err.body["code"] == "budget_exceeded", err.body)
        break
    except openai.AuthenticationError:
        pass  # the key has not arrived yet
    if time.monotonic() > deadline:
        check("a one-token budget refuses within 20 s", False)
    time.sleep(0.1)
try:
    anthropic.Anthropic(base_url=BASE, api_key=tight_key, max_retries=0).messages.create(
        model="claude-3-5-haiku", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    check("anthropic budget refusal raises", False)
except anthropic.RateLimitError as err:
    check("anthropic budget refusal raises RateLimitError", err.status_code == 429, err)


# --- This node's /metrics, read by Prometheus's own Python client with its strict OpenMetrics parser ---
request = urllib.request.Request(f"{ADMIN_URL}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
with urllib.request.urlopen(request, timeout=30) as response:
    content_type, text = response.headers["Content-Type"], response.read().decode()
check("metrics are OpenMetrics text", content_type.startswith("application/openmetrics-text"), content_type)
families = {family.name: family for family in text_string_to_metric_families(text)}
served_ok = sum(s.value for s in families["tollgate_upstream_requests"].samples if s.labels["outcome"] == "ok")
check("metrics count the SDK calls this node served", served_ok >= 10, served_ok)
tokens = {s.labels["gen_ai_token_type"]: 0 for s in families["gen_ai_client_token_usage"].samples}
for s in families["gen_ai_client_token_usage"].samples:
    tokens[s.labels["gen_ai_token_type"]] += s.value
check("metrics count input and output tokens", tokens.get("input", 0) > 0 and tokens.get("output", 0) > 0, tokens)
refused = [s.value for s in families["tollgate_budget_refusals"].samples if s.labels["org"] == "tight"]
check("metrics count the budget refusals by org", sum(refused) >= 1, refused)
check("metrics show a Raft leader", families["tollgate_raft_leader"].samples[0].value >= 1, text[:200])

print(f"all {check.count} SDK checks passed")
