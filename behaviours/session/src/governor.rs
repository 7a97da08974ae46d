//! The peer governor: which peers to keep hot, warm or cold, when to redial, whom to
//! block. Pure logic: every input carries `now`, every output is an [`Action`] for the
//! behaviour to carry out.
//!
//! - Temperatures: **cold** (known, no session), **warm** (live session), **hot** (live
//!   session the node prefers, at most `target_hot`), **blocked** (refused until a
//!   cooldown ends). At most `max_live` sessions are live (warm + hot): without room
//!   ([`Governor::has_room`]) no handshake is started or accepted, so the connection
//!   stays without a session instead of being closed; a session beyond the limit (not
//!   expected) is closed at once.
//! - A closed session or a failed dial schedules a redial after a jittered exponential
//!   backoff (`base * 2^attempt`, capped, times a factor in [0.5, 1.0] derived from the
//!   node id and the attempt, so it is deterministic and spread out).
//! - Hard failures (bad signatures, replays, wrong signer) count within a window;
//!   `block_after` of them block the peer for `block_cooldown`.
//! - Keepalive lost demotes a hot peer to warm; `tick` promotes warm peers into free hot
//!   slots and asks for dials while the node has fewer live sessions than `target_hot`.
//! - Handshakes and messages per node id are rate-limited.
//! - The table is bounded. Only peers the embedder named ([`Governor::add_known`]) and
//!   peers that once held a session are *kept*: dialed and redialed. Any other entry
//!   (a hard failure of a node that connected to us) only remembers failures: it is
//!   never dialed, it is dropped once its failures are out of the window and it is not
//!   blocked, and it is the first to go when the table is full. A past peer (not named)
//!   is forgotten after `forget_after` redials in a row without a session. At most
//!   `max_peers` entries are held; when one more is needed, the entry evicted is, in
//!   this order, the least recently touched unknown peer, blocked unknown peer, past
//!   peer. Named peers, live sessions and dials under way are never evicted (the first
//!   are bounded by the embedder, the others by `max_live` and `target_hot`); a hard
//!   failure that finds no room is not recorded. The past peers whose session came
//!   from one network (a stranger's inbound session) hold a quarter of `max_peers` at
//!   most, that network's least recently touched going first (`governor/evict.rs`).

use std::collections::HashMap;

use mesh_core::{ErrorCode, IpKey, NodeId, RateLimiter, Timestamp};
use serde_json::{Value, json};

mod settings;
pub use settings::GovernorConfig;

/// A peer's temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temperature {
    /// Known, no session.
    Cold,
    /// Live session.
    Warm,
    /// Live, preferred session.
    Hot,
    /// Refused until the cooldown ends.
    Blocked,
}

impl Temperature {
    /// The `peer-status.v1` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Temperature::Cold => "cold",
            Temperature::Warm => "warm",
            Temperature::Hot => "hot",
            Temperature::Blocked => "blocked",
        }
    }
}

/// What the behaviour should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial this node.
    Dial(NodeId),
    /// Close every connection to this node.
    Disconnect(NodeId),
}

#[derive(Debug, Clone)]
struct Peer {
    temperature: Temperature,
    attempts: u32,
    next_dial: Option<Timestamp>,
    blocked_until: Option<Timestamp>,
    failures: Vec<Timestamp>,
    replay_incidents: u64,
    last_failure: Option<String>,
    keepalive_ok: bool,
    dialing: bool,
    /// Named by the embedder: kept and redialed for good.
    named: bool,
    /// Held a session once: redialed until `forget_after` attempts fail.
    had_session: bool,
    /// When the entry was last touched (a counter, for eviction order).
    touched: u64,
    /// Capabilities the peer failed to prove in its last handshake (cleared by a
    /// session).
    missing: Vec<String>,
    /// The network its last session came from, when the peer dialed us.
    network: Option<IpKey>,
}

