//! `/mesh/session/1.0.0` messages: one request and one response per stream, each a
//! deterministic-CBOR map capped at [`MAX_MESSAGE_BYTES`]:
//!
//! - `{"kind": "hello", "handshake": <peer-handshake.v1>, "advertisement":
//!   <capability-advertisement.v1>}` → `{"kind": "ack", "handshake": …, "advertisement": …}`:
//!   each side's capability advertisement travels with its handshake artifact, so a
//!   session costs one request round after the connection;
//! - any refusal: `{"kind": "rejected", "error/code", "error/class", "detail"}`. A hello or
//!   ack without an advertisement is `E_PROTO_CAP_MISSING`.

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use mesh_core::artifact::Artifact;
use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{CapabilityAdvertisement, ErrorCode, MeshError, MeshResult, PeerHandshake};
use serde_json::{Map, Value};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/session/1.0.0");

/// Largest message.
pub const MAX_MESSAGE_BYTES: usize = mesh_core::MAX_ARTIFACT_BYTES + 1024;

/// A session message (requests and responses share the shape).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A hello with the sender's capabilities (request).
    Hello(Box<PeerHandshake>, Box<CapabilityAdvertisement>),
    /// An ack with the sender's capabilities (response to a hello).
    Ack(Box<PeerHandshake>, Box<CapabilityAdvertisement>),
    /// A refusal (response).
    Rejected(MeshError),
}

/// Encodes a message.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut map = Map::new();
    let kind = match m {
        Message::Hello(h, c) | Message::Ack(h, c) => {
            map.insert("handshake".into(), h.to_json());
            map.insert("advertisement".into(), c.to_json());
            if matches!(m, Message::Hello(..)) {
                "hello"
            } else {
                "ack"
            }
        }
        Message::Rejected(e) => {
            if let Value::Object(err) = e.to_json() {
                map.extend(err);
            }
            "rejected"
        }
    };
    map.insert("kind".into(), kind.into());
    cbor::encode(&Value::Object(map))
}

/// Encodes a hello (`ack` false) or an ack from its handshake artifact and the CBOR wire
/// form of the sender's capability advertisement (`Artifact::to_cbor`), which a node keeps
/// ready: the same bytes as [`encode`] without turning the advertisement back into JSON.
pub fn encode_with_caps(ack: bool, hs: &PeerHandshake, caps_cbor: &[u8]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, t: &str) {
        cbor::write_head(out, 3, t.len() as u64);
        out.extend_from_slice(t.as_bytes());
    }
    let hs = hs.to_cbor();
    let mut out = Vec::with_capacity(48 + hs.len() + caps_cbor.len());
    // Keys in deterministic order (by their encoded bytes): the shorter head first.
    cbor::write_head(&mut out, 5, 3);
    text(&mut out, "kind");
    text(&mut out, if ack { "ack" } else { "hello" });
    text(&mut out, "handshake");
    out.extend_from_slice(&hs);
    text(&mut out, "advertisement");
    out.extend_from_slice(caps_cbor);
    out
}

