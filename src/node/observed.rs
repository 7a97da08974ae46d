//! Addresses peers observed for this node (identify's `observedAddr`), as a pure table.
//!
//! Any peer can claim any address as the one it sees us at. Left as it was, one hostile
//! peer could rank an address of its choosing above our listen addresses in every
//! candidate list we send, and so steer the hole punches of the peers we signal with.
//! So an observation counts only when it is plausible, and it ranks above listen
//! addresses only once several unrelated observers agree:
//!
//! - **one vote per observer group.** Observers are grouped by the IP of their
//!   connection to us (IPv4: the address, IPv6: its /56, as go-libp2p groups them); a
//!   group's latest observation replaces its earlier one, so a host with many keys
//!   counts once and cannot fill the table with addresses;
//! - **plausible.** The observer's connection is direct (not a relay circuit), the
//!   address starts with an IP that is not unspecified, its scope is the observer's
//!   (a loopback observer sees a loopback address, a LAN observer a private one, an
//!   Internet observer a global one), and its transport (`tcp`, `udp/quic-v1`, …) is one
//!   this node listens on;
//! - **confirmed** when observers of [`CONFIRMING_GROUPS`] networks observed it, and
//!   ranked by how many networks did: for Internet observers a network is a wide one
//!   ([`mesh_core::IpGroup`]: an IPv4 /16, an IPv6 /32), since observer groups are
//!   cheap (two IPv4 addresses, or the 256 /56s of one /48 from a tunnel broker, used
//!   to confirm any address they liked and rank it first); LAN and loopback observers
//!   (the operator's own networks, a lab's) vote by observer group. Unconfirmed ones
//!   are offered after listen addresses (they still help a peer behind the same NAT
//!   whose observer was alone);
//! - bounded: at most [`MAX_GROUPS`] groups; when full, the stalest observation of the
//!   network holding the most makes room (one /48 rotating through its /56s pushes out
//!   only its own), and an observation lapses after [`OBSERVATION_TTL`] (identify
//!   repeats every 5 minutes).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mesh_core::{IpGroup, IpKey};

use super::addrs::without_peer;
use super::ip_scope::{Scope, ip_of, scope};

/// Observer groups kept (one observation each).
pub const MAX_GROUPS: usize = 64;
/// How long an observation counts without being repeated.
pub const OBSERVATION_TTL: Duration = Duration::from_secs(30 * 60);
/// Distinct networks of observers (wide ones for Internet observers) that make an
/// address confirmed.
pub const CONFIRMING_GROUPS: usize = 2;

/// Observers that count as one: an IPv4 address or an IPv6 /56.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObserverGroup {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// The first 56 bits of an IPv6 address.
    V6([u8; 7]),
}

/// The group of an observer whose connection to us has remote address `remote`; `None`
/// for a relayed or non-IP connection (its observation says nothing about us).
pub fn observer_group(remote: &Multiaddr) -> Option<ObserverGroup> {
    if remote.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    match ip_of(remote)? {
        IpAddr::V4(ip) => Some(ObserverGroup::V4(ip)),
        IpAddr::V6(ip) => {
            let o = ip.octets();
            let mut g = [0u8; 7];
            g.copy_from_slice(&o[..7]);
            Some(ObserverGroup::V6(g))
        }
    }
}

/// The observer group of a peer connected to us from `remote` that claims to see us at
/// `addr`, when the claim is plausible given our listen addresses `listen`: the
/// connection is direct, `addr` starts with a routable IP of the observer's scope, and
/// its transport is one we listen on. `None` when it is not.
pub fn plausible(
    remote: &Multiaddr,
    addr: &Multiaddr,
    listen: &[Multiaddr],
) -> Option<ObserverGroup> {
    let group = observer_group(remote)?;
    let (ip, observer_ip) = (ip_of(addr)?, ip_of(remote)?);
    if scope(ip) == Scope::Unroutable || scope(ip) != scope(observer_ip) {
        return None;
    }
    let kind = transport(addr);
    if kind.is_empty() || !listen.iter().any(|l| transport(l) == kind) {
        return None;
    }
    Some(group)
}

