//! The seed directory over HTTP: open reads, signed writes, bounded batch walks.
//!
//! Answers have the Orbiplex seed-directory memo's shapes
//! (`shared/orbiplex-schemas/seed-directory-http/`), with libmesh's keys beside them:
//!
//! - `PUT /adv/{node-id}` with a `node-advertisement.v1` JSON body: `201` with
//!   `{"status": "stored", "node/id", "advertisement/id", "sequence/no", "stored-at",
//!   "expires-at", "replaced"}`; `409` for a stale sequence with `{"status":
//!   "conflict", "reason": "stale-sequence", "node/id", "current/sequence-no",
//!   "submitted/sequence-no"}` and the frozen code; `400` for a body
//!   that is not a JSON object (or a path that is not a node id, or a path that names
//!   another node than the body); `413` for a body over the cap; `422` for an artifact
//!   that fails the schema, the signature or the clock; `429` with `Retry-After` when
//!   the client or the publisher is over its rate limit.
//! - `PUT /adv/{node-id}` with a `node-withdrawal.v1` JSON body (told apart by its
//!   `withdrawal/id` field): `200` with `{"status": "withdrawn", "node/id",
//!   "sequence/no"}`; the advertisement goes and a tombstone refuses every advertisement
//!   at or below the withdrawal's sequence number (for 24 h, the longest advertisement
//!   lifetime); then `GET` answers `404`. The other answers are those of an
//!   advertisement (`409` when the sequence number is not above the one held…).
//! - `GET /adv/{node-id}`: `200` with the raw artifact, `404` when there is none.
//! - `GET /adv?since={cursor}[&limit=n]`: `{"items", "next", "max-items"}` — at most
//!   `max-items` advertisements changed after `cursor`, oldest change first; start with
//!   `since=0` and pass `next` back until `items` is empty. There is no listing without
//!   a cursor and no delete (withdrawals travel as signed artifacts on the mesh).
//!
//! Every error body is `{"error/code", "error/class", "detail"}` with a frozen code and
//! a `status` word (`invalid` 400, `conflict` 409, `too-large` 413, `rejected` 422,
//! `rate-limited` 429, `unavailable` 503); `404` is not a rejection and is
//! `{"status": "not-found", "node/id"}` (with `"error": "not-found"` for older clients).
//!
//! A PUT's insert runs on tokio's blocking pool, one PUT at a time: its commit (an
//! fsync) blocks no async worker, holds no lock readers need (see
//! [`ConcurrentStore`]), and the node loop's own writes wait for at most one directory
//! commit.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mesh_advert::{InsertOutcome, NodeWithdrawal, Source, StoreError};
use mesh_core::IpKey;
use mesh_core::artifact::Artifact;
use mesh_core::{
    ErrorCode, MeshError, NodeAdvertisement, NodeId, RateLimit, RateLimiter, Timestamp,
};
use serde_json::{Value, json};

use crate::http_serve::{HttpLimits, client_key};

/// Directory settings.
#[derive(Debug, Clone, Copy)]
pub struct DirectoryConfig {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest batch of a cursor walk.
    pub max_items: usize,
    /// Requests per client (an IPv4 address or an IPv6 /64, see
    /// [`crate::http_serve::client_key`]).
    pub per_client: RateLimit,
    /// Timeouts and connection caps of the server.
    pub http: HttpLimits,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            max_body_bytes: mesh_core::MAX_ARTIFACT_BYTES,
            max_items: 100,
            per_client: RateLimit::per_minute(120, 600),
            http: HttpLimits::default(),
        }
    }
}

pub use crate::shared_store::ConcurrentStore;

/// The store shared between the directory and the rest of the node (an
/// `Arc<Mutex<MemoryStore>>` or an `Arc<DurableStore>` coerces to it).
pub type SharedStore = Arc<dyn ConcurrentStore>;

