//! The `/mesh/signal/1.0.0` wire form: one request per stream, read to its end.
//!
//! A request is either one frame (its deterministic CBOR wire form, a map) or a batch: a
//! CBOR array of 2..=[`MAX_BATCH`] byte strings, each one frame's wire form (canonical
//! heads). The answer to one frame is `{"kind": "accepted"}` or `{"kind": "rejected",
//! "error/code", "error/class", "detail"}`; the answer to a batch is `{"kind": "batch",
//! "results": [...]}` with one such answer per frame, in order.

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{ErrorCode, MAX_ARTIFACT_BYTES, MeshError};
use serde_json::{Map, Value, json};

use crate::cbor_items::{ItemError, MAJOR_BYTES, byte_items, head};

/// Most frames in one request.
pub const MAX_BATCH: usize = 64;
/// Largest request body, bytes (a batch; one frame is at most [`MAX_ARTIFACT_BYTES`]).
pub const MAX_REQUEST: usize = 1024 * 1024;
const MAX_ANSWER: usize = 64 * 1024;

const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;

/// The answer to a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// To a one-frame request (or a whole request refused before its frames were read).
    One(Result<(), MeshError>),
    /// One per frame of a batch.
    Batch(Vec<Result<(), MeshError>>),
}

/// The frames of a request body: one, or the items of a batch.
pub(crate) fn split(body: &[u8]) -> Result<Vec<&[u8]>, MeshError> {
    let bad = |why: &str| MeshError::invalid(format!("/mesh/signal: {why}"));
    match body.first().map(|b| b >> 5) {
        Some(MAJOR_MAP) if body.len() <= MAX_ARTIFACT_BYTES => Ok(vec![body]),
        Some(MAJOR_MAP) => Err(bad("frame over the size cap")),
        Some(MAJOR_ARRAY) => {
            let mut at = 0;
            let (_, n) = head(body, &mut at).ok_or_else(|| bad("malformed batch"))?;
            let n = usize::try_from(n).map_err(|_| bad("malformed batch"))?;
            if !(2..=MAX_BATCH).contains(&n) {
                return Err(bad(&format!("a batch holds 2..={MAX_BATCH} frames")));
            }
            let items = byte_items(body, &mut at, n, MAX_ARTIFACT_BYTES).map_err(|e| match e {
                ItemError::Malformed => bad("malformed batch"),
                ItemError::NotAnItem => bad("a batch item must be one frame's bytes"),
                ItemError::Truncated => bad("truncated batch"),
            })?;
            if at != body.len() {
                return Err(bad("trailing bytes after the batch"));
            }
            Ok(items)
        }
        _ => Err(bad("not a frame or a batch")),
    }
}

/// The body of a request carrying `frames` (one frame as is, more as a batch).
pub(crate) fn join(frames: &[&[u8]]) -> Vec<u8> {
    if let [one] = frames {
        return one.to_vec();
    }
    let total: usize = frames.iter().map(|f| f.len() + 5).sum();
    let mut out = Vec::with_capacity(total + 3);
    cbor::write_head(&mut out, MAJOR_ARRAY, frames.len() as u64);
    for f in frames {
        cbor::write_head(&mut out, MAJOR_BYTES, f.len() as u64);
        out.extend_from_slice(f);
    }
    out
}

fn answer_value(a: &Result<(), MeshError>) -> Value {
    match a {
        Ok(()) => json!({"kind": "accepted"}),
        Err(e) => {
            let mut m = Map::new();
            m.insert("kind".into(), "rejected".into());
            if let Value::Object(err) = e.to_json() {
                m.extend(err);
            }
            Value::Object(m)
        }
    }
}

fn parse_one(v: &Value) -> Result<(), MeshError> {
    match v.get("kind").and_then(Value::as_str) {
        Some("accepted") => Ok(()),
        Some("rejected") => {
            let code = v
                .get("error/code")
                .and_then(Value::as_str)
                .and_then(ErrorCode::from_code_str)
                .unwrap_or(ErrorCode::ProtoInvalid);
            Err(MeshError::new(
                code,
                v.get("detail").and_then(Value::as_str).unwrap_or_default(),
            ))
        }
        _ => Err(MeshError::invalid("/mesh/signal: unknown answer")),
    }
}

