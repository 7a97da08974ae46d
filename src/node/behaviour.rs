//! The one behaviour of the node: the gates first (connection and memory limits), then
//! libp2p's own protocols, then libmesh's. Each field's events reach the node loop as
//! one variant of [`MeshBehaviourEvent`]. This file holds only the derived struct; it
//! is built in `build.rs`.

// The derive generates `MeshBehaviourEvent` with one undocumented variant per field;
// each variant carries the event type of the field documented below.
#![allow(missing_docs)]

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{autonat, memory_connection_limits, relay};

use super::store::SharedAdverts;

/// All components of the node, in the order the swarm consults them.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub struct MeshBehaviour {
    /// Established/pending connection caps (first, so it refuses before anyone works);
    /// AutoNAT dial-backs are exempt from the per-peer cap (see [`super::dial_back`]).
    pub limits: super::limits::Limits,
    /// Refuses new connections under memory pressure.
    pub memory: memory_connection_limits::Behaviour,
    /// identify (`/ipfs/id/1.0.0`, push included; observed addresses only when they
    /// are network addresses, see [`super::identify_observed`]).
    pub identify: super::identify_observed::Identify,
    /// The public Amino DHT (`/ipfs/kad/1.0.0`): peer routing and provider records.
    pub amino: super::kad_scope::ScopedKad,
    /// The mesh DHT (`/mesh/kad/1.0.0`): signed advertisements, validated on put.
    pub mesh_kad: super::kad_scope::ScopedKad,
    /// gossipsub: signed, strict, validated by the node before forwarding.
    pub gossipsub: super::gossip_filter::Gossipsub,
    /// AutoNAT v2 client (tests our addresses; off with `autonat = false`).
    pub autonat_client: Toggle<autonat::v2::client::Behaviour>,
    /// AutoNAT v2 server (tests others'; off with `autonat = false`), closing each
    /// dial-back connection once its test is over (see [`super::dial_back`]).
    pub autonat_server: Toggle<super::dial_back::AutonatServer>,
    /// Circuit relay v2 server with relay admission (off unless configured): answers
    /// `/mesh/relay-admission/1.0.0` and enforces grants on the relay it owns.
    pub admission: Toggle<mesh_admission::server::Behaviour>,
    /// Relay admission, client side: asks relays before reserving or opening
    /// circuits, renews grants.
    pub admission_client: mesh_admission::client::Behaviour,
    /// Circuit relay v2 client.
    pub relay_client: relay::client::Behaviour,
    /// Direct connection upgrade through relay.
    pub dcutr: super::dcutr_scope::Dcutr,
    /// `/mesh/advert/1.0.0`.
    pub advert: mesh_advert::Behaviour<SharedAdverts>,
    /// `/mesh/session/1.0.0`, with libp2p ping (`/ipfs/ping/1.0.0`) inside: it drives
    /// session keepalive and each result comes out as `mesh_session::Event::Pinged`.
    pub session: mesh_session::Behaviour,
    /// `/mesh/marker/1.0.0`.
    pub marker: mesh_session::marker::Behaviour,
    /// `/mesh/signal/1.0.0` (signaling frames; a host forwards between session
    /// peers).
    pub signal: mesh_signal::Behaviour,
    /// `/mesh/swarm-table/1.0.0`: a newcomer to a discovery-key swarm gets the member
    /// table (signed presences) from one member in one exchange.
    pub swarm_table: libp2p::request_response::Behaviour<mesh_signal::group::exchange::Codec>,
    /// `/perf/1.0.0` streams (off unless configured).
    pub perf: Toggle<crate::perf::Behaviour>,
}