#[derive(Clone)]
struct AppState {
    store: SharedStore,
    /// One PUT writes at a time.
    writes: Arc<tokio::sync::Semaphore>,
    config: DirectoryConfig,
    clients: Arc<Mutex<RateLimiter<IpKey>>>,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

/// The directory's router (its handlers need `ConnectInfo<SocketAddr>`, which
/// [`crate::http_serve::serve`] provides).
pub fn router(
    store: SharedStore,
    config: DirectoryConfig,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
) -> Router {
    let state = AppState {
        store,
        writes: Arc::new(tokio::sync::Semaphore::new(1)),
        config,
        clients: Arc::new(Mutex::new(RateLimiter::new(config.per_client, 65_536))),
        clock,
    };
    Router::new()
        .route("/adv/{node_id}", get(get_adv).put(put_adv))
        .route("/adv", get(list_adv))
        .with_state(state)
}

/// Serves the directory on `listener` within `config.http` until `shutdown` resolves;
/// on loopback, only to requests whose `Host` is an address or `localhost`
/// ([`crate::directory_hosts`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: SharedStore,
    config: DirectoryConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_hosts(listener, store, config, &[], shutdown).await
}

/// [`serve`], answering `Host` `names` too (a reverse proxy's public names) besides
/// addresses and `localhost` ([`crate::directory_hosts`]: on loopback, or with names,
/// nothing else is answered).
pub async fn serve_with_hosts(
    listener: tokio::net::TcpListener,
    store: SharedStore,
    config: DirectoryConfig,
    names: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(store, config, Arc::new(Timestamp::now));
    let app = crate::directory_hosts::guard(app, listener.local_addr()?, names);
    crate::http_serve::serve(listener, app, config.http, shutdown).await
}

/// A refusal: the frozen-code error body (`error/code`, `error/class`, `detail`) with a
/// `status` word beside it in the manner of the Orbiplex memo's answers.
fn error(status: StatusCode, e: &MeshError) -> Response {
    let mut body = e.to_json();
    if let Some(word) = status_word(status) {
        body["status"] = word.into();
    }
    (status, axum::Json(body)).into_response()
}

/// A request axum could not take apart (a path that is not UTF-8, a query that does
/// not parse): `E_PROTO_INVALID` in the error body like every other refusal (axum's own
/// answer was plain text).
fn rejected(why: String) -> Response {
    error(StatusCode::BAD_REQUEST, &MeshError::invalid(why))
}

/// The `status` word of a refusal (the memo names `conflict` and `not-found`; these
/// follow them for the answers it leaves open).
fn status_word(status: StatusCode) -> Option<&'static str> {
    Some(match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::UNPROCESSABLE_ENTITY => "rejected",
        StatusCode::TOO_MANY_REQUESTS => "rate-limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => return None,
    })
}

fn too_many(retry_after_secs: u64, e: &MeshError) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, e);
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Applies the per-client limit (IPv6 clients by /64); `Some(response)` when over it.
fn limited(st: &AppState, client: IpAddr, now: &Timestamp) -> Option<Response> {
    match lock(&st.clients).check(&client_key(client), now) {
        Ok(()) => None,
        Err(retry) => Some(too_many(
            retry,
            &MeshError::new(
                ErrorCode::TransportRejected,
                format!("client {client} is over its rate limit"),
            ),
        )),
    }
}

/// The prelude of the per-node routes: the client's rate limit, then the path's node id.
fn admit(
    st: &AppState,
    client: SocketAddr,
    node_text: &str,
) -> Result<(Timestamp, NodeId), Box<Response>> {
    let now = (st.clock)();
    if let Some(r) = limited(st, client.ip(), &now) {
        return Err(Box::new(r));
    }
    let node = parse_node(node_text).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &e)))?;
    Ok((now, node))
}

fn parse_node(text: &str) -> Result<NodeId, MeshError> {
    NodeId::parse(text).map_err(|e| MeshError::from(e).context("path node id"))
}

