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

use std::collections::HashMap;

use mesh_core::{ErrorCode, NodeId, RateLimit, RateLimiter, Timestamp};
use serde_json::{Value, json};

/// Governor settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GovernorConfig {
    /// Hot sessions wanted.
    pub target_hot: usize,
    /// Most live (warm + hot) sessions.
    pub max_live: usize,
    /// First redial delay, seconds.
    pub backoff_base_secs: i64,
    /// Longest redial delay, seconds.
    pub backoff_max_secs: i64,
    /// Hard failures that block a peer.
    pub block_after: u32,
    /// Window in which hard failures count, seconds.
    pub failure_window_secs: i64,
    /// How long a block lasts, seconds.
    pub block_cooldown_secs: i64,
    /// Handshakes per node id.
    pub handshakes: RateLimit,
    /// Messages per node id.
    pub messages: RateLimit,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            target_hot: 2,
            max_live: 4,
            backoff_base_secs: 1,
            backoff_max_secs: 300,
            block_after: 3,
            failure_window_secs: 600,
            block_cooldown_secs: 600,
            handshakes: RateLimit::per_minute(5, 10),
            messages: RateLimit::per_minute(100, 600),
        }
    }
}

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
}

impl Peer {
    fn new() -> Self {
        Peer {
            temperature: Temperature::Cold,
            attempts: 0,
            next_dial: None,
            blocked_until: None,
            failures: Vec::new(),
            replay_incidents: 0,
            last_failure: None,
            keepalive_ok: true,
            dialing: false,
        }
    }

    fn live(&self) -> bool {
        matches!(self.temperature, Temperature::Warm | Temperature::Hot)
    }
}

/// The governor.
#[derive(Debug)]
pub struct Governor {
    config: GovernorConfig,
    peers: HashMap<NodeId, Peer>,
    handshakes: RateLimiter<NodeId>,
    messages: RateLimiter<NodeId>,
}

impl Governor {
    /// A governor with `config`.
    pub fn new(config: GovernorConfig) -> Self {
        Governor {
            config,
            peers: HashMap::new(),
            handshakes: RateLimiter::new(config.handshakes, 4096),
            messages: RateLimiter::new(config.messages, 4096),
        }
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
        self.live().saturating_add(pending) < self.config.max_live
    }

