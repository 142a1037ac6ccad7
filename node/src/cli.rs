//! Command-line interface (CONTRACT.md): `tollgate serve`, `tollgate dev`, `tollgate check-config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

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
    /// Start a local node with the built-in mock provider, a demo org and key; prints how to call it.
    Dev(DevArgs),
    /// Validate a config file and print what it defines; exits non-zero with the bad field named.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
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
    /// Gossip UDP address (used by the cluster membership layer).
    #[arg(long)]
    pub gossip_listen: Option<String>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Initial voters' Raft addresses: "1=host:port,2=host:port,3=host:port".
    #[arg(long)]
    pub peers: Option<String>,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of nodes to start (each serves the same config).
    #[arg(long, default_value_t = 1)]
    pub nodes: u16,
    /// First API port; node i listens on base+i, its admin listener on base+1010+i.
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
        for (target, flag) in [
            (&mut node.listen, &self.listen),
            (&mut node.admin_listen, &self.admin_listen),
            (&mut node.raft_listen, &self.raft_listen),
            (&mut node.gossip_listen, &self.gossip_listen),
        ] {
            if let Some(value) = flag {
                *target = value.clone();
            }
        }
        if let Some(dir) = &self.data_dir {
            node.data_dir = Some(dir.clone());
        }
        if let Some(peers) = &self.peers {
            node.peers = parse_peers(peers)?;
        }
        config.validate()?;
        Ok(config)
    }
}

/// "1=a:7070,2=b:7070" → {"1": "a:7070", "2": "b:7070"}.
pub fn parse_peers(text: &str) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--peers: `{part}` is not of the form ID=HOST:PORT"))?;
            id.trim().parse::<u64>().map_err(|_| anyhow::anyhow!("--peers: `{id}` is not a node id"))?;
            Ok((id.trim().to_owned(), addr.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers() {
        let peers = parse_peers("1=a:1, 2=b:2").unwrap_or_default();
        assert_eq!(peers.get("2").map(String::as_str), Some("b:2"));
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1a:1").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
