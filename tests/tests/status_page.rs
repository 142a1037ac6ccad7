//! The live status page (issue 19) in a real headless Chromium (Debian's `chromium`; `.ci/run` installs it):
//! served by a node of a three-node cluster, it shows three members and the leader, readable without
//! JavaScript, its request-rate chart changes after traffic, and with the admin token (handed over in the
//! URL's fragment) it draws the org's budget use as a bar that matches the ledger. `TOLLGATE_SCREENSHOT=docs/status-page.png`
//! also saves a screenshot (the one in docs/ was made so).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::cluster::{TestCluster, ADMIN_TOKEN};
use tollgate_tests::*;

fn chromium() -> String {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return candidate.to_owned();
        }
    }
    panic!("this test needs Chromium: apt-get install chromium (.ci/run installs it)");
}

/// Chromium, headless and quiet on a closed network (the flags from the machine notes).
fn headless(profile: &std::path::Path) -> Command {
    let mut command = Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// The DOM after the page's script has run for a few (virtual) seconds.
async fn rendered(url: &str) -> String {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let output =
            headless(profile.path()).args(["--virtual-time-budget=5000", "--dump-dom", &url]).output().unwrap();
        assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// The `data-sum` of a chart (the sum of its plotted values), as the page's script set it.
fn chart_sum(dom: &str, id: &str) -> f64 {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no chart {id}"));
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    tag.split("data-sum=\"").nth(1).and_then(|rest| rest.split('"').next()).map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_cluster_and_its_charts_move_with_traffic() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_ready().await;
    let leader = cluster.wait_leader().await;
    let budget = json!({"scope": {"org": "acme"}, "limit_tokens": 100_000, "period": "day"});
    let (status, out) = cluster.admin(cluster.node(2), Method::PUT, "/admin/v1/budgets", Some(budget)).await;
    assert_eq!(status, 200, "{out}");
    let url = format!("{}/", cluster.node(1).admin_url());

    // Without JavaScript: the server-rendered tables.
    let static_html = cluster.client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(static_html.contains("id=\"member-count\">3<"), "three members without JS");
    assert!(static_html.contains("<tr class=\"leader\">"), "the leader's row is marked without JS");

    let before = rendered(&url).await;
    assert!(before.contains("id=\"member-count\">3<"), "{before}");
    assert!(before.contains(&format!("id=\"leader\">{leader}<")), "leader {leader} shown: {before}");
    assert_eq!(before.matches("<tr class=\"leader\">").count(), 1, "exactly one leader row");
    assert_eq!(chart_sum(&before, "chart-rps"), 0.0, "no API traffic yet");

    for round in 0..3 {
        for _ in 0..10 * (round + 1) {
            assert_eq!(cluster.chat_default(cluster.node(1), "gpt-direct").await, 200);
        }
        // Spread over a few sampling intervals, so the chart has more than one bar.
        tokio::time::sleep(tollgate::admin::status::SAMPLE_EVERY).await;
    }
    // Streams have a time to first token.
    let api = format!("{}/v1/chat/completions", cluster.node(1).api_url());
    for _ in 0..10 {
        let mut body = chat_body("gpt-direct", "stream it");
        body["stream"] = serde_json::json!(true);
        let response = cluster.client.post(&api).bearer_auth(KEY).json(&body).send().await.unwrap();
        assert!(response.text().await.unwrap().contains("[DONE]"));
    }
    // The sampler records the traffic within a couple of its intervals.
    let status_url = format!("{}/status.json", cluster.node(1).admin_url());
    wait_for("a sample with the streams' time to first token", Duration::from_secs(15), || async {
        let status: Value = cluster.client.get(&status_url).send().await.ok()?.json().await.ok()?;
        let series = status["series"].as_array()?.clone();
        series.iter().any(|p| p["ttft_ms"].as_f64().is_some()).then_some(())
    })
    .await;
    let after = rendered(&url).await;
    assert!(chart_sum(&after, "chart-rps") > 0.0, "the request-rate chart moved after traffic");
    assert!(chart_sum(&after, "chart-ttft") > 0.0, "and the TTFT chart");
    let bars =
        |dom: &str| dom.split("data-share=\"").skip(1).filter(|r| r.starts_with(|c: char| c.is_ascii_digit())).count();
    assert_eq!(bars(&after), 0, "no budgets without the admin token");

    // With the token: the org's bar, at the share of its limit the ledger reports as used.
    let used = wait_for("the traffic's usage in the ledger", Duration::from_secs(15), || async {
        let budget = cluster.admin_get(cluster.node(1), "/admin/v1/budgets?org=acme").await.ok()?;
        budget["used"].as_u64().filter(|used| *used > 0)
    })
    .await;
    let with_token = rendered(&format!("{url}#token={ADMIN_TOKEN}")).await;
    assert_eq!(bars(&with_token), 1, "one budget, one bar");
    let row = with_token.split("<tr>").find(|row| row.contains("acme")).unwrap_or_else(|| panic!("{with_token}"));
    let share: f64 = row.split("data-share=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().parse().unwrap();
    // At least what the ledger said a moment ago, at most twice what the upstream served (billing is
    // exact for a provider that reports usage; the slack is only for reports still in flight).
    let served = (cluster.mock.input_tokens_served() + cluster.mock.output_tokens_served()) as f64;
    let (floor, ceiling) = (used as f64 / 100_000.0 - 1e-4, 2.0 * served / 100_000.0 + 1e-4);
    assert!(share >= floor && share <= ceiling, "bar {share}: ledger {used}, served {served} of 100000");
    assert!(!with_token.contains(ADMIN_TOKEN), "the token is not left in the page");

    if let Ok(path) = std::env::var("TOLLGATE_SCREENSHOT") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        let profile = tempfile::tempdir().unwrap();
        let status = headless(profile.path())
            .args(["--virtual-time-budget=5000", "--window-size=1100,780"])
            .arg(format!("--screenshot={}", path.display()))
            .arg(format!("{url}#token={ADMIN_TOKEN}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
}
