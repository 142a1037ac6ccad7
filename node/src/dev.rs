//! `tollgate dev`: a local setup that works with no API keys and no network — the built-in mock
//! provider behind an OpenAI-style and an Anthropic-style model, a demo org and a fresh key.

use std::fmt::Write as _;
use std::net::SocketAddr;

use rand::Rng;

use crate::cli::DevArgs;
use crate::config::{Config, KeyConfig, MockConfig, MockStyle, ModelConfig, OrgConfig, Peers, Price, ProviderConfig};
use crate::server::RunningNode;

pub struct DevSetup {
    pub configs: Vec<Config>,
    pub key: String,
    pub admin_token: String,
    /// Raft data of this run (deleted on exit).
    pub data_root: std::path::PathBuf,
}

fn random_token(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut out = String::from(prefix);
    for _ in 0..24 {
        let _ = write!(out, "{:x}", rng.random_range(0..16u8));
    }
    out
}

fn mock_provider(name: &str, style: MockStyle, token_delay_ms: u64) -> ProviderConfig {
    ProviderConfig::mock(name, Some(MockConfig { style, reply: None, first_token_delay_ms: 0, token_delay_ms }))
}

fn model(name: &str, provider: &str, window: u64, price: Price) -> ModelConfig {
    ModelConfig {
        context_window: Some(window),
        max_output_tokens: Some(8192),
        max_prompt_bytes: None,
        price_per_mtok: price,
        ..ModelConfig::single_target(name, provider)
    }
}

