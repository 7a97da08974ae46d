//! `/mesh/advert/1.0.0` messages and their codec.
//!
//! One request and one response per stream, each a deterministic-CBOR map (the strict
//! mesh-core decoder, capped at [`MAX_MESSAGE_BYTES`]):
//!
//! - `{"kind": "publish", "correlation/id", "advert": <node-advertisement.v1>}`
//! - `{"kind": "refresh", "correlation/id", "node/id", "sequence/no"}`: send me the
//!   advertisement of `node/id` if yours is newer than `sequence/no`;
//! - `{"kind": "lookup", "correlation/id", "node/id"}`;
//! - `{"kind": "withdraw", "correlation/id", "withdrawal": <node-withdrawal.v1>}`;
//! - response: `{"kind": "response", "correlation/id", "status", "advert"?,
//!   "error/code"?, "error/class"?, "detail"?}` with status `stored`, `replaced`,
//!   `withdrawn`, `found`, `unchanged`, `not-found` or `rejected`.

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use mesh_core::artifact::Artifact;
use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{ErrorCode, MeshError, MeshResult, NodeAdvertisement, NodeId};
use serde_json::{Map, Value};

use crate::withdrawal::NodeWithdrawal;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/advert/1.0.0");

/// Largest message: one artifact (64 KiB) plus the envelope.
pub const MAX_MESSAGE_BYTES: usize = mesh_core::MAX_ARTIFACT_BYTES + 1024;

/// A request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Store this advertisement (anyone's, as long as its node signed it).
    Publish {
        /// Correlation id.
        correlation: String,
        /// The advertisement.
        advert: Box<NodeAdvertisement>,
    },
    /// Send the advertisement of `node` if it is newer than `known_sequence`.
    Refresh {
        /// Correlation id.
        correlation: String,
        /// The node.
        node: NodeId,
        /// The sequence number the asker holds.
        known_sequence: u64,
    },
    /// Send the advertisement of `node`.
    Lookup {
        /// Correlation id.
        correlation: String,
        /// The node.
        node: NodeId,
    },
    /// Apply this withdrawal.
    Withdraw {
        /// Correlation id.
        correlation: String,
        /// The withdrawal.
        withdrawal: Box<NodeWithdrawal>,
    },
}

impl Request {
    /// The correlation id.
    pub fn correlation(&self) -> &str {
        match self {
            Request::Publish { correlation, .. }
            | Request::Refresh { correlation, .. }
            | Request::Lookup { correlation, .. }
            | Request::Withdraw { correlation, .. } => correlation,
        }
    }
}

/// The outcome a response reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A new advertisement was stored.
    Stored,
    /// An advertisement replaced an older one.
    Replaced,
    /// A withdrawal was applied.
    Withdrawn,
    /// The advertisement asked for is attached.
    Found,
    /// Refresh: nothing newer than what the asker holds.
    Unchanged,
    /// No current advertisement of that node.
    NotFound,
    /// Refused; the response carries the code.
    Rejected,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Stored => "stored",
            Status::Replaced => "replaced",
            Status::Withdrawn => "withdrawn",
            Status::Found => "found",
            Status::Unchanged => "unchanged",
            Status::NotFound => "not-found",
            Status::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        [
            Status::Stored,
            Status::Replaced,
            Status::Withdrawn,
            Status::Found,
            Status::Unchanged,
            Status::NotFound,
            Status::Rejected,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Correlation id of the request.
    pub correlation: String,
    /// What happened.
    pub status: Status,
    /// The advertisement, for `found`.
    pub advert: Option<Box<NodeAdvertisement>>,
    /// Why, for `rejected`.
    pub error: Option<MeshError>,
}

impl Response {
    /// A response with `status` and nothing attached.
    pub fn status(correlation: &str, status: Status) -> Self {
        Response {
            correlation: correlation.to_owned(),
            status,
            advert: None,
            error: None,
        }
    }

    /// A `rejected` response.
    pub fn rejected(correlation: &str, error: MeshError) -> Self {
        Response {
            correlation: correlation.to_owned(),
            status: Status::Rejected,
            advert: None,
            error: Some(error),
        }
    }

