//! Command-line interface of `meshd`. Every command prints JSON on stdout; failures
//! print a JSON error object (with a frozen code where the failure is a rejection) on
//! stderr and exit 1. `verify` prints its verdict on stdout either way.

mod advert;
mod identity;
mod input;
mod sign;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mesh_core::{IdentityError, JsonLinesTrace, MeshError, NoTrace, TraceSink};
use serde_json::{Value, json};

/// meshd — libmesh node: identity, signed artifacts, and (soon) the mesh itself.
#[derive(Debug, Parser)]
#[command(name = "meshd", version, about)]
pub(crate) struct Cli {
    /// Directory for the node's identity and stores.
    #[arg(long, global = true, env = "MESHD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Write trace events as JSON lines to FILE, or `-` for stderr.
    #[arg(long, global = true, value_name = "FILE|-")]
    pub(crate) trace: Option<String>,
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
    /// Start the node. For now: load or create the identity, print it, and serve the
    /// seed directory when `--directory` is given (until Ctrl-C).
    Run(advert::RunArgs),
    /// Serve the seed directory over HTTP from the data dir's advertisement store.
    Directory(advert::DirectoryArgs),
    /// Publish or look up signed advertisements.
    #[command(subcommand)]
    Advert(advert::AdvertCommand),
}

/// Context every command gets.
pub(crate) struct Ctx {
    pub(crate) data_dir: PathBuf,
    pub(crate) trace: Arc<dyn TraceSink>,
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let trace: Arc<dyn TraceSink> = match open_trace(cli.trace.as_deref()) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let ctx = Ctx {
        data_dir: cli.data_dir.unwrap_or_else(libmesh::default_data_dir),
        trace,
    };
    let result = match cli.command {
        Command::Identity(cmd) => identity::run(&ctx, cmd),
        Command::Sign(args) => sign::sign(&ctx, args),
        Command::Verify(args) => sign::verify(&args),
        Command::Run(args) => {
            identity::run_placeholder(&ctx).and_then(|code| advert::run_services(&ctx, args, code))
        }
        Command::Directory(args) => advert::directory(&ctx, args),
        Command::Advert(cmd) => advert::run(&ctx, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn open_trace(spec: Option<&str>) -> anyhow::Result<Arc<dyn TraceSink>> {
    Ok(match spec {
        None => Arc::new(NoTrace),
        Some("-") => Arc::new(JsonLinesTrace::new(std::io::stderr())),
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open trace file {path}: {e}"))?;
            Arc::new(JsonLinesTrace::new(file))
        }
    })
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot print JSON: {e}"),
    }
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
