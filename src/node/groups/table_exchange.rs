//! The member-table requests of the swarm component (`/mesh/swarm-table/1.0.0`, see
//! `mesh_signal::group::exchange`): a newcomer's fetch ([`super::fetch`]) and the
//! periodic checks ([`super::check`]) as they ask and take answers, and the pages this
//! node serves.

use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;
use mesh_advert::Source;
use mesh_core::{ErrorCode, MeshError, Timestamp, TraceEvent};
use mesh_signal::group::DiscoveryKey;
use mesh_signal::group::exchange::{self, Answer, CheckedPage, MemberDigest, TableRequest};

use super::fetch::PageEnd;
use super::peers::{missing_subscribers, pick, table_peers};
use super::{Actions, Groups, Via, rnd};
use crate::node::action::Action;
use crate::node::view::{Now, View};

impl Groups {
    /// Our request `id` to `peer` is over: its swarm, and whether it was a check's
    /// (else a newcomer's fetch); `None` for a request we no longer follow.
    fn request_over(
        &mut self,
        id: OutboundRequestId,
        peer: &PeerId,
    ) -> Option<(DiscoveryKey, bool)> {
        let key = self.asked.remove(&id)?;
        Some((key, self.checks.asking(&key, peer)))
    }

    /// Whether our request `id` to `peer` is a check's. A check is upkeep, like pings
    /// and gossip: its answer does not count as use of the connection for the idle
    /// rule (`node::idle`), or every check would keep a peer the node has no need of
    /// for another `idle_timeout_secs`.
    pub(crate) fn checking(&self, id: &OutboundRequestId, peer: &PeerId) -> bool {
        self.asked
            .get(id)
            .is_some_and(|key| self.checks.asking(key, peer))
    }

    /// Our request `id` for `key`'s table went out.
    pub(crate) fn table_asked(&mut self, id: OutboundRequestId, key: DiscoveryKey) {
        self.asked.insert(id, key);
    }

    /// `peer` answered our table request `id`: every valid presence (each checked
    /// where it was read, see `mesh_signal::group::exchange`) goes into the table as if
    /// it came by gossip; each refused one is traced with its code and the peer.
    pub(crate) fn table_answer(
        &mut self,
        id: OutboundRequestId,
        peer: PeerId,
        answer: Answer,
        view: &dyn View,
        now: &Now,
    ) -> Actions {
        let Some((key, check)) = self.request_over(id, &peer) else {
            return Vec::new();
        };
        if check {
            return self.check_answer(key, peer, answer, view, now);
        }
        let page = match answer {
            Answer::Checked(page) => page,
            Answer::Page(_) => return Vec::new(),
            Answer::Refused(e) => {
                tracing::debug!(%peer, swarm = %key, code = e.code.as_str(), error = %e, "table refused");
                let not_ready = e.code == ErrorCode::TransportUnavailable;
                let subscribed = table_peers(&key, view);
                let step = self
                    .fetches
                    .failed(key, peer, not_ready, &subscribed, now.at);
                return self.step(key, step);
            }
        };
        let mut out = self.take_page(key, peer, &page, Via::Table, view, &now.ts);
        let end = PageEnd {
            more: page.more,
            last: page.last,
            members: self.tables.member_count(&key).unwrap_or(0),
            max_members: self.tables.config().max_members,
        };
        let missing = missing_subscribers(&self.tables, &key, view);
        let step = self.fetches.page(key, peer, end, &missing);
        out.extend(self.step(key, step));
        out
    }

    /// An answer to our check of `key`'s table: what we lacked is taken (as `via`
    /// `check`), and the `leave`s it carries of members we still hold, and the next
    /// page asked for while the server has more.
    fn check_answer(
        &mut self,
        key: DiscoveryKey,
        peer: PeerId,
        answer: Answer,
        view: &dyn View,
        now: &Now,
    ) -> Actions {
        let page = match answer {
            Answer::Checked(page) => page,
            Answer::Page(_) => {
                self.checks.rest(key, now.at, rnd());
                return Vec::new();
            }
            Answer::Refused(e) => {
                tracing::debug!(%peer, swarm = %key, code = e.code.as_str(), error = %e, "table check refused");
                self.checks.rest(key, now.at, rnd());
                return Vec::new();
            }
        };
        let mut out = self.take_page(key, peer, &page, Via::Check, view, &now.ts);
        let max_members = self.tables.config().max_members;
        let next = self.checks.page(
            key,
            peer,
            page.more,
            page.last,
            max_members,
            (now.at, rnd()),
        );
        if let Some(request) = next {
            out.push(Action::AskTable { peer, request });
        }
        out
    }

    /// Starts the checks that are due: each asks a random connected subscriber,
    /// with the digest of our members.
    pub(super) fn start_checks(&mut self, view: &dyn View, now: &Now, out: &mut Actions) {
        for key in self.checks.due(now.at) {
            let peers = table_peers(&key, view);
            if self.fetches.pending(&key) || peers.is_empty() {
                self.checks.rest(key, now.at, rnd());
                continue;
            }
            let table = self.tables.signed_table(&key, &now.ts);
            let peer = pick(peers, 1, |n| rnd() as usize % n).pop();
            let (Some(table), Some(peer)) = (table, peer) else {
                self.checks.rest(key, now.at, rnd());
                continue;
            };
            let have = MemberDigest::of(&key, table.iter().map(|(n, _)| n));
            self.checks.asked(key, peer, have, now.at);
            out.push(Action::AskTable {
                peer,
                request: TableRequest::unless(key, have),
            });
        }
    }

