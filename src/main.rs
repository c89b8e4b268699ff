//! The `upload-gateway` command: parse arguments, load the configuration, run. Everything else
//! lives in the `upload_gateway` library.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use upload_gateway::config::{Config, LogFormat};
use upload_gateway::server::RunOptions;

// Chosen by measurement (BENCHMARKS.md): the proxy allocates small buffers on every request,
// and glibc's malloc/free was about 8 % of the gateway's CPU under load.
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Measurement builds only (BENCHMARKS.md, allocations per request): mimalloc, counted.
#[cfg(feature = "alloc-count")]
#[global_allocator]
static ALLOCATOR: upload_gateway::alloc_count::Counting = upload_gateway::alloc_count::Counting;

/// Edge API gateway for the finish-upload call (Pingora).
#[derive(Debug, Parser)]
#[command(
    name = "upload-gateway",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a configuration file (the default command).
    Run(RunArgs),
    /// Validate a configuration file and print the effective configuration.
    Check {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Do not bind the listeners for a moment (to check the configuration of a running
        /// instance before an --upgrade, whose ports are taken by design).
        #[arg(long)]
        no_bind: bool,
    },
    /// Run the gateway with a built-in upload service and token issuer on loopback.
    Demo {
        /// The gateway's listener (host:port; a host name is resolved).
        #[arg(long, default_value = "127.0.0.1:8080", value_parser = host_port)]
        listen: std::net::SocketAddr,
        /// The admin listener (/metrics, /healthz, /readyz).
        #[arg(long, default_value = "127.0.0.1:9091", value_parser = host_port)]
        admin_listen: std::net::SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The TOML configuration file.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Take over the listeners of a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    /// Upgrade socket path (for --upgrade).
    #[arg(long)]
    upgrade_sock: Option<String>,
    /// Write the process id to this file (foreground or --daemon); removed at exit.
    #[arg(long)]
    pid_file: Option<String>,
}

/// `host:port` to an address: a literal, or the first address the name resolves to.
fn host_port(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not a host:port address ({e})"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config, no_bind }) => check(&config, !no_bind),
        Some(Command::Demo {
            listen,
            admin_listen,
        }) => demo(&upload_gateway::demo::DemoOptions {
            listen,
            admin_listen,
        }),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("upload-gateway: {}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// `path: line N: ` for a message about `key`, when the file has it.
fn at_line(path: &Path, key: &str) -> String {
    let line = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| upload_gateway::config::line_of(&text, key));
    match line {
        Some(line) => format!("{}: line {line}", path.display()),
        None => path.display().to_string(),
    }
}

fn check(path: &Path, bind: bool) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // The listeners must be able to open, as at start (bound for a moment, then released).
    if let Err(e) = upload_gateway::preflight::check(&config, bind) {
        eprintln!("upload-gateway: {}: {e}", at_line(path, &e.key));
        return ExitCode::from(2);
    }
    print!("{}", config.to_toml());
    eprintln!("upload-gateway: {} is valid", path.display());
    ExitCode::SUCCESS
}

fn run(args: RunArgs) -> ExitCode {
    let Some(path) = args.config else {
        eprintln!(
            "upload-gateway: --config FILE is required (see --help, or try `upload-gateway demo`)"
        );
        return ExitCode::from(2);
    };
    let config = match load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    upload_gateway::logging::init(config.observability.log_format);
    let options = RunOptions {
        upgrade: args.upgrade,
        daemon: args.daemon,
        upgrade_sock: args.upgrade_sock,
        pid_file: args.pid_file,
    };
    match upload_gateway::server::build(config, &options) {
        Ok(server) => server.run(),
        Err(upload_gateway::server::StartError::Listener(e)) => {
            eprintln!("upload-gateway: {}: {e}", at_line(&path, &e.key));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("upload-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(options: &upload_gateway::demo::DemoOptions) -> ExitCode {
    upload_gateway::logging::init(LogFormat::Text);
    match upload_gateway::demo::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upload-gateway demo: {e}");
            ExitCode::FAILURE
        }
    }
}
