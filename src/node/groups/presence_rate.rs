//! How many presences the node takes from one author in one swarm.
//!
//! A member publishes its `join`, a refresh before its presence expires and, when
//! newcomers arrive, an answer at most every 2 to 10 seconds
//! (`group::table::answer_gap_secs`): under one presence every two seconds. Each one the
//! node takes costs a signature check and goes on to the node's gossipsub mesh peers,
//! so a member publishing as fast as it can (a new gossipsub message each time, the same
//! presence or a new sequence number) had every member of the swarm check and forward
//! all of it. Beyond [`PER_AUTHOR`] a presence is ignored (not checked, not forwarded,
//! no penalty: gossipsub's `Ignore`). Pure; `ts` passed in.
//!
//! A presence that would change nothing is ignored before its author's rate is charged
//! ([`replayed`]): anyone may put an author's captured messages on the topic again once
//! gossipsub forgot their ids, and they must not use up the author's rate.

use libp2p::PeerId;
use mesh_advert::Source;
use mesh_core::{RateLimit, RateLimiter, SwarmPresence, Timestamp, take_all};
use mesh_signal::group::{DiscoveryKey, Groups};

/// Presences per author and swarm: a burst of 10, then one a second (twice the most a
/// member sends).
pub(crate) const PER_AUTHOR: RateLimit = RateLimit {
    burst: 10,
    per_second: 1.0,
};

/// Presences of strangers (authors not in the swarm's table: a `join`, or a member
/// this node has not heard of) taken from what one network's peers hand over (the
/// forwarder's [`Source`]): 1,024 at once (a table's default size: a newcomer whose
/// table fetch failed hears every member's answer through its one neighbour), then 10
/// a second. Authors cost nothing, and
/// each presence taken goes on to the node's mesh peers and from them to the swarm: a
/// stream of `join`s under fresh keys over one connection was taken and forwarded as
/// fast as it came (the author's rate holds each fresh key to its own).
pub(crate) const STRANGERS_PER_FORWARDER: RateLimit = RateLimit {
    burst: 1024,
    per_second: 10.0,
};

/// Presences of strangers taken in all, in every swarm of the node's: 4,096 at once (a
/// mass join of some hundreds of members), then 40 a second.
pub(crate) const STRANGERS_TOTAL: RateLimit = RateLimit {
    burst: 4096,
    per_second: 40.0,
};

/// Presences of members (authors in the swarm's table) taken from what one network's
/// peers hand over: 1,024 at once, then 20 a second. A member's own rate
/// ([`PER_AUTHOR`]) holds one key; but the strangers' budget lets one connection put
/// 1,024 fresh keys in the table at once, and each of them then published at its own
/// rate: some 1,024 presences a second from one connection, each checked and forwarded
/// to the whole swarm. The honest load sits far under it: at 200 members a node takes
/// some 900 presences in all over a mass join, from several mesh peers.
pub(crate) const MEMBERS_PER_FORWARDER: RateLimit = RateLimit {
    burst: 1024,
    per_second: 20.0,
};

/// Presences of members taken in all, in every swarm of the node's: 4,096 at once, then
/// 100 a second.
pub(crate) const MEMBERS_TOTAL: RateLimit = RateLimit {
    burst: 4096,
    per_second: 100.0,
};

/// Presences of strangers taken from the pages of member-table checks that one
/// network's servers answer: one page (256) at once, then 5 a second. A check asks a
/// random subscriber every 30 s for what the node lacks, and a hostile one answered up
/// to ten pages of fresh keys, every time it was picked. Kept apart from the gossip
/// budgets (a check is how the node learns a mass join it could not take by gossip),
/// and not charged on a newcomer's fetch (its table is all strangers by nature).
pub(crate) const STRANGERS_PER_CHECK_SERVER: RateLimit = RateLimit {
    burst: 256,
    per_second: 5.0,
};

/// Authors and swarms followed at once (the least recently seen forgotten first).
const TRACKED: usize = 8192;

/// Forwarding networks followed at once (as above).
const FORWARDERS: usize = 4096;

/// The budgets of one kind of author (strangers or members): per forwarder and in all.
#[derive(Debug)]
struct Budgets {
    forwarders: RateLimiter<Source>,
    total: RateLimiter<()>,
}

impl Budgets {
    fn new(per_forwarder: RateLimit, total: RateLimit) -> Self {
        Budgets {
            forwarders: RateLimiter::new(per_forwarder, FORWARDERS),
            total: RateLimiter::new(total, 1),
        }
    }

    fn has_room(&self, forwarder: &Source, ms: i64) -> bool {
        self.forwarders.peek_ms(forwarder, ms).is_ok() && self.total.peek_ms(&(), ms).is_ok()
    }

