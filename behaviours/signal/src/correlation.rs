//! One state machine per signaling correlation: requested, then accepted or rejected,
//! then done, or expired when a step takes too long. Pure logic: every call takes `now`.
//!
//! The initiator sends `connect_request`; the responder answers `connect_accept` or
//! `connect_reject`. Candidates and setup payloads may flow both ways while the
//! correlation is requested or accepted (trickled before the answer, as ICE does).
//! `done` ends an accepted correlation once a connection is up.
//!
//! The table is shared fairly: other nodes' requests may fill at most
//! `max_open - reserved_own` entries (the rest is kept for this node's own requests, so
//! a flood never blocks the node's own routes and setups), one signer at most
//! `max_per_peer` and one delivering link (the peer that handed the frames over, the
//! signer itself or a signaling host) at most `max_per_link`. Entries that ended and
//! only linger are evicted, oldest first, before a request is refused.

use std::collections::HashMap;

use libp2p::PeerId;
use mesh_core::{ErrorCode, MeshError, MeshResult, NodeId, SignalFrame, Timestamp};

/// Which side of the correlation this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It sent the `connect_request`.
    Initiator,
    /// It received the `connect_request`.
    Responder,
}

/// Where a correlation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// `connect_request` sent or received, no answer yet.
    Requested,
    /// Accepted: candidates and payloads are being exchanged.
    Accepted,
    /// Refused, with the code the responder gave.
    Rejected(ErrorCode),
    /// A connection came up.
    Done,
    /// A step took too long.
    Expired,
}

impl State {
    /// Whether nothing more can happen.
    pub fn is_final(&self) -> bool {
        matches!(self, State::Rejected(_) | State::Done | State::Expired)
    }
}

/// Time and size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a request may wait for its answer, seconds.
    pub answer_secs: i64,
    /// How long an accepted correlation may take to end in a connection, seconds.
    pub accepted_secs: i64,
    /// How long a finished correlation is remembered (late or replayed frames are
    /// refused meanwhile), seconds.
    pub linger_secs: i64,
    /// Most correlations held at once.
    pub max_open: usize,
    /// Most frames one correlation may carry.
    pub max_frames: u32,
    /// Room in `max_open` that only this node's own requests may take.
    pub reserved_own: usize,
    /// Most correlations one other node (the signer) may hold with this one.
    pub max_per_peer: usize,
    /// Most incoming correlations one delivering peer may have handed over.
    pub max_per_link: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            answer_secs: 30,
            accepted_secs: 120,
            linger_secs: 120,
            max_open: 1024,
            max_frames: 64,
            reserved_own: 256,
            max_per_peer: 16,
            max_per_link: 128,
        }
    }
}

/// What a frame did to its correlation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A new correlation (a request).
    Opened,
    /// The state changed to this one.
    Now(State),
    /// The state stays; the frame is one more candidate or payload.
    Carried,
}

#[derive(Debug, Clone)]
struct Entry {
    role: Role,
    state: State,
    since: Timestamp,
    frames: u32,
    /// Who handed the request over (incoming correlations).
    link: Option<PeerId>,
}

/// The correlations of one node, keyed by (peer, correlation id).
#[derive(Debug, Default)]
pub struct Correlations {
    limits: Limits,
    open: HashMap<(NodeId, String), Entry>,
}

fn unknown(corr: &str) -> MeshError {
    MeshError::new(
        ErrorCode::HsUnknownRef,
        format!("signal-frame.v1: no open correlation {corr}"),
    )
}

impl Correlations {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Self {
        Correlations {
            limits,
            open: HashMap::new(),
        }
    }

    /// The state of a correlation with `peer`.
    pub fn state(&self, peer: &NodeId, corr: &str) -> Option<&State> {
        self.open.get(&(*peer, corr.to_owned())).map(|e| &e.state)
    }

    /// Number of correlations held (final ones linger for a while).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Records a frame this node sends (`outgoing`) or received from its signer. `me`
    /// is this node: the peer is whichever of `from`/`to` is not. A frame that does
    /// not concern `me` is `E_PROTO_INVALID`.
    pub fn on_frame(
        &mut self,
        me: &NodeId,
        frame: &SignalFrame,
        now: &Timestamp,
    ) -> MeshResult<Transition> {
        self.on_frame_via(me, frame, None, now)
    }

