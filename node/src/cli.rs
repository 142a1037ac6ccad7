//! Command-line interface (README.md, "Running nodes"; the flags are a public interface): `tollgate serve`, `tollgate dev`, `tollgate check-config`, `tollgate guard scan`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_peer_ids, parse_socket_addr, Config, Peers};
use crate::guard::GuardrailKind;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate: a distributed AI gateway for OpenAI and Anthropic APIs",
    long_about = "Tollgate proxies, translates and meters OpenAI (/v1/chat/completions, /v1/embeddings, /v1/models) \
and Anthropic (/v1/messages, /v1/messages/count_tokens) traffic to OpenAI, Anthropic and OpenAI-compatible \
providers (vLLM, TGI, SGLang, ...). Point the official SDKs at a node's API listener.\n\n\
Quick start: `tollgate dev` starts a local node with a built-in mock provider and prints how to call it.",
    after_help = "Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=tollgate=debug) to change the level."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node from a TOML config file (flags override the file's [node] section).
    Serve(ServeArgs),
    /// Start a local three-node cluster with the built-in mock provider, a demo org and key; prints how to call it.
    Dev(DevArgs),
    /// Validate a config file and print what it defines; exits non-zero with the bad field named.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Cluster status: members, leader, term, applied index and lag per node.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Push a declarative cluster file (providers, models, orgs, teams, keys): diffed, applied as one batch.
    Apply {
        #[command(flatten)]
        admin: AdminArgs,
        /// The TOML file (the replicated sections; a [node] section is ignored).
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create, list or revoke API keys.
    #[command(subcommand)]
    Keys(KeysSubcommand),
    /// List, show, create or delete orgs.
    Orgs {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: NamedCommand,
    },
    /// List, show, create or delete teams, named ORG/TEAM (e.g. `tollgate teams put acme/ml`).
    Teams {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: NamedCommand,
    },
    /// List, show, put or delete guardrails (e.g. `tollgate guardrails put pii --body '{"kind":"pii"}'`).
    Guardrails {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: NamedCommand,
    },
    /// List, show, put or delete routes (models).
    Routes {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: NamedCommand,
    },
    /// Set, show or delete org/team/key token or cost budgets.
    Budgets {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: BudgetsCommand,
    },
    /// Usage report: requests, tokens in/out and cost for an org, optionally grouped.
    Usage {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        org: String,
        /// RFC 3339 start, e.g. 2026-11-01T00:00:00Z (default: all retained history).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Comma-separated: team, key, model.
        #[arg(long)]
        group_by: Option<String>,
    },
    /// Add or remove cluster members (learner first, then voter).
    Cluster {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Offline guardrail tools (the detectors the gateway runs).
    #[command(subcommand)]
    Guard(GuardCommand),
}

#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Read JSON lines {"text": ...} on stdin; write one JSON line per input: injection
    /// {"score", "flagged", "rules", "matches"}, pii {"entities": [{"type", "start", "end"}], "redacted"}
    /// (offsets in Unicode code points).
    Scan {
        /// injection or pii.
        #[arg(long)]
        kind: GuardrailKind,
        /// A TOML file with [[guardrails]] (a node config works): its first guardrail of --kind is used
        /// (default: threshold 0.4; every entity type, replaced by [REDACTED:TYPE]).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The guardrail of --config to use instead of the first of --kind.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Admin URL of any node.
    #[arg(long, global = true, env = "TOLLGATE_ADMIN_URL", default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Admin token.
    #[arg(long, global = true, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysSubcommand {
    /// Create a key; prints it once.
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        org: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Comma-separated model allowlist.
        #[arg(long)]
        models: Option<String>,
    },
    /// List keys (ids and owners; never the secrets).
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key on every node.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        id: String,
    },
}

/// The admin command to run, after flag parsing.
#[derive(Debug)]
pub enum AdminCommand {
    Status,
    Apply { file: PathBuf, dry_run: bool },
    Keys(KeysCommand),
    Orgs(NamedCommand),
    Teams(NamedCommand),
    Guardrails(NamedCommand),
    Routes(NamedCommand),
    Budgets(BudgetsCommand),
    Usage { org: String, since: Option<String>, until: Option<String>, group_by: Option<String> },
    Cluster(ClusterCommand),
}

#[derive(Debug)]
pub enum KeysCommand {
    Create { org: String, team: Option<String>, name: Option<String>, models: Option<String> },
    List { org: Option<String> },
    Revoke { id: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum NamedCommand {
    List,
    Get {
        name: String,
    },
    /// Create or replace; the body is JSON (e.g. --body '{"targets":[{"provider":"openai"}]}').
    Put {
        name: String,
        #[arg(long)]
        body: Option<String>,
    },
    Delete {
        name: String,
    },
}

/// Which budget: an org, one of its teams, or one key.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    #[arg(long)]
    pub org: String,
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long)]
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BudgetsCommand {
    /// Create or change a budget (takes effect on every node at once).
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        limit_tokens: Option<u64>,
        /// USD per period, at the models' configured prices.
        #[arg(long)]
        limit_cost: Option<f64>,
        /// hour, day, month or total.
        #[arg(long, default_value = "day")]
        period: String,
    },
    /// Limit, use and remainder in the current period (linearizable); all budgets without --org.
    Get {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        key_id: Option<String>,
    },
    Delete {
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    AddNode {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        api_addr: Option<String>,
        #[arg(long)]
        admin_addr: Option<String>,
    },
    /// Remove a node from the membership.
    RemoveNode {
        #[arg(long)]
        id: u64,
    },
}

