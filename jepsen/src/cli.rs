//! Command line of the `jepsen` binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::linkproxy::control::{self, Command as LinkCommand};
use crate::linkproxy::{LinkProxy, ProxyConfig};
pub use crate::regions::DirArg;
use crate::regions::{self, configs::Settings, state::RegionsState};

#[derive(Parser, Debug)]
#[command(
    name = "jepsen",
    about = "Tollgate's chaos harness: three regions in network namespaces over a userspace WAN"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Seconds `regions up|down` and `run` wait for another jepsen harness on this machine (they hold an
    /// exclusive lock on /run/tollgate-jepsen.lock while they work) before failing; 0: fail at once.
    #[arg(long, global = true, default_value_t = 600, env = "JEPSEN_LOCK_WAIT")]
    pub lock_wait: u64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Three regions (namespaces + one `tollgate serve` each) joined by the link proxy. Needs root.
    Regions {
        #[command(subcommand)]
        command: RegionsCommand,
    },
    /// Commands to the running link proxy: `jepsen link cut 1 2`, `jepsen link heal`, ...
    Link {
        #[command(flatten)]
        target: ControlTarget,
        #[command(subcommand)]
        command: LinkCli,
    },
    /// Runs the link proxy in the foreground (`regions up` starts it in the background).
    LinkProxy {
        #[arg(long)]
        config: PathBuf,
    },
    /// WAN measurements against running regions (config propagation, leader failover).
    Measure(crate::measure::MeasureArgs),
    /// A chaos test: regions up, workload + nemesis schedule, heal, checkers (S1-S3, L1,
    /// linearizability), report; regions down. Needs root. Exit 0 only when every checker passed.
    Run(crate::run::RunArgs),
}

#[derive(Subcommand, Debug)]
pub enum RegionsCommand {
    Up(UpArgs),
    /// Stops the nodes and the proxy and removes namespaces, veths and the bridge (also after a crash).
    Down(DirArg),
    /// Exits 0 only when all three regions answer /healthz; prints each one's view of the leader.
    Status {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        json: bool,
    },
    /// Prints the client environment (TOLLGATE_KEY, TOLLGATE_URL_i, ...) of the running regions.
    Env(DirArg),
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The tollgate binary (default: $CARGO_TARGET_DIR/release/tollgate, else target/release/tollgate).
    #[arg(long)]
    pub tollgate: Option<PathBuf>,
    /// One-way delay of every inter-region link.
    #[arg(long, default_value_t = 25)]
    pub delay_ms: u64,
    /// Extra one-way delay drawn from 0..=jitter per chunk or datagram.
    #[arg(long, default_value_t = 2)]
    pub jitter_ms: u64,
    /// Raft heartbeat (also openraft's per-AppendEntries deadline). The defaults are the node's
    /// (250/750/1000, which work up to 100 ms RTT; the old 100/500/1000 stalled every write at 100 ms RTT,
    /// see "WAN timing" in jepsen/README.md). A failover costs about two election timeouts.
    #[arg(long, default_value_t = 250)]
    pub heartbeat_ms: u64,
    #[arg(long, default_value_t = 750)]
    pub election_min_ms: u64,
    #[arg(long, default_value_t = 1000)]
    pub election_max_ms: u64,
    /// Delay between streamed tokens of the mock provider.
    #[arg(long, default_value_t = 5)]
    pub token_delay_ms: u64,
    /// Also write the client environment to this file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// How long to wait for every region to be ready and agree on a leader.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout_s: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ControlTarget {
    #[command(flatten)]
    pub dir: DirArg,
    /// The proxy's control socket (default: DIR/link-proxy.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

impl ControlTarget {
    pub fn socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| self.dir.dir.join("link-proxy.sock"))
    }
}

#[derive(Subcommand, Debug)]
pub enum LinkCli {
    /// Every link's mode, delay and jitter.
    Status,
    /// FROM → TO loses UDP, resets and refuses TCP.
    Drop { from: u64, to: u64 },
    /// FROM → TO buffers everything until healed.
    Hold { from: u64, to: u64 },
    /// Drops both directions between A and B.
    Cut { a: u64, b: u64 },
    /// Cuts every link of NODE.
    Isolate { node: u64 },
    /// Heals A ↔ B, or every link without arguments (held traffic is delivered).
    Heal { a: Option<u64>, b: Option<u64> },
    /// Sets the one-way delay (and jitter) of FROM → TO.
    Delay {
        from: u64,
        to: u64,
        delay_ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
    },
}

impl From<&LinkCli> for LinkCommand {
    fn from(cli: &LinkCli) -> Self {
        match *cli {
            LinkCli::Status => LinkCommand::Status,
            LinkCli::Drop { from, to } => LinkCommand::Drop { from, to },
            LinkCli::Hold { from, to } => LinkCommand::Hold { from, to },
            LinkCli::Cut { a, b } => LinkCommand::Cut { a, b },
            LinkCli::Isolate { node } => LinkCommand::Isolate { node },
            LinkCli::Heal { a, b } => LinkCommand::Heal { a, b },
            LinkCli::Delay { from, to, delay_ms, jitter_ms } => LinkCommand::Delay { from, to, delay_ms, jitter_ms },
        }
    }
}

