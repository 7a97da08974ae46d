//! `/mesh/swarm-table/1.0.0`: a member hands a newcomer the member table of a swarm in
//! one exchange: the signed `swarm-presence.v1` documents it holds, each still signed by
//! its member (nothing is taken on the answering peer's word).
//!
//! A request is the deterministic CBOR map `{"swarm/key": <64 hex digits>, "after":
//! <node id>?, "have": <64 hex digits>?}` (at most [`MAX_REQUEST`] bytes): the page of
//! members whose node ids come after `after` (all from the first without it), in node
//! id order. `have` is the asker's [`MemberDigest`] of its own table (a member checking
//! its table, not a newcomer fetching one): a server whose table has the same digest
//! answers an empty page, so a check of tables that agree costs about a hundred bytes
//! each way; otherwise it answers its table with the `leave`s it remembers of members
//! whose last presence may still be held, by node id (a member that missed a leave
//! takes it from there). An answer is
//! either a page, the CBOR array `[more, p₁, …, pₙ]` (`more` a boolean, then 0..=
//! [`PAGE_MAX`] byte strings, each one presence's CBOR wire form, at most
//! [`PAGE_BYTES`] of presences in all), or a refusal, the map `{"kind": "rejected",
//! "error/code", "error/class", "detail"}`. `more` says that members after the last one
//! remain: the next request names the last presence's `node/id` in `after`.
//!
//! The reader checks every presence of a page where it reads it (in the connection's
//! task, not the node's loop): signature (the accept set of `verify_strict`, the
//! signing input cut from the received bytes), schema and clock. Expired presences are
//! dropped without blame; any other failure is kept with its code, so the node can
//! report the peer that sent it, and the valid presences of the page are kept.

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{
    Artifact, ErrorCode, MAX_ARTIFACT_BYTES, MeshError, MeshResult, NodeId, SwarmPresence,
    Timestamp,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::key::DiscoveryKey;
use crate::cbor_items::{ItemError, MAJOR_BYTES, byte_items, head};
use crate::codec::read_capped;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/swarm-table/1.0.0");
/// Most presences in one page: a swarm of up to 256 members (or [`PAGE_BYTES`] of
/// presences) comes in one exchange. With pages of 64, a newcomer to 200 members waited
/// for four round trips, 50–110 ms each on a loaded host (BENCHMARKS, *Swarms*).
pub const PAGE_MAX: usize = 256;
/// Most bytes of presences in one page (a page holds at least one presence): 256
/// presences of a member with a few addresses (about 500–900 bytes each).
pub const PAGE_BYTES: usize = 256 * 1024;
/// Largest answer body: a full page and its framing, or a refusal.
pub const MAX_ANSWER: usize = PAGE_BYTES + MAX_ARTIFACT_BYTES + 16 * (PAGE_MAX + 1);
/// Largest request body.
pub const MAX_REQUEST: usize = 512;

const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;

/// The digest of a member table's members: SHA-256 over a domain label, the swarm key
/// and the members' node ids (their 32 key bytes) in node id order, the holder of the
/// table included. Two tables with the same members have the same digest, whatever
/// presences (sequence numbers, addresses, expiry) they hold for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberDigest(pub [u8; 32]);

impl MemberDigest {
    /// The digest of `swarm`'s table whose members are `nodes` (in node id order, as
    /// `Groups::signed_table` gives them).
    pub fn of<'a>(swarm: &DiscoveryKey, nodes: impl IntoIterator<Item = &'a NodeId>) -> Self {
        let mut h = Sha256::new();
        h.update(DIGEST_LABEL);
        h.update(swarm.as_bytes());
        for n in nodes {
            h.update(n.fingerprint().as_bytes());
        }
        MemberDigest(h.finalize().into())
    }
}

const DIGEST_LABEL: &[u8] = b"libmesh/swarm-table/members/v1\0";

/// A request for one page of a swarm's member table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRequest {
    /// The swarm.
    pub key: DiscoveryKey,
    /// Members after this node id (`None`: from the first).
    pub after: Option<NodeId>,
    /// The asker's digest of its own table: an equal table is answered with an empty
    /// page (see the module's documentation).
    pub have: Option<MemberDigest>,
}

impl TableRequest {
    /// The first page of `key`'s table.
    pub fn first(key: DiscoveryKey) -> Self {
        TableRequest {
            key,
            after: None,
            have: None,
        }
    }

