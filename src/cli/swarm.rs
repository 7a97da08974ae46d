//! `meshd swarm …`, `meshd signal send` and `meshd connect`: discovery-key swarms,
//! signaling and the routing policy, through the running node's control API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::Ctx;
use super::node::{ClientArgs, call};

/// `meshd swarm …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SwarmCommand {
    /// Join the swarm KEY (64 hex digits, or a name that is hashed into a key).
    Join {
        /// The discovery key or a name.
        key: String,
    },
    /// Leave the swarm KEY, announcing the departure.
    Leave {
        /// The discovery key or a name.
        key: String,
    },
    /// The members of the swarm KEY that the node knows.
    Members {
        /// The discovery key or a name.
        key: String,
    },
}

/// `meshd signal …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SignalCommand {
    /// Send the file's bytes to NODE_ID as a setup payload (opaque to libmesh, e.g.
    /// an SDP offer), directly or through a signaling host.
    Send {
        /// The recipient's node id.
        node_id: String,
        /// The payload (at most 16 KiB).
        #[arg(long, value_name = "FILE")]
        payload_file: PathBuf,
        /// Its media type, e.g. application/sdp.
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
    },
}

pub(crate) fn swarm(
    ctx: &Ctx,
    command: SwarmCommand,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    let (path, key) = match command {
        SwarmCommand::Join { key } => ("/swarm/join", key),
        SwarmCommand::Leave { key } => ("/swarm/leave", key),
        SwarmCommand::Members { key } => ("/swarm/members", key),
    };
    call(ctx, client, Method::POST, path, Some(json!({"key": key})))
}

pub(crate) fn signal(
    ctx: &Ctx,
    command: SignalCommand,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    let SignalCommand::Send {
        node_id,
        payload_file,
        content_type,
    } = command;
    let max = libmesh::node::MAX_SETUP_BYTES;
    let meta = std::fs::metadata(&payload_file)
        .with_context(|| format!("payload file {}", payload_file.display()))?;
    if meta.len() > max as u64 {
        return Err(mesh_core::MeshError::invalid(format!(
            "payload file {} has {} bytes; at most {max}",
            payload_file.display(),
            meta.len()
        ))
        .into());
    }
    let data = std::fs::read(&payload_file)
        .with_context(|| format!("payload file {}", payload_file.display()))?;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    call(
        ctx,
        client,
        Method::POST,
        "/signal",
        Some(json!({"node_id": node_id, "data_b64": b64, "content_type": content_type})),
    )
}
