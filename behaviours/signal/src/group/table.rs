//! The swarms this node is in and their member tables, as pure logic: every call takes
//! `now`. The node feeds it verified presences and ticks it; it answers what changed
//! and which presence of our own is due.
//!
//! A `leave` is remembered (its sequence number) until every presence the member could
//! have signed before it has expired, so an older `join` or `announce` replayed after
//! the leave brings nobody back. A full member table makes room before it refuses a
//! newcomer: expired members go first, then the member with the nearest expiry among
//! those the node cannot see alive (the caller says which are: connected peers); a
//! table full of live members refuses with `E_TRANSPORT_REJECTED`.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_core::{
    Artifact, CLOCK_SKEW_SECS, ErrorCode, MAX_PRESENCE_TTL_SECS, MIN_PRESENCE_TTL_SECS, MeshError,
    MeshResult, NodeId, SwarmPresence, Timestamp,
};
use serde_json::{Map, Value, json};

use super::key::DiscoveryKey;

mod evict;
mod joining;
mod via_table;
use evict::{Leave, make_room, remember_leave, stale};

/// Least time between two of our answers to `join`s, seconds, in a small swarm. Every
/// member answers a join with an `announce` that goes to every member, so answers cost
/// the swarm members² message deliveries (each one a signature check); when joins keep
/// coming (a swarm forming), one answer per interval serves all the newcomers of the
/// interval.
pub const ANSWER_GAP_SECS: i64 = 2;

/// The longest gap between two answers, seconds (reached at 250 members).
pub const ANSWER_GAP_MAX_SECS: i64 = 10;

/// The gap between two of our answers to `join`s in a swarm of `members`: one second
/// per 25 members, at least [`ANSWER_GAP_SECS`], at most [`ANSWER_GAP_MAX_SECS`]. A
/// lone join is answered at once; a burst of joins in a 200-member swarm gets one
/// answer per member every 8 s, which keeps the answers' deliveries per second about
/// constant as the swarm grows (measured: with a fixed 2 s gap, 200 members joining
/// within 41 s left gossipsub queues minutes behind and lost 650 000 sends).
pub fn answer_gap_secs(members: usize) -> i64 {
    i64::try_from(members.div_ceil(25))
        .unwrap_or(ANSWER_GAP_MAX_SECS)
        .clamp(ANSWER_GAP_SECS, ANSWER_GAP_MAX_SECS)
}

/// The longest gap between two of our answers to plain `join`s once we are settled,
/// seconds (reached at 480 members).
pub const PLAIN_ANSWER_GAP_MAX_SECS: i64 = 120;

/// The gap between two of our answers to `join`s without `table/fetch` (a browser's,
/// an older node's, a fetch that failed) once we have been in the swarm
/// [`SETTLED_SECS`]: one second per 4 members, at least [`ANSWER_GAP_SECS`], at most
/// [`PLAIN_ANSWER_GAP_MAX_SECS`] (50 s at 200 members). Every member answers such a
/// join with an announce that reaches every member, and anyone may sign a join for a
/// fresh key: with [`answer_gap_secs`] alone one join every 8 s made a 200-member
/// swarm carry 40,000 deliveries per 8 s, some 28 times its settled load. Bounded
/// this way, a stream of joins costs each member one announce per gap; a newcomer
/// that comes within the gap after another one waits up to the gap for the answers.
pub fn plain_answer_gap_secs(members: usize) -> i64 {
    i64::try_from(members.div_ceil(4))
        .unwrap_or(PLAIN_ANSWER_GAP_MAX_SECS)
        .clamp(ANSWER_GAP_SECS, PLAIN_ANSWER_GAP_MAX_SECS)
}

/// Members per step of the presence TTL: a swarm of up to this many other members uses
/// the configured TTL, and every further step of this many adds the configured TTL
/// again (see [`presence_ttl_secs`]).
pub const TTL_STEP_MEMBERS: usize = 50;

/// The longest TTL that the growth with the swarm reaches, seconds (a configured TTL
/// above it is kept as it is).
pub const TTL_GROWN_MAX_SECS: i64 = 900;