    /// The page of `key`'s table after `after`.
    pub fn after(key: DiscoveryKey, after: NodeId) -> Self {
        TableRequest {
            key,
            after: Some(after),
            have: None,
        }
    }

    /// The first page of `key`'s table, unless the server's digest is `have`.
    pub fn unless(key: DiscoveryKey, have: MemberDigest) -> Self {
        TableRequest {
            key,
            after: None,
            have: Some(have),
        }
    }

    /// The request's wire form.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("swarm/key".into(), self.key.to_hex().into());
        if let Some(a) = &self.after {
            m.insert("after".into(), a.to_string().into());
        }
        if let Some(d) = &self.have {
            m.insert("have".into(), hex::encode(d.0).into());
        }
        cbor::encode(&Value::Object(m))
    }

    /// Parses a request (`E_PROTO_INVALID` for anything else).
    pub fn from_cbor(b: &[u8]) -> MeshResult<Self> {
        let bad = |why: &str| MeshError::invalid(format!("/mesh/swarm-table: {why}"));
        let limits = DecodeLimits {
            max_bytes: MAX_REQUEST,
            ..DecodeLimits::default()
        };
        let v = cbor::decode_with(b, limits).map_err(MeshError::from)?;
        let Value::Object(m) = v else {
            return Err(bad("a request is a map"));
        };
        if m.keys()
            .any(|k| k != "swarm/key" && k != "after" && k != "have")
        {
            return Err(bad("unknown request field"));
        }
        let key = m
            .get("swarm/key")
            .and_then(Value::as_str)
            .and_then(|s| DiscoveryKey::from_hex(s).ok())
            .ok_or_else(|| bad("swarm/key must be 64 hex digits"))?;
        let after = match m.get("after") {
            None => None,
            Some(Value::String(s)) => {
                Some(NodeId::parse(s).map_err(|_| bad("after must be a node id"))?)
            }
            Some(_) => return Err(bad("after must be a node id")),
        };
        let have = match m.get("have") {
            None => None,
            Some(v) => {
                let d = v
                    .as_str()
                    .filter(|s| s.len() == 64)
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| bad("have must be 64 hex digits"))?;
                Some(MemberDigest(d))
            }
        };
        Ok(TableRequest { key, after, have })
    }
}

/// One page as it travels: presences' wire forms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Members after the last one remain.
    pub more: bool,
    /// Each a signed presence's CBOR wire form, in node id order.
    pub items: Vec<Vec<u8>>,
}

/// A page as the reader hands it over: every presence checked.
#[derive(Debug, Clone, Default)]
pub struct CheckedPage {
    /// Members after the last one remain.
    pub more: bool,
    /// The presences that verified (signature, schema, clock), with their wire forms.
    pub valid: Vec<(SwarmPresence, Vec<u8>)>,
    /// Why the others were refused (never `E_ADV_EXPIRED`: those are in `expired`).
    pub refused: Vec<MeshError>,
    /// Authentic presences that had expired: dropped, nobody's fault.
    pub expired: usize,
    /// The `node/id` of the page's last presence that parsed: the next page's `after`.
    pub last: Option<NodeId>,
}

/// The answer to a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A page (what a server sends).
    Page(Page),
    /// A page as read and checked (what a client receives).
    Checked(CheckedPage),
    /// The request is refused.
    Refused(MeshError),
}

/// The page after `after` of a table whose entries are `(node, signed presence)`,
/// sorted by node id: up to [`PAGE_MAX`] entries and [`PAGE_BYTES`] bytes (at least
/// one entry, whatever its size), and whether more remain.
pub fn page_of<'a>(
    entries: impl IntoIterator<Item = (NodeId, &'a [u8])>,
    after: Option<&NodeId>,
) -> Page {
    let mut page = Page::default();
    let mut bytes = 0usize;
    for (node, signed) in entries {
        if after.is_some_and(|a| node <= *a) {
            continue;
        }
        let full = page.items.len() >= PAGE_MAX
            || (!page.items.is_empty() && bytes + signed.len() > PAGE_BYTES);
        if full {
            page.more = true;
            break;
        }
        bytes += signed.len();
        page.items.push(signed.to_vec());
    }
    page
}

/// Whether `request` is a check (it has `have`) of a table with the members of `table`
/// (sorted by node id): answered with an empty page.
pub fn agrees<B>(request: &TableRequest, table: &[(NodeId, B)]) -> bool {
    request
        .have
        .is_some_and(|have| MemberDigest::of(&request.key, table.iter().map(|(n, _)| n)) == have)
}

