//! Node configuration: a TOML file (`meshd run --config FILE`) whose every key also
//! has a command-line flag; flags win. Every field has a default, so an empty file (or
//! none) runs a node on the embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use mesh_core::NodeId;

pub use super::router::policy::{PunchFor, RouteSettings, SignalSettings};
pub use super::wss::{DEFAULT_WSS_LISTEN, WssConfig, is_wss};
use serde::Deserialize;

/// The public libp2p bootstrap nodes (the Amino DHT), as rust-libp2p's `ipfs-kad`
/// example and kubo list them. Used by `bootstrap = "public"` (the default of a real
/// run); tests always pass `none` or their own addresses.
pub const PUBLIC_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/dnsaddr/va1.bootstrap.libp2p.io/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// The default listen addresses: QUIC and TCP on 4001, WebSocket on 4002,
/// WebRTC-direct on UDP 4004, on every IPv4 and IPv6 interface. (WSS is added when a
/// certificate is configured.)
pub const DEFAULT_LISTEN: &[&str] = &[
    "/ip4/0.0.0.0/udp/4001/quic-v1",
    "/ip4/0.0.0.0/tcp/4001",
    "/ip4/0.0.0.0/tcp/4002/ws",
    "/ip4/0.0.0.0/udp/4004/webrtc-direct",
    "/ip6/::/udp/4001/quic-v1",
    "/ip6/::/tcp/4001",
    "/ip6/::/tcp/4002/ws",
    "/ip6/::/udp/4004/webrtc-direct",
];

/// Where the node bootstraps into the public network.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Bootstrap {
    /// `"public"` or `"none"`.
    Named(BootstrapName),
    /// Explicit Amino bootstrap addresses (each with `/p2p/<peer id>`).
    Addrs(Vec<Multiaddr>),
}

/// The named bootstrap choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootstrapName {
    /// [`PUBLIC_BOOTSTRAP`].
    Public,
    /// No Amino bootstrap.
    None,
}

impl Bootstrap {
    /// The addresses to bootstrap from.
    pub fn addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        match self {
            Bootstrap::Named(BootstrapName::None) => Ok(Vec::new()),
            Bootstrap::Named(BootstrapName::Public) => PUBLIC_BOOTSTRAP
                .iter()
                .map(|a| {
                    a.parse()
                        .map_err(|e| ConfigError::Invalid(format!("bootstrap {a}: {e}")))
                })
                .collect(),
            Bootstrap::Addrs(a) => Ok(a.clone()),
        }
    }
}

/// A static seed peer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPeer {
    /// Its node id (`node:did:key:z6Mk…`).
    pub node_id: NodeId,
    /// Where to dial it.
    pub addr: Multiaddr,
    /// A label for logs and status.
    #[serde(default)]
    pub label: Option<String>,
}

/// Kademlia server/client mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KadMode {
    /// Follow reachability: server once AutoNAT (or `external`) confirms an address.
    #[default]
    Auto,
    /// Always answer DHT queries (nodes known to be reachable, test meshes).
    Server,
    /// Never answer.
    Client,
}

/// The advertisement store (`[store]`): its caps and how often it is swept.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Most advertisements and withdrawal tombstones held (live ones: expired ones are
    /// swept before anything is refused).
    pub max_entries: usize,
    /// Most bytes of advertisements held.
    pub max_bytes: usize,
    /// Largest advertisement one publisher (node id) may have stored, bytes of CBOR.
    pub max_record_bytes: usize,
    /// Most advertisements and tombstones one source (the IPv4 address or IPv6 /64 a
    /// change came from, or a relayed peer) may hold; unset: a quarter of `max_entries`.
    pub per_source_entries: Option<usize>,
    /// Most bytes of advertisements one source may hold; unset: a quarter of
    /// `max_bytes`.
    pub per_source_bytes: Option<usize>,
    /// How often expired advertisements and lapsed tombstones are deleted from memory
    /// and from `adverts.redb`, seconds.
    pub sweep_secs: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        let d = mesh_advert::StoreLimits::default();
        StoreSettings {
            max_entries: d.max_entries,
            max_bytes: d.max_bytes,
            max_record_bytes: d.max_record_bytes,
            per_source_entries: None,
            per_source_bytes: None,
            sweep_secs: 10,
        }
    }
}

