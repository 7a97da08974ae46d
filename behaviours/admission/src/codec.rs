//! The `/mesh/relay-admission/1.0.0` wire form: one request per stream.
//!
//! - request: the deterministic CBOR of a signed `relay-admission-request.v1`, at most
//!   [`mesh_core::MAX_ARTIFACT_BYTES`];
//! - answer: either the deterministic CBOR of the signed `relay-admission-grant.v1`, or
//!   a denial `{"kind": "denied", "error/code", "error/class", "detail"}`.
//!
//! Both sides read to the end of the stream with a cap, so an oversized message is an
//! error, not an allocation.

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{ErrorCode, MAX_ARTIFACT_BYTES, MeshError};
use serde_json::{Map, Value};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/relay-admission/1.0.0");

/// A request's bytes, or why it could not even be read.
pub type Request = Result<Vec<u8>, MeshError>;
/// The grant's bytes, or the denial.
pub type Answer = Result<Vec<u8>, MeshError>;

/// The codec.
///
/// Its reads take their buffers from the budget it holds.
#[derive(Debug, Clone, Default)]
pub struct Codec(pub mesh_core::ReadBudget);

async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &mesh_core::ReadBudget,
) -> io::Result<Result<Vec<u8>, MeshError>> {
    Ok(mesh_core::read_capped(io, MAX_ARTIFACT_BYTES, budget)
        .await?
        .ok_or_else(|| {
            MeshError::invalid(format!(
                "/mesh/relay-admission: message over the {MAX_ARTIFACT_BYTES} byte cap"
            ))
        }))
}

/// The bytes of an answer.
pub fn encode_answer(a: &Answer) -> Vec<u8> {
    match a {
        Ok(grant) => grant.clone(),
        Err(e) => {
            let mut m = Map::new();
            m.insert("kind".into(), "denied".into());
            if let Value::Object(err) = e.to_json() {
                m.extend(err);
            }
            cbor::encode(&Value::Object(m))
        }
    }
}

/// Parses an answer: a denial becomes its error, anything else is handed on as grant
/// bytes (verified by the caller).
pub fn decode_answer(b: Vec<u8>) -> Answer {
    let v = cbor::decode_with(
        &b,
        DecodeLimits {
            max_bytes: MAX_ARTIFACT_BYTES,
            ..DecodeLimits::default()
        },
    )
    .map_err(|e| MeshError::from(e).context("/mesh/relay-admission answer"))?;
    if v.get("kind").and_then(Value::as_str) == Some("denied") {
        let code = v
            .get("error/code")
            .and_then(Value::as_str)
            .and_then(ErrorCode::from_code_str)
            .unwrap_or(ErrorCode::ProtoInvalid);
        let detail = v.get("detail").and_then(Value::as_str).unwrap_or_default();
        return Err(MeshError::new(
            code,
            format!("relay denied admission: {detail}"),
        ));
    }
    Ok(b)
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Answer;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Request> {
        read_capped(io, &self.0).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Answer> {
        Ok(read_capped(io, &self.0).await?.and_then(decode_answer))
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Request,
    ) -> io::Result<()> {
        let bytes = r.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        io.write_all(&bytes).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Answer,
    ) -> io::Result<()> {
        io.write_all(&encode_answer(&r)).await
    }
}
