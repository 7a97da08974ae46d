//! Discovery-key swarms (DESIGN.md, "Signaling and swarms"): a swarm is named by a
//! 32-byte discovery key; members announce signed `swarm-presence.v1` on the swarm's
//! gossipsub topic and keep a member table with expiry. This module is the pure part;
//! the node wires it to gossipsub and the DHTs' provider records.

pub mod exchange;
mod key;
mod table;

pub use key::{DiscoveryKey, TOPIC_PREFIX};
pub use table::{
    ANSWER_GAP_MAX_SECS, ANSWER_GAP_SECS, Change, Due, GroupConfig, Groups, LeftReason,
    MAX_PRESENCE_BYTES, Member, PLAIN_ANSWER_GAP_MAX_SECS, SETTLED_SECS, TABLE_FETCH_FIELD,
    TTL_GROWN_MAX_SECS, TTL_STEP_MEMBERS, answer_gap_secs, fetches_table, plain_answer_gap_secs,
    presence_ttl_secs, refresh_after_secs,
};
