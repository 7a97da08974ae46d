//! What a peer may subscribe to in the node's gossipsub: gossipsub keeps every topic a
//! connected peer announces (libp2p's default filter allows all), so a peer could grow
//! that set with every RPC for as long as it stays connected.
//!
//! - A topic name is at most [`MAX_TOPIC_BYTES`] bytes (a swarm's topic is 81).
//! - A peer holds at most [`MAX_TOPICS_PER_PEER`] topics, and one RPC announces at most
//!   as many; an RPC that would go past either is ignored whole (gossipsub logs it).
//!
//! - All peers together hold at most [`MAX_PEER_SUBSCRIPTIONS`], except on the topics
//!   the node is in (set on the behaviour by `build::gossipsub`).
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
/// Subscriptions all connected peers hold together (the vendored gossipsub's
/// `set_max_peer_subscriptions`); beyond, a peer's subscription to a topic the node is
/// not in is ignored. Each holds its topic's name (up to [`MAX_TOPIC_BYTES`]) in a tree
/// node, about 1.5 KiB: the per-peer cap alone let 384 connections of fresh keys hold
/// 196,608 of them (about 290 MiB).
pub const MAX_PEER_SUBSCRIPTIONS: usize = 32_768;

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
