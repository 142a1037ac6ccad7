use super::*;

const GOOD: &str = r#"
[node]
listen = "127.0.0.1:0"

[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[[models]]
name = "gpt-4o-mini"
price_per_mtok = { input = 0.15, output = 0.60 }
[[models.targets]]
provider = "openai"

[[keys]]
key = "tg-test"
org = "acme"
"#;

fn error_of(text: &str) -> String {
    match Config::parse(text) {
        Ok(_) => String::from("<no error>"),
        Err(err) => format!("{err:#}"),
    }
}

#[test]
fn accepts_a_good_config() {
    let config = Config::parse(GOOD).map_err(|e| format!("{e:#}"));
    assert!(config.is_ok(), "{config:?}");
}

#[test]
fn org_budgets_are_validated() {
    let with_budget =
        format!("{GOOD}\n[[orgs]]\nname = \"acme\"\nbudget = {{ limit_tokens = 5000000, period = \"month\" }}\n");
    assert!(Config::parse(&with_budget).is_ok(), "{}", error_of(&with_budget));
    let bad = format!("{GOOD}\n[[orgs]]\nname = \"acme\"\nbudget = {{ period = \"fortnight\" }}\n");
    assert!(error_of(&bad).contains("orgs[0].budget"), "{}", error_of(&bad));
}

#[test]
fn routing_and_gossip_options_name_the_bad_field() {
    let model = |extra: &str| {
        GOOD.replace(
            "price_per_mtok = { input = 0.15, output = 0.60 }",
            &format!("price_per_mtok = {{ input = 0.15, output = 0.60 }}\n{extra}"),
        )
    };
    assert!(Config::parse(&model("strategy = \"least_load\"")).is_ok());
    assert!(error_of(&model("strategy = \"fastest\"")).contains("strategy"));
    assert!(error_of(&model("fallback_on = [500]")).contains("models[0].fallback_on"));
    assert!(error_of(&model("retry = { attempts = 2, backoff_ms = 500, max_backoff_ms = 100 }"))
        .contains("models[0].retry.max_backoff_ms"));
    assert!(error_of(&model("canary = { target = 3 }")).contains("models[0].canary"));
    assert!(error_of(&model("canary = { target = \"nope\" }")).contains("models[0].canary.target"));
    let node = |extra: &str| GOOD.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:0\"\n{extra}"));
    assert!(Config::parse(&node("gossip_seeds = [\"10.0.0.2:7946\"]")).is_ok_and(|c| c.node.gossip_enabled()));
    assert!(error_of(&node("gossip_seeds = [\"nohost\"]")).contains("node.gossip_seeds[0]"));
    assert!(error_of(&node("gossip = true\ngossip_listen = \"0.0.0.0:7946\"")).contains("node.gossip_advertise"));
    assert!(error_of(&node("breaker_failures = 0")).contains("node.breaker_failures"));
    let derived = Config::parse(&node(
        "gossip = true\ngossip_listen = \"0.0.0.0:7946\"\npeers = { 1 = \"10.0.1.10:7070\", 2 = \"10.0.2.10:7070\" }",
    ))
    .map(|c| c.node.gossip_advertise_addr().map(|a| a.to_string()));
    assert_eq!(derived.ok().flatten().as_deref(), Some("10.0.1.10:7946"), "advertised on the Raft host");
    let seeds = Config::parse(&node(
        "gossip = true\ngossip_listen = \"0.0.0.0:7947\"\npeers = { 1 = \"10.0.1.10:7070\", 2 = \"n2.local:7070\" }",
    ))
    .map(|c| c.node.effective_gossip_seeds());
    assert_eq!(seeds.ok(), Some(vec!["n2.local:7947".to_owned()]), "seeds default to the other peers' hosts");
}

