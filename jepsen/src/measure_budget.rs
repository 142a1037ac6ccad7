//! `jepsen measure --latency N` / `--share LIMIT`: the two budget figures of issue 18, against running
//! regions (the built-in `mock` provider, model `gpt-4o-mini`):
//! - latency: a budgeted request vs. an unbudgeted one on every region, alternating, one at a time (the
//!   admission must not wait on the WAN on a follower region: its allowance is local);
//! - share: clients in all three regions draw on one budget at once until each is refused; the share of
//!   the limit they were served (usage reported in the answers) and billed (the ledger).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::http;
use crate::regions::configs::random_token;
use crate::regions::state::RegionsState;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn admin(state: &RegionsState, token: &str, method: &str, path: &str, body: &str) -> anyhow::Result<Value> {
    let mut last = String::new();
    for attempt in 0..15 {
        let node = &state.nodes[attempt % state.nodes.len()];
        let url = format!("{}{path}", node.admin_url);
        match http::request(method, &url, Some(token), Some(body), TIMEOUT).await {
            Ok(response) if (200..300).contains(&response.status) => return response.json(),
            Ok(response) => last = format!("{} {}", response.status, response.body),
            Err(err) => last = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("{method} {path}: {last}")
}

/// A fresh org with a key (and a token budget of `limit`, period `day`, when given); returns both.
async fn org_with_key(
    state: &RegionsState,
    token: &str,
    prefix: &str,
    limit: Option<u64>,
) -> anyhow::Result<(String, String)> {
    let org = format!("{prefix}-{}", &random_token("")[..8]);
    admin(state, token, "PUT", &format!("/admin/v1/orgs/{org}"), "{}").await?;
    let created = admin(state, token, "POST", "/admin/v1/keys", &json!({"org": org, "name": org}).to_string()).await?;
    let key = created["key"].as_str().with_context(|| format!("no key in {created}"))?.to_owned();
    if let Some(limit) = limit {
        let body = json!({"scope": {"org": org, "team": null, "key_id": null}, "limit_tokens": limit,
            "period": "day", "tokens_per_minute": null, "requests_per_minute": null});
        admin(state, token, "PUT", "/admin/v1/budgets", &body.to_string()).await?;
    }
    // Wait until every region's data plane knows the key.
    for node in &state.nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(chat(&node.api_url, &key, 4).await, Ok(ref answer) if answer.status == 200) {
            if Instant::now() > deadline {
                bail!("region {} does not accept the key of {org} within 10 s", node.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok((org, key))
}

struct Answer {
    status: u16,
    ms: f64,
    overhead_us: Option<f64>,
    tokens: u64,
    code: String,
}

async fn chat(api_url: &str, key: &str, max_tokens: u64) -> anyhow::Result<Answer> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "measure the budget path"}]})
    .to_string();
    let started = Instant::now();
    let response =
        http::request("POST", &format!("{api_url}/v1/chat/completions"), Some(key), Some(&body), TIMEOUT).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let value = response.json().unwrap_or(Value::Null);
    Ok(Answer {
        status: response.status,
        ms,
        overhead_us: response.header("x-tollgate-overhead-us").and_then(|text| text.parse().ok()),
        tokens: value["usage"]["total_tokens"].as_u64().unwrap_or(0),
        code: value["error"]["code"].as_str().unwrap_or("").to_owned(),
    })
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    (values[index] * 1000.0).round() / 1000.0
}

fn summary(mut ms: Vec<f64>, mut overhead: Vec<f64>) -> Value {
    json!({"n": ms.len(), "p50_ms": percentile(&mut ms, 0.5), "p90_ms": percentile(&mut ms, 0.9),
        "p99_ms": percentile(&mut ms, 0.99), "overhead_p50_us": percentile(&mut overhead, 0.5),
        "overhead_p90_us": percentile(&mut overhead, 0.9)})
}