impl Peer {
    fn new() -> Self {
        Peer {
            named: false,
            had_session: false,
            touched: 0,
            temperature: Temperature::Cold,
            attempts: 0,
            next_dial: None,
            blocked_until: None,
            failures: Vec::new(),
            replay_incidents: 0,
            last_failure: None,
            keepalive_ok: true,
            dialing: false,
            missing: Vec::new(),
            network: None,
        }
    }

    fn live(&self) -> bool {
        matches!(self.temperature, Temperature::Warm | Temperature::Hot)
    }

    /// Whether the governor dials this peer: named, or once in a session.
    fn kept(&self) -> bool {
        self.named || self.had_session
    }

    /// Eviction rank, lowest first; `None` for entries never evicted (named peers, live
    /// sessions, dials under way).
    fn eviction_rank(&self) -> Option<u8> {
        if self.named || self.live() || self.dialing {
            None
        } else if self.temperature == Temperature::Blocked {
            Some(if self.had_session { 2 } else { 1 })
        } else if self.had_session {
            Some(2)
        } else {
            Some(0)
        }
    }
}

/// The governor.
#[derive(Debug)]
pub struct Governor {
    config: GovernorConfig,
    peers: HashMap<NodeId, Peer>,
    handshakes: RateLimiter<NodeId>,
    network_handshakes: RateLimiter<IpKey>,
    messages: RateLimiter<NodeId>,
    /// The touch counter.
    clock: u64,
}

impl Governor {
    /// A governor with `config`.
    pub fn new(config: GovernorConfig) -> Self {
        Governor {
            config,
            peers: HashMap::new(),
            handshakes: RateLimiter::new(config.handshakes, 4096),
            network_handshakes: RateLimiter::new(config.network_handshakes, 4096),
            messages: RateLimiter::new(config.messages, 4096),
            clock: 0,
        }
    }

    /// How many peers the table holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether the governor dials and redials `node` (named with [`Self::add_known`] or
    /// once in a session, and not forgotten since).
    pub fn is_kept(&self, node: &NodeId) -> bool {
        self.peers.get(node).is_some_and(Peer::kept)
    }

    /// The entry of `node`, created if there is room (evicting the coldest entry when
    /// the table is full); `force` creates it even without room.
    fn entry(&mut self, node: NodeId, force: bool) -> Option<&mut Peer> {
        self.clock += 1;
        let touched = self.clock;
        if !self.peers.contains_key(&node)
            && self.peers.len() >= self.config.max_peers.max(1)
            && !self.evict_one()
            && !force
        {
            return None;
        }
        let peer = self.peers.entry(node).or_insert_with(Peer::new);
        peer.touched = touched;
        Some(peer)
    }

    /// The temperature of `node` (`None` if unknown).
    pub fn temperature(&self, node: &NodeId) -> Option<Temperature> {
        self.peers.get(node).map(|p| p.temperature)
    }

    /// How many peers have `t`.
    pub fn count(&self, t: Temperature) -> usize {
        self.peers.values().filter(|p| p.temperature == t).count()
    }

    fn live(&self) -> usize {
        self.peers.values().filter(|p| p.live()).count()
    }

    /// Whether one more session fits under `max_live` beside `pending` handshakes that
    /// are under way (each may still end in a session). A node without room neither
    /// starts nor accepts a handshake: the connection stays, without a session, and the
    /// application decides whether it is worth keeping (closing it would cut off a peer
    /// for which it may be the only connection).
    pub fn has_room(&self, pending: usize) -> bool {
        self.has_room_besides(pending, 0)
    }

    /// [`Self::has_room`] with `reserved` sessions left free besides.
    pub fn has_room_besides(&self, pending: usize, reserved: usize) -> bool {
        self.live().saturating_add(pending).saturating_add(reserved) < self.config.max_live
    }

    /// Most live sessions.
    pub fn max_live(&self) -> usize {
        self.config.max_live
    }

    /// Whether the embedder named `node` ([`Self::add_known`]).
    pub fn is_named(&self, node: &NodeId) -> bool {
        self.peers.get(node).is_some_and(|p| p.named)
    }