impl StoreSettings {
    /// The store's limits (the rest at their defaults).
    pub fn limits(&self) -> mesh_advert::StoreLimits {
        mesh_advert::StoreLimits {
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            max_record_bytes: self.max_record_bytes,
            per_source_entries: self
                .per_source_entries
                .unwrap_or((self.max_entries / 4).max(1)),
            per_source_bytes: self
                .per_source_bytes
                .unwrap_or((self.max_bytes / 4).max(self.max_record_bytes)),
            ..mesh_advert::StoreLimits::default()
        }
    }

    /// The sweep period.
    pub fn sweep_every(&self) -> Duration {
        Duration::from_secs(self.sweep_secs)
    }
}

/// Limits.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Established connections in all.
    pub max_established: u32,
    /// Established connections per peer.
    pub max_per_peer: u32,
    /// Pending incoming connections.
    pub max_pending_incoming: u32,
    /// Pending incoming connections from one network (an IPv4 address, an IPv6 /64;
    /// relayed connections are not counted).
    pub max_pending_incoming_per_ip: u32,
    /// Established incoming connections from one network (as above).
    pub max_established_incoming_per_ip: u32,
    /// Established incoming connections in all (relayed ones not counted); unset:
    /// three quarters of `max_established`, so that inbound peers leave the rest to the
    /// node's own dials. At this cap a newcomer from a smaller network group (IPv4 /16,
    /// IPv6 /32) takes the place of the largest group's newest connection.
    pub max_established_incoming: Option<u32>,
    /// New connections are refused above this fraction of system memory in use.
    pub max_memory_fraction: f64,
    /// Mesh sessions kept at once (the governor's `max_live`).
    pub max_sessions: usize,
    /// Sessions the governor keeps hot.
    pub hot_sessions: usize,
    /// Gossipsub message size cap, bytes.
    pub max_gossip_bytes: usize,
    /// Messages a second taken on the application's gossipsub topics from what one
    /// network's peers hand over (bursts of ten seconds' worth); beyond, ignored
    /// (neither delivered nor forwarded).
    pub app_gossip_per_network: u32,
    /// Messages a second taken on the application's topics in all (as above).
    pub app_gossip_total: u32,
    /// Bytes that requests and answers being read on libmesh's own protocols
    /// (`/mesh/signal`, `/mesh/session`, `/mesh/marker`, `/mesh/advert`,
    /// `/mesh/swarm-table`, `/mesh/relay-admission`) and on both DHTs hold in all,
    /// across connections;
    /// a read that needs room beyond drops the oldest reads begun before it
    /// ([`mesh_core::ReadBudget`]). At least [`MIN_READ_BUDGET`].
    pub read_budget_bytes: usize,
    /// Inbound QUIC connections in their handshakes (over every QUIC listener) past
    /// which an Initial from a source address not yet validated gets a stateless Retry
    /// instead of a TLS first flight; unset: half of the QUIC pending share (a quarter
    /// of `max_pending_incoming`); 0: every unvalidated Initial.
    pub quic_retry_above: Option<u32>,
}

/// The largest configuration file read (a `meshd.toml` is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The smallest `limits.read_budget_bytes`: twice the largest request (a 1 MiB signal
/// batch), so that the largest request has room beside another.
pub const MIN_READ_BUDGET: usize = 2 * mesh_signal::codec::MAX_REQUEST;

impl Limits {
    /// `max_established_incoming`, or three quarters of `max_established` (at least 1).
    pub fn established_incoming(&self) -> u32 {
        self.max_established_incoming
            .unwrap_or(self.max_established / 4 * 3)
            .max(1)
    }

