//! Builds the node's [`MeshBehaviour`] from its configuration: every component with
//! the settings the node gives it.

use libp2p::{
    PeerId, StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, kad,
    memory_connection_limits, relay,
};
use mesh_core::{NodeKeypair, ReadBudget};

use super::behaviour::MeshBehaviour;
use super::config::{KadMode, NodeConfig};
use super::store::SharedAdverts;

/// The identify protocol version libmesh nodes announce.
pub const IDENTIFY_PROTOCOL: &str = "/ipfs/id/1.0.0";
/// The agent version prefix.
pub const AGENT: &str = concat!("libmesh/", env!("CARGO_PKG_VERSION"));
/// The version with the build's git revision when it was built from a checkout
/// (`0.1.0 (git 1a2b3c4d5e6f)`), see `build.rs`.
pub const VERSION: &str = env!("MESHD_VERSION");

/// What the behaviour constructor needs besides the key.
pub struct Parts {
    /// The advertisement store shared with the directory.
    pub store: SharedAdverts,
    /// Session settings (trace sink, governor limits).
    pub session: mesh_session::Config,
    /// Marker settings.
    pub marker: mesh_session::marker::Config,
    /// Signaling settings.
    pub signal: mesh_signal::Config,
    /// Relay admission settings (used with the relay server).
    pub admission: Option<mesh_admission::server::Config>,
}

/// Why the behaviour could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The gossipsub settings are inconsistent.
    #[error("gossipsub config: {0}")]
    GossipsubConfig(gossipsub::ConfigBuilderError),
    /// gossipsub refused its settings.
    #[error("gossipsub: {0}")]
    Gossipsub(&'static str),
    /// gossipsub refused the peer-score parameters.
    #[error("gossipsub peer scoring: {0}")]
    PeerScore(String),
}

/// Builds the behaviour.
pub fn build(
    key: &NodeKeypair,
    relay_client: relay::client::Behaviour,
    config: &NodeConfig,
    mut parts: Parts,
    read_budget: ReadBudget,
) -> Result<MeshBehaviour, BuildError> {
    // One budget for every libmesh protocol's reads (`limits.read_budget_bytes`).
    parts.session.read_budget = read_budget.clone();
    parts.marker.read_budget = read_budget.clone();
    parts.signal.read_budget = read_budget.clone();
    let lp_key = key.to_libp2p();
    let peer_id = lp_key.public().to_peer_id();
    let l = &config.limits;
    let dial_backs = super::dial_back::DialBacks::default();
    let limits = super::limits::Limits::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(l.max_established))
            .with_max_pending_incoming(Some(l.max_pending_incoming)),
        l.max_per_peer,
        super::ip_shares::IpCaps {
            max_pending: l.max_pending_incoming_per_ip,
            max_established: l.max_established_incoming_per_ip,
            // One UDP packet from a spoofable address starts one: a quarter of the
            // global pending cap at most (`ip_shares`).
            max_pending_webrtc: (l.max_pending_incoming / 4).max(1),
            max_pending_quic: l.pending_quic(),
            // Circuits under fresh peer ids through one relay: a quarter too; through
            // all relays, half.
            max_pending_relayed: (l.max_pending_incoming / 4).max(1),
            max_pending_circuits: (l.max_pending_incoming / 2).max(1),
            max_pending_group: l.pending_incoming_per_group(),
            max_inbound: l.established_incoming(),
        },
        dial_backs.clone(),
    );
    let memory = memory_connection_limits::Behaviour::with_max_percentage(l.max_memory_fraction);
    let identify = super::identify_observed::Identify::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), lp_key.public())
            .with_agent_version(AGENT.into())
            .with_push_listen_addr_updates(true),
    );

    let kad_budget = std::sync::Arc::new(KadBudget(read_budget.clone()));
    let mut amino = amino(peer_id);
    amino.set_mode(kad_mode(config.kad_mode));
    amino.set_read_budget(kad_budget.clone());
    let amino = super::kad_scope::ScopedKad::new(
        amino,
        super::kad_scope::DialScope::Amino {
            keep_private: config.amino_private_addrs,
            configured: config
                .bootstrap
                .addrs()
                .unwrap_or_default()
                .iter()
                .map(super::addrs::without_peer)
                .collect(),
        },
    );
    let mut mesh = mesh_kad(peer_id, config.kad_mode);
    mesh.set_read_budget(kad_budget);
    let mesh_kad = super::kad_scope::ScopedKad::new(mesh, super::kad_scope::DialScope::Mesh);

    let gossipsub = gossipsub(lp_key, l.max_gossip_bytes)?;

    let admission = parts.admission.map(|mut c| {
        c.read_budget = read_budget.clone();
        let base = relay::Config {
            max_reservations: config.admission.max_reservations,
            max_circuits: config.admission.max_circuits,
            max_circuits_per_peer: config.admission.circuits as usize,
            ..relay::Config::default()
        };
        mesh_admission::server::Behaviour::with_relay_config(key.clone(), c, base)
    });

    Ok(MeshBehaviour {
        limits,
        memory,
        identify,
        amino,
        mesh_kad,
        gossipsub,
        autonat_client: config
            .autonat
            .then(|| {
                // Two networks' servers must agree, and confirmations are tested
                // again (vendor/libp2p-autonat/PATCHED.md).
                let config = autonat::v2::client::Config::default()
                    .with_confirmations(super::nat_verdicts::CONFIRMATIONS)
                    .with_retest_after(super::nat_verdicts::RETEST_AFTER);
                autonat::v2::client::Behaviour::with_config(config)
            })
            .into(),
        autonat_server: config
            .autonat
            .then(|| super::dial_back::AutonatServer::new(dial_backs))
            .into(),
        admission: admission.into(),
        admission_client: mesh_admission::client::Behaviour::new(
            key.clone(),
            mesh_admission::client::Config {
                read_budget: read_budget.clone(),
                ..mesh_admission::client::Config::default()
            },
        ),
        relay_client,
        dcutr: super::dcutr_scope::Dcutr::new(
            dcutr::Behaviour::new(peer_id),
            super::router::policy::CandidatePolicy::new(config.signal),
            mesh_core::families::MAX_CANDIDATES,
        ),
        advert: mesh_advert::Behaviour::new(
            parts.store,
            mesh_advert::Config {
                read_budget: read_budget.clone(),
                ..mesh_advert::Config::default()
            },
        ),
        session: mesh_session::Behaviour::new(key.clone(), parts.session),
        marker: mesh_session::marker::Behaviour::new(parts.marker),
        signal: mesh_signal::Behaviour::new(parts.signal),
        swarm_table: libp2p::request_response::Behaviour::with_codec(
            mesh_signal::group::exchange::Codec(read_budget),
            [(
                mesh_signal::group::exchange::PROTOCOL,
                libp2p::request_response::ProtocolSupport::Full,
            )],
            libp2p::request_response::Config::default()
                .with_request_timeout(std::time::Duration::from_secs(10))
                .with_max_concurrent_streams(16),
        ),
        perf: config.perf.then(crate::perf::Behaviour::new).into(),
    })
}

