//! The relay's table of live grants, per node id: pure logic, `now` passed in.
//!
//! - A node holds at most one reservation grant and one circuit grant (a newer grant
//!   replaces the older one of the same kind). A reservation grant also lets the node
//!   open circuits; a circuit grant may be limited to some targets.
//! - Circuits are counted per node id, across all of the node's connections, against
//!   the grant's `circuits` limit. A circuit counts from the moment the relay allows its
//!   request ([`Grants::circuit_allowed`]), not only once it is open, so that requests
//!   arriving together cannot overshoot the limit; an allowed request that never opens
//!   stops counting when the relay reports its failure ([`Grants::circuit_abandoned`]) or
//!   after [`PENDING_SECS`].
//! - A revoked node loses its grants and is blocked for a while: no new grant, no
//!   connection.
//! - Memory is bounded: at most [`Rules::max_nodes`] nodes hold grants, and at most
//!   [`Rules::max_per_ip`] of them asked from one IP key ([`IpKey`]: an IPv4 address or
//!   an IPv6 /64); connections without an IP of their own (relayed ones) share one such
//!   share. The nodes of one IP key hold at most [`Rules::max_circuits_per_ip`]
//!   circuits together.
//! - A grant that is never used (no reservation, no circuit) lapses after
//!   [`Rules::unused_secs`], however long it was issued for: throwaway identities cannot
//!   hold the table with grants they do not use.
//! - Before a new node is refused for room (the whole table, or its IP key's share), an
//!   idle node is evicted: one without a reservation, an open circuit or a pending
//!   circuit request, least recently active first. Only when every entry is active is
//!   the request refused.

use std::collections::{HashMap, VecDeque};

use mesh_core::{ErrorCode, GrantLimits, MeshError, NodeId, Timestamp};

use crate::policy::Purpose;
use mesh_core::IpKey;

/// One grant as the relay keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `ticket/id`.
    pub ticket: String,
    /// The node admitted.
    pub node: NodeId,
    /// What for.
    pub purpose: Purpose,
    /// Its limits.
    pub limits: GrantLimits,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it lapses.
    pub expires_at: Timestamp,
    /// Granted without a request ([`crate::implicit`]): a standard libp2p client
    /// admitted by the policy from its peer id (and the relay's advertisements).
    pub implicit: bool,
}

#[derive(Debug, Default)]
struct Entry {
    reservation: Option<Grant>,
    circuit: Option<Grant>,
    /// Targets of the circuit grants merged so far, oldest first, at most
    /// [`MAX_TARGETS`] (`None`: any target).
    targets: Option<VecDeque<NodeId>>,
    /// Open circuits from this node: (destination, opened at).
    open: Vec<(NodeId, Timestamp)>,
    /// Circuit requests allowed but not opened yet: when each was allowed.
    pending: Vec<Timestamp>,
    /// Where the node last asked from.
    ip: Option<IpKey>,
    /// Whether a reservation or circuit was allowed under its grants.
    used: bool,
    /// Whether it holds a reservation now (from the relay's events).
    reserved: bool,
    /// When it last got a grant or used one.
    active_at: Option<Timestamp>,
}

impl Entry {
    fn live<'a>(g: &'a Option<Grant>, now: &Timestamp) -> Option<&'a Grant> {
        g.as_ref().filter(|g| &g.expires_at > now)
    }

    /// The grant that admits circuits, preferring the reservation grant.
    fn circuit_grant(&self, now: &Timestamp) -> Option<&Grant> {
        Self::live(&self.reservation, now).or_else(|| Self::live(&self.circuit, now))
    }

    fn is_empty(&self) -> bool {
        self.reservation.is_none()
            && self.circuit.is_none()
            && self.open.is_empty()
            && self.pending.is_empty()
            && !self.reserved
    }

    /// Holds nothing at the relay: no reservation, no circuit open or pending.
    fn is_idle(&self) -> bool {
        !self.reserved && self.open.is_empty() && self.pending.is_empty()
    }

    /// When its current grants were first issued (the older of the two).
    fn issued_at(&self) -> Option<&Timestamp> {
        [&self.reservation, &self.circuit]
            .into_iter()
            .filter_map(|g| g.as_ref().map(|g| &g.issued_at))
            .min()
    }
}

