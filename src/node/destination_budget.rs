//! A budget per destination (an IPv4 address, an IPv6 /64) for what the node sends
//! toward addresses peers name. Fresh keys cost nothing, so a budget per asking peer
//! alone lets many keys aim the node at one host; each address taken here spends a
//! token of its destination, whichever peer named it. Pure: `now` is passed in; the
//! clock starts at the first `now` given.
//!
//! Each sender keeps a budget of its own, at its own rate: DCUtR's dials
//! (`dcutr_scope`: 16, then 16 a minute), the thin-mesh feed's (`groups`: 8, then 8 a
//! minute, loopback free), birthday probing's attempts (`router::birthday`: 2, then 1
//! every two minutes) and each DHT's dials (`kad_scope`: 32, then 32 a minute, loopback
//! free); a host named to all of them gets the sum. The responder's punches
//! (`router::punch_budget`) charge their destination together with two more buckets
//! (the deliverer's, the node's) and keep their own limiter.

use std::net::IpAddr;
use std::time::Instant;

use libp2p::Multiaddr;
use mesh_core::ipkey::is_loopback;
use mesh_core::{IpKey, RateLimit, RateLimiter};

/// Tokens per destination, at most `tracked` destinations followed (the least recently
/// used forgotten first).
#[derive(Debug)]
pub(crate) struct DestinationBudget {
    targets: RateLimiter<IpKey>,
    /// The start of the clock: the first `now` given.
    epoch: Option<Instant>,
    /// Loopback destinations take no token (the node's scope lets them in only for a
    /// node on loopback alone: several nodes on one host).
    loopback_free: bool,
}

impl DestinationBudget {
    /// `limit` per destination, `tracked` destinations followed; loopback counted.
    pub(crate) fn new(limit: RateLimit, tracked: usize) -> Self {
        DestinationBudget {
            targets: RateLimiter::new(limit, tracked),
            epoch: None,
            loopback_free: false,
        }
    }

    /// The same budget with loopback destinations free.
    pub(crate) fn loopback_free(mut self) -> Self {
        self.loopback_free = true;
        self
    }

    fn ms(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        i64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(i64::MAX)
    }

    /// The addresses of `addrs` whose destination has a token left at `now` (each takes
    /// one); addresses without an IP are left out (a name could point anywhere).
    pub(crate) fn admit(&mut self, addrs: Vec<Multiaddr>, now: Instant) -> Vec<Multiaddr> {
        let ms = self.ms(now);
        addrs
            .into_iter()
            .filter(|a| {
                (self.loopback_free && is_loopback(a))
                    || IpKey::of_multiaddr(a).is_some_and(|t| self.targets.check_ms(&t, ms).is_ok())
            })
            .collect()
    }

    /// Whether `ip` has a token left at `now` (taking it).
    pub(crate) fn admit_ip(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ms = self.ms(now);
        (self.loopback_free && ip.is_loopback())
            || self.targets.check_ms(&IpKey::of(ip), ms).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    const TWO_A_MINUTE: RateLimit = RateLimit {
        burst: 2,
        per_second: 2.0 / 60.0,
    };

    #[test]
    fn one_destination_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = DestinationBudget::new(TWO_A_MINUTE, 16);
        // Ports and IPv6 hosts of one /64 are one destination.
        let addrs = vec![
            ma("/ip4/198.51.100.7/udp/1/quic-v1"),
            ma("/ip4/198.51.100.7/tcp/2"),
            ma("/ip4/198.51.100.7/tcp/3"),
            ma("/ip4/198.51.100.8/tcp/3"),
            ma("/dns4/example.com/tcp/4"),
            ma("/ip6/2001:db8::1/tcp/1"),
            ma("/ip6/2001:db8::2/tcp/1"),
            ma("/ip6/2001:db8::3/tcp/1"),
        ];
        let kept = b.admit(addrs, t0);
        assert_eq!(
            kept,
            vec![
                ma("/ip4/198.51.100.7/udp/1/quic-v1"),
                ma("/ip4/198.51.100.7/tcp/2"),
                ma("/ip4/198.51.100.8/tcp/3"),
                ma("/ip6/2001:db8::1/tcp/1"),
                ma("/ip6/2001:db8::2/tcp/1"),
            ]
        );
        assert!(!b.admit_ip("198.51.100.7".parse().unwrap(), t0));
        // Thirty seconds on, one token again.
        let later = t0 + Duration::from_secs(30);
        assert!(b.admit_ip("198.51.100.7".parse().unwrap(), later));
        assert!(!b.admit_ip("198.51.100.7".parse().unwrap(), later));
    }

    #[test]
    fn loopback_is_free_only_when_asked() {
        let t0 = Instant::now();
        let local: Vec<Multiaddr> = (1..=5)
            .map(|p| ma(&format!("/ip4/127.0.0.1/tcp/{p}")))
            .collect();
        let mut counted = DestinationBudget::new(TWO_A_MINUTE, 16);
        assert_eq!(counted.admit(local.clone(), t0).len(), 2);
        assert!(!counted.admit_ip("127.0.0.1".parse().unwrap(), t0));
        let mut free = DestinationBudget::new(TWO_A_MINUTE, 16).loopback_free();
        assert_eq!(free.admit(local, t0).len(), 5);
        assert!(free.admit_ip("::1".parse().unwrap(), t0));
        assert_eq!(free.admit(vec![ma("/ip4/192.0.2.1/tcp/1"); 3], t0).len(), 2);
    }
}