    /// Learns of a peer (a seed, a discovered node); it starts cold and may be dialed.
    pub fn add_known(&mut self, node: NodeId) {
        self.peers.entry(node).or_insert_with(Peer::new);
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
        if self.is_blocked(&node, now) {
            return vec![Action::Disconnect(node)];
        }
        let live = self.live();
        let peer = self.peers.entry(node).or_insert_with(Peer::new);
        if !peer.live() && live >= self.config.max_live {
            peer.dialing = false;
            return vec![Action::Disconnect(node)];
        }
        peer.dialing = false;
        peer.attempts = 0;
        peer.next_dial = None;
        peer.keepalive_ok = true;
        if !peer.live() {
            peer.temperature = Temperature::Warm;
        }
        self.promote();
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

    /// A hard failure with `code` (bad signature, replay, wrong signer). Returns
    /// `Disconnect` when it blocks the peer.
    pub fn hard_failure(&mut self, node: NodeId, code: ErrorCode, now: &Timestamp) -> Vec<Action> {
        let config = self.config;
        let peer = self.peers.entry(node).or_insert_with(Peer::new);
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

    /// Periodic work: ends lapsed blocks, promotes, and asks for dials while fewer than
    /// `target_hot` sessions are live.
    pub fn tick(&mut self, now: &Timestamp) -> Vec<Action> {
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
        self.promote();
        let in_flight = self.peers.values().filter(|p| p.dialing).count();
        let wanted = self
            .config
            .target_hot
            .saturating_sub(self.live() + in_flight);
        let mut due: Vec<(NodeId, Option<Timestamp>)> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.temperature == Temperature::Cold
                    && !p.dialing
                    && p.next_dial.as_ref().is_none_or(|t| t <= now)
            })
            .map(|(n, p)| (*n, p.next_dial.clone()))
            .collect();
        // Never-tried peers first, then the longest-waiting.
        due.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        due.into_iter()
            .take(wanted)
            .map(|(n, _)| {
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

    /// The `peer-status.v1` read model of `node`.
    pub fn peer_status(&self, node: &NodeId, now: &Timestamp) -> Option<Value> {
        let p = self.peers.get(node)?;
        let lifecycle = match p.temperature {
            Temperature::Blocked => "blocked",
            _ if p.live() => "connected",
            _ if p.dialing => "dialing",
            _ if p.next_dial.as_ref().is_some_and(|t| t > now) => "cooldown",
            _ => "idle",
        };
        let quality = match p.temperature {
            Temperature::Blocked => "blocked",
            _ if !p.keepalive_ok => "degraded",
            _ if lifecycle == "cooldown" => "cooling_down",
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
        Some(json!({
            "schema": "peer-status.v1",
            "node_id": node.to_string(),
            "display_name": null,
            "selected_endpoint_url": null,
            "temperature": p.temperature.as_str(),
            "lifecycle": lifecycle,
            "quality_status": quality,
            "score": score,
            "supported_capabilities": [],
            "missing_capabilities": [],
            "capability_missing_count": 0,
            "failure_count": p.attempts,
            "replay_incidents": p.replay_incidents,
            "cooldown_remaining_ms": if lifecycle == "cooldown" { remaining(&p.next_dial).map(Value::from).unwrap_or(Value::Null) } else { Value::Null },
            "blocked_remaining_ms": remaining(&p.blocked_until),
            "last_failure_reason": p.last_failure,
        }))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::artifact::Artifact;
    use mesh_core::{NodeKeypair, PeerStatus};

    fn t(s: i64) -> Timestamp {
        Timestamp::parse("2026-03-23T18:00:00Z")
            .unwrap()
            .plus_secs(s)
    }

    fn nodes(n: usize) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = (0..n).map(|_| NodeKeypair::generate().node_id()).collect();
        v.sort();
        v
    }

    #[test]
    fn promotion_demotion_and_live_limit() {
        let mut g = Governor::new(GovernorConfig::default());
        let n = nodes(6);
        for x in &n {
            g.add_known(*x);
        }
        // Two dials wanted (target 2 hot), no more while they are in flight.
        let dials = g.tick(&t(0));
        assert_eq!(dials.len(), 2);
        assert!(g.tick(&t(0)).is_empty());
        for x in &n[..4] {
            assert!(g.session_established(*x, &t(1)).is_empty());
        }
        assert_eq!(
            (g.count(Temperature::Hot), g.count(Temperature::Warm)),
            (2, 2)
        );
        // A fifth live session is refused.
        assert_eq!(
            g.session_established(n[4], &t(1)),
            vec![Action::Disconnect(n[4])]
        );
        assert_eq!(g.temperature(&n[4]), Some(Temperature::Cold));
        // Keepalive lost demotes a hot peer; a healthy warm one takes its place.
        let hot: Vec<NodeId> = n[..4]
            .iter()
            .copied()
            .filter(|x| g.temperature(x) == Some(Temperature::Hot))
            .collect();
        g.keepalive_lost(&hot[0]);
        assert_eq!(g.temperature(&hot[0]), Some(Temperature::Warm));
        assert_eq!(g.count(Temperature::Hot), 2);
        g.keepalive_restored(&hot[0]);
        // Closing a hot session promotes a warm one.
        g.session_closed(&hot[1], &t(2));
        assert_eq!(g.count(Temperature::Hot), 2);
        assert_eq!(g.temperature(&hot[1]), Some(Temperature::Cold));
    }

    #[test]
    fn room_counts_live_sessions_and_pending_handshakes() {
        let mut g = Governor::new(GovernorConfig {
            max_live: 3,
            ..GovernorConfig::default()
        });
        let n = nodes(4);
        assert!(g.has_room(0));
        assert!(g.has_room(2));
        assert!(
            !g.has_room(3),
            "three handshakes under way fill three slots"
        );
        g.session_established(n[0], &t(0));
        g.session_established(n[1], &t(0));
        assert!(g.has_room(0));
        assert!(!g.has_room(1));
        g.session_established(n[2], &t(0));
        assert!(!g.has_room(0));
        // Cold and blocked peers take no slot.
        g.session_closed(&n[0], &t(1));
        assert!(g.has_room(0));
        g.add_known(n[3]);
        assert!(g.has_room(0));
    }

    #[test]
    fn redials_back_off_exponentially_with_jitter() {
        let c = GovernorConfig::default();
        let n = nodes(2);
        let mut last = 0;
        for attempt in 0..12 {
            let d = backoff(&c, &n[0], attempt);
            let exp = (1i64 << attempt).min(300);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempt}: {d} not in [{}, {exp}]",
                exp / 2
            );
            if attempt < 8 {
                assert!(d >= last / 2);
            }
            last = d;
        }
        // Jitter differs between nodes for the same attempt (most of the time).
        let differs = (3..10).any(|a| backoff(&c, &n[0], a) != backoff(&c, &n[1], a));
        assert!(differs);

        let mut g = Governor::new(c);
        g.add_known(n[0]);
        assert_eq!(g.tick(&t(0)), vec![Action::Dial(n[0])]);
        g.dial_failed(&n[0], "connection refused", &t(0));
        let first = backoff(&c, &n[0], 0);
        assert!(g.tick(&t(first - 1)).is_empty(), "not before the backoff");
        assert_eq!(g.tick(&t(first)), vec![Action::Dial(n[0])]);
        g.dial_failed(&n[0], "connection refused", &t(first));
        let second = backoff(&c, &n[0], 1);
        assert!(g.tick(&t(first + second - 1)).is_empty());
        assert_eq!(g.tick(&t(first + second)), vec![Action::Dial(n[0])]);
        // Success resets the backoff.
        g.session_established(n[0], &t(first + second));
        g.session_closed(&n[0], &t(100));
        assert_eq!(
            g.tick(&t(100 + backoff(&c, &n[0], 0))),
            vec![Action::Dial(n[0])]
        );
    }

    #[test]
    fn repeated_hard_failures_block_then_unblock() {
        let mut g = Governor::new(GovernorConfig::default());
        let n = nodes(1)[0];
        g.add_known(n);
        g.session_established(n, &t(0));
        assert!(g.hard_failure(n, ErrorCode::SigInvalid, &t(1)).is_empty());
        assert!(g.hard_failure(n, ErrorCode::HsReplay, &t(2)).is_empty());
        assert_eq!(
            g.hard_failure(n, ErrorCode::HsReplay, &t(3)),
            vec![Action::Disconnect(n)]
        );
        assert_eq!(g.temperature(&n), Some(Temperature::Blocked));
        assert_eq!(
            g.allow_handshake(&n, &t(4)),
            Err(ErrorCode::TransportRejected)
        );
        assert_eq!(g.session_established(n, &t(5)), vec![Action::Disconnect(n)]);
        assert!(g.tick(&t(500)).is_empty(), "blocked peers are not dialed");
        let status = g.peer_status(&n, &t(500)).unwrap();
        assert_eq!(status["temperature"], "blocked");
        assert_eq!(status["replay_incidents"], 2);
        assert_eq!(status["blocked_remaining_ms"], 103_000);
        PeerStatus::from_json(status).unwrap();
        // Cooldown over: cold again and dialed.
        assert_eq!(g.tick(&t(603)), vec![Action::Dial(n)]);
        assert_eq!(g.temperature(&n), Some(Temperature::Cold));
        g.allow_handshake(&n, &t(604)).unwrap();
        // Failures outside the window do not add up.
        let mut g = Governor::new(GovernorConfig::default());
        for i in 0..5 {
            assert!(
                g.hard_failure(n, ErrorCode::SigInvalid, &t(i * 700))
                    .is_empty()
            );
        }
    }

    #[test]
    fn rate_limits_per_node_id() {
        let mut g = Governor::new(GovernorConfig {
            handshakes: RateLimit::per_minute(2, 1),
            messages: RateLimit::per_minute(3, 1),
            ..GovernorConfig::default()
        });
        let n = nodes(2);
        g.allow_handshake(&n[0], &t(0)).unwrap();
        g.allow_handshake(&n[0], &t(0)).unwrap();
        assert!(g.allow_handshake(&n[0], &t(0)).is_err());
        g.allow_handshake(&n[1], &t(0)).unwrap();
        for _ in 0..3 {
            g.allow_message(&n[0], &t(0)).unwrap();
        }
        assert!(g.allow_message(&n[0], &t(0)).is_err());
        g.allow_message(&n[0], &t(60)).unwrap();
    }

    #[test]
    fn peer_status_records_are_schema_valid() {
        let mut g = Governor::new(GovernorConfig::default());
        let n = nodes(3);
        for x in &n {
            g.add_known(*x);
        }
        g.session_established(n[0], &t(0));
        g.dial_failed(&n[1], "timeout", &t(0));
        for x in &n {
            let s = g.peer_status(x, &t(0)).unwrap();
            PeerStatus::from_json(s.clone()).unwrap_or_else(|e| panic!("{e}: {s}"));
        }
        assert_eq!(
            g.peer_status(&n[0], &t(0)).unwrap()["lifecycle"],
            "connected"
        );
        assert_eq!(
            g.peer_status(&n[1], &t(0)).unwrap()["lifecycle"],
            "cooldown"
        );
        assert_eq!(g.peer_status(&n[2], &t(0)).unwrap()["lifecycle"], "idle");
    }
}
