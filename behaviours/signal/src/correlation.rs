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
        // The signer's and the link's quotas first (they forget only correlations that
        // ended): a request refused by them must not have taken a running correlation
        // of someone else's place below.
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
mod tests;