pub fn setup(args: &DevArgs) -> DevSetup {
    let key = random_token("tg-dev-");
    let admin_token = random_token("tga-");
    // Peers of the dev cluster authenticate with a secret made for this run (CONTRACT: `tollgate dev`
    // makes one itself).
    let cluster_secret = random_token("tgc-");
    let data_root = std::env::temp_dir().join(format!("tollgate-dev-{}-{}", std::process::id(), args.base_port));
    let nodes = args.nodes.max(1);
    let raft_port = |index: u16| args.base_port.saturating_sub(1010) + index;
    let gossip_port = |index: u16| args.base_port.saturating_sub(134) + index;
    let peers: Peers =
        (0..nodes).map(|index| (u64::from(index) + 1, format!("127.0.0.1:{}", raft_port(index)))).collect();
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut configs = Vec::new();
    for index in 0..nodes {
        let mut config = Config::default();
        config.node.id = u64::from(index) + 1;
        config.node.listen.api = local(args.base_port + index);
        config.node.listen.admin = local(args.base_port + 1010 + index);
        config.node.listen.raft = local(raft_port(index));
        // Gossip is on by default with peers; the seeds follow from them (each peer's gossip port sits at
        // the same distance from its Raft port as this node's), as in a hand-written cluster config.
        config.node.listen.gossip = local(gossip_port(index));
        config.node.raft.peers = peers.clone();
        config.node.data_dir = Some(data_root.join(format!("n{}", index + 1)));
        config.node.secrets.admin_token = Some(admin_token.clone());
        config.node.secrets.cluster_secret = Some(cluster_secret.clone());
        config.providers = vec![
            mock_provider("mock-openai", MockStyle::Openai, args.token_delay_ms),
            mock_provider("mock-anthropic", MockStyle::Anthropic, args.token_delay_ms),
        ];
        config.models = vec![
            model("gpt-4o-mini", "mock-openai", 128_000, Price { input: 0.15, output: 0.60 }),
            model("claude-3-5-haiku", "mock-anthropic", 200_000, Price { input: 0.80, output: 4.00 }),
            model("text-embedding-3-small", "mock-openai", 8_191, Price { input: 0.02, output: 0.0 }),
        ];
        config.orgs = vec![OrgConfig::named("demo")];
        config.keys = vec![KeyConfig {
            key: Some(key.clone()),
            key_sha256: None,
            name: Some("demo".into()),
            org: "demo".into(),
            team: None,
            models: None,
        }];
        configs.push(config);
    }
    DevSetup { configs, key, admin_token, data_root }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let setup = setup(&args);
    let _ = std::fs::remove_dir_all(&setup.data_root);
    // Every node's sockets first: a port in use fails before anything runs, and no node's first election
    // meets a refused connection (and logs errors) because a peer has not bound its Raft port yet.
    let mut bound = Vec::new();
    for config in &setup.configs {
        bound.push(crate::Listeners::bind(config).await?);
    }
    let mut nodes = Vec::new();
    for (config, mut listeners) in setup.configs.iter().zip(bound) {
        let raft = listeners.raft.take();
        nodes.push(RunningNode::start_with(config.clone(), raft, listeners).await?);
    }
    let Some(first) = nodes.first() else {
        anyhow::bail!("--nodes must be at least 1");
    };
    // Wait until the cluster has elected a leader and every node has loaded the bootstrapped config.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !nodes.iter().all(|node| node.gateway.is_loaded()) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the dev cluster did not come up within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let url = format!("{}/v1", first.api_url());
    let admin_url = first.admin_url();
    if let Some(path) = &args.env_file {
        let text = format!(
            "TOLLGATE_URL={url}\nTOLLGATE_KEY={key}\nTOLLGATE_ADMIN_URL={admin_url}\nTOLLGATE_ADMIN_TOKEN={token}\n",
            key = setup.key,
            token = setup.admin_token
        );
        write_private(path, &text).map_err(|err| anyhow::anyhow!("--env-file {}: {err}", path.display()))?;
    }
    let key = &setup.key;
    let token = &setup.admin_token;
    let base = first.api_url();
    let mut out = format!(
        "Tollgate dev: a {}-node Raft cluster with the built-in mock provider (no API keys, no network needed)\n",
        nodes.len()
    );
    for node in &nodes {
        let _ =
            writeln!(out, "  node {}: API {}/v1   admin {}", node.gateway.node_id, node.api_url(), node.admin_url());
    }
    let lines = [
        String::new(),
        "  models:      gpt-4o-mini (OpenAI-style), claude-3-5-haiku (Anthropic-style), text-embedding-3-small".into(),
        "  org:         demo".into(),
        format!("  API key:     {key}"),
        format!("  admin token: {token}"),
        String::new(),
        "Try it:".into(),
        format!("  curl -s {url}/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\"),
        "       -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}'".into(),
        format!("  curl -sN {base}/v1/messages -H 'x-api-key: {key}' -H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' \\"),
        "       -d '{\"model\":\"claude-3-5-haiku\",\"max_tokens\":100,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}'".into(),
        String::new(),
        format!("  Python:  OpenAI(base_url=\"{url}\", api_key=\"{key}\")"),
        format!("           Anthropic(base_url=\"{base}\", api_key=\"{key}\")"),
        format!("  Metrics: curl -s {admin_url}/metrics"),
        format!("  Cluster: TOLLGATE_ADMIN_URL={admin_url} TOLLGATE_ADMIN_TOKEN={token} tollgate status"),
        String::new(),
        "Press Ctrl-C to stop.".into(),
    ];
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    print!("{out}");
    crate::signals::wait_for_shutdown_signal().await;
    println!("stopping...");
    for node in nodes {
        node.stop().await?;
    }
    let _ = std::fs::remove_dir_all(&setup.data_root);
    Ok(())
}

/// Writes `text` to `path` readable by its owner only (it holds an API key and the admin token), also
/// when the file already existed with wider permissions.
/// Writes `text` to `path` atomically and privately: a 0600 temporary file in the same directory, synced,
/// then renamed over `path`. A reader (a script sourcing the env file while `dev` starts) sees the old file
/// or the whole new one, never a half-written one, and the secrets are never readable by others.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file path"))?;
    let mut temporary = name.to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = path.with_file_name(temporary);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}