async fn put_adv(
    State(st): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    node_text: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let node_text = match node_text {
        Ok(Path(t)) => t,
        Err(e) => return rejected(e.body_text()),
    };
    let (now, node) = match admit(&st, client, &node_text) {
        Ok(ok) => ok,
        Err(r) => return *r,
    };
    let Ok(bytes) = axum::body::to_bytes(body, st.config.max_body_bytes).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &MeshError::invalid(format!("body over {} bytes", st.config.max_body_bytes)),
        );
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &MeshError::invalid("the body must be a JSON object"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &MeshError::invalid(format!("malformed JSON: {e}")),
            );
        }
    };
    if value.get("withdrawal/id").is_some() {
        return put_withdrawal(&st, node, value, Source::of_ip(client.ip()), now).await;
    }
    let advert = match NodeAdvertisement::verify_json(value, &now) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    if advert.node_id() != node {
        return error(
            StatusCode::BAD_REQUEST,
            &MeshError::invalid(format!(
                "the path names {node} but the advertisement is of {}",
                advert.node_id()
            )),
        );
    }
    let sequence_no = advert.sequence_no();
    let advertisement_id = advert.advertisement_id().to_owned();
    let expires_at = advert.expires_at().as_str().to_owned();
    let stored_at = now.as_str().to_owned();
    let outcome = store_put(&st, advert, Source::of_ip(client.ip()), now).await;
    match outcome {
        Ok(o) => (
            StatusCode::CREATED,
            axum::Json(json!({
                "status": "stored",
                "replaced": matches!(o, InsertOutcome::Replaced { .. }),
                "node/id": node.to_string(),
                "advertisement/id": advertisement_id,
                "sequence/no": sequence_no,
                "stored-at": stored_at,
                "expires-at": expires_at,
            })),
        )
            .into_response(),
        Err(e) => store_refusal(node, e),
    }
}

/// `PUT /adv/{node-id}` with a withdrawal: verified, then applied on the blocking pool.
async fn put_withdrawal(
    st: &AppState,
    node: NodeId,
    value: Value,
    source: Source,
    now: Timestamp,
) -> Response {
    let w = match NodeWithdrawal::verify_json(value, &now) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    if w.node_id() != node {
        return error(
            StatusCode::BAD_REQUEST,
            &MeshError::invalid(format!(
                "the path names {node} but the withdrawal is of {}",
                w.node_id()
            )),
        );
    }
    let sequence_no = w.sequence_no();
    let Ok(_permit) = st.writes.acquire().await else {
        return store_refusal(
            node,
            StoreError::Storage("the directory is stopping".into()),
        );
    };
    let store = st.store.clone();
    let r = tokio::task::spawn_blocking(move || store.withdraw(&w, source, &now))
        .await
        .unwrap_or_else(|e| Err(StoreError::Storage(format!("store task failed: {e}"))));
    match r {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({"status": "withdrawn", "node/id": node.to_string(), "sequence/no": sequence_no})),
        )
            .into_response(),
        Err(e) => store_refusal(node, e),
    }
}

/// The answer for a change the store refused.
fn store_refusal(node: NodeId, e: StoreError) -> Response {
    match e {
        StoreError::Stale { current, submitted } => {
            let e = MeshError::new(
                ErrorCode::AdvStaleSeq,
                format!("sequence {submitted} is not above {current}"),
            );
            let mut body = e.to_json();
            body["status"] = "conflict".into();
            body["reason"] = "stale-sequence".into();
            body["node/id"] = node.to_string().into();
            body["current/sequence-no"] = current.into();
            body["submitted/sequence-no"] = submitted.into();
            (StatusCode::CONFLICT, axum::Json(body)).into_response()
        }
        StoreError::RateLimited { retry_after_secs } => too_many(
            retry_after_secs,
            &MeshError::new(
                ErrorCode::TransportRejected,
                format!("publisher {node} is over its rate limit"),
            ),
        ),
        StoreError::Rejected(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        StoreError::Storage(detail) => {
            // The detail names the store's file (the operator's home directory, say):
            // for the log, not for whoever asked.
            tracing::warn!(%detail, "directory store unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &MeshError::new(
                    ErrorCode::TransportUnavailable,
                    "the directory's store is unavailable; try again later",
                ),
            )
        }
    }
}

/// Inserts on the blocking pool, one PUT at a time (see the module docs).
async fn store_put(
    st: &AppState,
    advert: NodeAdvertisement,
    source: Source,
    now: Timestamp,
) -> Result<InsertOutcome, StoreError> {
    let Ok(_permit) = st.writes.acquire().await else {
        return Err(StoreError::Storage("the directory is stopping".into()));
    };
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || store.insert(advert, source, &now))
        .await
        .unwrap_or_else(|e| Err(StoreError::Storage(format!("store task failed: {e}"))))
}

