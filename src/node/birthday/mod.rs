//! Birthday-paradox probing (issue 20, "Beyond DCUtR"): a direct UDP path between a
//! node behind a symmetric NAT (a new random external port per destination, S) and one
//! behind a port-preserving NAT with address-and-port-dependent filtering (C), where
//! DCUtR and the signaling punch cannot work: S's NAT maps the packets it sends to C's
//! address to a port nobody can predict, and C's NAT lets in only what comes from an
//! address and port C sent to.
//!
//! 1. S opens [`Budget::sockets`] UDP sockets and sends one probe from each to C's
//!    probe address: its NAT gives each a fresh random external port toward C.
//! 2. C sends [`Budget::probes`] probes from its probe socket to random ports of S's
//!    public IP, each probe carrying the port it was sent to; its port-preserving NAT
//!    opens its filter for every (S's IP, port) pair probed.
//! 3. Where a port C probed is one S's NAT chose (a birthday hit), the probe passes S's
//!    NAT as a reply to S's packet and reaches one of S's sockets, which learns its own
//!    external port from the payload. With K sockets and L probes over N possible
//!    ports, a hit is likely when K·L is near N ([`hit_probability`]: 64 % for
//!    256 + 256 probes over Linux's 64 512 ports).
//! 4. Both sides then hold a (local port, remote address) pair that both NATs let
//!    through: S's socket's local port toward C's probe address, and C's probe port
//!    toward S's IP and the hit port. A QUIC endpoint bound to each of those local
//!    ports (the NAT mappings are keyed by the flow, not by the socket, so they outlive
//!    the probe sockets) connects through both NATs ([`probe`]'s docs).
//!
//! Pure logic here (the probe format, the budget, port choice, the rate limits and the
//! NAT classification, every call taking `now`); the sockets are in [`probe`].
//!
//! Bounds (no amplification): a node probes only for correlations it started or
//! accepted; one attempt sends at most [`MAX_SOCKETS`] probes (S) or [`MAX_PROBES`] (C),
//! 16 bytes of payload each, all to the one peer IP of the correlation (S: to one
//! address only); [`Limiter`] allows one attempt per peer per [`PER_PEER_EVERY`], at most
//! [`GLOBAL_PER_WINDOW`] attempts per [`GLOBAL_WINDOW`] and [`MAX_CONCURRENT`] at once
//! (the router keeps one for its own routes and one for the attempts it answers, and
//! runs one attempt at a time, its own first); and whatever the peers' keys, the
//! attempts probing toward one destination are [`PER_DESTINATION`].

pub mod probe;
pub mod quic;
pub mod run;
pub mod signal;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Most probe sockets S opens in one attempt.
pub const MAX_SOCKETS: u16 = 256;
/// Most probes C sends in one attempt.
pub const MAX_PROBES: u16 = 256;
/// The external ports a NAT may pick (Linux `--random-fully` picks from 1024-65535).
pub const PORT_RANGE: (u16, u16) = (1024, 65535);
/// The size of a probe datagram.
pub const PROBE_LEN: usize = 16;
/// One attempt per peer this often.
pub const PER_PEER_EVERY: Duration = Duration::from_secs(60);
/// The window of the global limit.
pub const GLOBAL_WINDOW: Duration = Duration::from_secs(60);
/// Attempts per [`GLOBAL_WINDOW`], all peers together.
pub const GLOBAL_PER_WINDOW: usize = 6;
/// Attempts that probe toward one destination (an IPv4 address, an IPv6 /64: a peer's
/// NAT; up to 256 datagrams each): two at once, then one every two minutes. The
/// [`Limiter`] counts node ids, which cost nothing: without this, fresh keys naming one
/// host had it sent every attempt the node-wide window allows.
pub const PER_DESTINATION: mesh_core::RateLimit = mesh_core::RateLimit {
    burst: 2,
    per_second: 1.0 / 120.0,
};
/// Destinations counted by [`PER_DESTINATION`] (the least recently used forgotten
/// first).
pub const DESTINATIONS: usize = 1024;
/// Attempts running at once.
pub const MAX_CONCURRENT: usize = 1;

/// First bytes of a probe: a zero byte (the QUIC fixed bit cleared, so a QUIC stack
/// that gets one drops it) and `MBD`.
const MAGIC: [u8; 4] = [0, b'M', b'B', b'D'];