/// The TTL of our presence in a swarm where we know `members` others, for a configured
/// TTL `configured`: `configured` up to [`TTL_STEP_MEMBERS`] members, twice it up to
/// twice that, and so on, at most [`TTL_GROWN_MAX_SECS`]. Every member refreshes at
/// about half its TTL, and every refresh goes to every member, so a fixed TTL makes
/// refreshes cost the swarm members² deliveries per interval: at 200 members and
/// 120 s, 40 000 deliveries a minute, which saturated two cores for 15–20 s of every
/// minute (BENCHMARKS, *Swarms*). Growing the TTL with the swarm keeps each member's
/// share about constant (about one refresh to take in per 1.2 s at 120 s). The price:
/// a member that dies without its `leave` stays in the tables up to one TTL (8 min
/// at 200 members and 120 s).
pub fn presence_ttl_secs(configured: i64, members: usize) -> i64 {
    let steps = i64::try_from(members.div_ceil(TTL_STEP_MEMBERS).max(1)).unwrap_or(i64::MAX);
    configured
        .saturating_mul(steps)
        .min(TTL_GROWN_MAX_SECS.max(configured))
        .clamp(MIN_PRESENCE_TTL_SECS, MAX_PRESENCE_TTL_SECS)
}

/// How long after sending a presence of TTL `ttl` we refresh it, seconds: half the TTL,
/// less a jitter of up to an eighth of the TTL drawn from `seed`. Members that joined
/// together (a swarm forming) would otherwise refresh together for ever, in bursts; the
/// jitter spreads them over a quarter of the interval, more with every refresh. Never
/// later than half the TTL, so a presence is refreshed long before it expires.
pub fn refresh_after_secs(ttl: i64, seed: u64) -> i64 {
    let half = (ttl / 2).max(1);
    let spread = u64::try_from(half / 4).unwrap_or(0);
    let jitter = match spread {
        0 => 0,
        s => i64::try_from(mix(seed) % (s + 1)).unwrap_or(0),
    };
    (half - jitter).max(1)
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The signed field of a `join` that says its sender fetches the member table over
/// `/mesh/swarm-table/1.0.0` (see [`super::exchange`]): members that are settled in
/// the swarm (their own join went out [`SETTLED_SECS`] ago or more) do not answer such
/// a join with an `announce`. Nodes without the exchange ignore the field (unknown
/// fields are kept and signed, never refused) and answer as before.
pub const TABLE_FETCH_FIELD: &str = "table/fetch";

/// How long after its own join a member still answers joins that fetch the table: a
/// member that joined this recently may be missing from the table the newcomer got
/// (its join may still have been on its way to the peer that answered).
pub const SETTLED_SECS: i64 = 10;

/// Whether `p` is a `join` whose sender fetches the member table.
pub fn fetches_table(p: &SwarmPresence) -> bool {
    p.presence() == "join" && p.as_map().get(TABLE_FETCH_FIELD) == Some(&Value::Bool(true))
}

/// Limits and timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// How long our presence is valid, seconds, in a swarm of up to
    /// [`TTL_STEP_MEMBERS`] others (longer in larger ones, see [`presence_ttl_secs`]); we
    /// re-announce before half of it.
    pub ttl_secs: i64,
    /// Most swarms joined at once.
    pub max_swarms: usize,
    /// Most members remembered per swarm.
    pub max_members: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            ttl_secs: 120,
            max_swarms: 64,
            max_members: 1024,
        }
    }
}

/// The largest presence a member table keeps, in bytes of its wire form: 16 addresses
/// of 200 characters and the fixed fields come to about 4 KiB; unknown fields are kept
/// (and signed) up to the rest. A table of `max_members` holds 8 MiB of presences at
/// most, rather than 64 KiB (a gossipsub message) per member.
pub const MAX_PRESENCE_BYTES: usize = 8 * 1024;

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    /// It said so (`leave`).
    Leave,
    /// Its presence expired without a re-announcement.
    Expired,
    /// The table was full: it made room for a newcomer (it was not seen alive).
    Evicted,
}

impl LeftReason {
    /// `leave` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Leave => "leave",
            LeftReason::Expired => "expired",
            LeftReason::Evicted => "evicted",
        }
    }
}

