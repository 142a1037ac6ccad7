# Shared by bench/load.sh and bench/ab.sh (source it): the request body and the tollgate routes they measure.

BENCH_KEY="tg-bench-key-0123456789"

# The ~300-byte chat request every load scenario sends.
bench_body() {
    cat <<'JSON'
{"model":"mock-gpt","messages":[{"role":"system","content":"You are a concise assistant for an online store."},{"role":"user","content":"Where is my order #48213? It was supposed to arrive on Monday and the tracking page has not changed since."}],"temperature":0.2,"max_tokens":256,"user":"cust-48213"}
JSON
}

# Providers, models and keys of a tollgate config: one key, and `mock-gpt` routed to the mock on port $1 as an
# OpenAI-compatible upstream.
bench_routes_toml() { # mock-port
    cat <<TOML

[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$1/v1"
api_key = "sk-upstream-bench"

[[models]]
name = "mock-gpt"
targets = [ { provider = "mock", model = "mock-gpt" } ]

[[keys]]
key = "$BENCH_KEY"
name = "bench"
org = "bench"
TOML
}
