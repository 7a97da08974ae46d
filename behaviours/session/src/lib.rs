//! # mesh-session
//!
//! libmesh sessions, usable in any rust-libp2p application:
//!
//! - [`Behaviour`]: `/mesh/session/1.0.0` — on each new connection the dialer sends a
//!   signed `peer-handshake.v1` hello with its `capability-advertisement.v1`, the listener
//!   answers a signed ack with its own, and both derive the session secret; refusals carry
//!   frozen codes, hard ones close the connection. It runs its own libp2p ping
//!   (`/ipfs/ping/1.0.0`) for keepalive and reports each result as [`Event::Pinged`], so
//!   an application composes it alone, with nothing to feed it; and it runs the peer
//!   governor ([`Behaviour::add_peer`]);
//! - [`marker::Behaviour`]: `/mesh/marker/1.0.0` for participant-signed
//!   `signal-marker-envelope.v1` messages;
//! - the pure parts, each tested on its own: [`handshake`] (the handshake state machine:
//!   connections and messages in, outputs out, `now` passed in), [`artifacts`] (hello,
//!   ack, capability advertisements with signed self-issued passports, capability
//!   acceptance), [`secret`] (three X25519 terms and HKDF), [`replay`] (the handshake
//!   replay guard), [`governor`] (cold/warm/hot/blocked peers, backoff, blocking, rate
//!   limits, the bounded peer table, `peer-status.v1`), [`keepalive`] (lost/restored from ping results),
//!   [`transport`] (the `transport/profile` of a connection), [`protocol`] (the wire
//!   messages).
//!
//! A handshake is one request round after the connection (plus multistream-select's
//! negotiation round, which `V1Lazy` on the swarm would save; `meshd` keeps `V1`, see
//! its README). When the swarm dials a peer by id, the hello is built while the
//! connection is set up.

mod ahead;
pub mod artifacts;
mod behaviour;
mod config;
mod driver;
mod event;
pub mod governor;
pub mod handshake;
pub mod keepalive;
pub mod marker;
mod own;
pub mod protocol;
pub mod replay;
pub mod room;
pub mod secret;
pub mod transport;

pub use behaviour::{Behaviour, MAX_STREAMS};
pub use config::{Clock, Config};
pub use event::{Event, Session};
pub use transport::TransportProfile;