/// A [`ReadBudget`] as the vendored libp2p-kad's (`kad::Behaviour::set_read_budget`):
/// the node's DHTs' messages being read take their room from its budget, with the
/// libmesh protocols' requests. For embedders too.
#[derive(Debug)]
pub struct KadBudget(pub ReadBudget);

struct KadHold(mesh_core::Hold);

impl kad::ReadBudget for KadBudget {
    fn begin(&self) -> Box<dyn kad::ReadHold> {
        Box::new(KadHold(self.0.hold()))
    }
}

impl kad::ReadHold for KadHold {
    fn grow(&mut self, n: usize) -> bool {
        self.0.grow(n).is_ok()
    }

    fn poll_dropped(&self, cx: &mut std::task::Context<'_>) -> bool {
        self.0.poll_dropped(cx)
    }
}

/// Kademlia's mode for the configured [`KadMode`] (`None`: automatic).
fn kad_mode(mode: KadMode) -> Option<kad::Mode> {
    match mode {
        KadMode::Auto => None,
        KadMode::Server => Some(kad::Mode::Server),
        KadMode::Client => Some(kad::Mode::Client),
    }
}

/// The Amino DHT's Kademlia behaviour (`/ipfs/kad/1.0.0`) as the node runs it: inbound
/// PUTs and provider records filtered (`StoreInserts::FilterBoth`). Other peers'
/// provider records go through the node's `ProviderBook` as the mesh DHT's do (a
/// share per provider and per network, a global cap, only addresses the provider is
/// plausibly at); their values are not kept (the node cannot validate IPNS or
/// public-key records, and a server that kept unchecked values for anyone would hand
/// them out). The store leaves room for this node's own provider keys beyond the other
/// peers' ones: with libp2p's defaults, 1,024 keys from any one peer filled it and the
/// node could no longer announce its swarms on Amino.
fn amino(peer_id: PeerId) -> kad::Behaviour<kad::store::MemoryStore> {
    let store = kad::store::MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_provided_keys: mesh_advert::providers::ProviderLimits::default().max_records + 1024,
            ..kad::store::MemoryStoreConfig::default()
        },
    );
    let mut config = kad::Config::new(kad::PROTOCOL_NAME);
    config.set_record_filtering(kad::StoreInserts::FilterBoth);
    kad::Behaviour::with_config(peer_id, store, config)
}

