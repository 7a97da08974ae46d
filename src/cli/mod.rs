//! Command-line interface of `meshd`. Every command prints JSON on stdout (but
//! `completions` and `man`, which print a script and a roff page); failures
//! print a JSON error object (with a frozen code where the failure is a rejection) on
//! stderr and exit 1. `verify` prints its verdict on stdout either way.

mod advert;
mod control_url;
mod docs;
mod identity;
mod input;
mod node;
pub(crate) mod private_dir;
mod relay;
mod sign;
mod signals;
mod swarm;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use hyper::Method;
use mesh_core::{IdentityError, JsonLinesTrace, MeshError, NoTrace, TraceSink};
use serde_json::{Value, json};

/// meshd — the libmesh node: run it, talk to it, manage its identity and artifacts.
#[derive(Debug, Parser)]
#[command(name = "meshd", version = libmesh::node::build::VERSION, about)]
pub(crate) struct Cli {
    /// Directory for the node's identity and stores.
    #[arg(long, global = true, env = "MESHD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Write trace events as JSON lines to FILE, or `-` for stderr.
    #[arg(long, global = true, value_name = "FILE|-")]
    pub(crate) trace: Option<String>,
    /// Rotate the trace file past this many bytes (FILE becomes FILE.1).
    #[arg(long, global = true, value_name = "BYTES", default_value_t = libmesh::trace_file::DEFAULT_MAX_BYTES)]
    pub(crate) trace_max_bytes: u64,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage the node identity.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Sign a payload with the node's key and print the signed artifact.
    Sign(sign::SignArgs),
    /// Verify a signed artifact: prints {"valid": …}, exit 0 when valid, 1 when not.
    Verify(sign::VerifyArgs),
    /// Run the node (until Ctrl-C or SIGTERM): prints one JSON line with its ids, listen addresses
    /// and control API once it listens.
    Run(Box<node::RunArgs>),
    /// Status of the running node.
    Status(node::ClientArgs),
    /// Peers connected to the running node.
    Peers(node::ClientArgs),
    /// Find a node by id through the running node (store, mesh DHT, Amino).
    Lookup {
        /// The node id.
        node_id: String,
        /// Skip the node's store: ask the mesh DHT (then Amino).
        #[arg(long)]
        fresh: bool,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Connect the running node to a node id, peer id or multiaddr.
    Dial {
        /// The target.
        target: String,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Signal markers through the running node.
    Marker {
        #[command(subcommand)]
        command: node::MarkerCommand,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Gossipsub topics on the running node.
    Gossip {
        #[command(subcommand)]
        command: node::GossipCommand,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Connect the running node to NODE_ID by the routing policy (direct, signaling
    /// then direct, relay); prints the chosen path and timings.
    Connect {
        /// The node id.
        node_id: String,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Discovery-key swarms on the running node.
    Swarm {
        #[command(subcommand)]
        command: swarm::SwarmCommand,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Relay admission grants of the running relay server.
    Relay {
        #[command(subcommand)]
        command: relay::RelayCommand,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Signaling frames through the running node.
    Signal {
        #[command(subcommand)]
        command: swarm::SignalCommand,
        #[command(flatten)]
        client: node::ClientArgs,
    },
    /// Serve the seed directory over HTTP from the data dir's advertisement store.
    Directory(advert::DirectoryArgs),
    /// Publish or look up signed advertisements.
    #[command(subcommand)]
    Advert(advert::AdvertCommand),
    /// Print the shell completion script for SHELL (e.g. `meshd completions bash >
    /// /etc/bash_completion.d/meshd`).
    Completions(docs::CompletionsArgs),
    /// Print the manual page meshd(1) (roff), or write every page with --out-dir.
    Man(docs::ManArgs),
}

/// Context every command gets.
pub(crate) struct Ctx {
    pub(crate) data_dir: PathBuf,
    pub(crate) trace: Arc<dyn TraceSink>,
    /// The `--trace` argument (the node opens its own sink from the config).
    pub(crate) trace_spec: Option<String>,
    /// The `--trace-max-bytes` argument.
    pub(crate) trace_max_bytes: u64,
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let trace: Arc<dyn TraceSink> = match open_trace(cli.trace.as_deref(), cli.trace_max_bytes) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let ctx = Ctx {
        data_dir: cli.data_dir.unwrap_or_else(libmesh::default_data_dir),
        trace,
        trace_spec: cli.trace.clone(),
        trace_max_bytes: cli.trace_max_bytes,
    };
    // Every command that reads or writes the data dir checks it first (see
    // `private_dir`), `identity` creating it; `run` checks (and creates) the directory
    // its configuration names instead (`node::run`).
    let uses_data_dir = !matches!(
        cli.command,
        Command::Verify(_) | Command::Completions(_) | Command::Man(_) | Command::Run(_)
    );
    let create = matches!(cli.command, Command::Identity(_));
    if uses_data_dir && let Err(e) = private_dir::ensure_private(&ctx.data_dir, create) {
        return fail(&e);
    }
    let result = match cli.command {
        Command::Identity(cmd) => identity::run(&ctx, cmd),
        Command::Sign(args) => sign::sign(&ctx, args),
        Command::Verify(args) => sign::verify(&args),
        Command::Run(args) => node::run(&ctx, *args),
        Command::Status(c) => node::call(&ctx, &c, Method::GET, "/status", None),
        Command::Peers(c) => node::call(&ctx, &c, Method::GET, "/peers", None),
        Command::Lookup {
            node_id,
            fresh,
            client,
        } => node::call(
            &ctx,
            &client,
            Method::POST,
            "/lookup",
            Some(json!({"node_id": node_id, "fresh": fresh})),
        ),
        Command::Dial { target, client } => node::call(
            &ctx,
            &client,
            Method::POST,
            "/dial",
            Some(json!({"target": target})),
        ),
        Command::Marker { command, client } => match command.request() {
            Ok((path, body)) => node::call(&ctx, &client, Method::POST, path, Some(body)),
            Err(e) => Err(e.into()),
        },
        Command::Gossip { command, client } => match command {
            node::GossipCommand::Subscribe { topic } => node::call(
                &ctx,
                &client,
                Method::POST,
                "/subscribe",
                Some(json!({"topic": topic})),
            ),
            node::GossipCommand::Publish { topic, text } => node::call(
                &ctx,
                &client,
                Method::POST,
                "/gossip",
                Some(json!({"topic": topic, "data": text})),
            ),
        },
        Command::Connect { node_id, client } => node::call(
            &ctx,
            &client,
            Method::POST,
            "/connect",
            Some(json!({"node_id": node_id})),
        ),
        Command::Swarm { command, client } => swarm::swarm(&ctx, command, &client),
        Command::Signal { command, client } => swarm::signal(&ctx, command, &client),
        Command::Relay { command, client } => relay::relay(&ctx, command, &client),
        Command::Directory(args) => advert::directory(&ctx, args),
        Command::Advert(cmd) => advert::run(&ctx, cmd),
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// `meshd`'s log filter when `RUST_LOG` is not set: warnings and errors, except
/// request-response's warning for every inbound stream it drops at its per-connection
/// cap, which a peer triggers at will (one line per stream it opens beyond the cap) and
/// which says nothing an operator can act on.
const DEFAULT_LOG_FILTER: &str = "warn,libp2p_request_response::handler=error";

/// Logs to standard error through `RUST_LOG` (or [`DEFAULT_LOG_FILTER`]), with at most
/// ten warnings or errors a minute from any one line of code
/// ([`libmesh::log_limit`]): a peer makes libp2p's crates warn once per bad message.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(libmesh::log_limit::LogLimit::stderr(
            libmesh::log_limit::Budget::default(),
        ))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
}

pub(crate) fn open_trace(spec: Option<&str>, max_bytes: u64) -> anyhow::Result<Arc<dyn TraceSink>> {
    Ok(match spec {
        None => Arc::new(NoTrace),
        Some("-") => Arc::new(JsonLinesTrace::new(std::io::stderr())),
        Some(path) => {
            let file = libmesh::trace_file::RotatingFile::open(Path::new(path), max_bytes)
                .map_err(|e| anyhow::anyhow!("cannot open trace file {path}: {e}"))?;
            Arc::new(JsonLinesTrace::new(file))
        }
    })
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => print_line_or_exit(&s),
        Err(e) => eprintln!("cannot print JSON: {e}"),
    }
}

/// Writes one line to stdout, or ends the command when it cannot be written: quietly
/// with 141 (128 + SIGPIPE, as a process killed by the signal) when the reader closed
/// the pipe, else with 1 and a line on stderr.
pub(crate) fn print_line_or_exit(line: &str) {
    let Err(e) = print_line(line) else {
        return;
    };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("cannot write to stdout: {e}");
    std::process::exit(1);
}

/// Writes one line to stdout. Unlike `println!`, a reader that went away (`meshd status
/// | head -1`) is an error to handle, not a panic.
pub(crate) fn print_line(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// The JSON error object of any failure: the frozen code where there is one.
pub(crate) fn error_json(e: &anyhow::Error) -> Value {
    if let Some(m) = e.downcast_ref::<MeshError>() {
        return m.to_json();
    }
    if let Some(i) = e.downcast_ref::<IdentityError>() {
        if let Some(code) = i.code() {
            return json!({"error/code": code.as_str(), "error/class": code.class(), "detail": i.to_string()});
        }
        return json!({"error": "identity", "detail": i.to_string()});
    }
    json!({"error": "failed", "detail": format!("{e:#}")})
}

fn fail(e: &anyhow::Error) -> ExitCode {
    match serde_json::to_string(&error_json(e)) {
        Ok(s) => eprintln!("{s}"),
        Err(_) => eprintln!("{e:#}"),
    }
    ExitCode::FAILURE
}