/// The page that answers `request` from a table of `(node, signed presence)` sorted
/// by node id: empty when the request's `have` is the table's [`MemberDigest`], else
/// [`page_of`] after the request's `after`. A check's answer (a request with `have`)
/// pages through the table and `leaves` together, by node id: the signed `leave`s of
/// members whose last presence the asker may still hold (it missed the leave; the
/// members' digests cannot tell it, as they cover the members only). A newcomer's fetch
/// gets the members alone.
pub fn answer_page<B: AsRef<[u8]>>(
    request: &TableRequest,
    table: &[(NodeId, B)],
    leaves: &[(NodeId, B)],
) -> Page {
    let after = request.after.as_ref();
    let entries = table.iter().map(|(n, b)| (*n, b.as_ref()));
    if request.have.is_none() {
        return page_of(entries, after);
    }
    if agrees(request, table) {
        return Page::default();
    }
    let mut all: Vec<(NodeId, &[u8])> = entries
        .chain(leaves.iter().map(|(n, b)| (*n, b.as_ref())))
        .collect();
    all.sort_unstable_by_key(|(n, _)| *n);
    page_of(all, after)
}

/// Presences of a page refused before the rest of it is left unread.
pub const MAX_REFUSED_PER_PAGE: usize = 8;

/// Checks every presence of `page` at `now` (see the module's documentation). A page
/// is sorted by node id, one presence per node: a node id that comes again is passed
/// over unverified, and one lower than the one before ends the page (the rest unread,
/// no more pages); so does the [`MAX_REFUSED_PER_PAGE`]th refusal. A server could
/// otherwise answer 256 copies of one presence (or of forged bytes) per page, each
/// verified, for the cost of one signature.
pub fn check_page(page: Page, now: &Timestamp) -> CheckedPage {
    let mut out = CheckedPage {
        more: page.more,
        ..CheckedPage::default()
    };
    let mut before: Option<NodeId> = None;
    for bytes in page.items {
        if out.refused.len() >= MAX_REFUSED_PER_PAGE {
            break;
        }
        if let Ok(p) = SwarmPresence::from_cbor(&bytes) {
            let node = p.node_id();
            match before {
                Some(b) if node == b => continue,
                Some(b) if node < b => {
                    out.refused.push(MeshError::invalid(
                        "swarm-table page: node ids out of order",
                    ));
                    out.more = false;
                    break;
                }
                _ => before = Some(node),
            }
        }
        match SwarmPresence::verify_cbor(&bytes, now) {
            Ok(p) => {
                out.last = Some(p.node_id());
                out.valid.push((p, bytes));
            }
            Err(e) if e.code == ErrorCode::AdvExpired => {
                out.expired += 1;
                if let Ok(p) = SwarmPresence::from_cbor(&bytes) {
                    out.last = Some(p.node_id());
                }
            }
            Err(e) => {
                if let Ok(p) = SwarmPresence::from_cbor(&bytes) {
                    out.last = Some(p.node_id());
                }
                out.refused.push(e);
            }
        }
    }
    if out.refused.len() >= MAX_REFUSED_PER_PAGE {
        out.more = false;
    }
    out
}

/// The wire form of a page.
pub fn encode_page(page: &Page) -> Vec<u8> {
    let total: usize = page.items.iter().map(|i| i.len() + 9).sum();
    let mut out = Vec::with_capacity(total + 10);
    cbor::write_head(&mut out, MAJOR_ARRAY, page.items.len() as u64 + 1);
    out.push(if page.more { TRUE } else { FALSE });
    for item in &page.items {
        cbor::write_head(&mut out, MAJOR_BYTES, item.len() as u64);
        out.extend_from_slice(item);
    }
    out
}

