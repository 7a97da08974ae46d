//! The node's own side of the handshake artifacts: its capability advertisement (with
//! the signed passports), built once and kept in its wire form until half its passports'
//! lifetime has passed, its hellos and acks, which carry it, and the checks of a peer's
//! artifacts addressed to it.

use libp2p::PeerId;
use mesh_core::artifact::Artifact;
use mesh_core::{
    CapabilityAdvertisement, ErrorCode, MeshError, NodeId, NodeKeypair, PeerHandshake, Timestamp,
};

use crate::ahead::Prebuilt;
use crate::artifacts::{HandshakeParams, accept, build_ack, build_capabilities, build_hello};
use crate::config::Config;
use crate::protocol::encode_with_caps;
use crate::secret::{EphemeralKey, IdentityTerm};
use crate::transport::TransportProfile;

/// The node's key and the artifacts it signs.
pub(crate) struct Own {
    key: NodeKeypair,
    capabilities: Vec<String>,
    transports: Vec<String>,
    passport_ttl_secs: i64,
    /// The capability advertisement (its CBOR, compact) and when it was built.
    caps: Option<(Vec<u8>, Timestamp)>,
}

fn params(transport: TransportProfile) -> HandshakeParams<'static> {
    HandshakeParams {
        offered: &[],
        transport: transport.as_str(),
        intent: "peer-connect",
    }
}

impl Own {
    /// The node `key` with `config`'s capabilities, transports and passport lifetime.
    pub(crate) fn new(key: NodeKeypair, config: &Config) -> Self {
        Own {
            key,
            capabilities: config.capabilities.clone(),
            transports: config.transports.clone(),
            passport_ttl_secs: config.passport_ttl_secs,
            caps: None,
        }
    }

    /// The node's key.
    pub(crate) fn key(&self) -> &NodeKeypair {
        &self.key
    }

    /// The node's id.
    pub(crate) fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The wire form of the node's capability advertisement, built once and reused while
    /// its passports have more than half their lifetime left.
    pub(crate) fn capabilities(&mut self, now: &Timestamp) -> Result<&[u8], MeshError> {
        let fresh = self
            .caps
            .as_ref()
            .is_some_and(|(_, built)| now.secs_since(built) < self.passport_ttl_secs / 2);
        if fresh {
            return Ok(self.caps.as_ref().map_or(&[], |(c, _)| c.as_slice()));
        }
        let caps: Vec<&str> = self.capabilities.iter().map(String::as_str).collect();
        let transports: Vec<&str> = self.transports.iter().map(String::as_str).collect();
        let ad = build_capabilities(&self.key, &caps, &transports, now, self.passport_ttl_secs)?;
        Ok(&self.caps.insert((ad.to_cbor(), now.clone())).0)
    }

    /// A signed hello to `node` over `transport` and its wire form (with the capability
    /// advertisement).
    pub(crate) fn hello(
        &mut self,
        eph: &EphemeralKey,
        node: NodeId,
        transport: TransportProfile,
        now: &Timestamp,
    ) -> Result<(PeerHandshake, Vec<u8>), MeshError> {
        let hello = build_hello(&self.key, eph, node, &params(transport), now)?;
        let bytes = encode_with_caps(false, &hello, self.capabilities(now)?);
        Ok((hello, bytes))
    }

    /// A hello to `node` over `transport` built ahead, with its identity term.
    pub(crate) fn prebuild(
        &mut self,
        eph: EphemeralKey,
        node: NodeId,
        transport: TransportProfile,
        now: &Timestamp,
    ) -> Result<Prebuilt, MeshError> {
        let (hello, bytes) = self.hello(&eph, node, transport, now)?;
        Ok(Prebuilt {
            hello: Box::new(hello),
            bytes,
            transport,
            term: IdentityTerm::compute(&eph, node),
            eph,
            built: now.clone(),
        })
    }

    /// A signed ack of `hello` over `transport`.
    pub(crate) fn ack(
        &self,
        eph: &EphemeralKey,
        hello: &PeerHandshake,
        transport: TransportProfile,
        now: &Timestamp,
    ) -> Result<PeerHandshake, MeshError> {
        build_ack(&self.key, eph, hello, &params(transport), now)
    }

    /// The wire form of `ack` (with the capability advertisement).
    pub(crate) fn ack_bytes(
        &mut self,
        ack: &PeerHandshake,
        now: &Timestamp,
    ) -> Result<Vec<u8>, MeshError> {
        Ok(encode_with_caps(true, ack, self.capabilities(now)?))
    }

    /// A hello built ahead, with `transport/profile` set to `transport`: it is outside
    /// the signing input, so the signature stands and only the framing is redone.
    /// `None` when it cannot be re-framed.
    pub(crate) fn reframe(
        &mut self,
        mut p: Prebuilt,
        transport: TransportProfile,
        now: &Timestamp,
    ) -> Option<Prebuilt> {
        if p.transport == transport {
            return Some(p);
        }
        let mut doc = p.hello.into_map();
        doc.insert("transport/profile".into(), transport.as_str().into());
        let hello = PeerHandshake::from_map(doc).ok()?;
        p.bytes = encode_with_caps(false, &hello, self.capabilities(now).ok()?);
        p.hello = Box::new(hello);
        p.transport = transport;
        Some(p)
    }

    /// Verifies a handshake artifact from `peer`: signature (unless `verified` by the
    /// batch), clock, signer = peer, recipient = this node.
    pub(crate) fn check_handshake(
        &self,
        peer: &PeerId,
        hs: &PeerHandshake,
        now: &Timestamp,
        verified: bool,
    ) -> Result<NodeId, MeshError> {
        if !verified {
            hs.verify_signature()?;
        }
        self.check_addressing(peer, hs, None, now)
    }

    /// The checks of [`Own::check_handshake`] that need no signature: clock, signer =
    /// peer, recipient = this node, and with `caps`, its node = peer (run first on a
    /// hello, before its signatures).
    pub(crate) fn check_addressing(
        &self,
        peer: &PeerId,
        hs: &PeerHandshake,
        caps: Option<&CapabilityAdvertisement>,
        now: &Timestamp,
    ) -> Result<NodeId, MeshError> {
        hs.validate(now)?;
        let node = NodeId::from_peer_id(peer)
            .map_err(|e| MeshError::new(ErrorCode::SigUnknownSigner, e.to_string()))?;
        if hs.sender() != node {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                "sender/node-id is not the connection's peer",
            ));
        }
        if hs.recipient().is_some_and(|r| r != self.key.node_id()) {
            return Err(MeshError::invalid("recipient/node-id is another node"));
        }
        if caps.is_some_and(|c| c.node_id() != node) {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                "capability advertisement of another node than the session peer",
            ));
        }
        Ok(node)
    }

    /// Verifies the peer's capability advertisement and returns what it proved; with
    /// `verified`, its signatures (advertisement and passports) passed the batch.
    pub(crate) fn check_capabilities(
        &self,
        node: &NodeId,
        ad: &CapabilityAdvertisement,
        now: &Timestamp,
        verified: bool,
    ) -> Result<Vec<String>, MeshError> {
        if !verified {
            ad.verify_signature()?;
        }
        ad.validate(now)?;
        accept(ad, node, now, verified)
    }
}