    /// Pending incoming QUIC connections in all: a quarter of `max_pending_incoming` (at
    /// least 1). QUIC answers an Initial from any source address, spoofed or not.
    pub fn pending_quic(&self) -> u32 {
        (self.max_pending_incoming / 4).max(1)
    }

    /// Inbound QUIC handshakes (over every QUIC listener) past which an Initial from an
    /// address not yet validated is answered with a stateless Retry:
    /// `quic_retry_above`, or half of [`Self::pending_quic`] (at least 1). A spoofed
    /// source never answers one; a real client pays one round trip.
    pub fn quic_pending_before_retry(&self) -> usize {
        match self.quic_retry_above {
            Some(n) => n as usize,
            None => (self.pending_quic() as usize / 2).max(1),
        }
    }

    /// Pending incoming connections from one network group (IPv4 /16, IPv6 /32): a
    /// quarter of `max_pending_incoming`, and never fewer than one network's share.
    pub fn pending_incoming_per_group(&self) -> u32 {
        (self.max_pending_incoming / 4).max(self.max_pending_incoming_per_ip)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_established: 512,
            max_per_peer: 4,
            max_pending_incoming: 128,
            max_pending_incoming_per_ip: 16,
            max_established_incoming_per_ip: 64,
            max_established_incoming: None,
            max_memory_fraction: 0.9,
            max_sessions: 32,
            hot_sessions: 2,
            max_gossip_bytes: 64 * 1024,
            app_gossip_per_network: 100,
            app_gossip_total: 400,
            read_budget_bytes: mesh_core::DEFAULT_READ_BUDGET,
            quic_retry_above: None,
        }
    }
}

/// Discovery-key swarms (`[swarm]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmSettings {
    /// Lifetime of our `swarm-presence.v1`, seconds (2..=3600), in swarms of up to 50
    /// other members; it grows by as much per 50 members above that, up to 900 s
    /// (`mesh_signal::group::presence_ttl_secs`). Re-announced before half of it.
    pub ttl_secs: i64,
    /// Groups joined at once.
    pub max_swarms: usize,
    /// Members remembered per swarm.
    pub max_members: usize,
    /// Seconds between two checks of a swarm's member table against a random
    /// subscriber's (1..=3600; each a quarter earlier or later at random): what gossip
    /// lost comes with the next check (`node::groups`, `check`).
    pub check_secs: u64,
}

