//! The HTTP servers' open connections, in total and per client (pure bookkeeping).
//!
//! A client is an IPv4 address or an IPv6 /64 ([`IpKey`]). At most `max_per_client`
//! connections each, `max_total` in all; and when all are held, a connection from a
//! client whose wider network ([`IpGroup`]: an IPv4 /16, an IPv6 /32) would still hold
//! fewer than the group holding the most takes the place of that group's newest
//! connection, as the node does with its inbound libp2p connections
//! (`node::ip_shares`). Before, eight addresses (or eight /64s of one /48) holding 32
//! connections each, a request every few seconds to keep them, shut every other client
//! out of the seed directory and the metrics for as long as they liked.

use std::collections::HashMap;

use mesh_core::{IpGroup, IpKey};

/// A connection the table counts.
pub type ConnId = u64;

/// Open connections.
#[derive(Debug)]
pub struct ConnTable {
    max_total: usize,
    max_per_client: usize,
    /// Each connection's client and arrival (its id: larger is newer).
    conns: HashMap<ConnId, IpKey>,
    per_client: HashMap<IpKey, usize>,
    per_group: HashMap<IpGroup, usize>,
    next: ConnId,
}

/// A connection let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Its id, to [`ConnTable::release`] when it ends.
    pub id: ConnId,
    /// The connection it takes the place of, to close (no longer counted).
    pub evicts: Option<ConnId>,
}

impl ConnTable {
    /// An empty table with these caps.
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        ConnTable {
            max_total,
            max_per_client,
            conns: HashMap::new(),
            per_client: HashMap::new(),
            per_group: HashMap::new(),
            next: 0,
        }
    }

    /// Counts a new connection of `key`; `None` (nothing counted) when its client holds
    /// `max_per_client`, or the table is full and no group holds more than `key`'s would.
    pub fn admit(&mut self, key: IpKey) -> Option<Admitted> {
        if self.per_client.get(&key).copied().unwrap_or(0) >= self.max_per_client {
            return None;
        }
        let evicts = if self.conns.len() >= self.max_total {
            let held = self.per_group.iter().map(|(g, n)| (*g, *n));
            let largest = IpGroup::giving_way(key.group(), held)?;
            let victim = self
                .conns
                .iter()
                .filter(|(_, k)| k.group() == largest)
                .map(|(id, _)| *id)
                .max()?;
            self.release(victim);
            Some(victim)
        } else {
            None
        };
        self.next += 1;
        let id = self.next;
        self.conns.insert(id, key);
        *self.per_client.entry(key).or_insert(0) += 1;
        *self.per_group.entry(key.group()).or_insert(0) += 1;
        Some(Admitted { id, evicts })
    }

    /// Forgets connection `id` (ended, or evicted); nothing when it is not counted.
    pub fn release(&mut self, id: ConnId) {
        let Some(key) = self.conns.remove(&id) else {
            return;
        };
        for n in [
            self.per_client.get_mut(&key),
            self.per_group.get_mut(&key.group()),
        ]
        .into_iter()
        .flatten()
        {
            *n = n.saturating_sub(1);
        }
        if self.per_client.get(&key) == Some(&0) {
            self.per_client.remove(&key);
        }
        if self.per_group.get(&key.group()) == Some(&0) {
            self.per_group.remove(&key.group());
        }
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// Clients with a connection open.
    pub fn clients(&self) -> usize {
        self.per_client.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn key(s: &str) -> IpKey {
        IpKey::of(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn the_table_caps_total_and_per_client_connections() {
        let mut t = ConnTable::new(3, 2);
        let one = key("2001:db8::1");
        let same_64 = key("2001:db8::2");
        let other = key("2001:db8:1::1");
        let a = t.admit(one).unwrap();
        let b = t.admit(same_64).unwrap();
        assert!(
            t.admit(one).is_none(),
            "a third connection from the same /64"
        );
        let c = t.admit(other).unwrap();
        assert!(
            t.admit(key("2001:db8:2::1")).is_none(),
            "full, and of the one group"
        );
        assert_eq!(t.open(), 3);
        t.release(a.id);
        let d = t.admit(key("2001:db8:2::1")).unwrap();
        assert_eq!(d.evicts, None);
        for id in [b.id, c.id, d.id] {
            t.release(id);
        }
        assert_eq!((t.open(), t.clients(), t.per_group.len()), (0, 0, 0));
        // Releasing what is not counted changes nothing.
        t.release(c.id);
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn a_few_networks_holding_every_slot_give_way_to_others() {
        let mut t = ConnTable::new(16, 4);
        // Four hosts of one /16, four connections each: the table is full.
        let held: Vec<ConnId> = (0..16)
            .map(|n| t.admit(key(&format!("203.0.113.{}", n % 4))).unwrap().id)
            .collect();
        assert!(t.admit(key("203.0.113.9")).is_none());
        // Clients elsewhere get in, each in the place of the group's newest.
        let a = t.admit(key("198.51.100.1")).unwrap();
        assert_eq!(a.evicts, Some(held[15]));
        let b = t.admit(key("2001:db8::1")).unwrap();
        assert_eq!(b.evicts, Some(held[14]));
        assert_eq!(t.open(), 16);
        // The evicted connection's own release later changes nothing.
        t.release(held[15]);
        assert_eq!(t.open(), 16);
        // The group that holds the most cannot take a slot back.
        assert!(t.admit(key("203.0.113.7")).is_none());
    }
}
