//! Is a relay still there? Pure logic over the signs of life the application sees (a
//! ping answered, a grant received), `now` passed in.
//!
//! A relay whose host vanishes, or whose process stops, without closing its
//! connections leaves them open on our side: over TCP the kernel keeps retrying for
//! about 15 minutes before it gives up, and nothing in libp2p closes a connection whose
//! pings fail. So the application watches the relays it holds reservations on: a
//! watched relay that shows no sign of life for [`Liveness::silence`] is lost; the
//! application then closes its connections (ending the reservation) and takes another.
//! With libp2p ping's default interval of 15 s, a silence of 25 s tolerates one late
//! answer and notices a dead relay within 26 s (checked once a second).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The default silence after which a relay is lost.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(25);

/// Last signs of life of the watched relays.
#[derive(Debug, Clone)]
pub struct Liveness<K> {
    silence: Duration,
    last: HashMap<K, Instant>,
}

impl<K: Hash + Eq + Clone> Liveness<K> {
    /// Relays silent for longer than `silence` are lost.
    pub fn new(silence: Duration) -> Self {
        Liveness {
            silence,
            last: HashMap::new(),
        }
    }

    /// The silence after which a relay is lost.
    pub fn silence(&self) -> Duration {
        self.silence
    }

    /// Starts watching `relay` (counting from `now`); a relay already watched keeps
    /// its last sign of life.
    pub fn watch(&mut self, relay: K, now: Instant) {
        self.last.entry(relay).or_insert(now);
    }

    /// Stops watching `relay`.
    pub fn unwatch(&mut self, relay: &K) {
        self.last.remove(relay);
    }

    /// Whether `relay` is watched.
    pub fn is_watched(&self, relay: &K) -> bool {
        self.last.contains_key(relay)
    }

    /// A sign of life of `relay` at `now` (ignored when it is not watched).
    pub fn alive(&mut self, relay: &K, now: Instant) {
        if let Some(at) = self.last.get_mut(relay) {
            *at = (*at).max(now);
        }
    }

    /// The watched relays silent for longer than the silence at `now`; they are no
    /// longer watched.
    pub fn lost(&mut self, now: Instant) -> Vec<K> {
        let silence = self.silence;
        let lost: Vec<K> = self
            .last
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) > silence)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &lost {
            self.last.remove(k);
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_relay_is_lost_and_a_pinging_one_is_not() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut l = Liveness::new(DEFAULT_SILENCE);
        l.watch("alive", t0);
        l.watch("frozen", t0);
        l.alive(&"unwatched", t0);
        assert!(!l.is_watched(&"unwatched"));
        // Pings every 15 s: the live one answers, the frozen one stops after t0.
        for secs in [15, 30, 45, 60] {
            l.alive(&"alive", s(secs));
            let lost = l.lost(s(secs));
            if secs < 30 {
                assert!(lost.is_empty(), "{secs}: {lost:?}");
            } else if secs == 30 {
                assert_eq!(lost, vec!["frozen"], "lost within 30 s");
            } else {
                assert!(lost.is_empty());
            }
        }
        assert!(l.lost(s(25)).is_empty());
        // Exactly the silence is not yet lost; beyond it is.
        assert!(l.lost(s(85)).is_empty());
        assert_eq!(l.lost(s(86)), vec!["alive"]);
        // Watching again starts a new count; an old sign of life does not move it back.
        l.watch("frozen", s(100));
        l.alive(&"frozen", s(90));
        assert!(l.lost(s(125)).is_empty());
        l.unwatch(&"frozen");
        assert!(l.lost(s(500)).is_empty());
    }
}
