//! # libmesh
//!
//! The composed libmesh node and the pieces of the `meshd` binary. The foundation types
//! live in [`mesh_core`], re-exported here as [`core`].

pub use mesh_core as core;

pub mod cli;
