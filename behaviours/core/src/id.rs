//! did:key identifiers: the bare fingerprint, `node:did:key:z...` and
//! `participant:did:key:z...`, with lossless conversion to and from libp2p identities.
//!
//! `fingerprint` = `z` + base58btc(0xed 0x01 || 32-byte Ed25519 public key). Parsing is
//! strict: any other multibase, multicodec, length, a non-canonical base58 spelling or a
//! trailing character is rejected. Parsing does not decompress the curve point (that is
//! the job of [`KeyFingerprint::verifying_key`]), so it stays cheap on hot paths.

use std::fmt;
use std::str::FromStr;

use libp2p_identity::{PeerId, PublicKey};

use crate::error::{ErrorCode, MeshError};

/// Multicodec prefix of an Ed25519 public key (varint 0xed).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];
/// Prefix of a node id.
pub const NODE_ID_PREFIX: &str = "node:did:key:";
/// Prefix of a participant id.
pub const PARTICIPANT_ID_PREFIX: &str = "participant:did:key:";
/// Longest fingerprint we accept before decoding (a valid one is 48 characters).
const MAX_FINGERPRINT_LEN: usize = 64;

/// The protobuf fields that precede the 32 key bytes in a libp2p Ed25519 public key:
/// `Type = Ed25519` (field 1, value 1) and `Data` (field 2, 32 bytes).
const ED25519_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// Why an identifier or key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not start with the required prefix.
    #[error("expected prefix `{expected}`")]
    WrongPrefix {
        /// The prefix that was required.
        expected: &'static str,
    },
    /// The fingerprint is not base58btc multibase (`z...`).
    #[error("fingerprint must be base58btc multibase starting with `z`")]
    WrongMultibase,
    /// The base58 text does not decode or is not in canonical form.
    #[error("fingerprint is not canonical base58btc")]
    BadBase58,
    /// The decoded bytes are not `0xed 0x01` + 32 bytes.
    #[error("fingerprint must be multicodec ed25519-pub (0xed01) followed by 32 bytes")]
    WrongMulticodec,
    /// The 32 bytes are not a valid Ed25519 point.
    #[error("not a valid Ed25519 public key")]
    InvalidKey,
    /// A libp2p key or peer id of another type than Ed25519.
    #[error("only Ed25519 keys are node keys (got {0})")]
    NotEd25519(String),
}

impl From<IdError> for MeshError {
    fn from(e: IdError) -> Self {
        MeshError::new(ErrorCode::ProtoInvalid, e.to_string())
    }
}

/// The bare did:key fingerprint of an Ed25519 public key (`z6Mk...`), the `key/public`
/// field of the artifacts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyFingerprint([u8; 32]);

impl KeyFingerprint {
    /// The fingerprint of a raw 32-byte Ed25519 public key (not checked to be on the curve).
    pub const fn from_bytes(public_key: [u8; 32]) -> Self {
        KeyFingerprint(public_key)
    }