    /// Names a peer (a seed, a discovered node) the governor keeps connected: it starts
    /// cold, is dialed, redialed after every drop, and never evicted. Named peers may
    /// take the table beyond `max_peers` (the embedder bounds how many it names).
    pub fn add_known(&mut self, node: NodeId) {
        if let Some(p) = self.entry(node, true) {
            p.named = true;
        }
    }

    /// Takes `node` as a past peer (one of an earlier run, say): dialed after the named
    /// ones while sessions are wanted, forgotten after `forget_after` vain redials,
    /// evicted before named peers, and held to the room others' sessions get. Anyone
    /// can have become one, so it is not named. Only with room in the table.
    pub fn add_past(&mut self, node: NodeId) {
        if let Some(p) = self.entry(node, false) {
            p.had_session = true;
        }
    }

    /// Sessions to keep free for named peers: as many as are missing to `target_hot`
    /// of them live, at most as many as are not live.
    pub fn named_wanting(&self) -> usize {
        let named = self.peers.values().filter(|p| p.named).count();
        let live = (self.peers.values())
            .filter(|p| p.named && p.live())
            .count();
        let idle = named - live;
        self.config.target_hot.saturating_sub(live).min(idle)
    }

    /// Whether a handshake from or to `node` may proceed now (blocked peers and peers
    /// over their handshake rate are refused).
    pub fn allow_handshake(&mut self, node: &NodeId, now: &Timestamp) -> Result<(), ErrorCode> {
        if self.is_blocked(node, now) {
            return Err(ErrorCode::TransportRejected);
        }
        self.handshakes
            .check(node, now)
            .map_err(|_| ErrorCode::TransportRejected)
    }

    /// Whether a hello from a connection from `network` may have its signatures checked
    /// now: the peers of one network share [`GovernorConfig::network_handshakes`]. Asked
    /// last before the signatures, so that hellos refused for free (no room, a replay)
    /// take nothing; named peers are not counted (as the room's network share spares
    /// them).
    pub fn allow_network_hello(
        &mut self,
        node: &NodeId,
        network: Option<IpKey>,
        now: &Timestamp,
    ) -> Result<(), ErrorCode> {
        match network {
            Some(net) if !self.is_named(node) => self
                .network_handshakes
                .check(&net, now)
                .map_err(|_| ErrorCode::TransportRejected),
            _ => Ok(()),
        }
    }

    /// Whether a message from `node` may be accepted now.
    pub fn allow_message(&mut self, node: &NodeId, now: &Timestamp) -> Result<(), ErrorCode> {
        if self.is_blocked(node, now) {
            return Err(ErrorCode::TransportRejected);
        }
        self.messages
            .check(node, now)
            .map_err(|_| ErrorCode::TransportRejected)
    }

    fn is_blocked(&self, node: &NodeId, now: &Timestamp) -> bool {
        self.peers
            .get(node)
            .and_then(|p| p.blocked_until.as_ref())
            .is_some_and(|until| until > now)
    }

    /// A session is established. Returns `Disconnect` when the peer is blocked or the
    /// node already has `max_live` sessions (which [`Governor::has_room`], checked
    /// before every handshake, keeps from happening).
    pub fn session_established(&mut self, node: NodeId, now: &Timestamp) -> Vec<Action> {
        self.session_established_from(node, None, now)
    }

    /// [`Self::session_established`] for a peer that dialed us from `network`.
    pub fn session_established_from(
        &mut self,
        node: NodeId,
        network: Option<IpKey>,
        now: &Timestamp,
    ) -> Vec<Action> {
        if self.is_blocked(&node, now) {
            return vec![Action::Disconnect(node)];
        }
        let live = self.live();
        if live >= self.config.max_live && !self.peers.get(&node).is_some_and(Peer::live) {
            if let Some(p) = self.peers.get_mut(&node) {
                p.dialing = false;
            }
            return vec![Action::Disconnect(node)];
        }
        // A live session always has its entry (live entries are bounded by `max_live`).
        let Some(peer) = self.entry(node, true) else {
            return vec![Action::Disconnect(node)];
        };
        peer.had_session = true;
        peer.network = network;
        peer.dialing = false;
        peer.attempts = 0;
        peer.next_dial = None;
        peer.keepalive_ok = true;
        peer.missing.clear();
        if !peer.live() {
            peer.temperature = Temperature::Warm;
        }
        self.promote();
        if let Some(net) = network {
            self.keep_network_share(net);
        }
        Vec::new()
    }

