//! Which entry goes when the table is full, and the past peers' share per network.
//!
//! Peers become past peers by holding one session, and the sessions strangers start
//! are limited per network only while they last: one host churning short sessions
//! under fresh keys (a few at a time) made past peers of them all, and the least
//! recently touched past peers went first, so every honest past peer was evicted (the
//! stored peers handed over at start included) and, after a network drop, the governor
//! redialed the host's keys instead. Now the past peers of one network (the one their
//! session came from, when they dialed us) hold a quarter of `max_peers` at most.

use mesh_core::{IpKey, NodeId};

use super::Governor;

impl Governor {
    /// Drops the entry with the lowest eviction rank, least recently touched first;
    /// `false` when no entry may be evicted.
    pub(super) fn evict_one(&mut self) -> bool {
        let victim = self
            .peers
            .iter()
            .filter_map(|(n, p)| p.eviction_rank().map(|r| ((r, p.touched), *n)))
            .min()
            .map(|(_, n)| n);
        match victim {
            Some(n) => {
                self.peers.remove(&n);
                true
            }
            None => false,
        }
    }

    /// Past peers (not named) whose session came from `net` hold a quarter of
    /// `max_peers` at most: beyond, that network's least recently touched evictable
    /// ones go.
    pub(super) fn keep_network_share(&mut self, net: IpKey) {
        let share = (self.config.max_peers / 4).max(1);
        let mut of_net: Vec<(u64, NodeId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.network == Some(net) && p.had_session && !p.named)
            .map(|(n, p)| (p.touched, *n))
            .collect();
        if of_net.len() <= share {
            return;
        }
        of_net.sort_unstable();
        let mut over = of_net.len() - share;
        for (_, node) in of_net {
            if over == 0 {
                break;
            }
            if self
                .peers
                .get(&node)
                .is_some_and(|p| p.eviction_rank().is_some())
            {
                self.peers.remove(&node);
                over -= 1;
            }
        }
    }
}
