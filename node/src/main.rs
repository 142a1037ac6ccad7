//! The `tollgate` binary: parse flags, set up logging, call into the library.

use clap::Parser;
use tollgate::cli::{Cli, Command, GuardCommand};
use tollgate::{signals, Config, Listeners};

/// mimalloc instead of glibc's malloc: per-thread free lists make the many small, short-lived allocations
/// of a request (and a span built on a worker and freed on the exporter's thread) cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Everything this process creates — the Raft data dir, sled's files, env files — is for its owner
    // only: the data dir holds provider keys and the audit trail.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    // `tollgate dev` starts three nodes at once: openraft's warnings about the first election's crossing
    // vote messages are expected there and would bury the banner. `RUST_LOG` overrides either default.
    let default_filter = match cli.command {
        Command::Dev(_) => "info,openraft=error",
        _ => "info,openraft=warn",
    };
    // Workers may spin briefly before parking (`node.idle_spin_us`); the hook is free while that is 0.
    let census = tollgate::idle_spin::EpollCensus::take();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(tollgate::idle_spin::on_park)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Before anything else opens an epoll instance: the census tells the runtime's apart.
    let spin = tollgate::idle_spin::adopt_runtime_epoll(&census);
    // Logs, and OTLP traces when an endpoint is configured (the exporter's gRPC channel needs the runtime).
    // `serve` reads `[node.otlp]` before the subscriber is set up (the file is read again, with its errors
    // reported, when the node starts).
    let otlp = match &cli.command {
        Command::Serve(args) => args.load_config().ok().and_then(|config| config.node.otlp),
        _ => None,
    };
    let telemetry = {
        let _runtime = runtime.enter();
        tollgate::telemetry::init(default_filter, otlp.as_ref())
    };
    if let Err(reason) = spin {
        tracing::debug!(%reason, "idle spinning unavailable");
    }
    let result = runtime.block_on(dispatch(cli.command));
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    let command = match command.admin() {
        Ok((admin, admin_command)) => return tollgate::admin_client::run(admin, admin_command).await,
        Err(command) => command,
    };
    match command {
        Command::Serve(args) => {
            let config = args.load_config()?;
            if let Some(target) = &config.node.access_log {
                tollgate::access_log::start(target, config.node.id)?;
            }
            let listeners = Listeners::bind(&config).await?;
            tollgate::run(config, listeners, signals::wait_for_shutdown_signal()).await
        }
        Command::Dev(args) => tollgate::dev::run(args).await,
        Command::CheckConfig { config } => {
            let config = Config::load(&config)?;
            println!(
                "config ok: {} provider(s), {} model(s), {} key(s)",
                config.providers.len(),
                config.models.len(),
                config.keys.len()
            );
            Ok(())
        }
        Command::Guard(GuardCommand::Scan { kind, config, name }) => {
            tollgate::guard::scan::run_stdio(kind, config.as_deref(), name.as_deref())
        }
        other => anyhow::bail!("unexpected command {other:?}"),
    }
}
