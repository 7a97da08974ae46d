//! # mesh-admission
//!
//! Relay admission by identity for rust-libp2p's circuit relay v2 (DESIGN.md, "Relay
//! admission"). rust-libp2p's relay limits by rate only; this crate adds who may use it.
//!
//! - [`policy`]: the [`AdmissionPolicy`] trait and the policies open,
//!   require-valid-advertisement, allowlist of node ids, federation ids, and their
//!   compositions ([`AllOf`], [`AnyOf`]); pure logic;
//! - [`grants`]: the relay's table of live grants, circuits counted per node id,
//!   revocation with a block (pure logic, `now` passed in);
//! - [`gate`]: the relay's checks of a signed `relay-admission-request.v1` (signature,
//!   signer = connection peer, addressed to this relay, fresh `ts`, unused nonce, not
//!   revoked, policy) and issuing the signed `relay-admission-grant.v1`;
//! - [`codec`]: `/mesh/relay-admission/1.0.0` on the wire;
//! - [`server::Behaviour`]: answers requests and enforces grants on a
//!   [`libp2p::relay::Behaviour`] in the same swarm (admission check first among the
//!   relay's rate limiters, blocked peers' connections denied, revocation closes
//!   circuits);
//! - [`client::Behaviour`]: asks before reserving, renews before expiry, reports
//!   denials.
//!
//! ```no_run
//! # use mesh_admission::{server, policy::Open};
//! # use std::sync::Arc;
//! let key = mesh_core::NodeKeypair::generate();
//! let admission = server::Behaviour::new(key.clone(), server::Config::default());
//! let relay_config = admission.relay_config(libp2p::relay::Config::default());
//! let relay = libp2p::relay::Behaviour::new(key.to_libp2p().public().to_peer_id(), relay_config);
//! // Put both in your behaviour and feed every `relay::Event` to
//! // `admission.on_relay_event(&event)`.
//! # let _ = (relay, Open { limits: server::DEFAULT_CAPS }, Arc::new(()));
//! ```

pub mod client;
pub mod codec;
pub mod gate;
pub mod grants;
pub mod policy;
mod replay;
pub mod request;
pub mod server;

pub use codec::PROTOCOL;
pub use gate::{AdvertSource, Gate, NoAdverts};
pub use grants::{Grant, Grants};
pub use mesh_core::GrantLimits;
pub use policy::{
    AdmissionPolicy, AllOf, Allowlist, AnyOf, Decision, Federation, Open, Purpose, Query,
    RequireAdvertisement,
};
pub use replay::Nonces;

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex::encode(b)
}

/// A fresh 128-bit nonce, base64url without padding.
pub(crate) fn random_nonce() -> String {
    use base64::Engine;
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