/// A member as the table knows it (two are equal when all but their place in the
/// order of arrivals, which is the table's own, are).
#[derive(Debug, Clone)]
pub struct Member {
    /// Its node id.
    pub node: NodeId,
    /// The addresses it announced.
    pub addrs: Vec<String>,
    /// When it counts as gone unless it re-announces.
    pub expires_at: Timestamp,
    /// Its latest sequence number.
    pub sequence_no: u64,
    /// Its latest presence, signed (the CBOR wire form), for the table exchange.
    pub signed: Arc<[u8]>,
    /// When it came into the table, in the order of arrivals (kept across its
    /// refreshes): a full table evicts among the later half of arrivals.
    arrival: u64,
    /// Its latest presence came in a table page and has not come by gossip yet (the
    /// first gossip copy of it is still forwarded: the node's neighbours may not have
    /// it).
    via_table: bool,
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
            && self.addrs == other.addrs
            && self.expires_at == other.expires_at
            && self.sequence_no == other.sequence_no
            && self.signed == other.signed
    }
}

/// What a presence or a tick changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A member arrived.
    Joined {
        /// The swarm.
        swarm: DiscoveryKey,
        /// The member.
        member: Member,
    },
    /// A member left.
    Left {
        /// The swarm.
        swarm: DiscoveryKey,
        /// The member.
        node: NodeId,
        /// How.
        reason: LeftReason,
    },
}

/// One of our own presences that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The swarm.
    pub swarm: DiscoveryKey,
    /// `join` or `announce`.
    pub presence: &'static str,
}

#[derive(Debug)]
struct Joined {
    members: HashMap<NodeId, Member>,
    /// Members that left: the sequence number of their `leave`, kept until then.
    left: HashMap<NodeId, Leave>,
    /// Arrivals into `members` so far (the next one's [`Member::arrival`]).
    arrivals: u64,
    /// Our `join` went out (someone was there to receive it).
    join_sent: bool,
    /// When our latest presence is to be refreshed.
    refresh_at: Option<Timestamp>,
    /// The TTL of the latest presence document we made, seconds.
    doc_ttl: i64,
    /// The TTL of the presence we sent before the latest one, seconds.
    sent_ttl: Option<i64>,
    /// A newcomer asked us to announce.
    answer_due: bool,
    /// The gap the joins waiting for an answer ask (the shortest of them).
    answer_gap: i64,
    /// When our last answer to a `join` went out.
    last_answer: Option<Timestamp>,
    /// When our first `join` went out.
    joined_at: Option<Timestamp>,
    /// Our latest `join` or `announce`, signed, and when it expires.
    own: Option<(Arc<[u8]>, Timestamp)>,
}

/// Every swarm this node is in.
#[derive(Debug)]
pub struct Groups {
    me: NodeId,
    config: GroupConfig,
    swarms: HashMap<DiscoveryKey, Joined>,
    sequence: u64,
}

impl Groups {
    /// An empty set for node `me`.
    pub fn new(me: NodeId, config: GroupConfig) -> Self {
        Groups {
            me,
            config,
            swarms: HashMap::new(),
            sequence: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Joins `swarm`: `Ok(false)` when already in it; `E_TRANSPORT_REJECTED` past
    /// `max_swarms`.
    pub fn join(&mut self, swarm: DiscoveryKey) -> MeshResult<bool> {
        if self.swarms.contains_key(&swarm) {
            return Ok(false);
        }
        if self.swarms.len() >= self.config.max_swarms {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("already in {} swarms", self.config.max_swarms),
            ));
        }
        self.swarms.insert(
            swarm,
            Joined {
                members: HashMap::new(),
                left: HashMap::new(),
                arrivals: 0,
                join_sent: false,
                refresh_at: None,
                doc_ttl: self.config.ttl_secs,
                sent_ttl: None,
                answer_due: false,
                answer_gap: ANSWER_GAP_SECS,
                last_answer: None,
                joined_at: None,
                own: None,
            },
        );
        Ok(true)
    }

    /// Leaves `swarm`; `false` when not in it. The caller publishes the `leave`
    /// presence ([`Groups::presence_doc`]) before it unsubscribes.
    pub fn leave(&mut self, swarm: &DiscoveryKey) -> bool {
        self.swarms.remove(swarm).is_some()
    }

    /// Whether this node is in `swarm`.
    pub fn is_joined(&self, swarm: &DiscoveryKey) -> bool {
        self.swarms.contains_key(swarm)
    }

    /// The swarms this node is in.
    pub fn joined(&self) -> Vec<DiscoveryKey> {
        let mut v: Vec<DiscoveryKey> = self.swarms.keys().copied().collect();
        v.sort();
        v
    }