impl Default for SwarmSettings {
    fn default() -> Self {
        let d = mesh_signal::group::GroupConfig::default();
        SwarmSettings {
            ttl_secs: d.ttl_secs,
            max_swarms: d.max_swarms,
            max_members: d.max_members,
            check_secs: super::groups::CHECK_EVERY.as_secs(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Identity, stores and the control-address file.
    pub data_dir: Option<PathBuf>,
    /// Listen addresses (default [`DEFAULT_LISTEN`]).
    pub listen: Vec<Multiaddr>,
    /// Addresses known to be reachable from outside (added as confirmed external
    /// addresses, so Kademlia serves and the relay server accepts reservations).
    pub external: Vec<Multiaddr>,
    /// Static seed peers.
    pub seeds: Vec<SeedPeer>,
    /// Amino bootstrap (`"public"`, `"none"` or a list of addresses).
    pub bootstrap: Bootstrap,
    /// Kademlia mode of both DHTs.
    pub kad_mode: KadMode,
    /// Keep loopback and private addresses of peers in the Amino (public) routing
    /// table; by default only public addresses enter it (no DNS names: they may resolve
    /// to the node's own host or LAN).
    pub amino_private_addrs: bool,
    /// Run a circuit relay v2 server.
    pub relay_server: bool,
    /// Relay candidates (each `…/p2p/<relay peer id>`): the node asks them for
    /// admission, holds reservations on the best [`NodeConfig::max_relays`] of them,
    /// listens on `…/p2p-circuit` through them and advertises those addresses.
    pub relays: Vec<Multiaddr>,
    /// Tier of a relay by peer id (0 is best; each tier adds 20 to the score).
    pub relay_tiers: std::collections::BTreeMap<String, u32>,
    /// Reservations held at once (the best-scoring relays).
    pub max_relays: usize,
    /// A held relay that answers no ping for this many seconds is lost: its
    /// connections close and another relay takes its slot. More than
    /// [`NodeConfig::ping_interval_secs`].
    pub relay_liveness_secs: u64,
    /// How often the node pings every connection (keepalive, RTTs, relay liveness).
    pub ping_interval_secs: u64,
    /// The relay server's admission (with `relay_server`).
    pub admission: super::admission::AdmissionSettings,
    /// Files holding this node's own `federation-endorsement.v1`s, presented to relays
    /// in admission requests (for relays with the `federation` policy).
    pub relay_endorsements: Vec<PathBuf>,
    /// Forward signaling frames between session peers (offers `core/signaling`).
    pub signaling_host: bool,
    /// Run AutoNAT v2 (client and server). Off for nodes whose reachability is known
    /// from `external`, and in tests where dial-backs would open extra connections.
    pub autonat: bool,
    /// Discovery-key swarms.
    pub swarm: SwarmSettings,
    /// The routing policy's stage timeouts.
    pub route: RouteSettings,
    /// Signaling policy (`[signal]`): whose requests the node punches back for, and
    /// whether loopback and private candidates are dialed whatever the node's own
    /// addresses (see [`crate::node::router::policy`]).
    pub signal: SignalSettings,
    /// Serve the seed directory (HTTP) on this address.
    pub directory: Option<SocketAddr>,
    /// Names the seed directory answers in `Host` besides addresses and `localhost`
    /// (a reverse proxy's public names); see `libmesh::directory_hosts`.
    pub directory_hosts: Vec<String>,
    /// Serve Prometheus metrics (`/metrics`) and `/status` on this address.
    pub metrics: Option<SocketAddr>,
    /// The control API (loopback only; `meshd status`, `peers`, `dial`, … use it).
    pub control: SocketAddr,
    /// Trace events as JSON lines to this file, or `-` for stderr.
    pub trace: Option<String>,
    /// Serve the libp2p perf protocol (`/perf/1.0.0`).
    pub perf: bool,
    /// WSS listening from certificate files.
    pub wss: Option<WssConfig>,
    /// Extra PEM roots trusted when dialing WSS (besides the web PKI).
    pub tls_roots: Vec<PathBuf>,
    /// Lifetime of the node's own advertisement, seconds.
    pub advert_ttl_secs: i64,
    /// Withdraw the node's advertisement on a clean stop (Ctrl-C, SIGTERM, a shutdown
    /// command), as `meshd advert withdraw` would, before the connections close.
    pub withdraw_on_stop: bool,
    /// How long an idle connection stays open, seconds.
    pub idle_timeout_secs: u64,
    /// Limits.
    pub limits: Limits,
    /// Timeouts and connection caps of the HTTP servers (`[http]`).
    pub http: crate::http_serve::HttpSettings,
    /// The advertisement store.
    pub store: StoreSettings,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: None,
            listen: Vec::new(),
            external: Vec::new(),
            seeds: Vec::new(),
            bootstrap: Bootstrap::Named(BootstrapName::Public),
            kad_mode: KadMode::Auto,
            amino_private_addrs: false,
            relay_server: false,
            relays: Vec::new(),
            relay_tiers: std::collections::BTreeMap::new(),
            max_relays: 2,
            relay_liveness_secs: super::relays::DEFAULT_LIVENESS.as_secs(),
            ping_interval_secs: 15,
            admission: super::admission::AdmissionSettings::default(),
            relay_endorsements: Vec::new(),
            signaling_host: true,
            autonat: true,
            swarm: SwarmSettings::default(),
            route: RouteSettings::default(),
            signal: SignalSettings::default(),
            directory: None,
            directory_hosts: Vec::new(),
            metrics: None,
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            trace: None,
            perf: false,
            wss: None,
            tls_roots: Vec::new(),
            advert_ttl_secs: 3600,
            withdraw_on_stop: false,
            idle_timeout_secs: 60,
            limits: Limits::default(),
            http: crate::http_serve::HttpSettings::default(),
            store: StoreSettings::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `[admission]` (or `--admission`) cannot be used. (Not the error's `source`: the
    /// text already includes it, and error chains would print it twice.)
    #[error("invalid configuration: {0}")]
    Admission(super::admission::AdmissionError),
}

impl From<super::admission::AdmissionError> for ConfigError {
    fn from(e: super::admission::AdmissionError) -> Self {
        ConfigError::Admission(e)
    }
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = mesh_core::read_text_capped(path, MAX_CONFIG_BYTES).map_err(|source| {
            ConfigError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks ranges and consistency.
    pub fn check(&self) -> Result<(), ConfigError> {
        let st = &self.store;
        if st.max_entries == 0
            || st.max_record_bytes == 0
            || st.max_record_bytes > st.max_bytes
            || !(1..=3600).contains(&st.sweep_secs)
        {
            return Err(ConfigError::Invalid(format!(
                "store: need max_entries > 0, 0 < max_record_bytes ({}) <= max_bytes ({}) \
                 and sweep_secs within 1..=3600 (not {})",
                st.max_record_bytes, st.max_bytes, st.sweep_secs
            )));
        }
        if st.per_source_entries == Some(0)
            || st.per_source_bytes.is_some_and(|b| b < st.max_record_bytes)
        {
            return Err(ConfigError::Invalid(format!(
                "store: need per_source_entries > 0 and per_source_bytes >= max_record_bytes \
                 ({})",
                st.max_record_bytes
            )));
        }
        let l = &self.limits;
        if l.max_sessions == 0 || l.hot_sessions > l.max_sessions {
            return Err(ConfigError::Invalid(format!(
                "limits: need 0 < hot_sessions ({}) <= max_sessions ({})",
                l.hot_sessions, l.max_sessions
            )));
        }
        if !(0.05..=1.0).contains(&l.max_memory_fraction) {
            return Err(ConfigError::Invalid(format!(
                "limits.max_memory_fraction must be within 0.05..=1.0, not {}",
                l.max_memory_fraction
            )));
        }
        if l.max_established == 0 || l.max_per_peer == 0 {
            return Err(ConfigError::Invalid(
                "limits: max_established and max_per_peer must be positive".into(),
            ));
        }
        if l.read_budget_bytes < MIN_READ_BUDGET {
            return Err(ConfigError::Invalid(format!(
                "limits: read_budget_bytes ({}) must be at least {MIN_READ_BUDGET}",
                l.read_budget_bytes
            )));
        }
        if let Some(n) = l.max_established_incoming
            && !(1..=l.max_established).contains(&n)
        {
            return Err(ConfigError::Invalid(format!(
                "limits: need 0 < max_established_incoming ({n}) <= max_established ({})",
                l.max_established
            )));
        }
        // Every advertisement store (and the mesh DHT) refuses a lifetime above its
        // maximum: a longer TTL would publish an advertisement no one keeps.
        let max_ttl = mesh_advert::StoreLimits::default().max_lifetime_secs;
        if !(60..=max_ttl).contains(&self.advert_ttl_secs) {
            return Err(ConfigError::Invalid(format!(
                "advert_ttl_secs must be within 60..={max_ttl} (stores and the mesh DHT \
                 refuse longer advertisements), not {}",
                self.advert_ttl_secs
            )));
        }
        let sw = &self.swarm;
        if !(mesh_core::MIN_PRESENCE_TTL_SECS..=mesh_core::MAX_PRESENCE_TTL_SECS)
            .contains(&sw.ttl_secs)
            || sw.max_swarms == 0
            || sw.max_members == 0
            || !(1..=3600).contains(&sw.check_secs)
        {
            return Err(ConfigError::Invalid(format!(
                "swarm: ttl_secs must be within {}..={}, check_secs within 1..=3600 and max_swarms, max_members positive",
                mesh_core::MIN_PRESENCE_TTL_SECS,
                mesh_core::MAX_PRESENCE_TTL_SECS
            )));
        }
        if self.signal.network_frame_burst == 0 || self.signal.network_frames_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "signal: network_frame_burst and network_frames_per_minute must be positive".into(),
            ));
        }
        let r = &self.route;
        for (name, v) in [
            ("direct_secs", r.direct_secs),
            ("signaling_secs", r.signaling_secs),
            ("relay_secs", r.relay_secs),
        ] {
            if !(1..=120).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "route.{name} must be within 1..=120, not {v}"
                )));
            }
        }
        for a in &self.relays {
            if !a
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            {
                return Err(ConfigError::Invalid(format!(
                    "relay address {a} has no /p2p/<peer id>"
                )));
            }
        }
        for peer in self.relay_tiers.keys() {
            if peer.parse::<libp2p::PeerId>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "relay_tiers: {peer} is not a peer id"
                )));
            }
        }
        if self.max_relays == 0 {
            return Err(ConfigError::Invalid("max_relays must be at least 1".into()));
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return Err(ConfigError::Invalid(
                "idle_timeout_secs must be within 1..=86400 (0 closed every connection no handler kept)".into(),
            ));
        }
        if !(1..=300).contains(&self.ping_interval_secs) {
            return Err(ConfigError::Invalid(
                "ping_interval_secs must be within 1..=300".into(),
            ));
        }
        if self.relay_liveness_secs <= self.ping_interval_secs || self.relay_liveness_secs > 3600 {
            return Err(ConfigError::Invalid(format!(
                "relay_liveness_secs must be more than ping_interval_secs ({}) and at most 3600",
                self.ping_interval_secs
            )));
        }
        self.admission.check()?;
        if self.wss.is_none() && self.listen.iter().any(is_wss) {
            return Err(ConfigError::Invalid(
                "a /wss listen address needs a certificate ([wss] cert and key)".into(),
            ));
        }
        if let Some(wss) = &self.wss {
            wss.check()
                .map_err(|e| ConfigError::Invalid(format!("wss: {e}")))?;
        }
        if let Some(problem) = self.http.problem() {
            return Err(ConfigError::Invalid(problem));
        }
        if !self.control.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "control must be a loopback address (it can dial and send), not {}",
                self.control
            )));
        }
        for a in self.bootstrap.addrs()? {
            if !a
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            {
                return Err(ConfigError::Invalid(format!(
                    "bootstrap address {a} has no /p2p/<peer id>"
                )));
            }
        }
        Ok(())
    }

    /// The listen addresses in effect.
    pub fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        let mut out = if self.listen.is_empty() {
            DEFAULT_LISTEN
                .iter()
                .map(|a| {
                    a.parse()
                        .map_err(|e| ConfigError::Invalid(format!("listen {a}: {e}")))
                })
                .collect::<Result<Vec<Multiaddr>, _>>()?
        } else {
            self.listen.clone()
        };
        let has_wss = out.iter().any(is_wss);
        if let Some(wss) = &self.wss {
            if wss.listen.is_empty() && !has_wss {
                out.push(
                    DEFAULT_WSS_LISTEN
                        .parse()
                        .map_err(|e| ConfigError::Invalid(format!("wss listen: {e}")))?,
                );
            } else {
                out.extend(wss.listen.iter().cloned());
            }
        }
        Ok(out)
    }

    /// Whether the listen addresses are the built-in defaults (IPv6 failures are then
    /// warnings: not every host has IPv6).
    pub fn uses_default_listen(&self) -> bool {
        self.listen.is_empty()
    }

    /// The idle connection timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