/// Parses an answer body: a page or a refusal (anything else is `E_PROTO_INVALID`).
pub fn decode_answer(body: &[u8]) -> Result<Page, MeshError> {
    let bad = |why: &str| MeshError::invalid(format!("/mesh/swarm-table: {why}"));
    if body.len() > MAX_ANSWER {
        return Err(bad("answer over the size cap"));
    }
    match body.first().map(|b| b >> 5) {
        Some(MAJOR_MAP) => Err(parse_refusal(body)),
        Some(MAJOR_ARRAY) => {
            let mut at = 0;
            let (_, n) = head(body, &mut at).ok_or_else(|| bad("malformed page"))?;
            let n = usize::try_from(n).map_err(|_| bad("malformed page"))?;
            if !(1..=PAGE_MAX + 1).contains(&n) {
                return Err(bad(&format!("a page holds 0..={PAGE_MAX} presences")));
            }
            let more = match body.get(at) {
                Some(&TRUE) => true,
                Some(&FALSE) => false,
                _ => return Err(bad("a page starts with a boolean")),
            };
            at += 1;
            let items = byte_items(body, &mut at, n - 1, MAX_ARTIFACT_BYTES)
                .map_err(|e| match e {
                    ItemError::Malformed => bad("malformed page"),
                    ItemError::NotAnItem => bad("a page item must be one presence's bytes"),
                    ItemError::Truncated => bad("truncated page"),
                })?
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            if at != body.len() {
                return Err(bad("trailing bytes after the page"));
            }
            Ok(Page { more, items })
        }
        _ => Err(bad("not a page or a refusal")),
    }
}

/// The wire form of a refusal.
pub fn encode_refusal(e: &MeshError) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("kind".into(), "rejected".into());
    if let Value::Object(err) = e.to_json() {
        m.extend(err);
    }
    cbor::encode(&Value::Object(m))
}

fn parse_refusal(b: &[u8]) -> MeshError {
    let limits = DecodeLimits {
        max_bytes: 4096,
        ..DecodeLimits::default()
    };
    let Ok(v) = cbor::decode_with(b, limits) else {
        return MeshError::invalid("/mesh/swarm-table: malformed refusal");
    };
    if v.get("kind").and_then(Value::as_str) != Some("rejected") {
        return MeshError::invalid("/mesh/swarm-table: unknown answer");
    }
    let code = v
        .get("error/code")
        .and_then(Value::as_str)
        .and_then(ErrorCode::from_code_str)
        .unwrap_or(ErrorCode::ProtoInvalid);
    let detail = v.get("detail").and_then(Value::as_str).unwrap_or_default();
    MeshError::new(code, format!("refused by the peer: {detail}"))
}

/// The `request_response` codec: requests as [`TableRequest`] (a malformed one is
/// handed over as its error, to be answered with a refusal), answers as [`Answer`] (read
/// as [`Answer::Checked`] or [`Answer::Refused`]).
///
/// Its reads take their buffers from the budget it holds.
#[derive(Debug, Clone, Default)]
pub struct Codec(pub mesh_core::ReadBudget);

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Result<TableRequest, MeshError>;
    type Response = Answer;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        let Some(b) = read_capped(io, MAX_REQUEST, &self.0).await? else {
            return Ok(Err(MeshError::invalid(
                "/mesh/swarm-table: request over the size cap",
            )));
        };
        Ok(TableRequest::from_cbor(&b))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response> {
        let Some(b) = read_capped(io, MAX_ANSWER, &self.0).await? else {
            return Ok(Answer::Refused(MeshError::invalid(
                "/mesh/swarm-table: answer over the size cap",
            )));
        };
        Ok(match decode_answer(&b) {
            Ok(page) => Answer::Checked(check_page(page, &Timestamp::now())),
            Err(e) => Answer::Refused(e),
        })
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Self::Request,
    ) -> io::Result<()> {
        let r = r.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        io.write_all(&r.to_cbor()).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Self::Response,
    ) -> io::Result<()> {
        let bytes = match r {
            Answer::Page(p) => encode_page(&p),
            Answer::Checked(c) => encode_page(&Page {
                more: c.more,
                items: c.valid.into_iter().map(|(_, b)| b).collect(),
            }),
            Answer::Refused(e) => encode_refusal(&e),
        };
        io.write_all(&bytes).await
    }
}

/// A refusal for `key`: this node is not in the swarm.
pub fn not_a_member(key: &DiscoveryKey) -> MeshError {
    MeshError::invalid(format!("/mesh/swarm-table: not in swarm {key}"))
}

/// A refusal: this node's own table is still being fetched.
pub fn not_ready(key: &DiscoveryKey) -> MeshError {
    MeshError::new(
        ErrorCode::TransportUnavailable,
        format!("/mesh/swarm-table: table of {key} not complete yet"),
    )
}

/// A refusal: `peer` asked too often.
pub fn too_often(retry_after_secs: u64) -> MeshError {
    MeshError::new(
        ErrorCode::TransportRejected,
        format!("/mesh/swarm-table: too many requests, retry after {retry_after_secs} s"),
    )
}

#[cfg(test)]
mod tests;
