//! # mesh-admission
//!
//! Relay admission by identity for rust-libp2p's circuit relay v2 (DESIGN.md, "Relay
//! admission"). rust-libp2p's relay limits by rate only; this crate adds who may use it.
//!
//! - [`policy`]: the [`AdmissionPolicy`] trait and the policies open,
//!   require-valid-advertisement, allowlist of node ids, federation ids, and their
//!   compositions ([`AllOf`], [`AnyOf`]); pure logic;
//! - [`implicit`]: grants for standard libp2p relay clients, which never ask (pure);
//! - [`grants`]: the relay's table of live grants, circuits counted per node id,
//!   revocation with a block (pure logic, `now` passed in);
//! - [`gate`]: the relay's checks of a signed `relay-admission-request.v1` (signature,
//!   signer = connection peer, addressed to this relay, fresh `ts`, unused nonce, not
//!   revoked, policy) and issuing the signed `relay-admission-grant.v1`;
//! - [`codec`]: `/mesh/relay-admission/1.0.0` on the wire;
//! - [`server::Behaviour`]: the relay itself: owns a [`libp2p::relay::Behaviour`],
//!   answers requests and enforces grants on it (admission check first among the
//!   relay's rate limiters, every relay event counted before it is handed on as
//!   [`server::Event::Relay`], blocked peers' connections denied, revocation closes
//!   circuits); nothing to wire up, nothing to forget;
//! - [`client::Behaviour`]: asks before reserving, renews before expiry, retries with
//!   exponential back-off and jitter ([`Backoff`]), reports denials;
//! - [`endorsement`]: `federation-endorsement.v1`, signed federation membership;
//! - [`liveness`]: when a held relay that stopped answering counts as lost (pure).
//!
//! Both behaviours read the wall clock through a [`Clock`] in their config
//! ([`server::Config::clock`], [`client::Config::clock`]; [`system_clock`] by default).
//!
//! ## What enforcement covers, and what it does not
//!
//! Enforcement rides on rust-libp2p's circuit relay v2 server (libp2p-relay 0.22), which
//! offers rate-limiter hooks, one per-circuit byte cap and one per-circuit duration cap
//! for the whole relay, and no way to close a single circuit. Hence:
//!
//! - **Reservations and circuits need a live grant** of the requesting node (the circuit's
//!   source), checked when the request arrives; refused ones get
//!   `RESOURCE_LIMIT_EXCEEDED` on the wire and [`server::Event::Refused`] locally. A
//!   reservation grant also admits circuits from the node; a circuit grant admits only
//!   circuits.
//! - **Standard libp2p clients get implicit grants** ([`implicit`]): a peer without a
//!   live grant of the kind it needs (and not revoked) is admitted when the policy
//!   allows it from what the relay knows without a request: its node id (the peer id
//!   of its Ed25519 key) and its advertisement in [`server::Config::adverts`]. So `Open`
//!   and `Allowlist` serve any libp2p relay client they would admit,
//!   `RequireAdvertisement` those whose advertisement the relay has, and `Federation`
//!   (endorsements travel only in signed requests) none: those get the policy's coded
//!   denial. Implicit grants are table entries like requested ones (per-IP share,
//!   table cap, idle eviction, unused lapse, quotas, revocation), are counted against
//!   [`server::Config::requests_per_ip`] like requests, and are renewed implicitly
//!   while the node holds a reservation or circuit and the policy still allows it.
//!   [`server::Config::implicit_grants`] turns them off.
//! - **Circuit quotas are per node id**, across all of the node's connections to the
//!   relay (several devices or transports with one identity share one quota). A request
//!   counts from the moment the relay allows it, so simultaneous requests cannot
//!   overshoot the quota.
//! - **Byte and duration caps are the relay's**: [`server::Behaviour`] builds its relay
//!   with `max_circuit_bytes` and `max_circuit_duration` set to [`server::Config::caps`],
//!   for every circuit alike (relay v2 cuts a circuit after slightly more than its byte
//!   cap, counting the relayed connection's own framing and encryption). A grant whose
//!   `circuit-secs` is smaller than the cap is enforced by this crate, by closing **all**
//!   of the source node's connections to the relay (its other circuits and its
//!   reservation go too) within about two seconds of the limit. A grant whose
//!   `circuit-bytes` is smaller than the cap is **not** enforced: the relay does not
//!   report bytes per circuit, so such a circuit may carry up to the relay's cap. The
//!   limit relay v2 announces to both ends of a circuit is the cap, not the grant's.
//! - **Grant expiry**: a lapsed grant admits no new reservation (including the relay
//!   client's periodic reservation renewal) and no new circuit. Circuits the node opened
//!   are closed like overdue ones (all of its connections) unless the grant was renewed
//!   in time ([`client::Behaviour::keep`] does). A reservation whose grant lapses
//!   without renewal ends at once: the node's connections to the relay are closed (relay
//!   v2 has no way to drop one reservation), so its listener closes.
//! - **Unused grants and room**: a grant never used for a reservation or a circuit
//!   lapses after [`server::Config::unused_grant`] (2 min), whatever its `expires-at`.
//!   The table holds [`server::Config::max_nodes`] nodes, at most
//!   [`server::Config::max_nodes_per_ip`] asking from one IPv4 address or IPv6 /64
//!   ([`IpKey`]); when either is full, an idle node (no reservation, no circuit) is
//!   evicted, least recently active first, before anyone is refused. Requests are
//!   rate-limited per IP key ([`server::Config::requests_per_ip`]) before their
//!   signature is checked.
//! - **Federations** are proven by a [`FederationEndorsement`] signed by a key the
//!   operator configures ([`Federation::endorsers`]) and carried in the request; a
//!   node's own advertisement claiming a `federation/id` admits nothing.
//! - **Circuit grants naming a target** are checked when the circuit has opened (the relay
//!   only learns the destination then): a circuit to another destination is closed with
//!   all of the source's connections.
//! - **Revocation** ([`server::Behaviour::revoke`]) drops the node's grants, closes its
//!   connections (so its reservation and every circuit it is the source of end at once)
//!   and refuses its connections for [`server::Config::block`]. When the revoked node is a
//!   circuit's destination, relay v2 keeps the source's half of the circuit until the
//!   source writes again (the write then fails).
//! - Circuits *to* a node are not counted against the destination's grant, and the
//!   destination needs no live grant of its own once it holds a reservation.
//!
//! ```no_run
//! # use mesh_admission::server;
//! use libp2p::swarm::NetworkBehaviour;
//!
//! // The relay's whole behaviour: circuit relay v2 with admission (add your own
//! // protocols as further fields).
//! #[derive(NetworkBehaviour)]
//! struct Relay {
//!     relay: server::Behaviour,
//! }
//!
//! let key = mesh_core::NodeKeypair::generate();
//! let relay = Relay {
//!     // Or `with_relay_config(key, config, base)` to start from your own relay v2
//!     // settings (limits, rate limiters).
//!     relay: server::Behaviour::new(key.clone(), server::Config::default()),
//! };
//! // Relay events arrive as `server::Event::Relay`, already counted.
//! # let _ = relay;
//! ```

