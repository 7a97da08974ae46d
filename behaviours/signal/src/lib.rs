//! # mesh-signal
//!
//! Signaling between libmesh nodes (DESIGN.md, "Signaling and swarms"): signed
//! `signal-frame.v1` frames (the family lives in `mesh-core`) carry connect requests,
//! accepts and rejects, candidate addresses and opaque setup payloads, possibly through
//! signaling hosts.
//!
//! This crate holds the pure logic so far: [`correlation`], the per-correlation state
//! machine with its timeouts (it takes `now`, no I/O). The `/mesh/signal/1.0.0`
//! behaviour, host forwarding and discovery-key swarms build on it.

pub mod correlation;

pub use correlation::{Correlations, Limits, Role, State, Transition};