    /// The raw public key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses `z...` strictly.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s.strip_prefix('z').ok_or(IdError::WrongMultibase)?;
        if rest.is_empty() || s.len() > MAX_FINGERPRINT_LEN {
            return Err(IdError::WrongMulticodec);
        }
        // Fast path: the exact did:key shape. Base58 spells a byte string with a non-zero
        // first byte in exactly one way, so this decode is canonical by construction.
        if let Some(bytes) = crate::base58::decode_34(rest) {
            if bytes[..2] != ED25519_MULTICODEC {
                return Err(IdError::WrongMulticodec);
            }
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes[2..]);
            return Ok(KeyFingerprint(key));
        }
        // Slow path, only to tell what exactly is wrong.
        match multibase::decode(s) {
            Err(_) => Err(IdError::BadBase58),
            Ok(_) => Err(IdError::WrongMulticodec),
        }
    }

    /// The Ed25519 verifying key; fails when the bytes are not a valid point. Keys are
    /// decompressed once and kept in a bounded cache.
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, IdError> {
        crate::keycache::verifying_key(&self.0).ok_or(IdError::InvalidKey)
    }

    /// The X25519 (Montgomery) form of this key, for Diffie-Hellman with the node's
    /// identity; fails when the bytes are not a valid point.
    pub fn x25519_public(&self) -> Result<[u8; 32], IdError> {
        Ok(self.verifying_key()?.to_montgomery().to_bytes())
    }

    /// The libp2p public key; fails when the bytes are not a valid point.
    pub fn to_public_key(&self) -> Result<PublicKey, IdError> {
        let k = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0)
            .map_err(|_| IdError::InvalidKey)?;
        Ok(PublicKey::from(k))
    }

    /// The libp2p `PeerId` of this key (identity multihash of the protobuf key).
    pub fn to_peer_id(&self) -> Result<PeerId, IdError> {
        Ok(self.to_public_key()?.to_peer_id())
    }

    /// The fingerprint of a libp2p public key; non-Ed25519 keys are an error.
    pub fn from_public_key(key: &PublicKey) -> Result<Self, IdError> {
        let ed = key
            .clone()
            .try_into_ed25519()
            .map_err(|_| IdError::NotEd25519(format!("{:?}", key.key_type())))?;
        Ok(KeyFingerprint(ed.to_bytes()))
    }

    /// The fingerprint inside an Ed25519 `PeerId` (which inlines the key); RSA and other
    /// hashed peer ids are an error because the key cannot be recovered from them.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, IdError> {
        let mh = peer.as_ref();
        if mh.code() != 0 {
            return Err(IdError::NotEd25519(
                "a peer id hashed with sha2-256 (not an inlined Ed25519 key)".into(),
            ));
        }
        // The canonical protobuf of an Ed25519 key (type 1, 32 bytes of data): read the
        // key and check the point through the key cache, which decompresses a key once.
        // `is_hot` and the idle sweep look up every connected peer on every tick, and a
        // fresh decompression each time was 1.4% of the CPU of a 200-member swarm.
        if let Some(bytes) = mh.digest().strip_prefix(&ED25519_PROTOBUF_PREFIX[..])
            && let Ok(bytes) = <[u8; 32]>::try_from(bytes)
        {
            return crate::keycache::verifying_key(&bytes)
                .map(|_| KeyFingerprint(bytes))
                .ok_or_else(|| IdError::NotEd25519("undecodable inlined key".into()));
        }
        let key = PublicKey::try_decode_protobuf(mh.digest())
            .map_err(|_| IdError::NotEd25519("undecodable inlined key".into()))?;
        Self::from_public_key(&key)
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 34];
        bytes[..2].copy_from_slice(&ED25519_MULTICODEC);
        bytes[2..].copy_from_slice(&self.0);
        f.write_str(&multibase::encode(multibase::Base::Base58Btc, bytes))
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

impl FromStr for KeyFingerprint {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        KeyFingerprint::parse(s)
    }
}

