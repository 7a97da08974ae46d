//! Which peers the swarm component turns to: the peers to ask for a member table, a
//! subscriber a fetched table left out, a random few of a list.

use libp2p::{PeerId, gossipsub};
use mesh_core::NodeId;
use mesh_signal::group::{DiscoveryKey, Groups as Tables};

use crate::node::view::View;

/// The connected peers subscribed to `key`'s topic that we could ask for its table,
/// session peers first.
pub(super) fn table_peers(key: &DiscoveryKey, view: &dyn View) -> Vec<PeerId> {
    let topic = gossipsub::IdentTopic::new(key.topic()).hash();
    let mut peers = view.topic_subscribers(&topic);
    peers.sort_by_key(|p| !view.has_session(p));
    peers
}

/// The connected nodes subscribed to `key`'s topic that `tables` does not hold as
/// members of it (session peers first), when the table holds fewer members than half
/// the connected subscribers (else none): a table server answered an empty or nearly
/// empty table, which would hide the swarm from a newcomer until the members' refreshes
/// (minutes at 200 members). A table of some size that misses a few (members that
/// joined a moment ago, as always in a forming swarm) is taken as it is: fetching it
/// again from them cost the 200-member bench its convergence time (13 s to 58 s).
pub(super) fn missing_subscribers(
    tables: &Tables,
    key: &DiscoveryKey,
    view: &dyn View,
) -> Vec<PeerId> {
    let subscribed = table_peers(key, view);
    let members = tables.member_count(key).unwrap_or(0);
    if members * 2 >= subscribed.len() {
        return Vec::new();
    }
    subscribed
        .into_iter()
        .filter(|p| NodeId::from_peer_id(p).is_ok_and(|n| !tables.has_member(key, &n)))
        .collect()
}

/// Up to `k` of `items`, chosen at random (`rnd(n)` is a number below `n`).
pub(super) fn pick<T>(mut items: Vec<T>, k: usize, mut rnd: impl FnMut(usize) -> usize) -> Vec<T> {
    let mut out = Vec::with_capacity(k.min(items.len()));
    while out.len() < k && !items.is_empty() {
        let i = rnd(items.len()).min(items.len() - 1);
        out.push(items.swap_remove(i));
    }
    out
}