/// The transport of an address: its protocol names after the IP, ports and peer ids
/// left out (`tcp`, `udp/quic-v1`, `tcp/ws`).
fn transport(addr: &Multiaddr) -> Vec<&'static str> {
    addr.iter()
        .skip(1)
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .map(|p| p.tag())
        .collect()
}

/// The network an observer's vote counts for: a wide one for an Internet observer, its
/// observer group otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Vote {
    /// An Internet observer's wide network.
    Wide(IpGroup),
    /// A LAN or loopback observer's group.
    Narrow(ObserverGroup),
}

/// The vote of an observer connected from `remote`, of observer group `group`.
pub(crate) fn vote_of(remote: &Multiaddr, group: ObserverGroup) -> Vote {
    match ip_of(remote) {
        Some(ip) if scope(ip) == Scope::Public => Vote::Wide(IpKey::of(ip).group()),
        _ => Vote::Narrow(group),
    }
}

#[derive(Debug, Clone)]
struct Observation {
    addr: Multiaddr,
    at: Instant,
    vote: Vote,
}

/// What [`ObservedAddrs::ranked`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranked {
    /// Observed from at least [`CONFIRMING_GROUPS`] networks, most networks first.
    pub confirmed: Vec<Multiaddr>,
    /// Observed by fewer groups, most recent first.
    pub unconfirmed: Vec<Multiaddr>,
}

/// The observed-address table.
#[derive(Debug, Default)]
pub struct ObservedAddrs {
    by_group: HashMap<ObserverGroup, Observation>,
}

impl ObservedAddrs {
    /// Records that an observer, connected to us from `remote`, sees us at `addr`, given
    /// our listen addresses `listen`. Returns whether the observation counts.
    pub fn observe(
        &mut self,
        remote: &Multiaddr,
        addr: &Multiaddr,
        listen: &[Multiaddr],
        now: Instant,
    ) -> bool {
        let addr = without_peer(addr);
        let Some(group) = plausible(remote, &addr, listen) else {
            return false;
        };
        let vote = vote_of(remote, group);
        if !self.by_group.contains_key(&group) && self.by_group.len() >= MAX_GROUPS {
            self.expire(now);
            if self.by_group.len() >= MAX_GROUPS
                && let Some(stalest) = self.stalest_of_the_largest()
            {
                self.by_group.remove(&stalest);
            }
        }
        self.by_group.insert(
            group,
            Observation {
                addr,
                at: now,
                vote,
            },
        );
        true
    }

    /// The stalest observation of the network holding the most.
    fn stalest_of_the_largest(&self) -> Option<ObserverGroup> {
        let mut held: HashMap<Vote, usize> = HashMap::new();
        for o in self.by_group.values() {
            *held.entry(o.vote).or_default() += 1;
        }
        let most = held.values().copied().max()?;
        self.by_group
            .iter()
            .filter(|(_, o)| held.get(&o.vote) == Some(&most))
            .min_by_key(|(_, o)| o.at)
            .map(|(g, _)| *g)
    }

    fn expire(&mut self, now: Instant) {
        self.by_group
            .retain(|_, o| now.saturating_duration_since(o.at) < OBSERVATION_TTL);
    }

