//! # libmesh
//!
//! The composed libmesh node ([`node::Node`]: one swarm with libp2p's components and
//! libmesh's behaviours, a command handle and one event stream), its durable
//! advertisement store, the seed directory, the control and metrics HTTP API, and the
//! `meshd` binary. The foundation types live in [`mesh_core`], re-exported here as
//! [`core`].

pub use mesh_core as core;

pub mod advert_store;
pub mod control;
pub mod control_auth;
pub mod control_socket;
pub mod directory;
pub mod directory_client;
pub mod directory_hosts;
pub mod http_client;
pub mod http_conns;
pub mod http_serve;
pub mod http_stall;
pub mod log_limit;
pub mod mesh_client;
pub mod node;
pub mod perf;
pub mod shared_store;
pub mod status_cache;
pub mod trace_file;
pub mod web;

/// Default directory for node data when `--data-dir` is not given: the platform data
/// directory (`$XDG_DATA_HOME/libmesh`, `~/.local/share/libmesh` on Linux), or
/// `./.libmesh` where the platform has none.
pub fn default_data_dir() -> std::path::PathBuf {
    dirs::data_dir()
        .map(|d| d.join("libmesh"))
        .unwrap_or_else(|| std::path::PathBuf::from(".libmesh"))
}
