//! `spillway` — the command line. Thin: parsing, printing and exit codes; everything else
//! lives in the library crates.

mod admin;
mod demo;
mod render;
mod tail;

use clap::{Parser, Subcommand};
use spillway_server::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "spillway",
    version,
    about = "PostgreSQL change data capture into a durable change log"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture changes and serve them (the main job).
    Run {
        /// Configuration file (TOML). Without it, the environment alone configures Spillway.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check that PostgreSQL is ready for logical replication, with the fix for each problem.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the change stream of a running Spillway.
    Tail(Box<tail::TailArgs>),
    /// Source, log and sink state of a running Spillway.
    Status(admin::Target),
    /// Administration (`admin cdc status`, `admin cdc trim --before-lsn N`).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Run a throwaway PostgreSQL, capture it and show the change events live.
    Demo {
        /// Exit after the scripted part.
        #[arg(long)]
        once: bool,
    },
}

fn init_tracing(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run { config } => {
                init_tracing(cli.log_json, "info");
                run(config).await
            }
            Command::Check { config } => {
                init_tracing(cli.log_json, "warn");
                check(config).await
            }
            Command::Tail(args) => {
                init_tracing(cli.log_json, "warn");
                tail::tail(*args).await
            }
            Command::Status(target) => {
                init_tracing(cli.log_json, "warn");
                admin::status(target).await
            }
            Command::Admin(cmd) => {
                init_tracing(cli.log_json, "warn");
                admin::run(cmd).await
            }
            Command::Demo { once } => {
                init_tracing(cli.log_json, "warn");
                demo::demo(once).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file: `--config`, else `./spillway.toml` when present, else environment only.
fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let default = PathBuf::from("spillway.toml");
        default.exists().then_some(default)
    })
}

async fn run(config: Option<PathBuf>) -> Result<(), String> {
    let mut signals = ShutdownSignal::install()?;
    let config = Config::load(config_path(config).as_deref()).map_err(|e| e.to_string())?;
    let running = spillway_server::start(config)
        .await
        .map_err(|e| e.to_string())?;
    let stop = signals.wait();
    let handle = &running;
    tokio::select! {
        _ = stop => {
            tracing::info!("stopping: draining and confirming");
            handle.shutdown();
        }
        _ = wait_capture_end(handle) => {}
    }
    running.wait().await.map_err(|e| e.to_string())
}

async fn wait_capture_end(running: &spillway_server::Running) {
    running.finished().await
}

/// SIGTERM / SIGINT (Ctrl-C), listened for from the moment it is installed — so a signal
/// that arrives before anyone waits is not lost (or fatal).
pub(crate) struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub(crate) fn install() -> Result<ShutdownSignal, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let term =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let int =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        Ok(ShutdownSignal { term, int })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

async fn check(config: Option<PathBuf>) -> Result<(), String> {
    use spillway_postgres::catalog::{preflight, CheckScope, Severity};
    let config = Config::load(config_path(config).as_deref()).map_err(|e| e.to_string())?;
    let mut conn = spillway_postgres::PgConnection::connect(&config.source.connect, false)
        .await
        .map_err(|e| e.to_string())?;
    let scope = CheckScope {
        slot: config.source.slot.clone(),
        publication: config.source.publication.clone(),
        tables: config
            .source
            .tables
            .iter()
            .map(|(t, _)| t.as_str().to_owned())
            .collect(),
    };
    let findings = preflight(&mut conn, &scope)
        .await
        .map_err(|e| e.to_string())?;
    conn.close().await;
    let mut errors = 0;
    for f in &findings {
        let tag = match f.severity {
            Severity::Ok => "ok     ",
            Severity::Warning => "warning",
            Severity::Error => {
                errors += 1;
                "error  "
            }
        };
        if f.fix.is_empty() {
            println!("{tag} {}", f.what);
        } else {
            println!("{tag} {}\n        fix: {}", f.what, f.fix);
        }
    }
    if errors > 0 {
        Err(format!(
            "{errors} problem(s) must be fixed before `spillway run`"
        ))
    } else {
        println!("ready for `spillway run`");
        Ok(())
    }
}