/// How many probes one attempt sends from each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Probe sockets S opens (one probe each).
    pub sockets: u16,
    /// Probes C sends.
    pub probes: u16,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            sockets: MAX_SOCKETS,
            probes: MAX_PROBES,
        }
    }
}

impl Budget {
    /// The budget within the caps.
    pub fn capped(self) -> Budget {
        Budget {
            sockets: self.sockets.min(MAX_SOCKETS),
            probes: self.probes.min(MAX_PROBES),
        }
    }

    /// The chance of at least one hit when the NAT picks uniformly from
    /// [`PORT_RANGE`].
    pub fn hit_probability(self) -> f64 {
        let n = f64::from(PORT_RANGE.1 - PORT_RANGE.0) + 1.0;
        hit_probability(u32::from(self.sockets), u32::from(self.probes), n)
    }
}

/// The chance that `probes` distinct ports out of `range` include at least one of the
/// ports of `sockets` random mappings: `1 - (1 - probes/range)^sockets`.
pub fn hit_probability(sockets: u32, probes: u32, range: f64) -> f64 {
    if range <= 0.0 {
        return 0.0;
    }
    let miss_one = (1.0 - f64::from(probes) / range).max(0.0);
    1.0 - miss_one.powf(f64::from(sockets))
}

/// `count` distinct ports in [`PORT_RANGE`] drawn from `random` (a source of random
/// `u16`s; [`probe::random_u16`] in the node). Gives up after `count * 8` draws, so it
/// ends whatever the source.
pub fn choose_ports(count: u16, mut random: impl FnMut() -> u16) -> Vec<u16> {
    let (lo, hi) = PORT_RANGE;
    let span = u32::from(hi - lo) + 1;
    let mut out: Vec<u16> = Vec::with_capacity(usize::from(count));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..u32::from(count) * 8 {
        if out.len() >= usize::from(count) {
            break;
        }
        let port = lo + (u32::from(random()) % span) as u16;
        if seen.insert(port) {
            out.push(port);
        }
    }
    out
}

/// One probe: the attempt's token and the port it was sent to (0 from S, which does
/// not know its external ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Random per attempt, known to both sides (signaled): a probe with another token
    /// is not ours.
    pub token: [u8; 8],
    /// The destination port as the sender wrote it.
    pub port: u16,
}

impl Probe {
    /// The 16 bytes on the wire: magic, token, port (big endian), two zero bytes.
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut b = [0u8; PROBE_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..12].copy_from_slice(&self.token);
        b[12..14].copy_from_slice(&self.port.to_be_bytes());
        b
    }

    /// A probe from exactly [`PROBE_LEN`] bytes with the magic and zero padding;
    /// anything else is `None`.
    pub fn decode(b: &[u8]) -> Option<Probe> {
        if b.len() != PROBE_LEN || b[..4] != MAGIC || b[14..] != [0, 0] {
            return None;
        }
        let mut token = [0u8; 8];
        token.copy_from_slice(&b[4..12]);
        Some(Probe {
            token,
            port: u16::from_be_bytes([b[12], b[13]]),
        })
    }
}

/// How a node's NAT maps its UDP port, as far as its observed addresses tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Some observer saw one of our UDP listen ports unchanged: no NAT, or a
    /// port-preserving one (C's side).
    Preserving,
    /// Observers saw our UDP listen ports only as other ports: the NAT translates
    /// ports (symmetric, or at least not port-preserving: S's side).
    Varies,
    /// No public UDP observation yet.
    Unknown,
}

impl Mapping {
    /// The name in signal frames.
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::Preserving => "preserving",
            Mapping::Varies => "varies",
            Mapping::Unknown => "unknown",
        }
    }

    /// From a signal frame's value (anything else is `Unknown`).
    pub fn parse(s: &str) -> Mapping {
        match s {
            "preserving" => Mapping::Preserving,
            "varies" => Mapping::Varies,
            _ => Mapping::Unknown,
        }
    }
}

fn udp_port(addr: &Multiaddr) -> Option<(IpAddr, u16)> {
    let mut it = addr.iter();
    let ip = match it.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    match it.next()? {
        Protocol::Udp(port) => Some((ip, port)),
        _ => None,
    }
}

/// Whether an observation of us at `ip` says something about our NAT: a public
/// address, or a non-public one that is none of our own listen addresses (a NAT
/// translated it: a carrier-grade NAT, or a NAT into a private network). Loopback,
/// unroutable and our own addresses (a peer on our LAN) say nothing.
fn counts(ip: IpAddr, own: &[IpAddr]) -> bool {
    use crate::node::ip_scope::{Scope, scope};
    match scope(ip) {
        Scope::Public => true,
        Scope::Private => !own.contains(&ip),
        _ => false,
    }
}