    /// The session ended (connection closed); a redial is scheduled after a backoff.
    pub fn session_closed(&mut self, node: &NodeId, now: &Timestamp) {
        let config = self.config;
        if let Some(p) = self.peers.get_mut(node)
            && p.temperature != Temperature::Blocked
        {
            p.temperature = Temperature::Cold;
            p.dialing = false;
            p.next_dial = Some(now.plus_secs(backoff(&config, node, p.attempts)));
            p.attempts = p.attempts.saturating_add(1);
        }
        self.promote();
    }

    /// A dial or handshake failed softly (unreachable, timeout).
    pub fn dial_failed(&mut self, node: &NodeId, reason: &str, now: &Timestamp) {
        let config = self.config;
        if let Some(p) = self.peers.get_mut(node) {
            p.dialing = false;
            p.last_failure = Some(reason.to_owned());
            if p.temperature != Temperature::Blocked {
                p.temperature = Temperature::Cold;
                p.next_dial = Some(now.plus_secs(backoff(&config, node, p.attempts)));
                p.attempts = p.attempts.saturating_add(1);
            }
        }
    }

    /// The last handshake of `node` failed for want of `caps` (`E_PROTO_CAP_MISSING`):
    /// its peer-status record shows them until a session is established. Only an
    /// existing entry records it (a stranger creates none).
    pub fn capabilities_missing(&mut self, node: &NodeId, caps: &[String]) {
        if let Some(p) = self.peers.get_mut(node) {
            p.missing = caps.iter().take(32).cloned().collect();
            p.last_failure = Some(ErrorCode::ProtoCapMissing.as_str().to_owned());
        }
    }

    /// A hard failure with `code` (bad signature, replay, wrong signer). Returns
    /// `Disconnect` when it blocks the peer.
    ///
    /// Any node that connects can cause one, so the entry it creates is an unknown one:
    /// never dialed, dropped when its failures leave the window, and the first evicted
    /// when the table is full. With no entry to evict the failure is not recorded.
    pub fn hard_failure(&mut self, node: NodeId, code: ErrorCode, now: &Timestamp) -> Vec<Action> {
        let config = self.config;
        let Some(peer) = self.entry(node, false) else {
            tracing::debug!(%node, "peer table full: hard failure not recorded");
            return Vec::new();
        };
        peer.failures
            .retain(|t| now.secs_since(t) <= config.failure_window_secs);
        peer.failures.push(now.clone());
        peer.last_failure = Some(code.as_str().to_owned());
        if code == ErrorCode::HsReplay {
            peer.replay_incidents += 1;
        }
        if peer.failures.len() >= config.block_after as usize {
            peer.temperature = Temperature::Blocked;
            peer.blocked_until = Some(now.plus_secs(config.block_cooldown_secs));
            peer.failures.clear();
            peer.dialing = false;
            self.promote();
            return vec![Action::Disconnect(node)];
        }
        Vec::new()
    }

    /// Keepalive to `node` was lost: a hot peer is demoted to warm.
    pub fn keepalive_lost(&mut self, node: &NodeId) {
        if let Some(p) = self.peers.get_mut(node) {
            p.keepalive_ok = false;
            if p.temperature == Temperature::Hot {
                p.temperature = Temperature::Warm;
            }
        }
        self.promote();
    }

    /// Keepalive to `node` recovered: it may be promoted again.
    pub fn keepalive_restored(&mut self, node: &NodeId) {
        if let Some(p) = self.peers.get_mut(node) {
            p.keepalive_ok = true;
        }
        self.promote();
    }