pub mod backoff;
pub mod client;
pub mod codec;
pub mod endorsement;
pub mod gate;
pub mod grants;
pub mod implicit;
pub use mesh_core::ipkey;
pub mod liveness;
pub mod policy;
mod replay;
pub mod request;
pub mod server;

pub use backoff::Backoff;
pub use codec::PROTOCOL;
pub use endorsement::FederationEndorsement;
pub use gate::{AdvertSource, Gate, NoAdverts};
pub use grants::{Grant, Grants, Rules};
pub use implicit::Implicit;
pub use liveness::Liveness;
pub use mesh_core::GrantLimits;
pub use mesh_core::IpKey;
pub use policy::{
    AdmissionPolicy, AllOf, Allowlist, AnyOf, Decision, Federation, Open, Purpose, Query,
    RequireAdvertisement,
};
pub use replay::Nonces;

/// The wall clock the behaviours read (grant issue and expiry, request freshness,
/// blocks, circuit durations). [`system_clock`] by default; tests and simulations
/// inject their own.
pub type Clock = std::sync::Arc<dyn Fn() -> mesh_core::Timestamp + Send + Sync>;

/// The system clock ([`mesh_core::Timestamp::now`]).
pub fn system_clock() -> Clock {
    std::sync::Arc::new(mesh_core::Timestamp::now)
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

/// A fresh 128-bit nonce, base64url without padding.
pub(crate) fn random_nonce() -> String {
    use base64::Engine;
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