/// The table's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Nodes holding grants at once.
    pub max_nodes: usize,
    /// Nodes holding grants that asked from one IP key (IPv4 address or IPv6 /64).
    pub max_per_ip: usize,
    /// Circuits (open or allowed) from the nodes of one IP key together: without it one
    /// /64 of 32 nodes at 16 circuits each held more than the relay's 256.
    pub max_circuits_per_ip: usize,
    /// A grant never used for a reservation or a circuit lapses after this many seconds.
    pub unused_secs: i64,
}

impl Default for Rules {
    /// 16,384 nodes, 32 per IP key, 64 circuits per IP key (a quarter of relay v2's 256
    /// as the node configures it), unused grants lapse after 120 s.
    fn default() -> Self {
        Rules {
            max_nodes: 16_384,
            max_per_ip: 32,
            max_circuits_per_ip: 64,
            unused_secs: 120,
        }
    }
}

/// How long an allowed circuit request counts against the quota without opening (the
/// relay gives up on the destination after 60 s).
pub const PENDING_SECS: i64 = 90;

/// Targets one node's live circuit grant covers at most. Every circuit request for a new
/// target renews the grant and adds the target; past this many the oldest target drops
/// out (a circuit to it opens only under a new request), so a node asking for fresh
/// targets all day holds 64, not one per request.
pub const MAX_TARGETS: usize = 64;

/// What the relay's circuit accounting says about a circuit that just opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Within the grant.
    Ok,
    /// Outside any live grant (e.g. to a target the grant does not cover): close it.
    Violation(MeshError),
}

/// The table.
#[derive(Debug)]
pub struct Grants {
    entries: HashMap<NodeId, Entry>,
    blocked: HashMap<NodeId, Timestamp>,
    rules: Rules,
    /// Nodes whose last grant lapsed in a sweep made to find room, reported by the next
    /// [`Grants::sweep`].
    lapsed: Vec<NodeId>,
}

fn rejected(detail: impl Into<String>) -> MeshError {
    MeshError::new(ErrorCode::TransportRejected, detail)
}

impl Grants {
    /// An empty table for at most `max_nodes` admitted nodes, with the other rules at
    /// their defaults.
    pub fn new(max_nodes: usize) -> Self {
        Self::with_rules(Rules {
            max_nodes,
            ..Rules::default()
        })
    }

    /// An empty table with `rules`.
    pub fn with_rules(rules: Rules) -> Self {
        Grants {
            entries: HashMap::new(),
            blocked: HashMap::new(),
            lapsed: Vec::new(),
            rules: Rules {
                max_nodes: rules.max_nodes.max(1),
                max_per_ip: rules.max_per_ip.max(1),
                max_circuits_per_ip: rules.max_circuits_per_ip.max(1),
                unused_secs: rules.unused_secs.max(1),
            },
        }
    }

    /// Evicts the least recently active idle node among those asked from `ip`. Whether
    /// one was evicted.
    fn evict_idle_from(&mut self, ip: Option<IpKey>) -> bool {
        self.evict_idle_where(|e| e.ip == ip)
    }

    /// Evicts the least recently active idle node. Whether one was evicted.
    fn evict_idle(&mut self) -> bool {
        self.evict_idle_where(|_| true)
    }