    /// Both budgets, or neither.
    fn charge(&mut self, forwarder: &Source, ms: i64) {
        let _ = take_all(
            ms,
            &mut [
                &mut self.forwarders.charge(forwarder),
                &mut self.total.charge(&()),
            ],
        );
    }
}

/// The presences taken per (author, swarm), and strangers' and members' per forwarder
/// and in all.
#[derive(Debug)]
pub(crate) struct PresenceRate {
    authors: RateLimiter<(PeerId, DiscoveryKey)>,
    strangers: Budgets,
    members: Budgets,
    check_servers: RateLimiter<Source>,
}

impl Default for PresenceRate {
    fn default() -> Self {
        PresenceRate {
            authors: RateLimiter::new(PER_AUTHOR, TRACKED),
            strangers: Budgets::new(STRANGERS_PER_FORWARDER, STRANGERS_TOTAL),
            members: Budgets::new(MEMBERS_PER_FORWARDER, MEMBERS_TOTAL),
            check_servers: RateLimiter::new(STRANGERS_PER_CHECK_SERVER, FORWARDERS),
        }
    }
}

impl PresenceRate {
    /// Whether a presence `author` published in `swarm` may be taken at `ts`.
    pub(crate) fn admit(&mut self, author: PeerId, swarm: DiscoveryKey, ts: &Timestamp) -> bool {
        self.authors.check(&(author, swarm), ts).is_ok()
    }

    /// Whether a presence of a member (`member`) or a stranger that `forwarder` handed
    /// over has room at `ts` in its forwarder's and the total budget of its kind
    /// (nothing charged: see [`PresenceRate::charge`]).
    pub(crate) fn has_room(&self, member: bool, forwarder: &Source, ts: &Timestamp) -> bool {
        self.budgets(member)
            .has_room(forwarder, ts.instant().timestamp_millis())
    }

    /// Charges a presence the table took (one the table refused costs nothing): both
    /// budgets of its kind, or neither.
    pub(crate) fn charge(&mut self, member: bool, forwarder: &Source, ts: &Timestamp) {
        let ms = ts.instant().timestamp_millis();
        match member {
            true => self.members.charge(forwarder, ms),
            false => self.strangers.charge(forwarder, ms),
        }
    }

    fn budgets(&self, member: bool) -> &Budgets {
        if member {
            &self.members
        } else {
            &self.strangers
        }
    }

    /// Whether a stranger's presence from a check page `server` answered has room at
    /// `ts` in its server's budget (nothing charged).
    pub(crate) fn check_has_room(&self, server: &Source, ts: &Timestamp) -> bool {
        let ms = ts.instant().timestamp_millis();
        self.check_servers.peek_ms(server, ms).is_ok()
    }

    /// Charges a stranger's presence from a check page that the table took.
    pub(crate) fn charge_check(&mut self, server: &Source, ts: &Timestamp) {
        let _ = self
            .check_servers
            .check_ms(server, ts.instant().timestamp_millis());
    }
}

/// Whether `claimed`, a presence (decoded, not verified) its author (`source`) put on
/// the topic of `key`, would
/// change nothing in `tables`: expired, or not newer than what the table holds (a
/// replay of a captured gossip message, or an older one). Such a presence is ignored
/// before the author's rate is charged and before its signature is checked. Gossipsub
/// checked that `source` signed the message, so what it carries is its author's own
/// word; the first gossip copy of a table entry is not stale
/// ([`Groups::awaits_gossip_of_table_entry`]).
pub(crate) fn replayed(
    tables: &Groups,
    key: DiscoveryKey,
    source: Option<PeerId>,
    claimed: Option<&SwarmPresence>,
    ts: &Timestamp,
) -> bool {
    let (Some(author), Some(p)) = (source, claimed) else {
        return false;
    };
    p.swarm_key() == key.as_bytes()
        && p.node_id().to_peer_id().ok() == Some(author)
        && tables.is_stale(p, ts)
        && !tables.awaits_gossip_of_table_entry(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_a_second_per_author_and_swarm() {
        let mut r = PresenceRate::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let (s, t) = (DiscoveryKey::from_name("s"), DiscoveryKey::from_name("t"));
        let now = Timestamp::now();
        for _ in 0..10 {
            assert!(r.admit(a, s, &now));
        }
        assert!(!r.admit(a, s, &now), "beyond the burst");
        assert!(r.admit(a, t, &now), "another swarm of the same author");
        assert!(r.admit(b, s, &now), "another author");
        assert!(r.admit(a, s, &now.plus_secs(1)), "one a second after");
        assert!(!r.admit(a, s, &now.plus_secs(1)));
    }
}