/// Classifies our mapping from our UDP listen addresses and the UDP addresses peers
/// observed us at (see `counts` for which observations count).
pub fn classify(listen: &[Multiaddr], observed: &[Multiaddr]) -> Mapping {
    let own: Vec<(IpAddr, u16)> = listen.iter().filter_map(udp_port).collect();
    let own_ips: Vec<IpAddr> = own.iter().map(|(ip, _)| *ip).collect();
    let seen: Vec<u16> = observed
        .iter()
        .filter_map(udp_port)
        .filter(|(ip, _)| counts(*ip, &own_ips))
        .map(|(_, p)| p)
        .collect();
    if seen.is_empty() || own.is_empty() {
        Mapping::Unknown
    } else if seen.iter().any(|p| own.iter().any(|(_, q)| q == p)) {
        Mapping::Preserving
    } else {
        Mapping::Varies
    }
}

/// The IPs peers observed us at that say something about our NAT (see `counts`):
/// where the other side's probes must go.
pub fn counted_ips(listen: &[Multiaddr], observed: &[Multiaddr]) -> Vec<IpAddr> {
    let own: Vec<IpAddr> = listen
        .iter()
        .filter_map(udp_port)
        .map(|(ip, _)| ip)
        .collect();
    let mut out: Vec<IpAddr> = Vec::new();
    for (ip, _) in observed.iter().filter_map(udp_port) {
        if counts(ip, &own) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Our address as the other side sees it when our NAT preserves ports: the IP of the
/// first observation that counts (see [`classify`]) and kept a listen port.
pub fn preserved_ip(listen: &[Multiaddr], observed: &[Multiaddr]) -> Option<IpAddr> {
    let own: Vec<(IpAddr, u16)> = listen.iter().filter_map(udp_port).collect();
    let own_ips: Vec<IpAddr> = own.iter().map(|(ip, _)| *ip).collect();
    observed
        .iter()
        .filter_map(udp_port)
        .find(|(ip, p)| counts(*ip, &own_ips) && own.iter().any(|(_, q)| q == p))
        .map(|(ip, _)| ip)
}

/// Which part this node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Behind the symmetric NAT: opens the probe sockets toward the other side.
    Sockets,
    /// Behind the port-preserving NAT: sends the probes to the other side's ports.
    Probes,
}

/// The part this node plays given both mappings; `None` when probing cannot help
/// (both port-preserving: the signaling punch works; both varying: the relay stays;
/// anything unknown).
pub fn part(ours: Mapping, theirs: Mapping) -> Option<Part> {
    match (ours, theirs) {
        (Mapping::Varies, Mapping::Preserving) => Some(Part::Sockets),
        (Mapping::Preserving, Mapping::Varies) => Some(Part::Probes),
        _ => None,
    }
}

/// The UDP socket address of a multiaddr (`/ip4|ip6/…/udp/PORT/…`).
pub fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    udp_port(addr).map(|(ip, port)| SocketAddr::new(ip, port))
}

/// Why an attempt is not allowed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This peer had an attempt less than [`PER_PEER_EVERY`] ago.
    PeerTooSoon,
    /// [`GLOBAL_PER_WINDOW`] attempts in the last [`GLOBAL_WINDOW`].
    GlobalRate,
    /// [`MAX_CONCURRENT`] attempts are running.
    Busy,
}

/// Most peers the [`Limiter`] remembers (the oldest is forgotten first).
pub const MAX_LIMITED_PEERS: usize = 256;

/// The rate limits of attempts, keyed by a peer key `K` (a node id in the node): one
/// attempt per peer per `every` ([`PER_PEER_EVERY`] by default), the global window and
/// the concurrency cap. Its per-peer table holds at most [`MAX_LIMITED_PEERS`] entries.
#[derive(Debug)]
pub struct Limiter<K> {
    every: Duration,
    last: HashMap<K, Instant>,
    recent: Vec<Instant>,
    running: usize,
}

impl<K> Default for Limiter<K> {
    fn default() -> Self {
        Limiter::new(PER_PEER_EVERY)
    }
}

