//! Which signaled candidates the node dials, as pure logic: whose correlations, how
//! many addresses, which addresses.
//!
//! Dialing a candidate sends packets (a QUIC Initial, a TCP SYN) to an address another
//! node chose, so a node that dialed every candidate would be a reflector: any peer
//! could make it send handshakes to any host, its own LAN and loopback included. The
//! node therefore dials candidates only
//!
//! - in correlations it started itself (its own routes), or, as the responder, for
//!   requesters its [`PunchFor`] setting accepts (by default: session peers and members
//!   of a swarm it is in);
//! - for at most [`MAX_CANDIDATE_FRAMES`] candidate frames per correlation, each at
//!   most [`mesh_core::families::MAX_CANDIDATES`] addresses (one dial per frame and
//!   transport);
//! - to addresses in the other node's plausible scope ([`CandidatePolicy::in_scope`]):
//!   public IP addresses; a loopback address only when the node reaches the other side
//!   (or the signaling host that carried the frame) over loopback, so both are on this
//!   host; a private or link-local address only when one of the node's own addresses,
//!   or the address it reaches that peer or host at, is on the same network (the same
//!   /24, or /64 for IPv6); never unspecified, multicast or broadcast addresses, nor
//!   names (`/dns…`, which could resolve anywhere). [`SignalSettings::private_candidates`]
//!   lifts the loopback and private rule for operators whose nodes share a network they
//!   do not listen on.

use libp2p::Multiaddr;
use serde::Deserialize;

use crate::node::ip_scope::{Scope, ip_of, plausible, scope};

/// Candidate frames dialed per correlation (the first, and one update).
pub const MAX_CANDIDATE_FRAMES: u32 = 2;

/// Whose incoming `connect` requests the node dials back (a QUIC hole punch toward
/// the requester's candidates). Every request is still answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PunchFor {
    /// Session peers and members of a swarm this node is in (the default).
    #[default]
    Known,
    /// Any requester (the node's candidates scope rule still applies).
    Anyone,
    /// Nobody: only the node's own routes dial candidates.
    Nobody,
}

/// The signaling policy (`[signal]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalSettings {
    /// Whose requests the node punches back for.
    pub punch_for: PunchFor,
    /// Dial loopback and private candidates whatever the node's own addresses.
    pub private_candidates: bool,
    /// Birthday-paradox probing: at most one attempt per peer this often, in seconds
    /// (`birthday_every_secs`, default 60; the global limits stay).
    pub birthday_every_secs: u64,
    /// Signal frames read from all peers of one network (an IPv4 address or IPv6 /64)
    /// at once (`network_frame_burst`, default 512; `mesh_signal::Config::per_network`).
    pub network_frame_burst: u32,
    /// Then this many a minute (`network_frames_per_minute`, default 1,200). A host
    /// whose clients share one address (a CGNAT, a campus) raises both.
    pub network_frames_per_minute: u32,
}

impl SignalSettings {
    /// The per-network allowance of signal frames.
    pub fn network_frames(&self) -> mesh_core::RateLimit {
        mesh_core::RateLimit::per_minute(self.network_frame_burst, self.network_frames_per_minute)
    }
}

impl Default for SignalSettings {
    fn default() -> Self {
        SignalSettings {
            punch_for: PunchFor::Known,
            private_candidates: false,
            birthday_every_secs: 60,
            network_frame_burst: 512,
            network_frames_per_minute: 1200,
        }
    }
}

/// Stage timeouts of the routing policy (`[route]`), seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSettings {
    /// Direct dials to the advertised and DHT addresses.
    pub direct_secs: u64,
    /// Signaling through a host, then both sides dialing at once.
    pub signaling_secs: u64,
    /// A circuit through a relay.
    pub relay_secs: u64,
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            direct_secs: 5,
            signaling_secs: 10,
            relay_secs: 10,
        }
    }
}

/// What the node knows of a requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requester {
    /// It holds a session with this node.
    pub session: bool,
    /// It is a member of a swarm this node is in.
    pub member: bool,
}

