//! What a peer may subscribe to in the node's gossipsub: gossipsub keeps every topic a
//! connected peer announces (libp2p's default filter allows all), so a peer could grow
//! that set with every RPC for as long as it stays connected.
//!
//! - A topic name is at most [`MAX_TOPIC_BYTES`] bytes (a swarm's topic is 81).
//! - A peer holds at most [`MAX_TOPICS_PER_PEER`] topics, and one RPC announces at most
//!   as many; an RPC that would go past either is ignored whole (gossipsub logs it).
//!
//! The node's own subscriptions pass the same name check; their number is capped by the
//! node ([`MAX_LOCAL_TOPICS`]).

use libp2p::gossipsub::{self, TopicHash, TopicSubscriptionFilter};

/// The longest topic name taken, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Topics one peer may hold subscribed; a node in the most swarms it joins (64) with its
/// own topics stays far below.
pub const MAX_TOPICS_PER_PEER: usize = 512;
/// Topics the node's control API may subscribe the node to.
pub const MAX_LOCAL_TOPICS: usize = 256;

/// Topic names of at most [`MAX_TOPIC_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicNames;

impl TopicSubscriptionFilter for TopicNames {
    fn can_subscribe(&mut self, topic: &TopicHash) -> bool {
        topic.as_str().len() <= MAX_TOPIC_BYTES
    }
}

/// The node's filter: names checked, topics per peer and per RPC counted.
pub type Filter = gossipsub::MaxCountSubscriptionFilter<TopicNames>;

/// The node's gossipsub behaviour type.
pub type Gossipsub = gossipsub::Behaviour<gossipsub::IdentityTransform, Filter>;

/// The filter with the node's limits.
pub fn filter() -> Filter {
    gossipsub::MaxCountSubscriptionFilter {
        filter: TopicNames,
        max_subscribed_topics: MAX_TOPICS_PER_PEER,
        max_subscriptions_per_request: MAX_TOPICS_PER_PEER,
    }
}
