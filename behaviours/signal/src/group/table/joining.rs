//! Whether a swarm's `join` is still to go out.

use super::{DiscoveryKey, Groups};

impl Groups {
    /// Whether we are in `swarm` and its `join` has not gone out yet (none since the
    /// join or the last [`Groups::rejoin`]).
    pub fn join_pending(&self, swarm: &DiscoveryKey) -> bool {
        self.swarms.get(swarm).is_some_and(|s| !s.join_sent)
    }
}
