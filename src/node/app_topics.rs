//! The plain gossipsub topics the application subscribed to, and how many messages the
//! node takes on them.
//!
//! A message taken on such a topic is delivered to the application and forwarded to
//! the node's gossipsub peers on the topic (`MessageAcceptance::Accept`). Authors are
//! any key and every message is new to the duplicate cache, so before, one connection
//! had the node deliver and forward whatever it sent, as fast as it sent it. Now the
//! messages that one network's peers hand over (the forwarder's [`Source`]: an IPv4
//! address or IPv6 /64) are taken within `limits.app_gossip_per_network` a second, all
//! of them within `limits.app_gossip_total` a second, each with bursts of ten seconds'
//! worth; beyond, a message is ignored (neither delivered nor forwarded, and its
//! forwarder's score is not touched: it may be an honest burst). An empty message or
//! one on a topic the application did not subscribe to is rejected, as before.
//!
//! Pure: `now` is passed in.

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};

use libp2p::gossipsub::MessageAcceptance;
use mesh_advert::Source;
use mesh_core::{RateLimit, RateLimiter, Timestamp, take_all};

use super::config::Limits;

/// Forwarder networks whose rate is followed at once (the least recently seen go
/// first).
const NETWORKS: usize = 4096;

/// Seconds' worth of messages a burst may take.
const BURST_SECS: u32 = 10;

/// The application's topics and the rates of what is taken on them.
#[derive(Debug)]
pub(crate) struct AppTopics {
    topics: HashSet<String>,
    per_network: RateLimiter<Source>,
    total: RateLimiter<()>,
}

/// `per_second` (at least 1), bursts of [`BURST_SECS`] of it.
fn rate(per_second: u32) -> RateLimit {
    let per_second = per_second.max(1);
    RateLimit {
        burst: per_second.saturating_mul(BURST_SECS),
        per_second: f64::from(per_second),
    }
}

impl AppTopics {
    /// No topics yet; rates from `limits`.
    pub(crate) fn new(limits: &Limits) -> Self {
        AppTopics {
            topics: HashSet::new(),
            per_network: RateLimiter::new(rate(limits.app_gossip_per_network), NETWORKS),
            total: RateLimiter::new(rate(limits.app_gossip_total), 1),
        }
    }

    /// What gossipsub is told of a message on `topic` with `data`, handed over by a
    /// peer of `forwarder`, at `now`.
    pub(crate) fn accept(
        &mut self,
        topic: &str,
        data: &[u8],
        forwarder: &Source,
        now: &Timestamp,
    ) -> MessageAcceptance {
        if data.is_empty() || !self.topics.contains(topic) {
            return MessageAcceptance::Reject;
        }
        let ms = now.instant().timestamp_millis();
        let taken = take_all(
            ms,
            &mut [
                &mut self.per_network.charge(forwarder),
                &mut self.total.charge(&()),
            ],
        );
        match taken {
            Ok(()) => MessageAcceptance::Accept,
            Err(_) => MessageAcceptance::Ignore,
        }
    }
}

impl Deref for AppTopics {
    type Target = HashSet<String>;
    fn deref(&self) -> &HashSet<String> {
        &self.topics
    }
}

impl DerefMut for AppTopics {
    fn deref_mut(&mut self) -> &mut HashSet<String> {
        &mut self.topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(n: u8) -> Source {
        Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::new(
            198, 51, 100, n,
        )))
    }

    fn limits(per_network: u32, total: u32) -> Limits {
        Limits {
            app_gossip_per_network: per_network,
            app_gossip_total: total,
            ..Limits::default()
        }
    }

    #[test]
    fn one_network_gets_its_rate_and_all_together_the_nodes() {
        let now = Timestamp::now();
        let mut t = AppTopics::new(&limits(2, 5));
        t.insert("app".into());
        let taken = |t: &mut AppTopics, from: Source, n: usize| {
            (0..n)
                .filter(|_| t.accept("app", b"x", &from, &now) == MessageAcceptance::Accept)
                .count()
        };
        // One network: its burst (ten seconds of 2 a second), the rest ignored.
        assert_eq!(taken(&mut t, net(1), 50), 20);
        assert_eq!(
            t.accept("app", b"x", &net(1), &now),
            MessageAcceptance::Ignore
        );
        // Others: what is left of the node's 50.
        assert_eq!(taken(&mut t, net(2), 20), 20);
        assert_eq!(taken(&mut t, net(3), 20), 10);
        // A second on: two more of one network's, as the node's rate allows.
        let later = now.plus_secs(1);
        let more = (0..10)
            .filter(|_| t.accept("app", b"x", &net(1), &later) == MessageAcceptance::Accept)
            .count();
        assert_eq!(more, 2);
    }

    #[test]
    fn empty_messages_and_other_topics_are_rejected() {
        let now = Timestamp::now();
        let mut t = AppTopics::new(&Limits::default());
        t.insert("app".into());
        assert_eq!(
            t.accept("app", b"", &net(1), &now),
            MessageAcceptance::Reject
        );
        assert_eq!(
            t.accept("other", b"x", &net(1), &now),
            MessageAcceptance::Reject
        );
        assert_eq!(
            t.accept("app", b"x", &net(1), &now),
            MessageAcceptance::Accept
        );
    }
}