    /// A `found` response.
    pub fn found(correlation: &str, advert: NodeAdvertisement) -> Self {
        Response {
            correlation: correlation.to_owned(),
            status: Status::Found,
            advert: Some(Box::new(advert)),
            error: None,
        }
    }
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> MeshResult<&'a str> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| MeshError::invalid(format!("/mesh/advert: `{key}` missing or not text")))
}

fn artifact<A: Artifact>(m: &mut Map<String, Value>, key: &str) -> MeshResult<A> {
    let value = m
        .remove(key)
        .ok_or_else(|| MeshError::invalid(format!("/mesh/advert: `{key}` missing")))?;
    A::from_json(value)
}

/// Encodes a request.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("correlation/id".into(), req.correlation().into());
    match req {
        Request::Publish { advert, .. } => {
            m.insert("kind".into(), "publish".into());
            m.insert("advert".into(), advert.to_json());
        }
        Request::Refresh {
            node,
            known_sequence,
            ..
        } => {
            m.insert("kind".into(), "refresh".into());
            m.insert("node/id".into(), node.to_string().into());
            m.insert("sequence/no".into(), (*known_sequence).into());
        }
        Request::Lookup { node, .. } => {
            m.insert("kind".into(), "lookup".into());
            m.insert("node/id".into(), node.to_string().into());
        }
        Request::Withdraw { withdrawal, .. } => {
            m.insert("kind".into(), "withdraw".into());
            m.insert("withdrawal".into(), withdrawal.to_json());
        }
    }
    cbor::encode(&Value::Object(m))
}

/// Decodes a request (strict CBOR, capped; artifacts parsed, not yet verified).
pub fn decode_request(bytes: &[u8]) -> MeshResult<Request> {
    let mut m = decode_map(bytes)?;
    let correlation = text(&m, "correlation/id")?.to_owned();
    let node = |m: &Map<String, Value>| {
        NodeId::parse(text(m, "node/id")?).map_err(|e| MeshError::from(e).context("node/id"))
    };
    match text(&m, "kind")? {
        "publish" => Ok(Request::Publish {
            advert: Box::new(artifact(&mut m, "advert")?),
            correlation,
        }),
        "refresh" => Ok(Request::Refresh {
            node: node(&m)?,
            known_sequence: m
                .get("sequence/no")
                .and_then(Value::as_u64)
                .ok_or_else(|| MeshError::invalid("/mesh/advert: refresh needs `sequence/no`"))?,
            correlation,
        }),
        "lookup" => Ok(Request::Lookup {
            node: node(&m)?,
            correlation,
        }),
        "withdraw" => Ok(Request::Withdraw {
            withdrawal: Box::new(artifact(&mut m, "withdrawal")?),
            correlation,
        }),
        other => Err(MeshError::invalid(format!(
            "/mesh/advert: unknown request kind `{other}`"
        ))),
    }
}

/// Encodes a response.
pub fn encode_response(res: &Response) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("kind".into(), "response".into());
    m.insert("correlation/id".into(), res.correlation.clone().into());
    m.insert("status".into(), res.status.as_str().into());
    if let Some(a) = &res.advert {
        m.insert("advert".into(), a.to_json());
    }
    if let Some(e) = &res.error {
        m.insert("error/code".into(), e.code.as_str().into());
        m.insert("error/class".into(), e.code.class().into());
        m.insert("detail".into(), e.detail.clone().into());
    }
    cbor::encode(&Value::Object(m))
}

/// Decodes a response.
pub fn decode_response(bytes: &[u8]) -> MeshResult<Response> {
    let mut m = decode_map(bytes)?;
    if text(&m, "kind")? != "response" {
        return Err(MeshError::invalid("/mesh/advert: expected a response"));
    }
    let correlation = text(&m, "correlation/id")?.to_owned();
    let status = Status::parse(text(&m, "status")?)
        .ok_or_else(|| MeshError::invalid("/mesh/advert: unknown response status"))?;
    let error = match m.get("error/code").and_then(Value::as_str) {
        Some(code) => Some(MeshError::new(
            ErrorCode::from_code_str(code).ok_or_else(|| {
                MeshError::invalid(format!("/mesh/advert: unknown code `{code}`"))
            })?,
            m.get("detail").and_then(Value::as_str).unwrap_or_default(),
        )),
        None => None,
    };
    let advert = if m.contains_key("advert") {
        Some(Box::new(artifact(&mut m, "advert")?))
    } else {
        None
    };
    if status == Status::Found && advert.is_none() {
        return Err(MeshError::invalid(
            "/mesh/advert: `found` without an advert",
        ));
    }
    Ok(Response {
        correlation,
        status,
        advert,
        error,
    })
}