/// The mesh DHT's Kademlia behaviour as the node runs it: `/mesh/kad/1.0.0` with
/// filtered inserts ([`mesh_advert::kad::config`]: every inbound PUT must then go
/// through [`mesh_advert::kad::accept_put`], every GET result through
/// [`mesh_advert::kad::validate_record`]), a record store with room for this node's own
/// provider keys beyond the other peers' ones, in `mode`. Public so that benchmarks
/// run the node's DHT rather than a copy.
pub fn mesh_kad(peer_id: PeerId, mode: KadMode) -> kad::Behaviour<kad::store::MemoryStore> {
    // Other peers' provider records are bounded by the book (`ProviderLimits`); the
    // store leaves this node's own keys room beyond them.
    let store = kad::store::MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_provided_keys: mesh_advert::providers::ProviderLimits::default().max_records + 1024,
            ..kad::store::MemoryStoreConfig::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, mesh_advert::kad::config());
    kad.set_mode(kad_mode(mode));
    kad
}

/// How long gossipsub keeps the score of a peer with none above zero after its last
/// connection closed (libp2p's default: an hour). Every connection, from any peer,
/// adds a score entry (some 330 bytes) and a fresh peer's score is zero, so with the
/// default every fresh key that connected once stayed an hour: a few hundred handshakes
/// a second held a million entries. What the retention is for, a peer that cannot
/// shed a negative score by reconnecting, does not hold against keys that cost nothing;
/// 30 s keeps it for a reconnect under the same key.
pub const GOSSIP_RETAIN_SCORE: std::time::Duration = std::time::Duration::from_secs(30);

/// The node's gossipsub behaviour: strict validation with the application's verdict
/// on every message, IDONTWANT above 1000 bytes, IHAVE to at most `gossip_lazy` peers
/// per heartbeat, messages up to `max_transmit_size` bytes, peer scoring with loopback
/// exempt from the co-location penalty, subscriptions bounded by
/// [`super::gossip_filter`]. Public so that benchmarks run the node's
/// gossipsub rather than a copy.
pub fn gossipsub(
    lp_key: libp2p::identity::Keypair,
    max_transmit_size: usize,
) -> Result<super::gossip_filter::Gossipsub, BuildError> {
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // A forwarded message may wait 5 s in a connection's queue (gossipsub's default
        // for publishing; 1 s for forwarding): under a burst the queue of a busy node
        // lags, and a presence dropped there is lost to that peer until the next
        // re-announce, while the drop also counts against the peer's score.
        .forward_queue_duration(std::time::Duration::from_secs(5))
        // IDONTWANT only above 1000 bytes (libp2p's default): at 200 swarm members an
        // IDONTWANT for every message cost 4.3 control frames per delivery and saved
        // 0.5 duplicate copies (BENCHMARKS, "Swarms", tenth session).
        .idontwant_message_size_threshold(1000)
        // IHAVE to `gossip_lazy` (6) peers per heartbeat, not to a quarter of all the
        // topic's non-mesh peers: a node with 190 peers in a topic sent 46 IHAVE frames
        // a second. Repair stays with the 6, and with the swarm's own refreshes.
        .gossip_factor(0.0)
        .max_transmit_size(max_transmit_size)
        .build()
        .map_err(BuildError::GossipsubConfig)?;
    // Topic names and topics per peer bounded (see `gossip_filter`).
    let mut behaviour = gossipsub::Behaviour::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Signed(lp_key),
        gossip_config,
        super::gossip_filter::filter(),
    )
    .map_err(BuildError::Gossipsub)?;
    behaviour.set_max_peer_subscriptions(super::gossip_filter::MAX_PEER_SUBSCRIPTIONS);
    behaviour.set_max_network_subscriptions(
        super::gossip_filter::MAX_NETWORK_SUBSCRIPTIONS,
        |addr, listening| super::gossip_filter::network_of(addr, listening.iter()),
    );
    // Bytes queued to send: 4 MiB for one peer (sixteen of the largest messages at
    // least), 64 MiB for all (four peers' worth at least), beyond which a peer holding
    // more than one largest message takes no more. A peer that read nothing and asked
    // with IWANT for cached messages had up to 5,000 of them queued (`PATCHED.md`).
    let per_peer = (4 << 20).max(16 * max_transmit_size);
    behaviour.set_max_queue_bytes(per_peer, (64 << 20).max(4 * per_peer), max_transmit_size);
    // Peers on the loopback interface share one IP by nature (a test mesh, or nodes
    // of one host); the co-location penalty would graylist them all beyond ten.
    let score = gossipsub::PeerScoreParams {
        retain_score: GOSSIP_RETAIN_SCORE,
        ip_colocation_factor_whitelist: [
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ]
        .into(),
        ..Default::default()
    };
    behaviour
        .with_peer_score(score, gossipsub::PeerScoreThresholds::default())
        .map_err(BuildError::PeerScore)?;
    Ok(behaviour)
}

/// Whether a peer's identify protocols include `protocol`.
pub fn speaks(protocols: &[StreamProtocol], protocol: &StreamProtocol) -> bool {
    protocols.iter().any(|p| p == protocol)
}