/// Issue 13.1: a cluster member gossips without being told to; `gossip = false` is the way out.
#[test]
fn cluster_members_gossip_by_default() {
    let node = |extra: &str| GOOD.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:0\"\n{extra}"));
    let three = "peers = { 1 = \"10.0.1.10:7070\", 2 = \"10.0.2.10:7070\", 3 = \"10.0.3.10:7070\" }";
    let enabled = |extra: &str| Config::parse(&node(extra)).map(|c| c.node.gossip_enabled()).ok();
    assert_eq!(enabled(""), Some(false), "standalone");
    assert_eq!(enabled("peers = { 1 = \"10.0.1.10:7070\" }"), Some(false), "a cluster of one has no one to tell");
    assert_eq!(enabled(three), Some(true));
    assert_eq!(enabled(&format!("{three}\ngossip = false")), Some(false));
    // Several nodes on one host: the peers' gossip ports keep the distance from their Raft ports.
    let seeds = Config::parse(&node(
        "gossip_listen = \"127.0.0.1:7946\"\npeers = { 1 = \"127.0.0.1:7071\", 2 = \"127.0.0.1:7072\", 3 = \"127.0.0.1:7073\" }",
    ))
    .map(|c| c.node.effective_gossip_seeds());
    assert_eq!(seeds.ok(), Some(vec!["127.0.0.1:7947".to_owned(), "127.0.0.1:7948".to_owned()]));
    // By default, a node that cannot tell its gossip address still starts (and runs without gossip).
    let unknown = format!("{three}\ngossip_listen = \"0.0.0.0:7946\"").replace("10.0.1.10", "n1.local");
    assert_eq!(enabled(&unknown), Some(true));
}

#[test]
fn names_the_bad_field() {
    assert!(error_of(&GOOD.replace("provider = \"openai\"", "provider = \"nope\""))
        .contains("models[0].targets[0].provider"));
    assert!(error_of(&GOOD.replace("https://api.openai.com/v1", "ftp://x")).contains("providers[0].base_url"));
    assert!(error_of(&GOOD.replace("127.0.0.1:0", "localhost")).contains("node.listen"));
    assert!(error_of(&GOOD.replace("org = \"acme\"", "org = \"acme\"\nkey_sha256 = \"ab\"")).contains("keys[0]"));
    assert!(error_of(&GOOD.replace("kind = \"openai\"", "kind = \"openai\"\nbogus = 1")).contains("bogus"));
    assert!(error_of(&GOOD.replace("kind = \"openai\"", "kind = \"gemini\"")).contains("kind"));
    assert!(error_of(&format!("{GOOD}\n[[models]]\nname = \"gpt-4o-mini\"\ntargets = [{{provider = \"openai\"}}]"))
        .contains("duplicate model name"));
    let spin = |us: u64| GOOD.replacen("[node]\n", &format!("[node]\nidle_spin_us = {us}\n"), 1);
    assert!(error_of(&spin(20_000)).contains("node.idle_spin_us"));
    assert!(Config::parse(&spin(150)).is_ok_and(|c| c.node.idle_spin_us == 150));
}

/// Issue 15: the `[node]` table is typed where it is parsed, and errors still name the field.
#[test]
fn node_settings_are_typed_and_errors_name_the_field() {
    let node = |extra: &str| GOOD.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:0\"\n{extra}"));
    assert!(error_of(&node("peers = { one = \"10.0.0.1:7070\" }")).contains("node.peers: `one` is not a node id"));
    assert!(error_of(&node("admin_listen = \"localhost:9090\"")).contains("node.admin_listen"));
    assert!(error_of(&node("gossip_advertise = \"n1.local\"")).contains("node.gossip_advertise"));
    let config = Config::parse(&node("peers = { 1 = \"10.0.1.10:7070\", 2 = \"n2:7070\" }\nheartbeat_ms = 40"));
    let config = config.map_err(|e| format!("{e:#}"));
    let Ok(config) = config else { panic!("{config:?}") };
    assert_eq!(config.node.raft.peers.get(&2).map(String::as_str), Some("n2:7070"));
    assert_eq!(config.node.raft.heartbeat_ms, 40);
    assert_eq!(config.node.listen.api.port(), 0);
    // Arrays of tables are counted: the second model's first target.
    let two_models =
        format!("{GOOD}\n[[models]]\nname = \"b\"\n[[models.targets]]\nprovider = \"openai\"\nweight = \"heavy\"\n");
    assert!(error_of(&two_models).contains("`models[1].targets[0].weight`"), "{}", error_of(&two_models));
    assert!(error_of(&GOOD.replace("name = \"gpt-4o-mini\"", "name = \"gpt-4o-mini\"\nencoding = \"p50k\""))
        .contains("models[0].encoding"));
}

#[test]
fn node_settings_round_trip_and_never_print_secrets() {
    let text =
        GOOD.replace("[node]\n", "[node]\nadmin_token = \"hunter2-admin\"\ncluster_secret = \"0123456789abcdef-s\"\n");
    let Ok(config) = Config::parse(&text) else { panic!("{}", error_of(&text)) };
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2") && !debug.contains("0123456789abcdef"), "{debug}");
    let written = toml::to_string(&config.node).unwrap_or_default();
    let reread: Result<NodeConfig, _> = toml::from_str(&written);
    assert_eq!(reread.ok().as_ref(), Some(&config.node), "{written}");
}
