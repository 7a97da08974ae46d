//! Presences that came in a table page: the first gossip copy of one is forwarded
//! although it changes nothing (neighbours may wait for it).

use mesh_core::SwarmPresence;

use super::{DiscoveryKey, Groups};

impl Groups {
    /// Notes that `p` (taken, or not newer than what the table holds) came in a table
    /// page: the first gossip copy of it is not [stale](Groups::is_stale).
    pub fn came_in_table(&mut self, p: &SwarmPresence) {
        let swarm = DiscoveryKey::new(*p.swarm_key());
        if let Some(m) = self
            .swarms
            .get_mut(&swarm)
            .and_then(|s| s.members.get_mut(&p.node_id()))
            && m.sequence_no == p.sequence_no()
        {
            m.via_table = true;
        }
    }

    /// Whether [`Groups::first_gossip_of_table_entry`] would answer `true` for `p`,
    /// without noting anything.
    pub fn awaits_gossip_of_table_entry(&self, p: &SwarmPresence) -> bool {
        let swarm = DiscoveryKey::new(*p.swarm_key());
        self.swarms
            .get(&swarm)
            .and_then(|s| s.members.get(&p.node_id()))
            .is_some_and(|m| m.via_table && m.sequence_no == p.sequence_no())
    }

    /// Whether `p` is the first gossip copy of a presence that came in a table page
    /// (then it is forwarded once, see [`Groups::came_in_table`]); a second copy is not.
    pub fn first_gossip_of_table_entry(&mut self, p: &SwarmPresence) -> bool {
        let swarm = DiscoveryKey::new(*p.swarm_key());
        match self
            .swarms
            .get_mut(&swarm)
            .and_then(|s| s.members.get_mut(&p.node_id()))
        {
            Some(m) if m.via_table && m.sequence_no == p.sequence_no() => {
                m.via_table = false;
                true
            }
            _ => false,
        }
    }
}
