//! The member-table fetch of a newcomer (`/mesh/swarm-table/1.0.0`, see
//! `mesh_signal::group::exchange`), as pure state: which swarm waits for a table, which
//! peer was asked, how many pages came, when to try another peer, when to give up.
//!
//! A fetch starts when our `join` went out (someone subscribed was there to take it):
//! the first connected peer subscribed to the swarm's topic is asked for the first
//! page, then for the next ones while the answer says `more` (at most
//! `max_members / PAGE_MAX + 2` pages). A peer that refuses or fails is replaced by
//! another subscribed peer, [`MAX_TRIES`] peers in all; a peer whose own table is still
//! being fetched (`E_TRANSPORT_UNAVAILABLE`) is asked again after [`RETRY`]. When no
//! peer hands the table over, the fetch gives up and the node sends its `join` again
//! without `table/fetch`, so every member answers it as before.
//!
//! A table that came in full with fewer members than half the connected nodes
//! subscribed to the topic (a server that answered an empty or nearly empty table) is
//! not taken as complete: the subscribers it left out are asked for their tables in
//! turn (their pages add to what came), one that fails or is not ready skipped,
//! [`MAX_TRIES`] servers in all (`peers::missing_subscribers`). A table still empty
//! after them all ends in the plain `join`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use mesh_signal::group::DiscoveryKey;
use mesh_signal::group::exchange::{PAGE_MAX, TableRequest};

/// Most peers asked for one table.
pub(crate) const MAX_TRIES: usize = 4;
/// How long before a peer whose table was not ready is asked again.
pub(crate) const RETRY: Duration = Duration::from_secs(1);
/// How long a fetch waits for a subscribed peer it can ask before it gives up.
pub(crate) const PEER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum State {
    /// Waiting for a peer to ask (none yet, or a retry is due at the instant).
    Waiting(Option<Instant>),
    /// `peer` was asked; `pages` pages came so far.
    Asking { peer: PeerId, pages: usize },
}

#[derive(Debug)]
struct Fetch {
    state: State,
    /// Peers that failed or refused (not asked again).
    tried: Vec<PeerId>,
    /// Requests that failed or were refused, `not_ready` ones included.
    attempts: usize,
    /// A server's table came in full, and subscribers it left out are being asked.
    had_table: bool,
    /// Those subscribers not asked yet; one that fails or is not ready (it joined a
    /// moment ago) is not asked again: the next one is.
    recheck: Vec<PeerId>,
    /// Members the table held after the last page.
    members: usize,
    /// A subscriber left out was asked.
    rechecked: bool,
    /// When the fetch started.
    started: Instant,
}

/// What the next step of a fetch is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send this request to this peer.
    Ask(PeerId, TableRequest),
    /// Nothing now.
    Wait,
    /// The table is complete (or as complete as the cap allows).
    Done,
    /// No peer handed the table over: send the `join` again, answerable.
    GiveUp,
}

/// How a page ended, as the caller saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageEnd {
    /// The server says more pages follow.
    pub more: bool,
    /// The last member of the page (the next page starts after it).
    pub last: Option<mesh_core::NodeId>,
    /// Members the table holds now.
    pub members: usize,
    /// The table's cap (at it, the fetch stops).
    pub max_members: usize,
}

/// The fetches in progress (at most one per swarm joined).
#[derive(Debug, Default)]
pub(crate) struct Fetches {
    by_key: HashMap<DiscoveryKey, Fetch>,
}