    /// The members of `swarm` (not this node), by node id; `None` when not joined.
    /// (Node ids compare like their text: the base58 of the fixed prefix and key always
    /// has 47 digits, whose alphabet is in ASCII order. Sorting by text would encode
    /// every id O(log n) times.)
    pub fn members(&self, swarm: &DiscoveryKey) -> Option<Vec<Member>> {
        let s = self.swarms.get(swarm)?;
        let mut v: Vec<Member> = s.members.values().cloned().collect();
        v.sort_unstable_by_key(|m| m.node);
        Some(v)
    }

    /// Whether `node` is a member of any swarm this node is in.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.swarms.values().any(|s| s.members.contains_key(node))
    }

    /// Whether `node` is a member of `swarm`.
    pub fn has_member(&self, swarm: &DiscoveryKey, node: &NodeId) -> bool {
        self.swarms
            .get(swarm)
            .is_some_and(|s| s.members.contains_key(node))
    }

    /// How many members `swarm` has (not this node); `None` when not joined.
    pub fn member_count(&self, swarm: &DiscoveryKey) -> Option<usize> {
        self.swarms.get(swarm).map(|s| s.members.len())
    }

    /// A verified presence arrived. Our own, duplicates and older sequence numbers
    /// change nothing; presences for swarms we are not in are `E_PROTO_INVALID`.
    /// No member is taken to be seen alive (see [`Groups::on_presence_alive`]).
    pub fn on_presence(&mut self, p: &SwarmPresence, now: &Timestamp) -> MeshResult<Vec<Change>> {
        self.on_presence_alive(p, now, |_| false)
    }

    /// [`Groups::on_presence`], where `alive` says which members this node sees alive
    /// (a full table evicts others first, and refuses a newcomer rather than evict
    /// those). A presence older than a member's `leave` changes nothing.
    pub fn on_presence_alive(
        &mut self,
        p: &SwarmPresence,
        now: &Timestamp,
        alive: impl Fn(&NodeId) -> bool,
    ) -> MeshResult<Vec<Change>> {
        self.on_signed_presence(p, None, now, alive)
    }

    /// Whether `p` would change nothing in a table of a swarm we are in: it is ours,
    /// expired, or not newer than what the table holds of its signer or than its
    /// signer's remembered `leave`. A node does not forward such a presence: anyone may
    /// capture a signed presence and put it on the topic again once gossipsub has
    /// forgotten its id (a minute), and every member would check and forward it again.
    pub fn is_stale(&self, p: &SwarmPresence, now: &Timestamp) -> bool {
        let swarm = DiscoveryKey::new(*p.swarm_key());
        self.swarms
            .get(&swarm)
            .is_some_and(|s| stale(s, &self.me, p, now))
    }

    /// [`Groups::on_presence_alive`] for a presence received as `signed` (its CBOR
    /// wire form, kept for the table exchange; `None`: encoded again from `p`).
    pub fn on_signed_presence(
        &mut self,
        p: &SwarmPresence,
        signed: Option<&[u8]>,
        now: &Timestamp,
        alive: impl Fn(&NodeId) -> bool,
    ) -> MeshResult<Vec<Change>> {
        let swarm = DiscoveryKey::new(*p.swarm_key());
        let max = self.config.max_members;
        let size = signed.map_or_else(|| p.to_cbor().len(), <[u8]>::len);
        if size > MAX_PRESENCE_BYTES {
            return Err(MeshError::invalid(format!(
                "swarm-presence.v1: {size} bytes exceed the {MAX_PRESENCE_BYTES} byte cap of a member's presence"
            )));
        }
        let Some(s) = self.swarms.get_mut(&swarm) else {
            return Err(MeshError::invalid(format!(
                "swarm-presence.v1: not in swarm {swarm}"
            )));
        };
        let node = p.node_id();
        if stale(s, &self.me, p, now) {
            return Ok(Vec::new());
        }
        let superseded = s.left.remove(&node);
        let settled = s
            .joined_at
            .as_ref()
            .is_some_and(|t| now.secs_since(t) >= SETTLED_SECS);
        if p.presence() == "join" && !(settled && fetches_table(p)) {
            let gap = if settled {
                plain_answer_gap_secs(s.members.len())
            } else {
                answer_gap_secs(s.members.len())
            };
            s.answer_gap = if s.answer_due {
                s.answer_gap.min(gap)
            } else {
                gap
            };
            s.answer_due = true;
        }
        if p.presence() == "leave" {
            // Every presence signed before the leave expires within the longest TTL
            // (and the clock skew) from now.
            let until = now.plus_secs(MAX_PRESENCE_TTL_SECS + CLOCK_SKEW_SECS);
            let member = s.members.get(&node);
            // The presence this leave replaces may stay in the tables of members that
            // missed the leave until it expires: till then the leave is served with
            // table checks. A member's second leave keeps the first's place and time.
            let earlier = superseded.as_ref().and_then(|l| l.served.as_ref());
            let held_until = member.map(|m| &m.expires_at).or(earlier.map(|(_, t)| t));
            let signed: Arc<[u8]> = match signed {
                Some(b) => Arc::from(b),
                None => Arc::from(p.to_cbor()),
            };
            let leave = Leave {
                sequence_no: p.sequence_no(),
                until,
                served: held_until.cloned().map(|t| (signed, t)),
                arrival: member
                    .map(|m| m.arrival)
                    .or(superseded.and_then(|l| l.arrival)),
            };
            remember_leave(&mut s.left, node, leave, max, now);
            return Ok(match s.members.remove(&node) {
                Some(_) => vec![Change::Left {
                    swarm,
                    node,
                    reason: LeftReason::Leave,
                }],
                None => Vec::new(),
            });
        }
        let signed: Arc<[u8]> = match signed {
            Some(b) => Arc::from(b),
            None => Arc::from(p.to_cbor()),
        };
        let member = Member {
            node,
            addrs: p.addrs(),
            expires_at: p.expires_at().clone(),
            sequence_no: p.sequence_no(),
            signed,
            arrival: s.arrivals,
            via_table: false,
        };
        if let Some(m) = s.members.get_mut(&node) {
            *m = Member {
                arrival: m.arrival,
                ..member
            };
            return Ok(Vec::new());
        }
        s.arrivals += 1;
        let mut changes = Vec::new();
        if s.members.len() >= max {
            changes = make_room(&mut s.members, swarm, max, now, &alive);
        }
        if s.members.len() >= max {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("swarm {swarm}: member table full ({max}) of members seen alive"),
            ));
        }
        s.members.insert(node, member.clone());
        changes.push(Change::Joined { swarm, member });
        Ok(changes)
    }

    /// Expires silent members and says which of our presences are due: the `join`
    /// until it went out, an `announce` when a newcomer asked (at most one answer per
    /// [`answer_gap_secs`], or per [`plain_answer_gap_secs`] for plain joins once we
    /// are settled) or our last presence is due for its refresh
    /// ([`refresh_after_secs`]).
    pub fn tick(&mut self, now: &Timestamp) -> (Vec<Change>, Vec<Due>) {
        let mut changes = Vec::new();
        let mut due = Vec::new();
        let mut keys: Vec<DiscoveryKey> = self.swarms.keys().copied().collect();
        keys.sort();
        for swarm in keys {
            let Some(s) = self.swarms.get_mut(&swarm) else {
                continue;
            };
            let mut gone: Vec<NodeId> = s
                .members
                .values()
                .filter(|m| &m.expires_at <= now)
                .map(|m| m.node)
                .collect();
            gone.sort_unstable();
            s.left.retain(|_, l| &l.until > now);
            for node in gone {
                s.members.remove(&node);
                changes.push(Change::Left {
                    swarm,
                    node,
                    reason: LeftReason::Expired,
                });
            }
            let stale = s.refresh_at.as_ref().is_none_or(|t| now >= t);
            if !s.join_sent {
                due.push(Due {
                    swarm,
                    presence: "join",
                });
            } else if stale
                || (s.answer_due
                    && s.last_answer
                        .as_ref()
                        .is_none_or(|t| now.secs_since(t) >= s.answer_gap))
            {
                due.push(Due {
                    swarm,
                    presence: "announce",
                });
            }
        }
        (changes, due)
    }

    /// Our presence of kind `presence` in `swarm` went out.
    pub fn sent(&mut self, swarm: &DiscoveryKey, presence: &str, now: &Timestamp) {
        if let Some(s) = self.swarms.get_mut(swarm) {
            if presence == "join" {
                s.join_sent = true;
                if s.joined_at.is_none() {
                    s.joined_at = Some(now.clone());
                }
            }
            if presence == "announce" && s.answer_due {
                s.last_answer = Some(now.clone());
            }
            s.answer_due = false;
            let millis = u64::try_from(now.instant().timestamp_millis()).unwrap_or(0);
            let seed = u64::from_le_bytes(
                self.me.fingerprint().as_bytes()[..8]
                    .try_into()
                    .unwrap_or_default(),
            ) ^ millis;
            // When the TTL grows, the first refresh keeps to the shorter TTL it follows,
            // so that one lost presence never lets the one before it expire.
            let ttl = s.sent_ttl.map_or(s.doc_ttl, |prev| prev.min(s.doc_ttl));
            s.sent_ttl = Some(s.doc_ttl);
            s.refresh_at = Some(now.plus_secs(refresh_after_secs(ttl, seed)));
        }
    }

    /// Sends our `join` again (at the next tick), as a fresh presence: after a table
    /// fetch failed, a `join` without [`TABLE_FETCH_FIELD`] makes every member answer.
    pub fn rejoin(&mut self, swarm: &DiscoveryKey) {
        if let Some(s) = self.swarms.get_mut(swarm) {
            s.join_sent = false;
        }
    }

    /// Our latest `join` or `announce` in `swarm`, signed, valid until `expires_at`:
    /// it heads the table we hand over.
    pub fn set_own(&mut self, swarm: &DiscoveryKey, signed: Arc<[u8]>, expires_at: Timestamp) {
        if let Some(s) = self.swarms.get_mut(swarm) {
            s.own = Some((signed, expires_at));
        }
    }

    /// The member table of `swarm` as signed presences, by node id (our own included,
    /// expired ones left out); `None` when not joined.
    pub fn signed_table(
        &self,
        swarm: &DiscoveryKey,
        now: &Timestamp,
    ) -> Option<Vec<(NodeId, Arc<[u8]>)>> {
        let s = self.swarms.get(swarm)?;
        let mut v: Vec<(NodeId, Arc<[u8]>)> = s
            .members
            .values()
            .filter(|m| &m.expires_at > now)
            .map(|m| (m.node, m.signed.clone()))
            .collect();
        if let Some((own, until)) = &s.own
            && until > now
        {
            v.push((self.me, own.clone()));
        }
        v.sort_unstable_by_key(|(n, _)| *n);
        Some(v)
    }

    /// The `leave`s of `swarm` worth serving with a table check, as signed presences
    /// by node id: those of members whose last presence (the one each leave replaced)
    /// has not expired, so a member that missed a leave may still hold it. Empty when
    /// not joined.
    pub fn signed_leaves(&self, swarm: &DiscoveryKey, now: &Timestamp) -> Vec<(NodeId, Arc<[u8]>)> {
        let Some(s) = self.swarms.get(swarm) else {
            return Vec::new();
        };
        let mut v: Vec<(NodeId, Arc<[u8]>)> = s
            .left
            .iter()
            .filter_map(|(n, l)| l.served.as_ref().map(|served| (n, served)))
            .filter(|(_, (_, held_until))| held_until > now)
            .map(|(n, (signed, _))| (*n, signed.clone()))
            .collect();
        v.sort_unstable_by_key(|(n, _)| *n);
        v
    }

    /// The unsigned document of our next presence (`join`, `announce` or `leave`) in
    /// `swarm`, with a fresh sequence number and a TTL that grows with the swarm
    /// ([`presence_ttl_secs`]); the caller signs it. (A `join` that fetches the table
    /// gets [`TABLE_FETCH_FIELD`] from the caller.)
    pub fn presence_doc(
        &mut self,
        swarm: &DiscoveryKey,
        presence: &str,
        addrs: &[String],
        now: &Timestamp,
    ) -> Map<String, Value> {
        let millis = u64::try_from(now.instant().timestamp_millis()).unwrap_or(0);
        self.sequence = (self.sequence + 1).max(millis);
        let members = self.swarms.get(swarm).map_or(0, |s| s.members.len());
        let ttl = presence_ttl_secs(self.config.ttl_secs, members);
        if let Some(s) = self.swarms.get_mut(swarm) {
            s.doc_ttl = ttl;
        }
        let addrs: Vec<&String> = addrs.iter().take(mesh_core::MAX_PRESENCE_ADDRS).collect();
        let doc = json!({
            "schema/v": 1,
            "message/kind": "swarm-presence.v1",
            "swarm/key": swarm.to_hex(),
            "node/id": self.me.to_string(),
            "presence": presence,
            "sequence/no": self.sequence,
            "addrs": addrs,
            "created-at": now.as_str(),
            "expires-at": now.plus_secs(ttl).as_str(),
        });
        match doc {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod tests;
