//! # mesh-advert
//!
//! Signed node advertisements for libmesh, usable in any rust-libp2p application:
//!
//! - [`Behaviour`]: the `/mesh/advert/1.0.0` protocol (publish, lookup, refresh,
//!   withdraw, each answered with a response that carries a frozen error code when
//!   refused), serving an [`AdvertStore`] and forwarding newly accepted changes to the
//!   other connected peers;
//! - [`MemoryStore`]: the reference store (one current advertisement per node id, stale
//!   and expired ones refused, withdrawals with tombstones, limits, per-publisher rate
//!   limits, per-source shares with eviction when full ([`shares`]), cursor walks);
//! - [`RecordBook`]: the same per-source shares for a Kademlia record store;
//! - [`NodeWithdrawal`]: the signed `node-withdrawal.v1` artifact;
//! - [`own`]: building and refreshing the node's own advertisement;
//! - [`kad`]: validating `/mesh/adv/<node-id>` records for a Kademlia DHT that runs with
//!   `StoreInserts::FilterBoth`.
//!
//! Every advertisement that enters a store has been verified (signature against the
//! advertised node's key, schema, expiry), whichever way it came.

mod behaviour;
pub mod kad;
mod kad_book;
pub mod own;
pub mod protocol;
pub mod providers;
pub mod shares;
mod store;
mod withdrawal;

pub use behaviour::{Answer, Behaviour, Clock, Config, Event};
pub use kad::HeldSequence;
pub use kad_book::{RecordBook, RecordLimits};
pub use shares::Source;
pub use store::{
    AdvertStore, DEFAULT_MAX_RECORD_BYTES, InsertOutcome, MAX_FLOORS, MemoryStore, Page,
    StoreError, StoreLimits, StoredAdvert, Swept,
};
pub use withdrawal::NodeWithdrawal;