impl Fetches {
    /// Whether the table of `key` is being fetched from a peer right now (we do not
    /// hand out a table we are still receiving).
    pub(crate) fn asking(&self, key: &DiscoveryKey) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|f| matches!(f.state, State::Asking { .. }))
    }

    /// Whether a fetch of `key` is in progress.
    pub(crate) fn pending(&self, key: &DiscoveryKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// Starts fetching `key`'s table and picks a peer among `subscribed`.
    pub(crate) fn start(&mut self, key: DiscoveryKey, subscribed: &[PeerId], now: Instant) -> Step {
        self.by_key.insert(
            key,
            Fetch {
                state: State::Waiting(None),
                tried: Vec::new(),
                attempts: 0,
                had_table: false,
                recheck: Vec::new(),
                members: 0,
                rechecked: false,
                started: now,
            },
        );
        self.next(key, subscribed, now)
    }

    /// Forgets `key` (left the swarm).
    pub(crate) fn forget(&mut self, key: &DiscoveryKey) {
        self.by_key.remove(key);
    }

    /// A waiting fetch asks a peer it has not tried (or, after [`RETRY`], one whose
    /// table was not ready); gives up after [`MAX_TRIES`] failed requests, or when no
    /// peer is left to ask [`PEER_WAIT`] after the start.
    pub(crate) fn next(&mut self, key: DiscoveryKey, subscribed: &[PeerId], now: Instant) -> Step {
        let Some(f) = self.by_key.get_mut(&key) else {
            return Step::Wait;
        };
        let State::Waiting(retry_at) = f.state else {
            return Step::Wait;
        };
        if retry_at.is_some_and(|t| now < t) {
            return Step::Wait;
        }
        if f.attempts >= MAX_TRIES {
            self.by_key.remove(&key);
            return Step::GiveUp;
        }
        let fresh = subscribed.iter().find(|p| !f.tried.contains(p));
        let Some(peer) = fresh.copied() else {
            if now.saturating_duration_since(f.started) < PEER_WAIT {
                return Step::Wait;
            }
            self.by_key.remove(&key);
            return Step::GiveUp;
        };
        f.state = State::Asking { peer, pages: 0 };
        Step::Ask(peer, TableRequest::first(key))
    }

    /// Whether the fetch of `key` waits (for a peer to ask, or to ask again).
    pub(crate) fn is_waiting(&self, key: &DiscoveryKey) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|f| matches!(f.state, State::Waiting(_)))
    }

    /// The swarms whose fetch waits (for [`Fetches::next`] on a tick).
    pub(crate) fn waiting(&self) -> Vec<DiscoveryKey> {
        let mut v: Vec<DiscoveryKey> = self
            .by_key
            .iter()
            .filter(|(_, f)| matches!(f.state, State::Waiting(_)))
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    }

    /// A page of `key` came from `peer`: ask for the next one after `end.last` while
    /// `end.more` (and the page cap allows), else the fetch is done, unless one of
    /// `missing`, the connected subscribers the table does not hold, can still be asked
    /// (see the module). At `end.max_members` members the fetch stops.
    pub(crate) fn page(
        &mut self,
        key: DiscoveryKey,
        peer: PeerId,
        end: PageEnd,
        missing: &[PeerId],
    ) -> Step {
        let PageEnd {
            more,
            last,
            members,
            max_members,
        } = end;
        let Some(f) = self.by_key.get_mut(&key) else {
            return Step::Wait;
        };
        let State::Asking { peer: asked, pages } = &mut f.state else {
            return Step::Wait;
        };
        if *asked != peer {
            return Step::Wait;
        }
        *pages += 1;
        let max_pages = max_members.div_ceil(PAGE_MAX) + 2;
        match last {
            Some(after) if more && *pages < max_pages && members < max_members => {
                Step::Ask(peer, TableRequest::after(key, after))
            }
            _ => {
                f.tried.push(peer);
                f.had_table = true;
                f.members = members;
                f.recheck = if members < max_members {
                    missing.to_vec()
                } else {
                    Vec::new()
                };
                self.recheck(key)
            }
        }
    }

    /// The next subscriber a table left out, if any is left and fewer than
    /// [`MAX_TRIES`] servers were asked; else the fetch ends: done, or, when such
    /// subscribers were asked and the table is still empty, given up (the plain `join`
    /// makes the members answer). A table that came in empty with nobody left out to
    /// ask is done, as always.
    fn recheck(&mut self, key: DiscoveryKey) -> Step {
        let Some(f) = self.by_key.get_mut(&key) else {
            return Step::Wait;
        };
        while let Some(s) = (!f.recheck.is_empty()).then(|| f.recheck.remove(0)) {
            if f.tried.contains(&s) || f.tried.len() >= MAX_TRIES {
                continue;
            }
            f.rechecked = true;
            f.state = State::Asking { peer: s, pages: 0 };
            return Step::Ask(s, TableRequest::first(key));
        }
        let empty = f.members == 0 && f.rechecked;
        self.by_key.remove(&key);
        if empty { Step::GiveUp } else { Step::Done }
    }

    /// `peer` refused or failed the request for `key`'s table (`not_ready`: its own
    /// table is still coming, ask it again later); the next peer is tried at once. When
    /// it was a subscriber a table left out, the next of those is asked instead.
    pub(crate) fn failed(
        &mut self,
        key: DiscoveryKey,
        peer: PeerId,
        not_ready: bool,
        subscribed: &[PeerId],
        now: Instant,
    ) -> Step {
        let Some(f) = self.by_key.get_mut(&key) else {
            return Step::Wait;
        };
        match f.state {
            State::Asking { peer: asked, .. } if asked == peer => {}
            _ => return Step::Wait,
        }
        if f.had_table {
            f.tried.push(peer);
            return self.recheck(key);
        }
        f.attempts += 1;
        if not_ready {
            f.state = State::Waiting(Some(now + RETRY));
        } else {
            f.tried.push(peer);
            f.state = State::Waiting(None);
        }
        self.next(key, subscribed, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn end(
        more: bool,
        last: Option<mesh_core::NodeId>,
        members: usize,
        max_members: usize,
    ) -> PageEnd {
        PageEnd {
            more,
            last,
            members,
            max_members,
        }
    }

    #[test]
    fn a_table_that_leaves_out_a_subscriber_is_asked_of_it() {
        let key = DiscoveryKey::from_name("hidden");
        let mut f = Fetches::default();
        let t = Instant::now();
        let p = peers(MAX_TRIES + 2);
        assert_eq!(
            f.start(key, &p, t),
            Step::Ask(p[0], TableRequest::first(key))
        );
        // An empty table, while p[1] (subscribed, connected) is not in it: p[1] is asked.
        assert_eq!(
            f.page(key, p[0], end(false, None, 0, 1024), &p[..2]),
            Step::Ask(p[1], TableRequest::first(key))
        );
        assert!(f.asking(&key));
        // Its pages count as usual; a late page of p[0] is ignored.
        assert_eq!(
            f.page(key, p[0], end(false, None, 0, 1024), &[]),
            Step::Wait
        );
        let last = Some(mesh_core::NodeKeypair::generate().node_id());
        assert_eq!(
            f.page(key, p[1], end(true, last, 64, 1024), &p[2..3]),
            Step::Ask(
                p[1],
                TableRequest {
                    key,
                    after: last,
                    have: None
                }
            )
        );
        // Still one left out at the end: the next one, within MAX_TRIES servers.
        let mut asked = 2;
        let mut step = f.page(key, p[1], end(false, last, 70, 1024), &p[2..3]);
        while let Step::Ask(peer, _) = step {
            asked += 1;
            let next = p[asked];
            step = f.page(key, peer, end(false, None, 70, 1024), &[next]);
        }
        assert_eq!(step, Step::Done);
        assert_eq!(asked, MAX_TRIES);
        assert!(!f.pending(&key));
        // A subscriber left out that cannot serve (a browser), or whose own table is
        // still coming (it joined a moment ago): done with what came, at once, not a
        // retry and not a plain join.
        for not_ready in [false, true] {
            f.start(key, &p, t);
            f.page(key, p[0], end(false, None, 3, 1024), &p[1..2]);
            assert_eq!(f.failed(key, p[1], not_ready, &p, t), Step::Done);
            assert!(!f.pending(&key));
        }
        // Left out of an empty table: the first not ready, the second failing, the table
        // still empty: the plain join.
        f.start(key, &p, t);
        assert_eq!(
            f.page(key, p[0], end(false, None, 0, 1024), &p[..3]),
            Step::Ask(p[1], TableRequest::first(key))
        );
        assert_eq!(
            f.failed(key, p[1], true, &p, t),
            Step::Ask(p[2], TableRequest::first(key))
        );
        assert_eq!(f.failed(key, p[2], false, &p, t), Step::GiveUp);
        // A subscriber already asked, the server itself, or a full table: done.
        f.start(key, &p, t);
        assert_eq!(
            f.page(key, p[0], end(false, None, 5, 1024), &p[..1]),
            Step::Done
        );
        f.start(key, &p, t);
        assert_eq!(
            f.page(key, p[0], end(false, None, 64, 64), &p[1..2]),
            Step::Done
        );
    }

    #[test]
    fn asks_the_first_subscribed_peer_and_pages_until_done() {
        let key = DiscoveryKey::from_name("f");
        let mut f = Fetches::default();
        let t = Instant::now();
        let p = peers(2);
        assert_eq!(
            f.start(key, &p, t),
            Step::Ask(p[0], TableRequest::first(key))
        );
        assert!(f.asking(&key));
        let last = mesh_core::NodeKeypair::generate().node_id();
        // A page from someone else is ignored.
        assert_eq!(
            f.page(key, p[1], end(true, Some(last), 10, 1024), &[]),
            Step::Wait
        );
        assert_eq!(
            f.page(key, p[0], end(true, Some(last), 64, 1024), &[]),
            Step::Ask(p[0], TableRequest::after(key, last))
        );
        assert_eq!(
            f.page(key, p[0], end(false, Some(last), 100, 1024), &[]),
            Step::Done
        );
        assert!(!f.pending(&key));
    }

    #[test]
    fn pages_stop_at_the_member_cap_and_the_page_cap() {
        let key = DiscoveryKey::from_name("cap");
        let mut f = Fetches::default();
        let t = Instant::now();
        let p = peers(1);
        f.start(key, &p, t);
        let last = Some(mesh_core::NodeKeypair::generate().node_id());
        assert_eq!(f.page(key, p[0], end(true, last, 64, 64), &[]), Step::Done);
        // A peer that always says `more`: at most max_members / PAGE_MAX + 2 pages.
        f.start(key, &p, t);
        let mut asked = 1;
        while let Step::Ask(..) = f.page(key, p[0], end(true, last, 0, 4 * PAGE_MAX), &[]) {
            asked += 1;
            assert!(asked <= 10, "unbounded paging");
        }
        assert_eq!(asked, 4 + 2);
    }

    #[test]
    fn failures_move_to_the_next_peer_and_give_up_after_the_tries() {
        let key = DiscoveryKey::from_name("fail");
        let mut f = Fetches::default();
        let t = Instant::now();
        let p = peers(MAX_TRIES + 2);
        let mut step = f.start(key, &p, t);
        for (i, peer) in p.iter().take(MAX_TRIES).enumerate() {
            assert_eq!(step, Step::Ask(*peer, TableRequest::first(key)), "{i}");
            step = f.failed(key, *peer, false, &p, t);
        }
        assert_eq!(step, Step::GiveUp);
        assert!(!f.pending(&key));
        // Nobody subscribed to ask: wait for one, give up after PEER_WAIT.
        assert_eq!(f.start(key, &[], t), Step::Wait);
        assert_eq!(f.next(key, &[], t + PEER_WAIT / 2), Step::Wait);
        assert_eq!(
            f.next(key, &p[..1], t + PEER_WAIT / 2),
            Step::Ask(p[0], TableRequest::first(key))
        );
        assert_eq!(
            f.failed(key, p[0], false, &[], t + PEER_WAIT / 2),
            Step::Wait
        );
        assert_eq!(f.next(key, &[], t + PEER_WAIT), Step::GiveUp);
    }

    #[test]
    fn a_peer_not_ready_is_asked_again_after_the_delay() {
        let key = DiscoveryKey::from_name("ready");
        let mut f = Fetches::default();
        let t = Instant::now();
        let p = peers(1);
        f.start(key, &p, t);
        assert_eq!(f.failed(key, p[0], true, &p, t), Step::Wait);
        assert!(!f.asking(&key));
        assert_eq!(f.waiting(), vec![key]);
        assert_eq!(f.next(key, &p, t), Step::Wait);
        let mut at = t;
        for _ in 1..MAX_TRIES {
            at += RETRY;
            assert_eq!(
                f.next(key, &p, at),
                Step::Ask(p[0], TableRequest::first(key))
            );
            assert_eq!(f.failed(key, p[0], true, &p, at), Step::Wait);
        }
        assert_eq!(f.next(key, &p, at + RETRY), Step::GiveUp);
    }
}