/// `requests` budgeted and `requests` unbudgeted requests per region, alternating, after a warm-up.
pub async fn latency(state: &RegionsState, token: &str, requests: u32, leader: Option<u64>) -> anyhow::Result<Value> {
    let (_, budgeted) = org_with_key(state, token, "lat-budgeted", Some(1_000_000_000)).await?;
    let (_, unbudgeted) = org_with_key(state, token, "lat-free", None).await?;
    let mut out = Vec::new();
    for node in &state.nodes {
        for _ in 0..20 {
            chat(&node.api_url, &budgeted, 8).await?;
            chat(&node.api_url, &unbudgeted, 8).await?;
        }
        let (mut with, mut without) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for round in 0..requests {
            // Alternate which goes first, so neither always follows the other.
            let order = if round % 2 == 0 { [&budgeted, &unbudgeted] } else { [&unbudgeted, &budgeted] };
            for key in order {
                let answer = chat(&node.api_url, key, 8).await?;
                if answer.status != 200 {
                    bail!("region {}: a measured request answered {} {}", node.id, answer.status, answer.code);
                }
                let into = if key == &budgeted { &mut with } else { &mut without };
                into.0.push(answer.ms);
                into.1.extend(answer.overhead_us);
            }
        }
        let (with, without) = (summary(with.0, with.1), summary(without.0, without.1));
        let added = with["p50_ms"].as_f64().unwrap_or(f64::NAN) - without["p50_ms"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "latency region {}{}: budgeted p50 {} ms, unbudgeted p50 {} ms, added {added:.3} ms; overhead p50 {} vs {} µs",
            node.id,
            if leader == Some(node.id) { " (leader)" } else { " (follower)" },
            with["p50_ms"],
            without["p50_ms"],
            with["overhead_p50_us"],
            without["overhead_p50_us"]
        );
        out.push(json!({"region": node.id, "leader": leader == Some(node.id), "budgeted": with,
            "unbudgeted": without, "added_p50_ms": (added * 1000.0).round() / 1000.0}));
    }
    Ok(json!(out))
}

/// `clients` clients per region draw on one budget of `limit` tokens at once, each until refused three
/// times in a row; then the served (usage in the answers) and billed (ledger `used`) shares.
pub async fn share(state: &RegionsState, token: &str, limit: u64, clients: u32) -> anyhow::Result<Value> {
    let (org, key) = org_with_key(state, token, "share", Some(limit)).await?;
    let key = Arc::new(key);
    // `org_with_key` spent a few tokens checking the key on each region (not counted in `served`).
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for node in &state.nodes {
        for client in 0..clients {
            let (api_url, key, region) = (node.api_url.clone(), key.clone(), node.id);
            tasks.spawn(async move {
                let (mut served, mut refused_in_a_row, mut ok, mut other) = (0u64, 0, 0u64, 0u64);
                let mut first_refusal = None;
                while refused_in_a_row < 3 && started.elapsed() < Duration::from_secs(120) {
                    match chat(&api_url, &key, 16 + u64::from(client) * 8).await {
                        Ok(answer) if answer.status == 200 => {
                            refused_in_a_row = 0;
                            ok += 1;
                            served += answer.tokens;
                        }
                        Ok(answer) if answer.code.starts_with("budget") => {
                            refused_in_a_row += 1;
                            first_refusal.get_or_insert(started.elapsed().as_secs_f64());
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        _ => other += 1,
                    }
                }
                (region, served, ok, other, first_refusal)
            });
        }
    }
    let (mut served, mut ok, mut other) = (0u64, 0u64, 0u64);
    let mut per_region = std::collections::BTreeMap::<u64, u64>::new();
    let mut first_refusal = f64::INFINITY;
    while let Some(joined) = tasks.join_next().await {
        let (region, tokens, n_ok, n_other, refusal) = joined.context("a share client panicked")?;
        served += tokens;
        ok += n_ok;
        other += n_other;
        *per_region.entry(region).or_default() += tokens;
        first_refusal = first_refusal.min(refusal.unwrap_or(f64::INFINITY));
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ledger = admin(state, token, "GET", &format!("/admin/v1/budgets?org={org}"), "").await.ok();
    let billed = ledger.as_ref().and_then(|budget| budget["used"].as_u64());
    eprintln!(
        "share: {} clients in each region served {served} of {limit} tokens ({:.1} %) in {elapsed:.1} s; {ok} ok, {other} other answers",
        clients,
        served as f64 / limit as f64 * 100.0
    );
    Ok(json!({"limit": limit, "served": served, "share": served as f64 / limit as f64, "per_region": per_region,
        "billed": billed, "ok": ok, "other_answers": other, "seconds": elapsed, "first_refusal_s": first_refusal.is_finite().then_some(first_refusal)}))
}
