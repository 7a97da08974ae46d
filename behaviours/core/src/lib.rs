//! # mesh-core
//!
//! The foundation every libmesh crate stands on, with no dependency on `libp2p-swarm`:
//!
//! - [`id`]: `node:did:key:z…`, `participant:did:key:z…` and the bare fingerprint, with
//!   lossless conversion to and from libp2p `PeerId`/`PublicKey`;
//! - [`keypair`] and [`identity`]: the node's Ed25519 key and its files in the data dir;
//! - [`cbor`]: deterministic CBOR (RFC 8949 §4.2.1) with a strict, size-capped decoder;
//! - [`artifact`] and [`families`]: signed artifacts (`<family>` || 0x00 || CBOR),
//!   typed and validated per family, verified from JSON or from the CBOR wire form, one
//!   by one or in batches;
//! - [`error`]: the eleven frozen error codes;
//! - [`trace`]: the trace-event vocabulary and a JSON-lines writer;
//! - [`rate`]: a bounded, keyed token-bucket rate limiter;
//! - [`ipkey`]: the per-network key (IPv4 address, IPv6 /64) limits are counted under.
//!
//! ```
//! use mesh_core::{Artifact, NodeAdvertisement, NodeKeypair, Timestamp};
//! use serde_json::json;
//!
//! let key = NodeKeypair::generate();
//! let now = Timestamp::parse("2026-03-23T18:08:00Z").unwrap();
//! let doc = json!({
//!     "schema/v": 1, "advertisement/id": "adv:1", "node/id": key.node_id().to_string(),
//!     "sequence/no": 1, "advertised-at": now.as_str(), "expires-at": now.plus_secs(600).as_str(),
//!     "key/alg": "ed25519", "key/public": key.fingerprint().to_string(),
//!     "endpoints": [{"endpoint/url": "wss://node.example/peer", "endpoint/transport": "wss",
//!                    "endpoint/role": "listener", "endpoint/priority": 0}],
//!     "transports/supported": ["wss"],
//! });
//! let advert = NodeAdvertisement::sign(doc.as_object().unwrap().clone(), &key).unwrap();
//! let wire = advert.to_cbor();
//! let received = NodeAdvertisement::verify_cbor(&wire, &now).unwrap();
//! assert_eq!(received.sequence_no(), 1);
//! ```

pub mod artifact;
mod base58;
pub mod cbor;
mod delegate;
pub mod error;
pub mod families;
pub mod id;
pub mod identity;
pub mod ipkey;
mod keycache;
pub mod keypair;
pub mod rate;
mod read_budget;
mod read_capped;
mod source;
pub mod time;
pub mod trace;

pub use artifact::{Artifact, verify_batch};
pub use error::{ErrorCode, MeshError, MeshResult};
pub use families::{
    CapabilityAdvertisement, Endpoint, Family, GrantLimits, HandshakeMode, MAX_ADVERTISEMENT_ID,
    MAX_POLICY_ANNOTATIONS_BYTES, MAX_PRESENCE_ADDRS, MAX_PRESENCE_TTL_SECS, MIN_PRESENCE_TTL_SECS,
    NodeAdvertisement, NodeIdentityRecord, PeerHandshake, PeerStatus, RelayAdmissionGrant,
    RelayAdmissionRequest, SignalFrame, SignalMarker, SignalMarkerEnvelope, SwarmPresence,
};
pub use id::{IdError, KeyFingerprint, NodeId, ParticipantId};
pub use identity::{IdentityError, IdentityStore, NodeIdentity};
pub use ipkey::{IpGroup, IpKey};
pub use keypair::NodeKeypair;
pub use rate::{Charge, RateLimit, RateLimiter, take_all};
pub use read_budget::{BudgetSpent, DEFAULT_READ_BUDGET, Hold, ReadBudget};
pub use read_capped::{read_capped, read_file_capped, read_text_capped};
pub use source::Source;
pub use time::Timestamp;
pub use trace::{JsonLinesTrace, MemoryTrace, NoTrace, TraceEvent, TraceEventType, TraceSink};

/// Size cap of one artifact, in any encoding.
pub const MAX_ARTIFACT_BYTES: usize = 64 * 1024;

/// Allowed clock skew between nodes, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 30;

/// The protocol version libmesh speaks in `protocol/version` fields.
pub const PROTOCOL_VERSION: &str = "0.1.0-mvp";