    /// Periodic work: ends lapsed blocks, forgets entries that carry nothing any more
    /// (unknown peers without failures in the window, past peers redialed
    /// `forget_after` times in vain), promotes, and asks for dials of kept peers while
    /// fewer than `target_hot` sessions are live, and of named peers while fewer than
    /// `target_hot` of them are.
    pub fn tick(&mut self, now: &Timestamp) -> Vec<Action> {
        let config = self.config;
        for p in self.peers.values_mut() {
            if p.temperature == Temperature::Blocked
                && p.blocked_until.as_ref().is_some_and(|u| u <= now)
            {
                p.temperature = Temperature::Cold;
                p.blocked_until = None;
                p.attempts = 0;
                p.next_dial = None;
            }
        }
        self.peers.retain(|_, p| {
            if p.named || p.live() || p.dialing || p.temperature == Temperature::Blocked {
                return true;
            }
            if p.had_session {
                return p.attempts < config.forget_after;
            }
            p.failures
                .iter()
                .any(|t| now.secs_since(t) <= config.failure_window_secs)
        });
        self.promote();
        let in_flight = self.peers.values().filter(|p| p.dialing).count();
        let wanted = self
            .config
            .target_hot
            .saturating_sub(self.live() + in_flight);
        // Named peers are dialed until `target_hot` of them are live or dialed, however
        // many sessions others hold: peers that dialed us (any number of fresh keys)
        // must not keep the node from its own.
        let named = (self.peers.values())
            .filter(|p| p.named && (p.live() || p.dialing))
            .count();
        let wanted_named = wanted.max(self.config.target_hot.saturating_sub(named));
        let mut due: Vec<(bool, Option<Timestamp>, NodeId)> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.temperature == Temperature::Cold
                    && p.kept()
                    && !p.dialing
                    && p.next_dial.as_ref().is_none_or(|t| t <= now)
            })
            .map(|(n, p)| (!p.named, p.next_dial.clone(), *n))
            .collect();
        // Named peers before past ones (any node can become a past peer by holding a
        // session once); within each, never-tried peers first, then the longest-waiting.
        due.sort();
        let named_due = due.iter().filter(|(past, ..)| !past).count();
        let take = wanted.max(wanted_named.min(named_due));
        due.into_iter()
            .take(take)
            .map(|(_, _, n)| {
                if let Some(p) = self.peers.get_mut(&n) {
                    p.dialing = true;
                }
                Action::Dial(n)
            })
            .collect()
    }

    fn promote(&mut self) {
        let hot = self.count(Temperature::Hot);
        let free = self.config.target_hot.saturating_sub(hot);
        let mut candidates: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.temperature == Temperature::Warm && p.keepalive_ok)
            .map(|(n, _)| *n)
            .collect();
        candidates.sort();
        for n in candidates.into_iter().take(free) {
            if let Some(p) = self.peers.get_mut(&n) {
                p.temperature = Temperature::Hot;
            }
        }
    }

    /// The `peer-status.v1` read model of `node` from the governor's own state alone
    /// (see [`Governor::peer_status_with`]).
    pub fn peer_status(&self, node: &NodeId, now: &Timestamp) -> Option<Value> {
        self.peer_status_with(node, &PeerFacts::default(), now)
    }

    /// The nodes the governor holds an entry for.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.keys()
    }

    /// The `peer-status.v1` read model of `node`: the governor's state (temperature,
    /// lifecycle, failures, cooldowns) with what the session and the node learned
    /// (`facts`). Missing capabilities are the facts' and those the last handshake
    /// failed on; any makes a healthy peer `capability_limited` and costs 10 points of
    /// score each.
    pub fn peer_status_with(
        &self,
        node: &NodeId,
        facts: &PeerFacts,
        now: &Timestamp,
    ) -> Option<Value> {
        let p = self.peers.get(node)?;
        let lifecycle = match p.temperature {
            Temperature::Blocked => "blocked",
            _ if p.live() => "connected",
            _ if p.dialing => "dialing",
            _ if p.next_dial.as_ref().is_some_and(|t| t > now) => "cooldown",
            _ => "idle",
        };
        let mut missing: Vec<String> = Vec::new();
        for c in facts.missing.iter().chain(&p.missing) {
            if schema_text(c, 256) && !missing.contains(c) {
                missing.push(c.clone());
            }
        }
        let supported: Vec<&String> = facts
            .supported
            .iter()
            .filter(|c| schema_text(c, 256))
            .collect();
        let quality = match p.temperature {
            Temperature::Blocked => "blocked",
            _ if !p.keepalive_ok => "degraded",
            _ if lifecycle == "cooldown" => "cooling_down",
            _ if !missing.is_empty() => "capability_limited",
            _ => "healthy",
        };
        let remaining = |t: &Option<Timestamp>| {
            t.as_ref()
                .map(|t| t.secs_since(now).max(0) * 1000)
                .filter(|ms| *ms > 0)
        };
        let score = match p.temperature {
            Temperature::Hot => 100,
            Temperature::Warm => 70,
            Temperature::Cold => 40u64.saturating_sub(u64::from(p.attempts.min(8)) * 5),
            Temperature::Blocked => 0,
        };
        let score = score.saturating_sub(10 * missing.len() as u64);
        let text = |t: &Option<String>, max: usize| {
            t.as_ref()
                .map(|t| truncate(t, max))
                .filter(|t| !t.is_empty())
        };
        Some(json!({
            "schema": "peer-status.v1",
            "node_id": node.to_string(),
            "display_name": text(&facts.display_name, 256),
            "selected_endpoint_url": text(&facts.endpoint_url, 2048),
            "temperature": p.temperature.as_str(),
            "lifecycle": lifecycle,
            "quality_status": quality,
            "score": score,
            "supported_capabilities": supported,
            "capability_missing_count": missing.len(),
            "missing_capabilities": missing,
            "failure_count": p.attempts,
            "replay_incidents": p.replay_incidents,
            "cooldown_remaining_ms": if lifecycle == "cooldown" { remaining(&p.next_dial).map(Value::from).unwrap_or(Value::Null) } else { Value::Null },
            "blocked_remaining_ms": remaining(&p.blocked_until),
            "last_failure_reason": text(&p.last_failure, 2048),
        }))
    }
}

