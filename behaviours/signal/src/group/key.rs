//! Discovery keys: the 32 bytes that name a swarm, and the names derived from them (the
//! gossipsub topic, the mesh DHT provider key, the Amino CID).

use std::fmt;

use mesh_core::{MeshError, MeshResult};
use sha2::{Digest, Sha256};

/// The gossipsub topic prefix of swarms.
pub const TOPIC_PREFIX: &str = "/libmesh/swarm/1/";
/// The domain separator of keys derived from a name.
const NAME_DOMAIN: &[u8] = b"libmesh/swarm-name/v1\0";
/// The domain separator of the Amino CID's digest.
const CID_DOMAIN: &[u8] = b"libmesh/swarm-cid/v1\0";

/// A swarm's discovery key (32 bytes, e.g. the hash of a party key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveryKey([u8; 32]);

impl DiscoveryKey {
    /// The key from its bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        DiscoveryKey(bytes)
    }

    /// The key from 64 hex digits; anything else is `E_PROTO_INVALID`.
    pub fn from_hex(text: &str) -> MeshResult<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(text, &mut b).map_err(|_| {
            MeshError::invalid(format!("discovery key {text:?}: expected 64 hex digits"))
        })?;
        Ok(DiscoveryKey(b))
    }

    /// A key derived from a human name: SHA-256 of a domain separator and the name.
    /// Anyone who knows the name can join, so a name is only as private as it is hard
    /// to guess.
    pub fn from_name(name: &str) -> Self {
        let mut h = Sha256::new();
        h.update(NAME_DOMAIN);
        h.update(name.as_bytes());
        DiscoveryKey(h.finalize().into())
    }

    /// 64 hex digits: taken as the key itself; anything else is a name.
    pub fn parse(text: &str) -> Self {
        match Self::from_hex(text) {
            Ok(k) if text.len() == 64 => k,
            _ => Self::from_name(text),
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as `swarm/key` carries it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The swarm's gossipsub topic.
    pub fn topic(&self) -> String {
        format!("{TOPIC_PREFIX}{}", self.to_hex())
    }

    /// The key of a topic string, when it is a swarm topic.
    pub fn from_topic(topic: &str) -> Option<Self> {
        let hex = topic.strip_prefix(TOPIC_PREFIX)?;
        if hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        Self::from_hex(hex).ok()
    }

    /// The provider key in the mesh DHT.
    pub fn provider_key(&self) -> Vec<u8> {
        let mut k = TOPIC_PREFIX.as_bytes().to_vec();
        k.extend_from_slice(&self.0);
        k
    }

    /// The multihash (sha2-256) of the Amino CID: the key of the provider record on
    /// the public DHT.
    pub fn amino_multihash(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(CID_DOMAIN);
        h.update(self.0);
        let mut mh = vec![0x12, 0x20];
        mh.extend_from_slice(&h.finalize());
        mh
    }

    /// The Amino CID (v1, raw codec) in binary form.
    pub fn amino_cid(&self) -> Vec<u8> {
        let mut cid = vec![0x01, 0x55];
        cid.extend_from_slice(&self.amino_multihash());
        cid
    }

    /// The Amino CID as text (base32 lowercase, `b…`), as IPFS tools print it.
    pub fn amino_cid_text(&self) -> String {
        multibase::encode(multibase::Base::Base32Lower, self.amino_cid())
    }
}

impl fmt::Display for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiscoveryKey({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_names_and_derived_names() {
        let k = DiscoveryKey::from_hex(&"0f".repeat(32)).unwrap();
        assert_eq!(DiscoveryKey::parse(&"0f".repeat(32)), k);
        assert_eq!(k.topic(), format!("/libmesh/swarm/1/{}", "0f".repeat(32)));
        assert_eq!(DiscoveryKey::from_topic(&k.topic()), Some(k));
        assert_eq!(DiscoveryKey::from_topic("/libmesh/swarm/1/zz"), None);
        assert_eq!(DiscoveryKey::from_topic("chat"), None);
        assert!(DiscoveryKey::from_hex("0f").is_err());
        // A name hashes; the same name gives the same key, another name another key.
        let a = DiscoveryKey::parse("party");
        assert_eq!(a, DiscoveryKey::from_name("party"));
        assert_ne!(a, DiscoveryKey::from_name("party2"));
        assert_ne!(a.provider_key(), k.provider_key());
        // CIDv1 raw sha2-256: 0x01 0x55 0x12 0x20 + 32 bytes; text starts with "bafkrei".
        assert_eq!(k.amino_cid().len(), 36);
        assert_eq!(&k.amino_cid()[..4], &[0x01, 0x55, 0x12, 0x20]);
        assert!(
            k.amino_cid_text().starts_with("bafkrei"),
            "{}",
            k.amino_cid_text()
        );
    }
}