pub(crate) fn encode_answer(a: &Answer) -> Vec<u8> {
    match a {
        Answer::One(r) => cbor::encode(&answer_value(r)),
        Answer::Batch(rs) => cbor::encode(&json!({
            "kind": "batch",
            "results": rs.iter().map(answer_value).collect::<Vec<_>>(),
        })),
    }
}

pub(crate) fn parse_answer(b: &[u8]) -> Answer {
    let limits = DecodeLimits {
        max_bytes: MAX_ANSWER,
        ..DecodeLimits::default()
    };
    let v = match cbor::decode_with(b, limits) {
        Ok(v) => v,
        Err(e) => return Answer::One(Err(MeshError::from(e))),
    };
    match (v.get("kind").and_then(Value::as_str), v.get("results")) {
        (Some("batch"), Some(Value::Array(rs))) => {
            Answer::Batch(rs.iter().map(parse_one).collect())
        }
        _ => Answer::One(parse_one(&v)),
    }
}

pub(crate) use mesh_core::read_capped;

/// Request-response codec: raw request bodies one way, answers the other.
///
/// Its reads take their buffers from the budget it holds.
#[derive(Debug, Clone, Default)]
pub struct Codec(pub mesh_core::ReadBudget);

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Result<Vec<u8>, MeshError>;
    type Response = Answer;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        Ok(read_capped(io, MAX_REQUEST, &self.0)
            .await?
            .ok_or_else(|| MeshError::invalid("/mesh/signal: request over the size cap")))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response> {
        Ok(match read_capped(io, MAX_ANSWER, &self.0).await? {
            Some(b) => parse_answer(&b),
            None => Answer::One(Err(MeshError::invalid(
                "/mesh/signal: answer over the size cap",
            ))),
        })
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Self::Request,
    ) -> io::Result<()> {
        let bytes = r.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        io.write_all(&bytes).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Self::Response,
    ) -> io::Result<()> {
        io.write_all(&encode_answer(&r)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_malformed_ones_are_refused() {
        let a = cbor::encode(&json!({"a": 1}));
        let b = cbor::encode(&json!({"b": "x".repeat(300)}));
        assert_eq!(split(&join(&[&a])).unwrap(), vec![&a[..]]);
        let body = join(&[&a, &b, &a]);
        assert_eq!(split(&body).unwrap(), vec![&a[..], &b[..], &a[..]]);
        // Truncated, trailing bytes, a one-item batch, a non-canonical head, a text item.
        assert!(split(&body[..body.len() - 1]).is_err());
        let mut long = body.clone();
        long.push(0);
        assert!(split(&long).is_err());
        let mut one = vec![0x81, 0x40 | a.len() as u8];
        one.extend_from_slice(&a);
        assert!(split(&one).is_err());
        let mut wide = vec![0x98, 2];
        wide.extend_from_slice(&body[1..]);
        assert!(split(&wide).is_err());
        let mut text = body.clone();
        text[1] = 0x60 | a.len() as u8;
        assert!(split(&text).is_err());
        assert!(split(&[]).is_err());
        assert!(split(&[0x01]).is_err());
        let many: Vec<&[u8]> = (0..=MAX_BATCH).map(|_| &a[..]).collect();
        assert!(split(&join(&many)).is_err());

        let rs = vec![Ok(()), Err(MeshError::new(ErrorCode::HsReplay, "seen"))];
        match parse_answer(&encode_answer(&Answer::Batch(rs))) {
            Answer::Batch(back) => {
                assert!(back[0].is_ok());
                assert_eq!(back[1].as_ref().unwrap_err().code, ErrorCode::HsReplay);
            }
            Answer::One(_) => panic!("expected a batch answer"),
        }
        assert!(matches!(
            parse_answer(&encode_answer(&Answer::One(Ok(())))),
            Answer::One(Ok(()))
        ));
    }
}
