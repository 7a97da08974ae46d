//! The node's Ed25519 key: one secret that is at once the libp2p identity, the node id
//! and (in the MVP) the participant id.

use std::sync::Arc;

use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Sha512, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::id::{KeyFingerprint, NodeId, ParticipantId};

/// An Ed25519 signing key with its derived identifiers.
///
/// The expanded secret (the clamped scalar and nonce prefix that RFC 8032 derives from the
/// seed with SHA-512) is derived once and kept, zeroized on drop, so a signature costs no
/// extra hash of the seed. It is only ever used with the verifying key derived from the
/// same seed, which is what makes `raw_sign` safe here.
#[derive(Clone)]
pub struct NodeKeypair {
    signing: SigningKey,
    expanded: Arc<ExpandedSecretKey>,
    verifying: VerifyingKey,
    fingerprint: KeyFingerprint,
}

impl NodeKeypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let signing = SigningKey::generate(&mut rand_core::OsRng);
        Self::from_signing_key(signing)
    }

    /// The key of a 32-byte Ed25519 secret (seed).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self::from_signing_key(SigningKey::from_bytes(secret))
    }

    fn from_signing_key(signing: SigningKey) -> Self {
        let verifying = signing.verifying_key();
        let fingerprint = KeyFingerprint::from_bytes(verifying.to_bytes());
        let expanded = Arc::new(ExpandedSecretKey::from(signing.as_bytes()));
        NodeKeypair {
            signing,
            expanded,
            verifying,
            fingerprint,
        }
    }

    /// The 32-byte secret, zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public key's fingerprint (`key/public`).
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.fingerprint
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_fingerprint(self.fingerprint)
    }

    /// The participant id of the same key.
    pub fn participant_id(&self) -> ParticipantId {
        ParticipantId::from_fingerprint(self.fingerprint)
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying
    }

    /// The X25519 secret of the same key (the clamped Ed25519 secret scalar), for
    /// Diffie-Hellman terms bound to the node identity.
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_scalar_bytes())
    }

    /// Signs `message` (Ed25519, deterministic; the same bytes as
    /// `SigningKey::sign`).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        raw_sign::<Sha512>(&self.expanded, message, &self.verifying).to_bytes()
    }

    /// The same key as a libp2p keypair, so the swarm's `PeerId` names this node.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let secret = libp2p_identity::ed25519::SecretKey::try_from_bytes(*self.secret_bytes())
            .map(libp2p_identity::ed25519::Keypair::from);
        match secret {
            Ok(kp) => libp2p_identity::Keypair::from(kp),
            // try_from_bytes only fails on a wrong length, and the length is fixed at 32.
            Err(_) => unreachable!("a 32-byte secret is always a valid ed25519 secret"),
        }
    }
}

impl std::fmt::Debug for NodeKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "NodeKeypair({})", self.node_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_equal_the_plain_signing_key_ones() {
        use ed25519_dalek::Signer;
        for i in 0u8..32 {
            let kp = NodeKeypair::from_secret_bytes(&[i; 32]);
            let plain = SigningKey::from_bytes(&[i; 32]);
            let msg = vec![i; usize::from(i) * 7];
            assert_eq!(kp.sign(&msg), plain.sign(&msg).to_bytes());
            kp.verifying_key()
                .verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&kp.sign(&msg)))
                .unwrap();
        }
    }

    #[test]
    fn libp2p_keypair_names_the_same_node() {
        let kp = NodeKeypair::generate();
        let peer = kp.to_libp2p().public().to_peer_id();
        assert_eq!(NodeId::from_peer_id(&peer).unwrap(), kp.node_id());
        assert_eq!(kp.node_id().to_peer_id().unwrap(), peer);
        assert!(!format!("{kp:?}").contains(&hex::encode(*kp.secret_bytes())));
    }
}