/// The policy with its settings; every call is pure.
#[derive(Debug, Clone, Copy, Default)]
pub struct CandidatePolicy {
    settings: SignalSettings,
}

impl CandidatePolicy {
    /// A policy with `settings`.
    pub fn new(settings: SignalSettings) -> Self {
        CandidatePolicy { settings }
    }

    /// Whether the node dials back the candidates of `requester`'s `connect` request.
    pub fn punches_for(&self, requester: Requester) -> bool {
        match self.settings.punch_for {
            PunchFor::Known => requester.session || requester.member,
            PunchFor::Anyone => true,
            PunchFor::Nobody => false,
        }
    }

    /// Whether `candidate` is in the other node's plausible scope. `path` holds the
    /// remote addresses of the connections that carried the frame (to the other node
    /// itself or to the signaling host); `own` the node's own listen and external
    /// addresses.
    pub fn in_scope(&self, candidate: &Multiaddr, path: &[Multiaddr], own: &[Multiaddr]) -> bool {
        let Some(ip) = ip_of(candidate) else {
            return false;
        };
        match scope(ip) {
            Scope::Unroutable => false,
            Scope::Loopback | Scope::Private if self.settings.private_candidates => true,
            _ => plausible(ip, path, own),
        }
    }

    /// The candidates of one frame the node may dial: in scope, without duplicates,
    /// at most `max`.
    pub fn filter(
        &self,
        candidates: Vec<Multiaddr>,
        path: &[Multiaddr],
        own: &[Multiaddr],
        max: usize,
    ) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for c in candidates {
            if out.len() >= max {
                break;
            }
            if !out.contains(&c) && self.in_scope(&c, path, own) {
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_birthday_interval_is_a_config_key() {
        assert_eq!(SignalSettings::default().birthday_every_secs, 60);
        let s: SignalSettings = toml::from_str("birthday_every_secs = 5").unwrap();
        assert_eq!(s.birthday_every_secs, 5);
        assert_eq!(s.punch_for, PunchFor::Known, "the rest stays default");
    }

    #[test]
    fn the_network_frame_allowance_is_a_config_key() {
        let default = SignalSettings::default().network_frames();
        let signal = mesh_signal::Config::new(mesh_core::NodeKeypair::generate().node_id());
        assert_eq!(
            default.burst, signal.per_network.burst,
            "the behaviour's default"
        );
        assert!((default.per_second - signal.per_network.per_second).abs() < 1e-9);
        let s: SignalSettings =
            toml::from_str("network_frame_burst = 4096\nnetwork_frames_per_minute = 6000").unwrap();
        assert_eq!(s.network_frames().burst, 4096);
        assert!((s.network_frames().per_second - 100.0).abs() < 1e-9);
    }

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_known_requesters_get_a_punch_by_default() {
        let p = CandidatePolicy::default();
        let stranger = Requester::default();
        assert!(!p.punches_for(stranger));
        assert!(p.punches_for(Requester {
            session: true,
            member: false
        }));
        assert!(p.punches_for(Requester {
            session: false,
            member: true
        }));
        let anyone = CandidatePolicy::new(SignalSettings {
            punch_for: PunchFor::Anyone,
            ..SignalSettings::default()
        });
        assert!(anyone.punches_for(stranger));
        let nobody = CandidatePolicy::new(SignalSettings {
            punch_for: PunchFor::Nobody,
            ..SignalSettings::default()
        });
        assert!(!nobody.punches_for(Requester {
            session: true,
            member: true
        }));
    }

    #[test]
    fn candidates_stay_within_the_other_sides_plausible_scope() {
        let p = CandidatePolicy::default();
        let public_path = [ma("/ip4/203.0.113.9/tcp/4001")];
        let own = [
            ma("/ip4/192.168.1.4/udp/4001/quic-v1"),
            ma("/ip4/127.0.0.1/udp/4001/quic-v1"),
        ];
        let ok = |c: &str, path: &[Multiaddr], own: &[Multiaddr]| p.in_scope(&ma(c), path, own);
        // Public addresses: yes.
        assert!(ok("/ip4/198.51.100.3/udp/4001/quic-v1", &public_path, &own));
        assert!(ok("/ip6/2001:db8::1/udp/4001/quic-v1", &public_path, &own));
        // The victim's LAN (another network than ours) and its loopback: no, even
        // though the node listens on loopback itself.
        assert!(!ok("/ip4/10.0.0.5/udp/53/quic-v1", &public_path, &own));
        assert!(!ok("/ip4/127.0.0.1/udp/53/quic-v1", &public_path, &own));
        assert!(!ok("/ip6/::1/udp/53/quic-v1", &public_path, &own));
        assert!(!ok("/ip4/169.254.1.1/udp/53/quic-v1", &public_path, &own));
        assert!(!ok("/ip4/100.64.0.1/udp/53/quic-v1", &public_path, &own));
        assert!(!ok("/ip6/fd00::5/udp/53/quic-v1", &public_path, &own));
        // Our own LAN: yes (both nodes behind one router).
        assert!(ok("/ip4/192.168.1.77/udp/4001/quic-v1", &public_path, &own));
        // A private address on the network we reach the host by: yes.
        let lan_path = [ma("/ip4/10.0.0.1/tcp/4001")];
        assert!(ok("/ip4/10.0.0.5/udp/4001/quic-v1", &lan_path, &[]));
        // Loopback when the host (or the peer) is reached over loopback: same machine.
        let lo_path = [ma("/ip4/127.0.0.1/tcp/4001")];
        assert!(ok("/ip4/127.0.0.1/udp/4001/quic-v1", &lo_path, &[]));
        // Never: unspecified, multicast, broadcast, names.
        for c in [
            "/ip4/0.0.0.0/udp/1/quic-v1",
            "/ip4/224.0.0.1/udp/1/quic-v1",
            "/ip4/255.255.255.255/udp/1/quic-v1",
            "/ip4/0.1.2.3/udp/1/quic-v1",
            "/ip6/ff02::1/udp/1/quic-v1",
            "/dns4/localhost/udp/1/quic-v1",
        ] {
            assert!(!ok(c, &lo_path, &own), "{c}");
        }
        // IPv4 written as IPv6 is judged as IPv4.
        assert!(!ok(
            "/ip6/::ffff:127.0.0.1/udp/1/quic-v1",
            &public_path,
            &own
        ));
        assert!(!ok(
            "/ip6/::ffff:10.0.0.5/udp/1/quic-v1",
            &public_path,
            &own
        ));
        // The operator's flag lifts the loopback and private rule, not the rest.
        let open = CandidatePolicy::new(SignalSettings {
            private_candidates: true,
            ..SignalSettings::default()
        });
        assert!(open.in_scope(&ma("/ip4/10.0.0.5/udp/53/quic-v1"), &public_path, &[]));
        assert!(open.in_scope(&ma("/ip4/127.0.0.1/udp/53/quic-v1"), &public_path, &[]));
        assert!(!open.in_scope(&ma("/ip4/0.0.0.0/udp/53/quic-v1"), &public_path, &[]));
    }

    #[test]
    fn a_frame_is_filtered_deduplicated_and_capped() {
        let p = CandidatePolicy::default();
        let path = [ma("/ip4/203.0.113.9/tcp/4001")];
        let cands: Vec<Multiaddr> = [
            "/ip4/10.0.0.5/udp/53/quic-v1",
            "/ip4/198.51.100.3/udp/4001/quic-v1",
            "/ip4/198.51.100.3/udp/4001/quic-v1",
            "/ip4/198.51.100.4/udp/4001/quic-v1",
            "/ip4/198.51.100.5/udp/4001/quic-v1",
        ]
        .iter()
        .map(|s| ma(s))
        .collect();
        assert_eq!(
            p.filter(cands, &path, &[], 2),
            vec![
                ma("/ip4/198.51.100.3/udp/4001/quic-v1"),
                ma("/ip4/198.51.100.4/udp/4001/quic-v1")
            ]
        );
    }
}
