//! What `jepsen run` adds to the regions: one budgeted org per mock upstream, so the tokens each org is
//! served are counted by a mock the gateway cannot lie to (the ground truth of S1 and S3). Each org has
//! an OpenAI-style and an Anthropic-style provider pointing at its own mock on the bridge address (reached
//! from every namespace), two models routed to them, and a key limited to those models.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tollgate_tests::{MockUpstream, Script};

use crate::http;
use crate::regions::configs::random_token;
use crate::regions::layout::Layout;
use crate::regions::state::RegionsState;

/// First port of the orgs' mocks on the bridge address (org i listens on BASE + i).
pub const MOCK_PORT_BASE: u16 = 18101;

/// The mock's answer: 80 word pieces, so a reply is longer than most reservations' `max_tokens` (the
/// mock truncates to it, like a real model) and a stream lasts long enough to be cut mid-way.
pub fn long_reply() -> String {
    let words = ["tokens", "cross", "the", "wide", "area", "network", "while", "budgets", "hold"];
    (0..80).map(|index| words[index % words.len()]).collect::<Vec<_>>().join(" ")
}

/// How the mocks behave outside `upstream-faults`: [`long_reply`], `token_delay` between streamed events.
pub fn normal_script(token_delay: Duration) -> Script {
    Script { reply: Some(long_reply()), delay_between_events: Some(token_delay), ..Script::default() }
}

#[derive(Debug, Clone)]
pub struct OrgPlan {
    pub name: String,
    /// `None`: unbudgeted (the control org).
    pub limit: Option<u64>,
    pub port: u16,
    pub key: String,
}

impl OrgPlan {
    pub fn models(&self) -> [String; 2] {
        [format!("{}-gpt", self.name), format!("{}-claude", self.name)]
    }
}

/// `acme`: the budget under test (small: exhausted during the run); `beta`: a budget with room (the L1
/// probe uses it); `ctl`: no budget (the control).
pub fn plan_orgs(acme_limit: u64, beta_limit: u64) -> Vec<OrgPlan> {
    let orgs = [("acme", Some(acme_limit)), ("beta", Some(beta_limit)), ("ctl", None)];
    orgs.iter()
        .enumerate()
        .map(|(index, (name, limit))| OrgPlan {
            name: (*name).to_owned(),
            limit: *limit,
            port: MOCK_PORT_BASE + index as u16,
            key: random_token(&format!("tg-{name}-")),
        })
        .collect()
}

/// TOML appended to every region's config.
pub fn extra_config(layout: &Layout, orgs: &[OrgPlan]) -> String {
    let bridge = layout.bridge_ip();
    let mut out = String::from("\n# Added by `jepsen run`: one org per mock upstream in the harness.\n");
    for org in orgs {
        let base = format!("http://{bridge}:{}", org.port);
        let [gpt, claude] = org.models();
        let name = &org.name;
        out.push_str(&format!(
            r#"
[[providers]]
name = "{name}-openai"
kind = "openai"
base_url = "{base}/v1"
api_key = "sk-jepsen-{name}"

[[providers]]
name = "{name}-anthropic"
kind = "anthropic"
base_url = "{base}"
api_key = "sk-ant-jepsen-{name}"

[[models]]
name = "{gpt}"
context_window = 8192
max_output_tokens = 64
price_per_mtok = {{ input = 0.15, output = 0.60 }}
targets = [ {{ provider = "{name}-openai", model = "mock-gpt" }} ]

[[models]]
name = "{claude}"
context_window = 8192
max_output_tokens = 64
price_per_mtok = {{ input = 0.80, output = 4.00 }}
targets = [ {{ provider = "{name}-anthropic", model = "mock-claude" }} ]

[[orgs]]
name = "{name}"

[[keys]]
name = "{name}"
org = "{name}"
key = "{key}"
models = ["{gpt}", "{claude}"]
"#,
            key = org.key,
        ));
    }
    out
}

/// One mock per org on the bridge address, answering with [`long_reply`] and `token_delay` between
/// streamed events.
pub async fn start_mocks(
    layout: &Layout,
    orgs: &[OrgPlan],
    token_delay: Duration,
) -> anyhow::Result<Vec<Arc<MockUpstream>>> {
    let mut mocks = Vec::new();
    for org in orgs {
        let addr = SocketAddr::new(layout.bridge_ip(), org.port);
        let mock = MockUpstream::start_on(addr)
            .await
            .with_context(|| format!("starting the mock upstream of org {} on {addr}", org.name))?;
        mock.set_default(normal_script(token_delay));
        mocks.push(Arc::new(mock));
    }
    Ok(mocks)
}

/// `PUT /admin/v1/budgets` for every budgeted org (retried on any region for up to 30 s), then waits
/// until every region reports the budget through its admin API.
pub async fn set_budgets(state: &RegionsState, token: &str, orgs: &[OrgPlan]) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(5);
    for org in orgs {
        let Some(limit) = org.limit else { continue };
        let body = json!({"scope": {"org": org.name, "team": null, "key_id": null}, "limit_tokens": limit,
            "period": "day", "tokens_per_minute": null, "requests_per_minute": null})
        .to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = 0usize;
        loop {
            let node = &state.nodes[attempt % state.nodes.len()];
            attempt += 1;
            let url = format!("{}/admin/v1/budgets", node.admin_url);
            let answer = http::request("PUT", &url, Some(token), Some(&body), timeout).await;
            match answer {
                Ok(response) if response.status == 200 => break,
                Ok(response) if Instant::now() > deadline => {
                    bail!("PUT budget of {} answered {}: {}", org.name, response.status, response.body)
                }
                Err(err) if Instant::now() > deadline => return Err(err.context(format!("PUT budget of {}", org.name))),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        for node in &state.nodes {
            let url = format!("{}/admin/v1/budgets?org={}", node.admin_url, org.name);
            loop {
                let answer = http::request("GET", &url, Some(token), None, timeout).await;
                if matches!(&answer, Ok(response) if response.status == 200) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("region {} does not show the budget of {} within 30 s: {answer:?}", node.id, org.name);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}