impl Command {
    /// Splits an admin command into where to send it and what to do; other commands come back unchanged.
    #[allow(clippy::result_large_err)] // parsed once at startup
    pub fn admin(self) -> Result<(AdminArgs, AdminCommand), Command> {
        Ok(match self {
            Command::Status { admin } => (admin, AdminCommand::Status),
            Command::Apply { admin, file, dry_run } => (admin, AdminCommand::Apply { file, dry_run }),
            Command::Keys(KeysSubcommand::Create { admin, org, team, name, models }) => {
                (admin, AdminCommand::Keys(KeysCommand::Create { org, team, name, models }))
            }
            Command::Keys(KeysSubcommand::List { admin, org }) => {
                (admin, AdminCommand::Keys(KeysCommand::List { org }))
            }
            Command::Keys(KeysSubcommand::Revoke { admin, id }) => {
                (admin, AdminCommand::Keys(KeysCommand::Revoke { id }))
            }
            Command::Orgs { admin, command } => (admin, AdminCommand::Orgs(command)),
            Command::Teams { admin, command } => (admin, AdminCommand::Teams(command)),
            Command::Guardrails { admin, command } => (admin, AdminCommand::Guardrails(command)),
            Command::Routes { admin, command } => (admin, AdminCommand::Routes(command)),
            Command::Cluster { admin, command } => (admin, AdminCommand::Cluster(command)),
            Command::Budgets { admin, command } => (admin, AdminCommand::Budgets(command)),
            Command::Usage { admin, org, since, until, group_by } => {
                (admin, AdminCommand::Usage { org, since, until, group_by })
            }
            other => return Err(other),
        })
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Path to the TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Address of the LLM API listener (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// Address of the admin listener: /metrics, /healthz, /readyz (default 127.0.0.1:9090).
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Raft gRPC address (used by the cluster control plane).
    #[arg(long)]
    pub raft_listen: Option<String>,
    /// Gossip UDP address (membership and endpoint health/load shared between nodes; default 127.0.0.1:7946).
    #[arg(long)]
    pub gossip_listen: Option<String>,
    /// Gossip addresses of other nodes to join: "host:port,host:port" (turns gossip on).
    #[arg(long)]
    pub gossip_seeds: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Initial voters' Raft addresses: "1=host:port,2=host:port,3=host:port".
    #[arg(long)]
    pub peers: Option<String>,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes in the local Raft cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// First API port; node i listens on base+i, its admin listener on base+1010+i, Raft on base-1010+i,
    /// gossip (UDP) on base-134+i (7946 for the default base).
    #[arg(long, default_value_t = 8080)]
    pub base_port: u16,
    /// Also write TOLLGATE_URL, TOLLGATE_KEY, TOLLGATE_ADMIN_URL and TOLLGATE_ADMIN_TOKEN lines to this file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Delay between streamed tokens of the mock provider, in milliseconds.
    #[arg(long, default_value_t = 15)]
    pub token_delay_ms: u64,
}

impl ServeArgs {
    /// Loads the file and applies the flags on top.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(&self.config)?;
        let node = &mut config.node;
        if let Some(id) = self.node_id {
            node.id = id;
        }
        for (target, flag, name) in [
            (&mut node.listen.api, &self.listen, "--listen"),
            (&mut node.listen.admin, &self.admin_listen, "--admin-listen"),
            (&mut node.listen.raft, &self.raft_listen, "--raft-listen"),
            (&mut node.listen.gossip, &self.gossip_listen, "--gossip-listen"),
        ] {
            if let Some(value) = flag {
                *target = parse_socket_addr(value).map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
            }
        }
        if let Some(dir) = &self.data_dir {
            node.data_dir = Some(dir.clone());
        }
        if let Some(peers) = &self.peers {
            node.raft.peers = parse_peers(peers)?;
        }
        if let Some(seeds) = &self.gossip_seeds {
            node.gossip.seeds =
                seeds.split(',').map(str::trim).filter(|seed| !seed.is_empty()).map(str::to_owned).collect();
        }
        config.validate()?;
        Ok(config)
    }
}

/// "1=a:7070,2=b:7070" → {1: "a:7070", 2: "b:7070"}.
pub fn parse_peers(text: &str) -> anyhow::Result<Peers> {
    let pairs = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--peers: `{part}` is not of the form ID=HOST:PORT"))?;
            Ok((id.to_owned(), addr.to_owned()))
        })
        .collect::<anyhow::Result<_>>()?;
    parse_peer_ids(pairs).map_err(|err| anyhow::anyhow!("--peers: {}", err.trim_start_matches("node.peers: ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers() {
        let peers = parse_peers("1=a:1, 2=b:2").unwrap_or_default();
        assert_eq!(peers.get(&2).map(String::as_str), Some("b:2"));
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1a:1").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