    fn evict_idle_where(&mut self, pick: impl Fn(&Entry) -> bool) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.is_idle() && pick(e))
            .min_by(|a, b| a.1.active_at.cmp(&b.1.active_at))
            .map(|(n, _)| *n);
        match victim {
            Some(n) => {
                tracing::debug!(node = %n, "relay admission: idle grant evicted for room");
                self.entries.remove(&n);
                true
            }
            None => false,
        }
    }

    /// Makes room in `ip`'s share for one more node, evicting an idle one of it if needed.
    fn make_share_room(&mut self, ip: Option<IpKey>) -> Result<(), MeshError> {
        let from_ip = self.entries.values().filter(|e| e.ip == ip).count();
        if from_ip >= self.rules.max_per_ip && !self.evict_idle_from(ip) {
            let from = ip.map_or_else(|| "connections without an IP".to_owned(), |k| k.to_string());
            return Err(rejected(format!(
                "{} nodes from {from} already hold grants at this relay",
                self.rules.max_per_ip
            )));
        }
        Ok(())
    }

    /// Makes room for one more node asking from `ip` (`None`: a connection without an
    /// IP of its own, such as a relayed one; all of those share one IP key's share),
    /// evicting idle nodes if needed.
    fn make_room(&mut self, ip: Option<IpKey>, now: &Timestamp) -> Result<(), MeshError> {
        self.make_share_room(ip)?;
        if self.entries.len() >= self.rules.max_nodes {
            let lapsed = self.sweep(now);
            self.lapsed.extend(lapsed);
            if self.entries.len() >= self.rules.max_nodes && !self.evict_idle() {
                return Err(rejected("relay admission table is full"));
            }
        }
        Ok(())
    }

    /// Until when `node` is blocked, if it is.
    pub fn blocked_until(&self, node: &NodeId, now: &Timestamp) -> Option<&Timestamp> {
        self.blocked.get(node).filter(|until| *until > now)
    }

    /// Records a grant, asked from `ip`. Refused for a blocked node, and when the table
    /// (or `ip`'s share of it) is full of other nodes that are not idle.
    pub fn admit(
        &mut self,
        grant: Grant,
        ip: Option<IpKey>,
        now: &Timestamp,
    ) -> Result<(), MeshError> {
        if let Some(until) = self.blocked_until(&grant.node, now) {
            return Err(rejected(format!("revoked until {}", until.as_str())));
        }
        match self.entries.get(&grant.node) {
            None => self.make_room(ip, now)?,
            // A node that asks from another network moves there as a newcomer would
            // come: within that network's share (it took its place and its circuits out
            // of the first network's count, so one network's nodes, moved to a second
            // and back, held both shares twice over).
            Some(e) if ip.is_some() && e.ip != ip => self.make_share_room(ip)?,
            Some(_) => {}
        }
        let entry = self.entries.entry(grant.node).or_default();
        if ip.is_some() {
            entry.ip = ip;
        }
        entry.active_at = Some(now.clone());
        match grant.purpose {
            Purpose::Reservation => entry.reservation = Some(grant),
            Purpose::Circuit { target } => {
                let live = Entry::live(&entry.circuit, now).is_some();
                entry.targets = match (target, live, entry.targets.take()) {
                    (None, _, _) => None,
                    (Some(t), true, Some(mut set)) => {
                        if !set.contains(&t) {
                            set.push_back(t);
                        }
                        if set.len() > MAX_TARGETS {
                            set.pop_front();
                        }
                        Some(set)
                    }
                    (Some(_), true, None) => None,
                    (Some(t), false, _) => Some([t].into()),
                };
                entry.circuit = Some(grant);
            }
        }
        Ok(())
    }

    /// Whether `node` holds a live grant of the kind `what` needs: a reservation grant
    /// for a reservation, a grant admitting circuits (reservation or circuit) for a
    /// circuit. Quotas and blocks aside.
    pub fn holds(&self, node: &NodeId, what: Purpose, now: &Timestamp) -> bool {
        self.entries.get(node).is_some_and(|e| match what {
            Purpose::Reservation => Entry::live(&e.reservation, now).is_some(),
            Purpose::Circuit { .. } => e.circuit_grant(now).is_some(),
        })
    }

    /// Whether `node` holds anything at the relay (a reservation, an open or pending
    /// circuit).
    pub fn is_active(&self, node: &NodeId) -> bool {
        self.entries.get(node).is_some_and(|e| !e.is_idle())
    }

    /// May `node` make (or renew) a reservation now?
    pub fn check_reservation(&self, node: &NodeId, now: &Timestamp) -> Result<(), MeshError> {
        if let Some(until) = self.blocked_until(node, now) {
            return Err(rejected(format!("revoked until {}", until.as_str())));
        }
        match self.entries.get(node) {
            Some(e) if Entry::live(&e.reservation, now).is_some() => Ok(()),
            Some(e) if e.reservation.is_some() => Err(rejected("reservation grant expired")),
            _ => Err(rejected("no reservation grant")),
        }
    }

    /// May `src` open one more circuit now?
    pub fn check_circuit(&self, src: &NodeId, now: &Timestamp) -> Result<(), MeshError> {
        if let Some(until) = self.blocked_until(src, now) {
            return Err(rejected(format!("revoked until {}", until.as_str())));
        }
        let Some(e) = self.entries.get(src) else {
            return Err(rejected("no grant"));
        };
        let Some(g) = e.circuit_grant(now) else {
            return Err(rejected("grant expired"));
        };
        if e.open.len() + e.pending.len() >= g.limits.circuits as usize {
            return Err(rejected(format!(
                "circuit quota of {} per node reached",
                g.limits.circuits
            )));
        }
        let from_ip: usize = (self.entries.values())
            .filter(|o| o.ip == e.ip)
            .map(|o| o.open.len() + o.pending.len())
            .sum();
        if from_ip >= self.rules.max_circuits_per_ip {
            let from =
                e.ip.map_or_else(|| "connections without an IP".to_owned(), |k| k.to_string());
            return Err(rejected(format!(
                "{} circuits from {from} already at this relay",
                self.rules.max_circuits_per_ip
            )));
        }
        Ok(())
    }

    /// The relay allowed a reservation (or its renewal) of `node` (after
    /// [`Grants::check_reservation`]): its grant is in use.
    pub fn reservation_allowed(&mut self, node: &NodeId, now: &Timestamp) {
        if let Some(e) = self.entries.get_mut(node) {
            e.used = true;
            e.active_at = Some(now.clone());
        }
    }

    /// Whether `node` holds a reservation now (the relay's events say so). A node no
    /// longer in the table (evicted, swept or revoked between the relay allowing its
    /// reservation and reporting it) is not put back: it would hold an entry without a
    /// grant, outside its IP key's share; its next renewal is refused for want of one.
    pub fn set_reserved(&mut self, node: &NodeId, reserved: bool) {
        if let Some(e) = self.entries.get_mut(node) {
            e.reserved = reserved;
            if e.is_empty() {
                self.entries.remove(node);
            }
        }
    }

    /// Whether `node` holds a reservation (as [`Grants::set_reserved`] last said).
    pub fn is_reserved(&self, node: &NodeId) -> bool {
        self.entries.get(node).is_some_and(|e| e.reserved)
    }

    /// The relay allowed a circuit request from `src` (after [`Grants::check_circuit`]):
    /// it counts against the quota until it opens or is abandoned.
    pub fn circuit_allowed(&mut self, src: NodeId, now: &Timestamp) {
        let e = self.entries.entry(src).or_default();
        e.used = true;
        e.active_at = Some(now.clone());
        e.pending.push(now.clone());
    }

    /// An allowed circuit request from `src` failed before opening.
    pub fn circuit_abandoned(&mut self, src: &NodeId) {
        if let Some(e) = self.entries.get_mut(src) {
            if !e.pending.is_empty() {
                e.pending.remove(0);
            }
            if e.is_empty() {
                self.entries.remove(src);
            }
        }
    }

    /// The relay opened a circuit from `src` to `dst`.
    pub fn circuit_opened(&mut self, src: NodeId, dst: NodeId, now: &Timestamp) -> Opened {
        let entry = self.entries.entry(src).or_default();
        if !entry.pending.is_empty() {
            entry.pending.remove(0);
        }
        entry.open.push((dst, now.clone()));
        let by_reservation = Entry::live(&entry.reservation, now).is_some();
        let by_circuit = Entry::live(&entry.circuit, now).is_some()
            && entry.targets.as_ref().is_none_or(|t| t.contains(&dst));
        if by_reservation || by_circuit {
            Opened::Ok
        } else {
            Opened::Violation(rejected(format!("no grant covers a circuit to {dst}")))
        }
    }

    /// The relay closed a circuit from `src` to `dst`.
    pub fn circuit_closed(&mut self, src: &NodeId, dst: &NodeId) {
        if let Some(e) = self.entries.get_mut(src) {
            if let Some(i) = e.open.iter().position(|(d, _)| d == dst) {
                e.open.swap_remove(i);
            }
            if e.is_empty() {
                self.entries.remove(src);
            }
        }
    }

    /// Circuits open longer than their grant allows: (source, destination).
    pub fn overdue(&self, now: &Timestamp) -> Vec<(NodeId, NodeId)> {
        let mut out = Vec::new();
        for (src, e) in &self.entries {
            let secs = e.circuit_grant(now).map_or(0, |g| {
                i64::try_from(g.limits.circuit_secs).unwrap_or(i64::MAX)
            });
            for (dst, at) in &e.open {
                if now.secs_since(at) > secs {
                    out.push((*src, *dst));
                }
            }
        }
        out
    }

    /// Every open circuit: (source, destination).
    pub fn circuits(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.entries
            .iter()
            .flat_map(|(src, e)| e.open.iter().map(|(dst, _)| (*src, *dst)))
    }

    /// Open circuits from `src`.
    pub fn open_circuits(&self, src: &NodeId) -> usize {
        self.entries.get(src).map_or(0, |e| e.open.len())
    }

    /// Revokes every grant of `node` and blocks it until `until`. Whether it held any.
    pub fn revoke(&mut self, node: &NodeId, until: Timestamp) -> bool {
        self.blocked.insert(*node, until);
        self.entries
            .get_mut(node)
            .map(|e| {
                let had = e.reservation.take().is_some() | e.circuit.take().is_some();
                e.targets = None;
                had
            })
            .unwrap_or(false)
    }

    /// Lifts a block.
    pub fn unblock(&mut self, node: &NodeId) -> bool {
        self.blocked.remove(node).is_some()
    }

    /// Forgets lapsed grants (expired, or unused for [`Rules::unused_secs`]) and blocks;
    /// returns the nodes whose last grant lapsed (since the last call).
    pub fn sweep(&mut self, now: &Timestamp) -> Vec<NodeId> {
        self.blocked.retain(|_, until| &*until > now);
        let mut lapsed = std::mem::take(&mut self.lapsed);
        let unused_secs = self.rules.unused_secs;
        for (node, e) in self.entries.iter_mut() {
            let had = e.reservation.is_some() || e.circuit.is_some();
            let unused = !e.used
                && e.is_idle()
                && e.issued_at()
                    .is_some_and(|at| now.secs_since(at) >= unused_secs);
            if unused {
                tracing::debug!(%node, "relay admission: grant never used; lapsed");
                e.reservation = None;
                e.circuit = None;
                e.targets = None;
            }
            if Entry::live(&e.reservation, now).is_none() {
                e.reservation = None;
            }
            if Entry::live(&e.circuit, now).is_none() {
                e.circuit = None;
                e.targets = None;
            }
            if had && e.reservation.is_none() && e.circuit.is_none() {
                lapsed.push(*node);
            }
            e.pending.retain(|at| now.secs_since(at) <= PENDING_SECS);
        }
        self.entries.retain(|_, e| !e.is_empty());
        lapsed
    }

    /// The live grants, newest first.
    pub fn live(&self, now: &Timestamp) -> Vec<Grant> {
        let mut out: Vec<Grant> = self
            .entries
            .values()
            .flat_map(|e| [&e.reservation, &e.circuit])
            .filter_map(|g| Entry::live(g, now).cloned())
            .collect();
        out.sort_by(|a, b| b.issued_at.cmp(&a.issued_at));
        out
    }

    /// Nodes that hold a live grant.
    pub fn admitted(&self, now: &Timestamp) -> usize {
        self.entries
            .values()
            .filter(|e| e.circuit_grant(now).is_some())
            .count()
    }

    /// Nodes blocked now.
    pub fn blocked(&self, now: &Timestamp) -> Vec<(NodeId, Timestamp)> {
        self.blocked
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(n, u)| (*n, u.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