    /// Takes the valid presences of a table page from `peer` into `key`'s table as if
    /// they came by gossip (`via` says how, in the traces); traces each refused one with
    /// its code and the peer.
    fn take_page(
        &mut self,
        key: DiscoveryKey,
        peer: PeerId,
        page: &CheckedPage,
        via: Via,
        view: &dyn View,
        ts: &Timestamp,
    ) -> Actions {
        let mut out = Vec::new();
        let trace_refusal = |e: &MeshError, out: &mut Actions| {
            tracing::debug!(%peer, swarm = %key, code = e.code.as_str(), error = %e, "table presence refused");
            out.push(Action::trace(
                TraceEvent::error(e, self.node_id, ts.clone()).with_peer(peer),
            ));
        };
        for e in &page.refused {
            trace_refusal(e, &mut out);
        }
        let alive = crate::node::view::alive_in(view);
        // Strangers' presences from a check page take its server's budget (a page
        // holds 256 fresh keys as easily as a gossip message one); a newcomer's fetch
        // is all strangers by nature and is not charged.
        let server = (via == Via::Check)
            .then(|| Source::for_rates_of(peer, &view.remote_addrs(&peer), &view.listen_addrs()));
        let mut changes = Vec::new();
        let mut over = 0usize;
        for (p, bytes) in &page.valid {
            if p.swarm_key() != key.as_bytes() {
                let e = MeshError::invalid("swarm-presence.v1: swarm/key differs from the table's");
                trace_refusal(&e, &mut out);
                continue;
            }
            let stranger = server
                .as_ref()
                .filter(|_| !self.tables.has_member(&key, &p.node_id()));
            if let Some(server) = stranger
                && !self.presence_rate.check_has_room(server, ts)
            {
                over += 1;
                continue;
            }
            let news = !self.tables.is_stale(p, ts);
            match self.tables.on_signed_presence(p, Some(bytes), ts, &alive) {
                Ok(c) => {
                    if let Some(server) = stranger.filter(|_| news && !c.is_empty()) {
                        self.presence_rate.charge_check(server, ts);
                    }
                    changes.extend(c);
                    if news {
                        self.tables.came_in_table(p);
                    }
                }
                Err(e) => tracing::debug!(swarm = %key, error = %e, "table presence not taken"),
            }
        }
        if over > 0 {
            tracing::debug!(%peer, swarm = %key, over, "check presences of strangers over the server's budget: not taken");
        }
        out.extend(self.changes(changes, ts, via));
        out
    }

    /// Our table request `id` to `peer` failed (no such protocol, timeout, closed).
    pub(crate) fn table_failed(
        &mut self,
        id: OutboundRequestId,
        peer: PeerId,
        view: &dyn View,
        now: &Now,
    ) -> Actions {
        let Some((key, check)) = self.request_over(id, &peer) else {
            return Vec::new();
        };
        if check {
            self.checks.rest(key, now.at, rnd());
            return Vec::new();
        }
        let subscribed = table_peers(&key, view);
        let step = self.fetches.failed(key, peer, false, &subscribed, now.at);
        self.step(key, step)
    }

    /// `peer` (of `network`) asks for a page of a table: only of a group we are in, only
    /// once our own table is in, within the pages per peer and per network
    /// (`serve_limit`). A check (a request with `have`) is counted as a check first:
    /// tables that agree are answered with an empty page that takes no page from the
    /// budget; otherwise its pages carry the leaves worth serving as well
    /// (`exchange::answer_page`).
    pub(crate) fn serve_table(
        &mut self,
        peer: PeerId,
        network: &mesh_advert::Source,
        request: Result<TableRequest, MeshError>,
        ts: &Timestamp,
    ) -> Answer {
        let checking = matches!(&request, Ok(r) if r.have.is_some());
        let allowed = if checking {
            self.serve_limit.check_request(peer, network, ts)
        } else {
            self.serve_limit.check(peer, network, ts)
        };
        if let Err(retry) = allowed {
            return Answer::Refused(exchange::too_often(retry));
        }
        let request = match request {
            Ok(r) => r,
            Err(e) => return Answer::Refused(e),
        };
        let key = request.key;
        if self.fetches.asking(&key) {
            return Answer::Refused(exchange::not_ready(&key));
        }
        let Some(table) = self.tables.signed_table(&key, ts) else {
            return Answer::Refused(exchange::not_a_member(&key));
        };
        if !checking {
            return Answer::Page(exchange::answer_page(&request, &table, &[]));
        }
        if exchange::agrees(&request, &table) {
            return Answer::Page(exchange::Page::default());
        }
        if let Err(retry) = self.serve_limit.check(peer, network, ts) {
            return Answer::Refused(exchange::too_often(retry));
        }
        let leaves = self.tables.signed_leaves(&key, ts);
        Answer::Page(exchange::answer_page(&request, &table, &leaves))
    }
}