/// Decodes a message (artifacts parsed and schema-checked, not yet verified).
pub fn decode(bytes: &[u8]) -> MeshResult<Message> {
    let limits = DecodeLimits {
        max_bytes: MAX_MESSAGE_BYTES,
        ..DecodeLimits::default()
    };
    let Value::Object(mut m) = cbor::decode_with(bytes, limits).map_err(MeshError::from)? else {
        return Err(MeshError::invalid("/mesh/session: a message is a CBOR map"));
    };
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let handshake = |m: &mut Map<String, Value>| -> MeshResult<Box<PeerHandshake>> {
        let v = m
            .remove("handshake")
            .ok_or_else(|| MeshError::invalid("/mesh/session: `handshake` missing"))?;
        Ok(Box::new(PeerHandshake::from_json(v)?))
    };
    let caps = |m: &mut Map<String, Value>| -> MeshResult<Box<CapabilityAdvertisement>> {
        let v = m.remove("advertisement").ok_or_else(|| {
            MeshError::new(
                ErrorCode::ProtoCapMissing,
                "/mesh/session: no capability advertisement",
            )
        })?;
        Ok(Box::new(CapabilityAdvertisement::from_json(v)?))
    };
    match kind.as_str() {
        "hello" => Ok(Message::Hello(handshake(&mut m)?, caps(&mut m)?)),
        "ack" => Ok(Message::Ack(handshake(&mut m)?, caps(&mut m)?)),
        "rejected" => {
            let code = m
                .get("error/code")
                .and_then(Value::as_str)
                .and_then(ErrorCode::from_code_str)
                .ok_or_else(|| {
                    MeshError::invalid("/mesh/session: rejected without a known code")
                })?;
            let detail = m.get("detail").and_then(Value::as_str).unwrap_or_default();
            Ok(Message::Rejected(MeshError::new(code, detail)))
        }
        other => Err(MeshError::invalid(format!(
            "/mesh/session: unknown kind `{other}`"
        ))),
    }
}

/// What the codec yields: a decoded message, or why it did not decode (so the receiver
/// can answer with the code instead of failing the stream).
pub type Inbound = Result<Message, MeshError>;

/// What the codec carries: an encoded message to send, or a received one.
#[derive(Debug)]
pub enum Frame {
    /// Bytes to write as they are (from [`encode`] or [`encode_with_caps`]).
    Out(Vec<u8>),
    /// A received message, or why it did not decode.
    In(Inbound),
}

/// The request-response codec.
///
/// Its reads take their buffers from the budget it holds.
#[derive(Debug, Clone, Default)]
pub struct Codec(pub mesh_core::ReadBudget);

async fn read<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &mesh_core::ReadBudget,
) -> io::Result<Frame> {
    let Some(buf) = mesh_core::read_capped(io, MAX_MESSAGE_BYTES, budget).await? else {
        return Ok(Frame::In(Err(MeshError::invalid(
            "/mesh/session: message over the size cap",
        ))));
    };
    Ok(Frame::In(decode(&buf)))
}

async fn write<T: AsyncWrite + Unpin + Send>(io: &mut T, f: Frame) -> io::Result<()> {
    match f {
        Frame::Out(bytes) => io.write_all(&bytes).await,
        Frame::In(Ok(m)) => io.write_all(&encode(&m)).await,
        Frame::In(Err(e)) => Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
    }
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Frame;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame> {
        read(io, &self.0).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame> {
        read(io, &self.0).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Frame,
    ) -> io::Result<()> {
        write(io, r).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Frame,
    ) -> io::Result<()> {
        write(io, r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::{HandshakeParams, build_ack, build_capabilities, build_hello};
    use crate::secret::EphemeralKey;
    use mesh_core::{NodeKeypair, Timestamp};

    #[test]
    fn encoding_with_the_advertisement_wire_form_gives_the_same_bytes() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let now = Timestamp::now();
        let p = HandshakeParams {
            offered: &[],
            transport: "tcp",
            intent: "peer-connect",
        };
        let hello = build_hello(&a, &EphemeralKey::generate(), b.node_id(), &p, &now).unwrap();
        let ack = build_ack(&b, &EphemeralKey::generate(), &hello, &p, &now).unwrap();
        let caps = build_capabilities(&a, &["core/discovery"], &["tcp"], &now, 60).unwrap();
        for (is_ack, hs) in [(false, &hello), (true, &ack)] {
            let fast = encode_with_caps(is_ack, hs, &caps.to_cbor());
            let m = if is_ack {
                Message::Ack(Box::new(hs.clone()), Box::new(caps.clone()))
            } else {
                Message::Hello(Box::new(hs.clone()), Box::new(caps.clone()))
            };
            assert_eq!(fast, encode(&m));
            assert_eq!(decode(&fast).unwrap(), m);
        }
    }
}
