//! The proxy's control channel: a Unix socket (mode 0600) taking one JSON command per line and answering
//! one JSON line, e.g. `{"cmd":"cut","a":1,"b":2}` → `{"ok":true,"links":[...]}`. `jepsen link ...` is the
//! client; any tool that can write a line to a Unix socket works too (`socat`, `nc -U`).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::links::{LinkMode, LinkState, Links, NodeId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Lists every link and its state.
    Status,
    /// `from → to` loses UDP and resets TCP.
    Drop { from: NodeId, to: NodeId },
    /// `from → to` buffers everything until healed.
    Hold { from: NodeId, to: NodeId },
    /// Drops both directions between `a` and `b`.
    Cut { a: NodeId, b: NodeId },
    /// Cuts every link of `node` (its region is partitioned away).
    Isolate { node: NodeId },
    /// Both directions between `a` and `b` back up (held traffic delivered); every link when both are absent.
    Heal {
        #[serde(default)]
        a: Option<NodeId>,
        #[serde(default)]
        b: Option<NodeId>,
    },
    /// Changes the delay and jitter of `from → to`.
    Delay { from: NodeId, to: NodeId, delay_ms: u64, jitter_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkReport {
    pub from: NodeId,
    pub to: NodeId,
    #[serde(flatten)]
    pub state: LinkState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub links: Vec<LinkReport>,
}

/// Applies a command to the link table.
pub fn apply(links: &Links, nodes: &BTreeSet<NodeId>, command: &Command) -> Result<(), String> {
    let known = |id: NodeId| {
        if nodes.is_empty() || nodes.contains(&id) {
            Ok(())
        } else {
            Err(format!("unknown node {id} (known: {nodes:?})"))
        }
    };
    match *command {
        Command::Status => {}
        Command::Drop { from, to } => {
            known(from)?;
            known(to)?;
            links.set_mode(from, to, LinkMode::Drop);
        }
        Command::Hold { from, to } => {
            known(from)?;
            known(to)?;
            links.set_mode(from, to, LinkMode::Hold);
        }
        Command::Cut { a, b } => {
            known(a)?;
            known(b)?;
            links.set_mode(a, b, LinkMode::Drop);
            links.set_mode(b, a, LinkMode::Drop);
        }
        Command::Isolate { node } => {
            known(node)?;
            for other in nodes.iter().copied().filter(|other| *other != node) {
                links.set_mode(node, other, LinkMode::Drop);
                links.set_mode(other, node, LinkMode::Drop);
            }
        }
        Command::Heal { a: None, b: None } => links.heal_all(),
        Command::Heal { a: Some(a), b: Some(b) } => {
            known(a)?;
            known(b)?;
            links.set_mode(a, b, LinkMode::Up);
            links.set_mode(b, a, LinkMode::Up);
        }
        Command::Heal { .. } => return Err("heal takes two nodes, or none to heal every link".into()),
        Command::Delay { from, to, delay_ms, jitter_ms } => {
            known(from)?;
            known(to)?;
            links.update(from, to, |state| {
                state.delay_ms = delay_ms;
                state.jitter_ms = jitter_ms;
            });
        }
    }
    Ok(())
}

fn report(links: &Links) -> Vec<LinkReport> {
    links.snapshot().into_iter().map(|((from, to), state)| LinkReport { from, to, state }).collect()
}

/// Binds the control socket, replacing a stale socket file, readable by its owner only.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("removing stale control socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding link proxy control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, links: Links, nodes: BTreeSet<NodeId>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let links = links.clone();
        let nodes = nodes.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match serde_json::from_str::<Command>(&line) {
                    Ok(command) => match apply(&links, &nodes, &command) {
                        Ok(()) => {
                            tracing::info!(?command, "link proxy command");
                            Reply { ok: true, error: None, links: report(&links) }
                        }
                        Err(error) => Reply { ok: false, error: Some(error), links: Vec::new() },
                    },
                    Err(err) => Reply { ok: false, error: Some(format!("bad command: {err}")), links: Vec::new() },
                };
                let Ok(mut text) = serde_json::to_string(&reply) else { return };
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Sends one command to a running proxy and returns its reply (an error when the proxy refused it).
pub async fn send(socket: &Path, command: &Command) -> anyhow::Result<Reply> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!("cannot reach the link proxy at {} (is `jepsen regions up` running?)", socket.display())
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(command)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines.next_line().await?.context("the link proxy closed the control connection without answering")?;
    let reply: Reply = serde_json::from_str(&answer).context("the link proxy answered something that is not JSON")?;
    if !reply.ok {
        anyhow::bail!("link proxy: {}", reply.error.unwrap_or_else(|| "command refused".into()));
    }
    Ok(reply)
}