    /// [`Correlations::on_frame`] for a frame that `link` handed over (the signer
    /// itself, or a signaling host): a new incoming correlation counts against the
    /// link's quota as well as the signer's. Past a quota, or past the room other nodes
    /// may take, the request is `E_TRANSPORT_REJECTED`.
    pub fn on_frame_via(
        &mut self,
        me: &NodeId,
        frame: &SignalFrame,
        link: Option<PeerId>,
        now: &Timestamp,
    ) -> MeshResult<Transition> {
        let outgoing = frame.from() == *me;
        if !outgoing && frame.to() != *me {
            return Err(MeshError::invalid(
                "signal-frame.v1: not addressed to this node",
            ));
        }
        let peer = if outgoing { frame.to() } else { frame.from() };
        let key = (peer, frame.correlation().to_owned());
        let kind = frame.kind();
        let limits = self.limits;
        let Some(entry) = self.open.get_mut(&key) else {
            if kind != "connect_request" {
                return Err(unknown(frame.correlation()));
            }
            if outgoing {
                self.make_room(|_, _| true, limits.max_open, "open correlations")?;
            } else {
                self.admit(&peer, link)?;
            }
            let role = if outgoing {
                Role::Initiator
            } else {
                Role::Responder
            };
            self.open.insert(
                key,
                Entry {
                    role,
                    state: State::Requested,
                    since: now.clone(),
                    frames: 1,
                    link: if outgoing { None } else { link },
                },
            );
            return Ok(Transition::Opened);
        };
        // A step that took too long ends the correlation here too, between two sweeps
        // (`sweep`, which the behaviour runs on a timer, reports the expiries).
        let step_limit = match entry.state {
            State::Requested => limits.answer_secs,
            State::Accepted => limits.accepted_secs,
            _ => i64::MAX,
        };
        if now.secs_since(&entry.since) > step_limit {
            entry.state = State::Expired;
            entry.since = now.clone();
        }
        if entry.state.is_final() {
            return Err(MeshError::new(
                ErrorCode::HsUnknownRef,
                format!(
                    "signal-frame.v1: correlation {} already ended ({:?})",
                    frame.correlation(),
                    entry.state
                ),
            ));
        }
        entry.frames += 1;
        if entry.frames > self.limits.max_frames {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!(
                    "more than {} frames in one correlation",
                    self.limits.max_frames
                ),
            ));
        }
        // Who may answer: the responder sends accept/reject, the initiator gets them.
        let answering = match entry.role {
            Role::Responder => outgoing,
            Role::Initiator => !outgoing,
        };
        match (kind, &entry.state) {
            ("connect_request", _) => Err(MeshError::new(
                ErrorCode::HsReplay,
                format!(
                    "signal-frame.v1: correlation {} already requested",
                    frame.correlation()
                ),
            )),
            ("connect_accept", State::Requested) if answering => {
                entry.state = State::Accepted;
                entry.since = now.clone();
                Ok(Transition::Now(State::Accepted))
            }
            ("connect_reject", State::Requested) if answering => {
                let code = frame
                    .payload()
                    .get("reason/code")
                    .and_then(|v| v.as_str())
                    .and_then(ErrorCode::from_code_str)
                    .unwrap_or(ErrorCode::TransportRejected);
                entry.state = State::Rejected(code);
                entry.since = now.clone();
                Ok(Transition::Now(State::Rejected(code)))
            }
            ("connect_accept" | "connect_reject", _) => Err(MeshError::invalid(format!(
                "signal-frame.v1: {kind} out of turn in correlation {}",
                frame.correlation()
            ))),
            ("candidate" | "setup_payload", State::Requested | State::Accepted) => {
                Ok(Transition::Carried)
            }
            _ => Err(MeshError::invalid(format!(
                "signal-frame.v1: unexpected {kind}"
            ))),
        }
    }

    /// Whether another node's new request fits: within the signer's and the link's
    /// quotas and the room left to others; lingering entries make room first.
    fn admit(&mut self, peer: &NodeId, link: Option<PeerId>) -> MeshResult<()> {
        let l = self.limits;
        let others = l.max_open.saturating_sub(l.reserved_own);
        let incoming = |_: &NodeId, e: &Entry| e.role == Role::Responder;
        if let Err(e) = self.make_room(incoming, others, "correlations opened by other nodes") {
            // Fair share: a link holding fewer than the busiest one takes the place of
            // the busiest link's oldest correlation, so a few flooding peers (each
            // within its own quota) cannot lock everyone else out.
            if !self.evict_from_busiest_link(link) {
                return Err(e);
            }
        }
        let from_peer = |p: &NodeId, e: &Entry| e.role == Role::Responder && p == peer;
        self.make_room(
            from_peer,
            l.max_per_peer,
            "correlations opened by this node",
        )?;
        if let Some(link) = link {
            let by_link = |_: &NodeId, e: &Entry| e.role == Role::Responder && e.link == Some(link);
            self.make_room(
                by_link,
                l.max_per_link,
                "correlations handed over by this peer",
            )?;
        }
        Ok(())
    }

    /// Drops the oldest incoming correlation of the link holding the most, if `link`
    /// holds at least two fewer (so two links never take turns evicting each other).
    fn evict_from_busiest_link(&mut self, link: Option<PeerId>) -> bool {
        let mut per: HashMap<Option<PeerId>, usize> = HashMap::new();
        for e in self.open.values().filter(|e| e.role == Role::Responder) {
            *per.entry(e.link).or_default() += 1;
        }
        let mine = per.get(&link).copied().unwrap_or(0);
        let Some((busiest, most)) = per.into_iter().max_by_key(|(_, n)| *n) else {
            return false;
        };
        if most < mine + 2 {
            return false;
        }
        let victim = self
            .open
            .iter()
            .filter(|(_, e)| e.role == Role::Responder && e.link == busiest)
            .min_by(|(ka, a), (kb, b)| a.since.cmp(&b.since).then_with(|| ka.cmp(kb)))
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.open.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Makes room for one more entry among those `counted`, at most `max`: the oldest
    /// of them that ended (and only lingers) is forgotten; `E_TRANSPORT_REJECTED` when
    /// they are all still running.
    fn make_room(
        &mut self,
        counted: impl Fn(&NodeId, &Entry) -> bool,
        max: usize,
        what: &str,
    ) -> MeshResult<()> {
        let mut n = 0;
        let mut oldest_final: Option<(&(NodeId, String), &Timestamp)> = None;
        for (k, e) in &self.open {
            if !counted(&k.0, e) {
                continue;
            }
            n += 1;
            if e.state.is_final() && oldest_final.is_none_or(|(_, t)| e.since < *t) {
                oldest_final = Some((k, &e.since));
            }
        }
        if n < max {
            return Ok(());
        }
        match oldest_final.map(|(k, _)| k.clone()) {
            Some(k) if n == max => {
                self.open.remove(&k);
                Ok(())
            }
            _ => Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("too many {what} ({max}); retry later"),
            )),
        }
    }

    /// The connection for an accepted correlation came up.
    pub fn done(&mut self, peer: &NodeId, corr: &str, now: &Timestamp) -> MeshResult<()> {
        let e = self
            .open
            .get_mut(&(*peer, corr.to_owned()))
            .ok_or_else(|| unknown(corr))?;
        if e.state != State::Accepted {
            return Err(MeshError::invalid(format!(
                "correlation {corr} is {:?}, not accepted",
                e.state
            )));
        }
        e.state = State::Done;
        e.since = now.clone();
        Ok(())
    }

    /// Marks correlations whose step took too long as expired and forgets final ones
    /// after their linger time; returns the newly expired (peer, correlation id).
    pub fn sweep(&mut self, now: &Timestamp) -> Vec<(NodeId, String)> {
        let l = self.limits;
        let mut expired = Vec::new();
        for (key, e) in self.open.iter_mut() {
            let age = now.secs_since(&e.since);
            let limit = match e.state {
                State::Requested => l.answer_secs,
                State::Accepted => l.accepted_secs,
                _ => continue,
            };
            if age > limit {
                e.state = State::Expired;
                e.since = now.clone();
                expired.push(key.clone());
            }
        }
        self.open
            .retain(|_, e| !(e.state.is_final() && now.secs_since(&e.since) > l.linger_secs));
        expired
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_core::{Artifact, NodeKeypair};
    use serde_json::{Value, json};

    fn t(s: i64) -> Timestamp {
        Timestamp::parse("2026-11-21T12:00:00Z")
            .unwrap()
            .plus_secs(s)
    }

    fn frame(from: &NodeKeypair, to: &NodeKeypair, kind: &str, corr: &str, at: i64) -> SignalFrame {
        let payload = match kind {
            "connect_reject" => json!({"reason/code": "E_TRANSPORT_REJECTED"}),
            "candidate" => json!({"addrs": ["/ip4/192.0.2.1/udp/1/quic-v1"]}),
            "setup_payload" => json!({"data/b64": "AA=="}),
            _ => json!({}),
        };
        let Value::Object(doc) = json!({
            "schema/v": 1, "message/kind": "signal-frame.v1", "frame/id": format!("{kind}-{at}"),
            "kind": kind, "from": from.node_id().to_string(), "to": to.node_id().to_string(),
            "correlation/id": corr, "created-at": t(at).as_str(),
            "expires-at": t(at + 60).as_str(), "payload": payload,
        }) else {
            unreachable!()
        };
        SignalFrame::sign(doc, from).unwrap()
    }

    #[test]
    fn request_accept_candidates_done() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let (mut at_a, mut at_b) = (Correlations::default(), Correlations::default());
        let (me_a, me_b) = (a.node_id(), b.node_id());
        let req = frame(&a, &b, "connect_request", "c1", 0);
        assert_eq!(
            at_a.on_frame(&me_a, &req, &t(0)).unwrap(),
            Transition::Opened
        );
        assert_eq!(
            at_b.on_frame(&me_b, &req, &t(0)).unwrap(),
            Transition::Opened
        );
        // Candidates may trickle before the answer.
        let cand = frame(&a, &b, "candidate", "c1", 1);
        assert_eq!(
            at_b.on_frame(&me_b, &cand, &t(1)).unwrap(),
            Transition::Carried
        );
        let acc = frame(&b, &a, "connect_accept", "c1", 2);
        assert_eq!(
            at_b.on_frame(&me_b, &acc, &t(2)).unwrap(),
            Transition::Now(State::Accepted)
        );
        assert_eq!(
            at_a.on_frame(&me_a, &acc, &t(2)).unwrap(),
            Transition::Now(State::Accepted)
        );
        let back = frame(&b, &a, "setup_payload", "c1", 3);
        assert_eq!(
            at_a.on_frame(&me_a, &back, &t(3)).unwrap(),
            Transition::Carried
        );
        at_a.done(&me_b, "c1", &t(4)).unwrap();
        assert_eq!(at_a.state(&me_b, "c1"), Some(&State::Done));
        // After the end, late frames are refused as unknown references.
        let late = frame(&b, &a, "candidate", "c1", 5);
        assert_eq!(
            at_a.on_frame(&me_a, &late, &t(5)).unwrap_err().code,
            ErrorCode::HsUnknownRef
        );
    }

    #[test]
    fn reject_out_of_turn_replay_and_unknown() {
        let (a, b, c) = (
            NodeKeypair::generate(),
            NodeKeypair::generate(),
            NodeKeypair::generate(),
        );
        let mut at_a = Correlations::default();
        let me = a.node_id();
        let req = frame(&a, &b, "connect_request", "c2", 0);
        at_a.on_frame(&me, &req, &t(0)).unwrap();
        // The initiator cannot accept its own request.
        let own_accept = frame(&a, &b, "connect_accept", "c2", 1);
        assert_eq!(
            at_a.on_frame(&me, &own_accept, &t(1)).unwrap_err().code,
            ErrorCode::ProtoInvalid
        );
        // A second request under the same id is a replay.
        assert_eq!(
            at_a.on_frame(&me, &req, &t(1)).unwrap_err().code,
            ErrorCode::HsReplay
        );
        // An accept for a correlation never opened.
        let stray = frame(&b, &a, "connect_accept", "nope", 1);
        assert_eq!(
            at_a.on_frame(&me, &stray, &t(1)).unwrap_err().code,
            ErrorCode::HsUnknownRef
        );
        // A frame between two other nodes.
        let other = frame(&b, &c, "connect_request", "x", 1);
        assert_eq!(
            at_a.on_frame(&me, &other, &t(1)).unwrap_err().code,
            ErrorCode::ProtoInvalid
        );
        // The reject carries its code.
        let rej = frame(&b, &a, "connect_reject", "c2", 2);
        assert_eq!(
            at_a.on_frame(&me, &rej, &t(2)).unwrap(),
            Transition::Now(State::Rejected(ErrorCode::TransportRejected))
        );
        assert!(at_a.done(&b.node_id(), "c2", &t(3)).is_err());
    }

    #[test]
    fn expiry_linger_and_bounds() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let me = a.node_id();
        let limits = Limits {
            max_open: 2,
            max_frames: 3,
            ..Limits::default()
        };
        let mut at_a = Correlations::new(limits);
        at_a.on_frame(&me, &frame(&a, &b, "connect_request", "c3", 0), &t(0))
            .unwrap();
        assert!(at_a.sweep(&t(30)).is_empty());
        assert_eq!(at_a.sweep(&t(31)), vec![(b.node_id(), "c3".to_owned())]);
        assert_eq!(at_a.state(&b.node_id(), "c3"), Some(&State::Expired));
        let acc = frame(&b, &a, "connect_accept", "c3", 32);
        assert_eq!(
            at_a.on_frame(&me, &acc, &t(32)).unwrap_err().code,
            ErrorCode::HsUnknownRef
        );
        // Forgotten after the linger time.
        at_a.sweep(&t(31 + 121));
        assert!(at_a.is_empty());
        // A late answer to a request nobody swept yet is refused all the same.
        at_a.on_frame(&me, &frame(&a, &b, "connect_request", "e1", 160), &t(160))
            .unwrap();
        let late = frame(&b, &a, "connect_accept", "e1", 195);
        assert_eq!(
            at_a.on_frame(&me, &late, &t(195)).unwrap_err().code,
            ErrorCode::HsUnknownRef
        );
        at_a.sweep(&t(195 + 121));

        // At most `max_open` correlations, at most `max_frames` frames in one.
        at_a.on_frame(&me, &frame(&a, &b, "connect_request", "d1", 200), &t(200))
            .unwrap();
        at_a.on_frame(&me, &frame(&a, &b, "connect_request", "d2", 200), &t(200))
            .unwrap();
        let third = frame(&a, &b, "connect_request", "d3", 200);
        assert_eq!(
            at_a.on_frame(&me, &third, &t(200)).unwrap_err().code,
            ErrorCode::TransportRejected
        );
        let c = frame(&a, &b, "candidate", "d1", 201);
        at_a.on_frame(&me, &c, &t(201)).unwrap();
        at_a.on_frame(&me, &c, &t(201)).unwrap();
        assert_eq!(
            at_a.on_frame(&me, &c, &t(201)).unwrap_err().code,
            ErrorCode::TransportRejected
        );
    }

    #[test]
    fn quotas_per_peer_and_link_and_room_kept_for_our_own() {
        let me_key = NodeKeypair::generate();
        let me = me_key.node_id();
        let limits = Limits {
            max_open: 8,
            reserved_own: 3,
            max_per_peer: 2,
            max_per_link: 3,
            ..Limits::default()
        };
        let mut table = Correlations::new(limits);
        let (a, c, d) = (
            NodeKeypair::generate(),
            NodeKeypair::generate(),
            NodeKeypair::generate(),
        );
        let (link_a, host) = (PeerId::random(), PeerId::random());
        let req = |k: &NodeKeypair, corr: &str| frame(k, &me_key, "connect_request", corr, 0);
        // One signer: two correlations, the third refused with a code.
        for corr in ["a1", "a2"] {
            table
                .on_frame_via(&me, &req(&a, corr), Some(link_a), &t(0))
                .unwrap();
        }
        let e = table
            .on_frame_via(&me, &req(&a, "a3"), Some(link_a), &t(0))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
        // Other signers through one host: the host's link quota (3) applies.
        table
            .on_frame_via(&me, &req(&c, "c1"), Some(host), &t(0))
            .unwrap();
        table
            .on_frame_via(&me, &req(&c, "c2"), Some(host), &t(0))
            .unwrap();
        table
            .on_frame_via(&me, &req(&d, "d1"), Some(host), &t(0))
            .unwrap();
        let e = table
            .on_frame_via(&me, &req(&d, "d2"), Some(host), &t(0))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected);
        // Others may take 8 - 3 = 5 entries: full now (a1 a2 c1 c2 d1). The busiest link
        // (the host, 3) cannot take more; a request through a link that holds none takes
        // the place of the host's oldest (fair share), and the host stays refused.
        let e = table
            .on_frame_via(&me, &req(&a, "a9"), Some(host), &t(0))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected);
        let (fresh, g) = (PeerId::random(), NodeKeypair::generate());
        table
            .on_frame_via(&me, &req(&g, "g1"), Some(fresh), &t(1))
            .unwrap();
        assert_eq!(table.len(), 5);
        let f = NodeKeypair::generate();
        let e = table
            .on_frame_via(&me, &req(&f, "f1"), Some(link_a), &t(1))
            .unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::TransportRejected,
            "link_a (2) is not two below the busiest (2 now)"
        );
        // Our own requests still find room: the three reserved ones.
        for corr in ["m1", "m2", "m3"] {
            let ours = frame(&me_key, &a, "connect_request", corr, 0);
            assert_eq!(
                table.on_frame(&me, &ours, &t(0)).unwrap(),
                Transition::Opened
            );
        }
        let ours = frame(&me_key, &a, "connect_request", "m4", 0);
        assert_eq!(
            table.on_frame(&me, &ours, &t(0)).unwrap_err().code,
            ErrorCode::TransportRejected
        );
        // A correlation that ended (and only lingers) gives its place up before a
        // request is refused.
        table.sweep(&t(31));
        assert_eq!(table.len(), 8, "expired ones linger");
        table
            .on_frame_via(&me, &req(&d, "d4"), Some(PeerId::random()), &t(32))
            .unwrap();
        assert_eq!(table.len(), 8);
    }
}