async fn get_adv(
    State(st): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    node_text: Result<Path<String>, PathRejection>,
) -> Response {
    let node_text = match node_text {
        Ok(Path(t)) => t,
        Err(e) => return rejected(e.body_text()),
    };
    let (now, node) = match admit(&st, client, &node_text) {
        Ok(ok) => ok,
        Err(r) => return *r,
    };
    let found = st.store.get(&node, &now);
    match found.and_then(|s| s.decoded()) {
        Some(advert) => axum::Json(advert.to_json()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"status": "not-found", "error": "not-found", "node/id": node.to_string()}),
            ),
        )
            .into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    since: Option<String>,
    limit: Option<usize>,
}

/// Cursors are opaque to clients: `c` + the revision in hex. `0` starts a walk.
fn parse_cursor(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    u64::from_str_radix(text.strip_prefix('c')?, 16).ok()
}

async fn list_adv(
    State(st): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let now = (st.clock)();
    if let Some(r) = limited(&st, client.ip(), &now) {
        return r;
    }
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return rejected(e.body_text()),
    };
    let Some(cursor) = q.since.as_deref().and_then(parse_cursor) else {
        return error(
            StatusCode::BAD_REQUEST,
            &MeshError::invalid(
                "`since` is required: 0 to start, then the `next` of the previous batch",
            ),
        );
    };
    let max = st.config.max_items;
    let limit = q.limit.unwrap_or(max).clamp(1, max.max(1));
    let page = st.store.since(cursor, limit);
    // At most `MAX_PAGE_BYTES` of wire form per answer (at least one item): anyone can
    // store advertisements of up to 64 KiB under fresh keys, so 100 of them made an
    // answer of megabytes for a request of a hundred bytes. `next` then continues after
    // the last item given.
    let mut items: Vec<Value> = Vec::new();
    let (mut used, mut next) = (0usize, page.next);
    for (i, s) in page.items.iter().enumerate() {
        if i > 0 && used.saturating_add(s.wire.len()) > MAX_PAGE_BYTES {
            break;
        }
        used = used.saturating_add(s.wire.len());
        next = s.revision;
        if let Some(a) = s.decoded() {
            items.push(a.to_json());
        }
    }
    axum::Json(json!({
        "items": items,
        "next": format!("c{next:x}"),
        "max-items": max,
    }))
    .into_response()
}

/// Most bytes of advertisements (their CBOR wire form; the JSON answer is about twice
/// that) in one `GET /adv` answer, beyond the first item.
pub const MAX_PAGE_BYTES: usize = 256 * 1024;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mesh_advert::{MemoryStore, StoreLimits};

    fn state(per_client: RateLimit) -> AppState {
        let store: SharedStore = Arc::new(Mutex::new(MemoryStore::new(StoreLimits::default())));
        AppState {
            store,
            config: DirectoryConfig::default(),
            clients: Arc::new(Mutex::new(RateLimiter::new(per_client, 1024))),
            clock: Arc::new(Timestamp::now),
            writes: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// A store failure tells the client it is unavailable, not where the store lives.
    #[tokio::test]
    async fn a_store_failure_answers_without_the_stores_path() {
        let node = mesh_core::NodeKeypair::generate().node_id();
        let r = store_refusal(
            node,
            StoreError::Storage("/home/alice/.local/share/libmesh/adverts.redb: closed".into()),
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("E_TRANSPORT_UNAVAILABLE"), "{body}");
        assert!(!body.contains("alice") && !body.contains("redb"), "{body}");
    }

    #[test]
    fn ipv6_clients_of_one_64_share_a_rate_limit_bucket() {
        let st = state(RateLimit::per_minute(3, 1));
        let now = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let a: IpAddr = "2001:db8:5:6::1".parse().unwrap();
        let b: IpAddr = "2001:db8:5:6:dead:beef:0:2".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:5:7::1".parse().unwrap();
        for _ in 0..3 {
            assert!(limited(&st, a, &now).is_none());
        }
        // Another address of the same /64 is the same client: over the limit.
        let r = limited(&st, b, &now).expect("b shares a's bucket");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        // The next /64 has its own.
        assert!(limited(&st, elsewhere, &now).is_none());
    }
}