    /// The live observations, confirmed first.
    pub fn ranked(&self, now: Instant) -> Ranked {
        // (address, networks that voted for it, latest observation)
        let mut votes: Vec<(Multiaddr, Vec<Vote>, Instant)> = Vec::new();
        for o in self
            .by_group
            .values()
            .filter(|o| now.saturating_duration_since(o.at) < OBSERVATION_TTL)
        {
            match votes.iter_mut().find(|(a, ..)| *a == o.addr) {
                Some((_, v, at)) => {
                    if !v.contains(&o.vote) {
                        v.push(o.vote);
                    }
                    *at = (*at).max(o.at);
                }
                None => votes.push((o.addr.clone(), vec![o.vote], o.at)),
            }
        }
        let mut tally: Vec<(Multiaddr, usize, Instant)> = votes
            .into_iter()
            .map(|(a, v, at)| (a, v.len(), at))
            .collect();
        tally.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)));
        let (confirmed, unconfirmed): (Vec<_>, Vec<_>) = tally
            .into_iter()
            .partition(|(_, n, _)| *n >= CONFIRMING_GROUPS);
        Ranked {
            confirmed: confirmed.into_iter().map(|(a, ..)| a).collect(),
            unconfirmed: unconfirmed.into_iter().map(|(a, ..)| a).collect(),
        }
    }

    /// Observer groups held.
    pub fn len(&self) -> usize {
        self.by_group.len()
    }

    /// Whether no observation is held.
    pub fn is_empty(&self) -> bool {
        self.by_group.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn listen() -> Vec<Multiaddr> {
        vec![
            ma("/ip4/0.0.0.0/tcp/4001"),
            ma("/ip4/0.0.0.0/udp/4001/quic-v1"),
        ]
    }

    #[test]
    fn one_host_with_many_keys_is_one_vote() {
        let mut t = ObservedAddrs::default();
        let now = Instant::now();
        // Many connections from one IP (one host, many keys) all claim the same address.
        for port in 0..10 {
            let remote = ma(&format!("/ip4/198.51.100.7/tcp/{}", 5000 + port));
            assert!(t.observe(&remote, &ma("/ip4/203.0.113.9/tcp/4001"), &listen(), now));
        }
        let r = t.ranked(now);
        assert!(r.confirmed.is_empty());
        assert_eq!(r.unconfirmed, vec![ma("/ip4/203.0.113.9/tcp/4001")]);
        // A second, unrelated observer confirms it.
        t.observe(
            &ma("/ip4/192.0.2.20/tcp/1"),
            &ma("/ip4/203.0.113.9/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"),
            &listen(),
            now,
        );
        let r = t.ranked(now);
        assert_eq!(r.confirmed, vec![ma("/ip4/203.0.113.9/tcp/4001")]);
        assert!(r.unconfirmed.is_empty());
    }

    #[test]
    fn a_group_keeps_only_its_latest_claim() {
        let mut t = ObservedAddrs::default();
        let now = Instant::now();
        let remote = ma("/ip6/2001:db8:1:2::5/udp/9/quic-v1");
        for i in 0..50 {
            let claim = ma(&format!("/ip6/2001:db8:ff::{i:x}/udp/4001/quic-v1"));
            assert!(t.observe(&remote, &claim, &listen(), now));
        }
        // Another address of the same /56 is the same observer.
        t.observe(
            &ma("/ip6/2001:db8:1:2a::9/udp/9/quic-v1"),
            &ma("/ip6/2001:db8:ff::1/udp/4001/quic-v1"),
            &listen(),
            now,
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.ranked(now).unconfirmed,
            vec![ma("/ip6/2001:db8:ff::1/udp/4001/quic-v1")]
        );
    }

    #[test]
    fn implausible_claims_do_not_count() {
        let mut t = ObservedAddrs::default();
        let now = Instant::now();
        let global = ma("/ip4/198.51.100.7/tcp/5000");
        let cases = [
            // Over a relay circuit: says nothing about us.
            (
                ma(
                    "/ip4/198.51.100.7/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo/p2p-circuit",
                ),
                ma("/ip4/203.0.113.9/tcp/4001"),
            ),
            // An Internet observer claiming it sees us on a LAN or loopback address.
            (global.clone(), ma("/ip4/10.0.0.5/tcp/4001")),
            (global.clone(), ma("/ip4/127.0.0.1/tcp/4001")),
            (global.clone(), ma("/ip6/fe80::1/tcp/4001")),
            // A transport we do not listen on.
            (global.clone(), ma("/ip4/203.0.113.9/udp/53/quic")),
            (global.clone(), ma("/ip4/203.0.113.9/tcp/4001/ws")),
            // Not an IP address, unspecified, multicast.
            (global.clone(), ma("/dns4/example.org/tcp/4001")),
            (global.clone(), ma("/ip4/0.0.0.0/tcp/4001")),
            (global.clone(), ma("/ip4/224.0.0.1/tcp/4001")),
            (global.clone(), ma("/ip4/203.0.113.9")),
            // A non-IP connection.
            (ma("/memory/5"), ma("/ip4/203.0.113.9/tcp/4001")),
        ];
        for (remote, claim) in cases {
            assert!(
                !t.observe(&remote, &claim, &listen(), now),
                "{remote} → {claim}"
            );
        }
        assert!(t.is_empty());
        // A LAN observer seeing a LAN address, a loopback one a loopback address: fine.
        assert!(t.observe(
            &ma("/ip4/10.0.0.2/tcp/1"),
            &ma("/ip4/10.0.0.5/tcp/4001"),
            &listen(),
            now
        ));
        assert!(t.observe(
            &ma("/ip4/127.0.0.1/tcp/1"),
            &ma("/ip4/127.0.0.1/udp/4001/quic-v1"),
            &listen(),
            now
        ));
    }

    #[test]
    fn the_table_is_bounded_and_observations_lapse() {
        let mut t = ObservedAddrs::default();
        let t0 = Instant::now();
        for i in 0..(MAX_GROUPS as u32 + 40) {
            let ip = Ipv4Addr::from(0xc633_6400_u32 + i); // 198.51.100.0 onwards
            let at = t0 + Duration::from_secs(u64::from(i));
            t.observe(
                &ma(&format!("/ip4/{ip}/tcp/1")),
                &ma(&format!("/ip4/203.0.113.{}/tcp/4001", i % 200)),
                &listen(),
                at,
            );
        }
        assert_eq!(t.len(), MAX_GROUPS);
        let late = t0 + Duration::from_secs(200);
        assert_eq!(t.ranked(late).unconfirmed.len(), MAX_GROUPS);
        assert_eq!(
            t.ranked(late + OBSERVATION_TTL),
            Ranked::default(),
            "every observation lapsed"
        );
    }

    #[test]
    fn one_wide_network_neither_confirms_an_address_nor_pushes_others_out() {
        let mut t = ObservedAddrs::default();
        let t0 = Instant::now();
        let real = ma("/ip4/203.0.113.9/tcp/4001");
        // Two observers of unrelated networks see the node at its real address.
        for remote in ["/ip4/198.51.100.7/tcp/1", "/ip4/192.0.2.20/tcp/1"] {
            assert!(t.observe(&ma(remote), &real, &listen(), t0));
        }
        // Then the 256 /56s of one /48 (a tunnel broker's) claim another, over and over.
        let fake = ma("/ip4/203.0.113.66/tcp/4001");
        for round in 0..3u64 {
            for n in 0..256u32 {
                let remote = ma(&format!("/ip6/2001:db8:77:{:x}00::1/tcp/1", n));
                let at = t0 + Duration::from_secs(1 + round * 300 + u64::from(n));
                assert!(t.observe(&remote, &fake, &listen(), at));
            }
        }
        let r = t.ranked(t0 + Duration::from_secs(1000));
        assert_eq!(r.confirmed, vec![real], "{r:?}");
        assert_eq!(r.unconfirmed, vec![fake]);
        assert_eq!(t.len(), MAX_GROUPS);
    }

    #[test]
    fn lan_observers_vote_each_for_itself() {
        let mut t = ObservedAddrs::default();
        let now = Instant::now();
        let addr = ma("/ip4/10.77.0.1/tcp/4001");
        for remote in ["/ip4/10.77.0.2/tcp/1", "/ip4/10.77.0.3/tcp/1"] {
            t.observe(&ma(remote), &addr, &listen(), now);
        }
        assert_eq!(t.ranked(now).confirmed, vec![addr]);
    }
}