macro_rules! did_key_id {
    ($(#[$doc:meta])* $name:ident, $prefix:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(KeyFingerprint);

        impl $name {
            /// The textual prefix before the fingerprint.
            pub const PREFIX: &'static str = $prefix;

            /// The identifier of a key fingerprint.
            pub const fn from_fingerprint(fp: KeyFingerprint) -> Self {
                $name(fp)
            }

            /// The bare fingerprint (`key/public`).
            pub const fn fingerprint(&self) -> &KeyFingerprint {
                &self.0
            }

            /// Parses the full identifier strictly.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let fp = s
                    .strip_prefix($prefix)
                    .ok_or(IdError::WrongPrefix { expected: $prefix })?;
                Ok($name(KeyFingerprint::parse(fp)?))
            }

            /// The libp2p `PeerId` of the same key.
            pub fn to_peer_id(&self) -> Result<PeerId, IdError> {
                self.0.to_peer_id()
            }

            /// The libp2p public key of the same key.
            pub fn to_public_key(&self) -> Result<PublicKey, IdError> {
                self.0.to_public_key()
            }

            /// The identifier of an Ed25519 libp2p `PeerId`.
            pub fn from_peer_id(peer: &PeerId) -> Result<Self, IdError> {
                Ok($name(KeyFingerprint::from_peer_id(peer)?))
            }

            /// The identifier of an Ed25519 libp2p public key.
            pub fn from_public_key(key: &PublicKey) -> Result<Self, IdError> {
                Ok($name(KeyFingerprint::from_public_key(key)?))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }
        }

        impl TryFrom<&PeerId> for $name {
            type Error = IdError;
            fn try_from(peer: &PeerId) -> Result<Self, IdError> {
                $name::from_peer_id(peer)
            }
        }

        impl TryFrom<$name> for PeerId {
            type Error = IdError;
            fn try_from(id: $name) -> Result<Self, IdError> {
                id.to_peer_id()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

did_key_id!(
    /// A node identifier: `node:did:key:z...`. Names the same key as the node's libp2p
    /// `PeerId`.
    NodeId,
    NODE_ID_PREFIX
);

did_key_id!(
    /// A participant identifier: `participant:did:key:z...`. In the MVP it may share the
    /// node's key, but protocols treat it as a distinct role.
    ParticipantId,
    PARTICIPANT_ID_PREFIX
);

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "z6MkwJFpvJVFe15ygGgYLTYuiPwfhkkDRkMG4eKQFT8g65yE";

    #[test]
    fn strict_parsing_rejects_every_variant() {
        assert!(KeyFingerprint::parse(FP).is_ok());
        let node = format!("node:did:key:{FP}");
        assert!(NodeId::parse(&node).is_ok());
        for (bad, why) in [
            (format!("node:did:key:{FP}x"), "trailing char"),
            (format!("node:did:key:{FP} "), "trailing space"),
            (format!("node:did:key:1{}", &FP[1..]), "not z multibase"),
            (format!("node:did:key:m{}", &FP[1..]), "base64 multibase"),
            (format!("did:key:{FP}"), "no role prefix"),
            (format!("participant:did:key:{FP}"), "wrong role"),
            ("node:did:key:z".to_string(), "empty"),
            ("node:did:key:z0OIl".to_string(), "non-base58 chars"),
            // secp256k1 multicodec (0xe7 0x01) key of 33 bytes
            (
                "node:did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme".to_string(),
                "other multicodec",
            ),
            (
                "node:did:key:z6MkwJFpvJVFe15ygGgYLTYuiPwfhkkDRkMG4eKQFT8g65".to_string(),
                "short",
            ),
        ] {
            assert!(NodeId::parse(&bad).is_err(), "{why}: {bad} was accepted");
        }
    }

    #[test]
    fn non_canonical_base58_is_rejected() {
        // A leading '1' adds a zero byte: the length check refuses it.
        assert!(KeyFingerprint::parse(&format!("z1{}", &FP[1..])).is_err());
    }

    #[test]
    fn ed25519_peer_ids_round_trip_and_others_fail() {
        let kp = crate::keypair::NodeKeypair::generate().to_libp2p();
        let peer = kp.public().to_peer_id();
        let node = NodeId::from_peer_id(&peer).unwrap();
        assert_eq!(node.to_peer_id().unwrap(), peer);
        let from_key = NodeId::from_public_key(&kp.public()).unwrap();
        assert_eq!(from_key, node);
        assert_eq!(NodeId::parse(&node.to_string()).unwrap(), node);
        // A sha256-hashed peer id (as RSA keys produce) cannot name a node.
        let mh = libp2p_identity::PeerId::from_multihash(
            multiaddr::multihash::Multihash::wrap(0x12, &[7u8; 32]).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            NodeId::from_peer_id(&mh),
            Err(IdError::NotEd25519(_))
        ));
    }

    #[test]
    fn a_peer_id_inlining_an_off_curve_key_names_no_node() {
        // The canonical Ed25519 protobuf around bytes that are no curve point (y = 2):
        // refused as before the key-cache read, with the same error.
        let mut proto = ED25519_PROTOBUF_PREFIX.to_vec();
        let mut b = [0u8; 32];
        b[0] = 2;
        proto.extend_from_slice(&b);
        let peer = libp2p_identity::PeerId::from_multihash(
            multiaddr::multihash::Multihash::wrap(0, &proto).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            NodeId::from_peer_id(&peer),
            Err(IdError::NotEd25519(_))
        ));
        // A valid key read through the prefix gives the key that libp2p decodes.
        let kp = crate::keypair::NodeKeypair::generate().to_libp2p();
        let peer = kp.public().to_peer_id();
        let fast = NodeId::from_peer_id(&peer).unwrap();
        let slow = PublicKey::try_decode_protobuf(peer.as_ref().digest()).unwrap();
        assert_eq!(fast, NodeId::from_public_key(&slow).unwrap());
    }

    #[test]
    fn off_curve_key_is_a_typed_error() {
        // y = 2 is not the y-coordinate of a curve point.
        let mut b = [0u8; 32];
        b[0] = 2;
        let fp = KeyFingerprint::from_bytes(b);
        assert_eq!(fp.verifying_key().unwrap_err(), IdError::InvalidKey);
        assert_eq!(fp.to_peer_id().unwrap_err(), IdError::InvalidKey);
        // It still prints and parses (parsing never decompresses).
        assert_eq!(KeyFingerprint::parse(&fp.to_string()).unwrap(), fp);
    }
}
