//! # mesh-session
//!
//! libmesh sessions. Present so far (pure logic, no I/O):
//!
//! - [`artifacts`]: building hello, ack and capability advertisements (with signed
//!   self-issued passports) and accepting a peer's capabilities;
//! - [`secret`]: the session secret both ends derive from three X25519 terms with HKDF;
//! - [`replay`]: the replay guard of the hello/ack handshake (clock skew, nonce memory,
//!   pending hellos);
//! - [`governor`]: cold/warm/hot/blocked peers, backoff, blocking, rate limits, and the
//!   `peer-status.v1` read model.
//!
//! The `/mesh/session/1.0.0` behaviour, capability exchange, keepalive and the governor
//! build on these.

pub mod artifacts;
mod behaviour;
pub mod governor;
pub mod keepalive;
pub mod marker;
pub mod protocol;
pub mod replay;
pub mod secret;

pub use behaviour::{Behaviour, Clock, Config, Event, Session};
