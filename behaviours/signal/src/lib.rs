//! # mesh-signal
//!
//! Signaling between libmesh nodes (DESIGN.md, "Signaling and swarms"): signed
//! `signal-frame.v1` frames (the family lives in `mesh-core`) carry connect requests,
//! accepts and rejects, candidate addresses and opaque setup payloads, possibly through
//! signaling hosts.
//!
//! - [`correlation`]: the per-correlation state machine with its timeouts (pure logic,
//!   it takes `now`);
//! - [`codec`]: the wire form (one frame or a batch per request, per-frame answers);
//! - [`dedup`]: the duplicate filter (digests of taken frames, until they expire);
//! - [`Behaviour`]: `/mesh/signal/1.0.0`, frames sent directly or through a signaling
//!   host that forwards them (hop limit, per-sender rate limit, duplicate suppression),
//!   with a frame allowance per connected peer and per-peer correlation quotas;
//!   the receiver verifies `from`'s signature; it sweeps its correlation table itself,
//!   on a timer.
//!
//! - [`group`]: discovery-key groups (the "swarms" of the specifications, named apart
//!   from libp2p's `Swarm`): keys, `swarm-presence.v1` member tables with
//!   expiry (pure logic; the node carries presences on gossipsub).

mod allowance;
mod behaviour;
mod cbor_items;
pub mod codec;
pub mod correlation;
pub mod dedup;
pub mod frames;
pub mod group;
mod verify;

pub use behaviour::{Behaviour, Config, Event, MAX_STREAMS, MIN_SWEEP_INTERVAL, PROTOCOL};
pub use correlation::{Correlations, Limits, Role, State, Transition};
pub use frames::{FRAME_TTL_SECS, frame, random_id};
