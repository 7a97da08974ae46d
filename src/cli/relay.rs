//! `meshd relay grants` and `meshd relay revoke NODE_ID`: the admission grants of a
//! running relay server, through its control API.

use std::process::ExitCode;

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::Ctx;
use super::node::{ClientArgs, call};

/// `meshd relay …`.
#[derive(Debug, Subcommand)]
pub(crate) enum RelayCommand {
    /// The live admission grants (node, ticket, purpose, expiry, limits, open circuits).
    Grants,
    /// Revoke NODE_ID's grants: its reservation and circuits are closed and it is
    /// blocked for `admission.block_secs`.
    Revoke {
        /// The node id.
        node_id: String,
    },
}

pub(crate) fn relay(
    ctx: &Ctx,
    command: RelayCommand,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    match command {
        RelayCommand::Grants => call(ctx, client, Method::GET, "/relay/grants", None),
        RelayCommand::Revoke { node_id } => call(
            ctx,
            client,
            Method::POST,
            "/relay/revoke",
            Some(json!({"node_id": node_id})),
        ),
    }
}
