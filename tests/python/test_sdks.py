"""The official OpenAI and Anthropic Python SDKs against a running Tollgate node.

Reads TOLLGATE_URL (…/v1) and TOLLGATE_KEY from the environment (as written by `tollgate dev --env-file`).
Exits non-zero on the first failed check.
"""
import os
import sys

import anthropic
import openai

URL = os.environ["TOLLGATE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
BASE = URL.removesuffix("/v1")

oa = openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
checks = 0


def check(name, condition, detail=""):
    global checks
    checks += 1
    if not condition:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok   {name}")


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

chunks = list(oa.chat.completions.create(model="claude-3-5-haiku", messages=[{"role": "user", "content": "x"}],
                                         stream=True, stream_options={"include_usage": True}))
check("openai sdk stream -> anthropic-style upstream", chunks[-1].usage.prompt_tokens > 0, chunks[-1])

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

print(f"all {checks} SDK checks passed")
