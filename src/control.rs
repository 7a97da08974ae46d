//! HTTP for a running node: the control API (loopback only; `meshd status`, `peers`,
//! `lookup`, `dial`, `marker send` use it) and the metrics endpoint (Prometheus text at
//! `/metrics`, `/status` JSON).
//!
//! Every control request needs `Authorization: Bearer <token>` (the token is in
//! `<data-dir>/control.token`, mode 0600), the served address as `Host` and no foreign
//! `Origin`: see [`crate::control_auth`]. Both servers run on [`crate::http_serve`]
//! (header and request timeouts, connection caps).
//!
//! Control API (JSON in and out; errors are `{"error/code", "error/class", "detail"}`
//! with a frozen code):
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /status` | | the node's status |
//! | `GET /peers` | | connected peers |
//! | `POST /dial` | `{"target": NODE_ID or PEER_ID or MULTIADDR}` | `{"peer_id"}` |
//! | `POST /lookup` | `{"node_id", "fresh": skip the store}` | addresses, advertisement, source |
//! | `POST /publish` | | `{"sequence_no"}` |
//! | `POST /withdraw` | | `{"sequence_no", "withdrawal", "sent_to_peers", "dht_put"}` |
//! | `POST /marker` | `{"target", "text"}` | `{"message_id"}` once accepted |
//! | `POST /subscribe` | `{"topic"}` | `{"subscribed"}` |
//! | `POST /gossip` | `{"topic", "data"}` | `{"message_id"}` |
//! | `POST /connect` | `{"node_id"}` | the route: path (`existing`, `direct`, `signaling`, `relay`), timings per stage |
//! | `POST /swarm/join` | `{"key": 64 hex digits or a name}` | `{"swarm", "joined", "cid"}` |
//! | `POST /swarm/leave` | `{"key"}` | `{"swarm", "left"}` |
//! | `POST /swarm/members` | `{"key"}` | `{"swarm", "members": [{"node", "addrs", "expires_at"}]}` |
//! | `POST /swarm/marker` | `{"key", "text"}` | `{"swarm", "message_id"}` once published on the swarm's topic |
//! | `POST /signal` | `{"node_id", "data_b64", "content_type"?}` | `{"correlation"}` once the setup payload went out |

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use libp2p::metrics::Registry;
use mesh_core::{ErrorCode, MeshError, NodeId};
use serde::Deserialize;
use serde_json::json;

use crate::control_auth::ControlAuth;
use crate::http_serve::{HttpLimits, HttpSettings};
use crate::node::{NodeHandle, Target};
use mesh_signal::group::DiscoveryKey;

/// The file in the data directory that holds the control API's address while a node
/// runs (mode 0600, like the token beside it).
pub const CONTROL_FILE: &str = "control.addr";

/// The control API's request timeout: longer than a node command's own
/// ([`crate::node::COMMAND_TIMEOUT`], 30 s), so a slow command ends with the node's coded
/// answer rather than a cut connection, and shorter than the CLI's 60 s wait.
pub const CONTROL_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// The control API's bounds: `[http]`'s header timeout, lifetime and connection cap,
/// [`CONTROL_REQUEST_TIMEOUT`], and no per-client cap below the total (every client is
/// on loopback, so all share one key).
pub fn control_limits(http: &HttpSettings) -> HttpLimits {
    HttpLimits {
        request_timeout: CONTROL_REQUEST_TIMEOUT,
        max_connections_per_client: http.max_connections,
        ..http.limits()
    }
}

/// Request bodies larger than this are refused.
pub const MAX_BODY: usize = 64 * 1024;

/// A coded failure as an HTTP response.
struct ApiError(MeshError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.code {
            ErrorCode::ProtoInvalid | ErrorCode::ProtoVersion => StatusCode::BAD_REQUEST,
            ErrorCode::TransportUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TransportRejected => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        (status, Json(self.0.to_json())).into_response()
    }
}

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> Self {
        ApiError(e)
    }
}

impl From<crate::node::HandleError> for ApiError {
    fn from(e: crate::node::HandleError) -> Self {
        ApiError(e.into())
    }
}

type ApiResult = Result<Json<serde_json::Value>, ApiError>;

fn to_value<T: serde::Serialize>(v: &T) -> ApiResult {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError(MeshError::invalid(format!("encode: {e}"))))
}

#[derive(Deserialize)]
struct DialBody {
    target: String,
}

#[derive(Deserialize)]
struct LookupBody {
    node_id: String,
    #[serde(default)]
    fresh: bool,
}

#[derive(Deserialize)]
struct MarkerBody {
    target: String,
    text: String,
}

#[derive(Deserialize)]
struct TopicBody {
    topic: String,
    #[serde(default)]
    data: String,
}

async fn status(State(h): State<NodeHandle>) -> ApiResult {
    to_value(&h.status().await?)
}

async fn peers(State(h): State<NodeHandle>) -> ApiResult {
    to_value(&h.peers().await?)
}

async fn dial(State(h): State<NodeHandle>, Json(b): Json<DialBody>) -> ApiResult {
    let target: Target = b.target.parse()?;
    let peer = h.dial(target).await?;
    Ok(Json(json!({"peer_id": peer.to_string()})))
}

async fn lookup(State(h): State<NodeHandle>, Json(b): Json<LookupBody>) -> ApiResult {
    let node = NodeId::parse(&b.node_id)
        .map_err(|e| MeshError::invalid(format!("node id {}: {e}", b.node_id)))?;
    let found = if b.fresh {
        h.lookup_fresh(node).await?
    } else {
        h.lookup(node).await?
    };
    to_value(&found)
}

async fn publish(State(h): State<NodeHandle>) -> ApiResult {
    let seq = h.publish().await?;
    Ok(Json(json!({"sequence_no": seq})))
}

async fn withdraw(State(h): State<NodeHandle>) -> ApiResult {
    to_value(&h.withdraw().await?)
}

async fn marker(State(h): State<NodeHandle>, Json(b): Json<MarkerBody>) -> ApiResult {
    let target: Target = b.target.parse()?;
    let id = h.send_marker(target, b.text).await?;
    Ok(Json(json!({"message_id": id})))
}

#[derive(Deserialize)]
struct SwarmMarkerBody {
    key: String,
    text: String,
}

async fn swarm_marker(State(h): State<NodeHandle>, Json(b): Json<SwarmMarkerBody>) -> ApiResult {
    let key = DiscoveryKey::parse(&b.key);
    let id = h.send_swarm_marker(key, b.text).await?;
    Ok(Json(json!({"swarm": key.to_hex(), "message_id": id})))
}

async fn subscribe(State(h): State<NodeHandle>, Json(b): Json<TopicBody>) -> ApiResult {
    let new = h.subscribe(b.topic).await?;
    Ok(Json(json!({"subscribed": new})))
}

async fn gossip(State(h): State<NodeHandle>, Json(b): Json<TopicBody>) -> ApiResult {
    let id = h.publish_topic(b.topic, b.data.into_bytes()).await?;
    Ok(Json(json!({"message_id": id})))
}

#[derive(Deserialize)]
struct NodeBody {
    node_id: String,
}

#[derive(Deserialize)]
struct SwarmBody {
    key: String,
}

#[derive(Deserialize)]
struct SignalBody {
    node_id: String,
    /// The payload, base64.
    data_b64: String,
    #[serde(default)]
    content_type: Option<String>,
}

fn node_id(s: &str) -> Result<NodeId, ApiError> {
    NodeId::parse(s).map_err(|e| ApiError(MeshError::invalid(format!("node id {s}: {e}"))))
}

async fn connect(State(h): State<NodeHandle>, Json(b): Json<NodeBody>) -> ApiResult {
    to_value(&h.connect(node_id(&b.node_id)?).await?)
}

async fn swarm_join(State(h): State<NodeHandle>, Json(b): Json<SwarmBody>) -> ApiResult {
    let key = DiscoveryKey::parse(&b.key);
    let new = h.join_swarm(key).await?;
    Ok(Json(
        json!({"swarm": key.to_hex(), "joined": new, "cid": key.amino_cid_text()}),
    ))
}

async fn swarm_leave(State(h): State<NodeHandle>, Json(b): Json<SwarmBody>) -> ApiResult {
    let key = DiscoveryKey::parse(&b.key);
    let left = h.leave_swarm(key).await?;
    Ok(Json(json!({"swarm": key.to_hex(), "left": left})))
}

async fn swarm_members(State(h): State<NodeHandle>, Json(b): Json<SwarmBody>) -> ApiResult {
    let key = DiscoveryKey::parse(&b.key);
    let members = h.swarm_members(key).await?;
    Ok(Json(json!({"swarm": key.to_hex(), "members": members})))
}

async fn signal(State(h): State<NodeHandle>, Json(b): Json<SignalBody>) -> ApiResult {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(&b.data_b64)
        .map_err(|e| ApiError(MeshError::invalid(format!("data_b64: {e}"))))?;
    let corr = h
        .send_signal(node_id(&b.node_id)?, data, b.content_type)
        .await?;
    Ok(Json(json!({"correlation": corr})))
}

async fn relay_grants(State(h): State<NodeHandle>) -> ApiResult {
    let grants = h.relay_grants().await?;
    Ok(Json(json!({"grants": grants})))
}

async fn relay_revoke(State(h): State<NodeHandle>, Json(b): Json<NodeBody>) -> ApiResult {
    let node = node_id(&b.node_id)?;
    let revoked = h.relay_revoke(node).await?;
    Ok(Json(json!({"node": node.to_string(), "revoked": revoked})))
}

/// The control API's router; every request must pass `auth` (token, `Host`, `Origin`).
pub fn control_router(handle: NodeHandle, auth: ControlAuth) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/peers", get(peers))
        .route("/dial", post(dial))
        .route("/lookup", post(lookup))
        .route("/publish", post(publish))
        .route("/withdraw", post(withdraw))
        .route("/marker", post(marker))
        .route("/subscribe", post(subscribe))
        .route("/gossip", post(gossip))
        .route("/connect", post(connect))
        .route("/swarm/join", post(swarm_join))
        .route("/swarm/leave", post(swarm_leave))
        .route("/swarm/members", post(swarm_members))
        .route("/swarm/marker", post(swarm_marker))
        .route("/signal", post(signal))
        .route("/relay/grants", get(relay_grants))
        .route("/relay/revoke", post(relay_revoke))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::control_auth::require,
        ))
        .with_state(handle)
}

#[derive(Clone)]
struct MetricsState {
    status: crate::status_cache::SharedStatus,
    metrics: crate::status_cache::SharedMetrics,
}

async fn metrics(State(s): State<MetricsState>) -> Response {
    match s.metrics.get().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn metrics_status(State(s): State<MetricsState>) -> ApiResult {
    to_value(&s.status.get().await?)
}

/// The metrics router: `/metrics` and `/status` (the registry encoded and the node asked
/// at most once a second, see [`crate::status_cache`]).
pub fn metrics_router(handle: NodeHandle, registry: Arc<Mutex<Registry>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(metrics_status))
        .with_state(MetricsState {
            status: crate::status_cache::SharedStatus::new(handle),
            metrics: crate::status_cache::SharedMetrics::new(registry),
        })
}

/// Where a node with data directory `dir` publishes its control address.
pub fn control_file(dir: &Path) -> PathBuf {
    dir.join(CONTROL_FILE)
}