impl<K> Limiter<K> {
    /// A limiter allowing one attempt per peer per `every`.
    pub fn new(every: Duration) -> Self {
        Limiter {
            every,
            last: HashMap::new(),
            recent: Vec::new(),
            running: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    /// Starts an attempt with `peer` at `now` if every limit allows it; call
    /// [`Limiter::finish`] when it ends.
    pub fn start(&mut self, peer: &K, now: Instant) -> Result<(), Refused> {
        if self.running >= MAX_CONCURRENT {
            return Err(Refused::Busy);
        }
        if self
            .last
            .get(peer)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.every)
        {
            return Err(Refused::PeerTooSoon);
        }
        self.recent
            .retain(|t| now.saturating_duration_since(*t) < GLOBAL_WINDOW);
        if self.recent.len() >= GLOBAL_PER_WINDOW {
            return Err(Refused::GlobalRate);
        }
        // Entries older than the per-peer interval are dropped; past the cap the oldest
        // goes (its peer may then try again sooner, still within the global limit).
        let every = self.every;
        self.last
            .retain(|_, t| now.saturating_duration_since(*t) < every);
        if self.last.len() >= MAX_LIMITED_PEERS
            && let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
        {
            self.last.remove(&oldest);
        }
        self.last.insert(peer.clone(), now);
        self.recent.push(now);
        self.running += 1;
        Ok(())
    }

    /// An attempt ended.
    pub fn finish(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// Attempts running.
    pub fn running(&self) -> usize {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn probes_round_trip_and_foreign_datagrams_are_refused() {
        let p = Probe {
            token: *b"12345678",
            port: 40001,
        };
        let wire = p.encode();
        assert_eq!(wire.len(), PROBE_LEN);
        assert_eq!(wire[0], 0, "QUIC fixed bit cleared");
        assert_eq!(Probe::decode(&wire), Some(p));
        assert_eq!(Probe::decode(&wire[..15]), None);
        let mut long = wire.to_vec();
        long.push(0);
        assert_eq!(Probe::decode(&long), None);
        let mut bad = wire;
        bad[1] = b'X';
        assert_eq!(Probe::decode(&bad), None);
        let mut pad = wire;
        pad[15] = 1;
        assert_eq!(Probe::decode(&pad), None);
        assert_eq!(Probe::decode(&[]), None);
    }

    #[test]
    fn the_default_budget_makes_a_hit_likely_and_is_capped() {
        let b = Budget::default();
        let p = b.hit_probability();
        assert!((0.6..0.7).contains(&p), "{p}");
        assert_eq!(
            Budget {
                sockets: 10_000,
                probes: 9_999
            }
            .capped(),
            Budget::default()
        );
        assert_eq!(hit_probability(0, 256, 64512.0), 0.0);
        assert_eq!(hit_probability(1, 10, 10.0), 1.0);
        assert_eq!(hit_probability(1, 10, 0.0), 0.0);
        let small = Budget {
            sockets: 64,
            probes: 64,
        }
        .hit_probability();
        assert!(small < 0.1, "{small}");
    }

    #[test]
    fn ports_are_distinct_in_range_and_bounded_in_draws() {
        let mut x: u32 = 12345;
        let ports = choose_ports(256, || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u16
        });
        assert_eq!(ports.len(), 256);
        let set: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert!(ports.iter().all(|p| *p >= PORT_RANGE.0));
        // A source stuck on one value gives one port, and the loop ends.
        assert_eq!(choose_ports(256, || 7).len(), 1);
        assert!(choose_ports(0, || 7).is_empty());
    }

    #[test]
    fn the_mapping_comes_from_observed_public_ports() {
        let listen = [ma("/ip4/192.168.1.2/udp/4001/quic-v1")];
        let same = [ma("/ip4/198.51.100.2/udp/4001/quic-v1")];
        let other = [ma("/ip4/198.51.100.3/udp/51234/quic-v1")];
        // Behind a NAT into a private network (a carrier's, or the lab's 10.77/16).
        let private = [ma("/ip4/10.0.0.9/udp/51234/quic-v1")];
        // A peer on our own LAN sees our listen address: nothing about the NAT.
        let lan = [ma("/ip4/192.168.1.2/udp/51234/quic-v1")];
        let lo = [ma("/ip4/127.0.0.1/udp/4001/quic-v1")];
        assert_eq!(classify(&listen, &same), Mapping::Preserving);
        assert_eq!(classify(&listen, &other), Mapping::Varies);
        assert_eq!(classify(&listen, &private), Mapping::Varies);
        assert_eq!(classify(&listen, &lan), Mapping::Unknown);
        assert_eq!(classify(&listen, &lo), Mapping::Unknown);
        assert_eq!(preserved_ip(&listen, &other), None);
        assert_eq!(
            preserved_ip(
                &listen,
                &[lan[0].clone(), other[0].clone(), same[0].clone()]
            ),
            Some("198.51.100.2".parse().unwrap())
        );
        assert_eq!(classify(&listen, &[]), Mapping::Unknown);
        assert_eq!(classify(&[], &other), Mapping::Unknown);
        let both = [other[0].clone(), same[0].clone()];
        assert_eq!(classify(&listen, &both), Mapping::Preserving);
        // TCP observations say nothing about UDP.
        assert_eq!(
            classify(&listen, &[ma("/ip4/198.51.100.3/tcp/5000")]),
            Mapping::Unknown
        );
        for m in [Mapping::Preserving, Mapping::Varies, Mapping::Unknown] {
            assert_eq!(Mapping::parse(m.as_str()), m);
        }
        assert_eq!(Mapping::parse("cone"), Mapping::Unknown);
    }

    #[test]
    fn only_one_symmetric_side_probes() {
        use Mapping::*;
        assert_eq!(part(Varies, Preserving), Some(Part::Sockets));
        assert_eq!(part(Preserving, Varies), Some(Part::Probes));
        assert_eq!(part(Varies, Varies), None);
        assert_eq!(part(Preserving, Preserving), None);
        assert_eq!(part(Unknown, Varies), None);
        assert_eq!(part(Preserving, Unknown), None);
    }

    #[test]
    fn socket_addresses_of_udp_multiaddrs() {
        assert_eq!(
            socket_addr(&ma("/ip4/10.77.0.2/udp/4001/quic-v1")),
            Some("10.77.0.2:4001".parse().unwrap())
        );
        assert_eq!(socket_addr(&ma("/ip4/10.77.0.2/tcp/4001")), None);
        assert_eq!(socket_addr(&ma("/dns4/x/udp/1/quic-v1")), None);
    }

    #[test]
    fn attempts_are_limited_per_peer_globally_and_at_once() {
        let t = Instant::now();
        let mut l: Limiter<u32> = Limiter::default();
        assert_eq!(l.start(&1, t), Ok(()));
        assert_eq!(l.start(&2, t), Err(Refused::Busy));
        l.finish();
        assert_eq!(
            l.start(&1, t + Duration::from_secs(1)),
            Err(Refused::PeerTooSoon)
        );
        // Other peers, one after the other, up to the global rate.
        for peer in 2..(GLOBAL_PER_WINDOW as u32 + 1) {
            assert_eq!(l.start(&peer, t + Duration::from_secs(2)), Ok(()));
            l.finish();
        }
        assert_eq!(
            l.start(&99, t + Duration::from_secs(3)),
            Err(Refused::GlobalRate)
        );
        // A window later, both limits have passed.
        let later = t + GLOBAL_WINDOW + PER_PEER_EVERY;
        assert_eq!(l.start(&1, later), Ok(()));
        assert_eq!(l.running(), 1);
        l.finish();
        l.finish();
        assert_eq!(l.running(), 0);
    }

    #[test]
    fn the_per_peer_table_is_bounded() {
        let t = Instant::now();
        let mut l: Limiter<u32> = Limiter::default();
        // A thousand peers over ten minutes, one attempt every 600 ms.
        for i in 0..1000u32 {
            let _ = l.start(&i, t + Duration::from_millis(600) * i);
            l.finish();
            assert!(l.last.len() <= GLOBAL_PER_WINDOW);
        }
        // With a long per-peer interval the cap holds (and evicts the oldest).
        let mut l: Limiter<u32> = Limiter::new(Duration::from_secs(86_400));
        for i in 0..1000u32 {
            let _ = l.start(&i, t + Duration::from_secs(11) * i);
            l.finish();
            assert!(l.last.len() <= MAX_LIMITED_PEERS);
        }
        assert_eq!(l.last.len(), MAX_LIMITED_PEERS);
    }

    #[test]
    fn the_per_peer_interval_is_configurable() {
        let t = Instant::now();
        let mut l: Limiter<u32> = Limiter::new(Duration::from_secs(1));
        assert_eq!(l.start(&1, t), Ok(()));
        l.finish();
        assert_eq!(
            l.start(&1, t + Duration::from_millis(500)),
            Err(Refused::PeerTooSoon)
        );
        assert_eq!(l.start(&1, t + Duration::from_secs(1)), Ok(()));
        l.finish();
    }
}