/// What the session and the node know of a peer beyond the governor's counts, for its
/// `peer-status.v1` record ([`Governor::peer_status_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerFacts {
    /// A local label (a seed's name), if any.
    pub display_name: Option<String>,
    /// The endpoint the session runs on (`multiaddr:…` or a `ws`/`wss` URL).
    pub endpoint_url: Option<String>,
    /// Capabilities the peer proved with valid passports.
    pub supported: Vec<String>,
    /// Capabilities it listed without a valid passport.
    pub missing: Vec<String>,
}

/// Whether `t` fits a schema string of 1 to `max` characters.
fn schema_text(t: &str, max: usize) -> bool {
    !t.is_empty() && t.chars().count() <= max
}

/// `t` cut to at most `max` characters.
fn truncate(t: &str, max: usize) -> String {
    t.chars().take(max).collect()
}

/// The redial delay after `attempt` failures: `base * 2^attempt` capped at `max`, times
/// a factor in [0.5, 1.0] derived from the node id and the attempt.
pub fn backoff(config: &GovernorConfig, node: &NodeId, attempt: u32) -> i64 {
    let exp = config
        .backoff_base_secs
        .saturating_mul(1i64 << attempt.min(30))
        .min(config.backoff_max_secs)
        .max(1);
    // FNV-1a over the key and the attempt: cheap, deterministic, well spread.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .fingerprint()
        .as_bytes()
        .iter()
        .chain(&attempt.to_le_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let jitter = 0.5 + (h % 1000) as f64 / 2000.0;
    ((exp as f64) * jitter).ceil().max(1.0) as i64
}

// The unit tests are in `governor/tests.rs`.
mod evict;
#[cfg(test)]
mod tests;