fn default_tollgate() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("release").join("tollgate")
}

/// The directory as the running processes see it (absolute), when it exists.
fn absolute(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

fn load_state(dir: &Path) -> anyhow::Result<RegionsState> {
    RegionsState::load(dir)?.with_context(|| {
        format!("no regions are up in {} (no state.json); start them with `jepsen regions up`", dir.display())
    })
}

/// Runs a command; `Ok(false)` means "ran, but the answer is no" (exit status 1, e.g. `status`).
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    // Regions are machine-wide: only one harness may build, break or remove them at a time.
    let what = match &cli.command {
        Command::Regions { command: RegionsCommand::Up(_) } => Some("jepsen regions up"),
        Command::Regions { command: RegionsCommand::Down(_) } => Some("jepsen regions down"),
        Command::Run(args) => {
            // Bad input fails at once, not after waiting for another run.
            crate::run::nemesis::parse_list(&args.nemesis)?;
            Some("jepsen run")
        }
        _ => None,
    };
    let _lock = match what {
        // Not root: the command itself refuses with a clearer message than the lock file's permissions.
        Some(what) if rustix::process::geteuid().is_root() => {
            let wait = Duration::from_secs(cli.lock_wait);
            let path = crate::lock::lock_path();
            Some(tokio::task::spawn_blocking(move || crate::lock::acquire(&path, what, wait)).await??)
        }
        _ => None,
    };
    match cli.command {
        Command::LinkProxy { config } => {
            let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
            let config: ProxyConfig = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a link proxy config", config.display()))?;
            let proxy = LinkProxy::start(&config).await?;
            tracing::info!(routes = config.routes.len(), delay_ms = config.delay_ms, "link proxy running");
            proxy.run_until_signal().await?;
            Ok(true)
        }
        Command::Link { target, command } => {
            let reply = control::send(&target.socket(), &LinkCommand::from(&command)).await?;
            for link in reply.links {
                println!(
                    "{} -> {}  {:?}  delay {} ms  jitter {} ms",
                    link.from, link.to, link.state.mode, link.state.delay_ms, link.state.jitter_ms
                );
            }
            Ok(true)
        }
        Command::Regions { command } => run_regions(command).await,
        Command::Measure(args) => crate::measure::run(args).await.map(|()| true),
        Command::Run(args) => crate::run::run(args).await,
    }
}

async fn run_regions(command: RegionsCommand) -> anyhow::Result<bool> {
    match command {
        RegionsCommand::Up(args) => {
            let settings = Settings {
                delay_ms: args.delay_ms,
                jitter_ms: args.jitter_ms,
                heartbeat_ms: args.heartbeat_ms,
                election_timeout_min_ms: args.election_min_ms,
                election_timeout_max_ms: args.election_max_ms,
                token_delay_ms: args.token_delay_ms,
            };
            let options = regions::UpOptions {
                dir: args.dir.dir,
                tollgate: args.tollgate.unwrap_or_else(default_tollgate),
                settings,
                env_file: args.env_file,
                ready_timeout: Duration::from_secs(args.ready_timeout_s),
                extra_config: String::new(),
                clock_skew_ms: 0,
                slow_disk_shim: None,
            };
            let state = regions::up(options).await?;
            println!("three regions up ({} ms one-way between them); state in {}", args.delay_ms, state.dir.display());
            print!("{}", regions::env_lines(&state));
            Ok(true)
        }
        RegionsCommand::Down(dir) => {
            let dir = absolute(&dir.dir);
            regions::down(&dir)?;
            println!(
                "regions down: processes stopped, namespaces, veths and bridge removed (logs kept in {})",
                dir.display()
            );
            Ok(true)
        }
        RegionsCommand::Status { dir, json } => {
            let state = load_state(&absolute(&dir.dir))?;
            let token = regions::admin_token(&state)?;
            let report = regions::status_report(&state, &token).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for node in &report {
                    println!(
                        "region {}  healthy={}  ready={}  leader={}  term={}{}",
                        node.id,
                        node.healthy,
                        node.ready,
                        node.leader.map_or("-".into(), |l| l.to_string()),
                        node.term.map_or("-".into(), |t| t.to_string()),
                        node.error.as_ref().map(|e| format!("  ({e})")).unwrap_or_default()
                    );
                }
            }
            Ok(report.len() == 3 && report.iter().all(|node| node.healthy))
        }
        RegionsCommand::Env(dir) => {
            let state = load_state(&absolute(&dir.dir))?;
            print!("{}", regions::env_lines(&state));
            Ok(true)
        }
    }
}