fn decode_map(bytes: &[u8]) -> MeshResult<Map<String, Value>> {
    let limits = DecodeLimits {
        max_bytes: MAX_MESSAGE_BYTES,
        ..DecodeLimits::default()
    };
    match cbor::decode_with(bytes, limits).map_err(MeshError::from)? {
        Value::Object(m) => Ok(m),
        _ => Err(MeshError::invalid("/mesh/advert: a message is a CBOR map")),
    }
}

/// The request-response codec: reads to the end of the stream (capped) and decodes
/// strictly. A message that does not decode is delivered as `Err(MeshError)` rather than
/// as an I/O failure, so the receiver can answer it with a `rejected` response carrying
/// the frozen code.
///
/// Its reads take their buffers from the budget it holds.
#[derive(Debug, Clone, Default)]
pub struct Codec(pub mesh_core::ReadBudget);

/// What the codec yields for a request.
pub type InboundRequest = Result<Request, MeshError>;
/// What the codec yields for a response.
pub type InboundResponse = Result<Response, MeshError>;

async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &mesh_core::ReadBudget,
) -> io::Result<Result<Vec<u8>, MeshError>> {
    Ok(mesh_core::read_capped(io, MAX_MESSAGE_BYTES, budget)
        .await?
        .ok_or_else(|| {
            MeshError::invalid(format!(
                "/mesh/advert: message over {MAX_MESSAGE_BYTES} bytes"
            ))
        }))
}

fn unsendable(e: &MeshError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = InboundRequest;
    type Response = InboundResponse;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<InboundRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(read_capped(io, &self.0)
            .await?
            .and_then(|b| decode_request(&b)))
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<InboundResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(read_capped(io, &self.0)
            .await?
            .and_then(|b| decode_response(&b)))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: InboundRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = req.map_err(|e| unsendable(&e))?;
        io.write_all(&encode_request(&req)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: InboundResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let res = res.map_err(|e| unsendable(&e))?;
        io.write_all(&encode_response(&res)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::{NodeKeypair, Timestamp};

    fn advert(key: &NodeKeypair, seq: u64) -> NodeAdvertisement {
        crate::own::advert_for(
            key,
            &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            seq,
            &Timestamp::now(),
            600,
        )
        .unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let key = NodeKeypair::generate();
        let now = Timestamp::now();
        let reqs = vec![
            Request::Publish {
                correlation: "c1".into(),
                advert: Box::new(advert(&key, 1)),
            },
            Request::Refresh {
                correlation: "c2".into(),
                node: key.node_id(),
                known_sequence: 7,
            },
            Request::Lookup {
                correlation: "c3".into(),
                node: key.node_id(),
            },
            Request::Withdraw {
                correlation: "c4".into(),
                withdrawal: Box::new(NodeWithdrawal::create(&key, 9, &now).unwrap()),
            },
        ];
        for r in reqs {
            assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
        }
        let resps = vec![
            Response::found("c1", advert(&key, 2)),
            Response::status("c2", Status::Unchanged),
            Response::rejected("c3", MeshError::new(ErrorCode::AdvStaleSeq, "old")),
        ];
        for r in resps {
            assert_eq!(decode_response(&encode_response(&r)).unwrap(), r);
        }
    }

    #[test]
    fn garbage_is_an_error_with_a_code() {
        for bad in [
            &b""[..],
            b"\xff",
            b"\xa1\x61k\x01",
            &cbor::encode(&serde_json::json!({"kind": "nope", "correlation/id": "x"})),
        ] {
            assert_eq!(
                decode_request(bad).unwrap_err().code,
                ErrorCode::ProtoInvalid
            );
            assert_eq!(
                decode_response(bad).unwrap_err().code,
                ErrorCode::ProtoInvalid
            );
        }
    }
}
