//! Serving HTTP/1.1 with bounds: what the seed directory, the metrics endpoint and the
//! control API run on instead of a plain `axum::serve`.
//!
//! - **Header timeout**: a connection must deliver a complete request head within
//!   [`HttpLimits::header_timeout`] of being accepted, or of the previous response (an
//!   idle keep-alive connection is closed by the same timer). A client that trickles a
//!   header (slowloris) is disconnected.
//! - **Request timeout**: a request (reading its body and running its handler) gets
//!   [`HttpLimits::request_timeout`]; past it the answer is `503` with
//!   `E_TRANSPORT_UNAVAILABLE` and the connection closes.
//! - **Connection lifetime**: after [`HttpLimits::connection_lifetime`] a connection is
//!   asked to close after its current request (graceful), and dropped
//!   [`HttpLimits::request_timeout`] later if it has not (a client that stops reading its
//!   response).
//! - **Head size**: a request head over [`MAX_BUF_BYTES`] (64 KiB) gets `431`.
//! - **Connection caps**: at most [`HttpLimits::max_connections`] connections at once,
//!   and at most [`HttpLimits::max_connections_per_client`] from one client (an IPv4
//!   address or an IPv6 /64, see [`client_key`]). A connection over a cap is closed at
//!   once, before anything is read, so it costs one accept.
//!
//! Handlers that want the client address use `ConnectInfo<SocketAddr>` as with axum's
//! `into_make_service_with_connect_info`. [`serve`] takes a TCP listener or, on Unix, a
//! Unix domain socket ([`Listener`]), whose clients all count as one (`127.0.0.1:0`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mesh_core::{ErrorCode, IpKey, MeshError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A connection's read and write buffer: also the largest request head (a larger one
/// gets `431`). Bounds the memory a server's connections can pin to
/// `max_connections` × 64 KiB, against hyper's default of about 400 KiB each.
pub const MAX_BUF_BYTES: usize = 64 * 1024;

/// The bounds of one HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time allowed for a complete request head (also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Time allowed for a request: reading its body and producing the response; and
    /// the longest a response may wait for the client to take any of it
    /// (`http_stall`).
    pub request_timeout: Duration,
    /// Age at which a connection is asked to close (then dropped after another
    /// `request_timeout`).
    pub connection_lifetime: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client (IPv4 address or IPv6 /64).
    pub max_connections_per_client: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            connection_lifetime: Duration::from_secs(300),
            max_connections: 256,
            max_connections_per_client: 32,
        }
    }
}

/// `[http]` in the node configuration: the bounds of the node's HTTP servers (the seed
/// directory, metrics and, except for its request timeout, the control API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// [`HttpLimits::header_timeout`], seconds.
    pub header_timeout_secs: u64,
    /// [`HttpLimits::request_timeout`], seconds.
    pub request_timeout_secs: u64,
    /// [`HttpLimits::connection_lifetime`], seconds.
    pub connection_secs: u64,
    /// [`HttpLimits::max_connections`], per server.
    pub max_connections: usize,
    /// [`HttpLimits::max_connections_per_client`].
    pub max_connections_per_client: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let d = HttpLimits::default();
        HttpSettings {
            header_timeout_secs: d.header_timeout.as_secs(),
            request_timeout_secs: d.request_timeout.as_secs(),
            connection_secs: d.connection_lifetime.as_secs(),
            max_connections: d.max_connections,
            max_connections_per_client: d.max_connections_per_client,
        }
    }
}

impl HttpSettings {
    /// Why these settings cannot be used, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if !(1..=300).contains(&self.header_timeout_secs)
            || !(1..=3600).contains(&self.request_timeout_secs)
            || !(1..=86_400).contains(&self.connection_secs)
        {
            return Some(format!(
                "http: header_timeout_secs ({}) must be within 1..=300, request_timeout_secs ({}) within 1..=3600, connection_secs ({}) within 1..=86400",
                self.header_timeout_secs, self.request_timeout_secs, self.connection_secs
            ));
        }
        if !(1..=65_536).contains(&self.max_connections)
            || self.max_connections_per_client == 0
            || self.max_connections_per_client > self.max_connections
        {
            return Some(format!(
                "http: need 0 < max_connections_per_client ({}) <= max_connections ({}) <= 65536",
                self.max_connections_per_client, self.max_connections
            ));
        }
        None
    }

    /// The limits of a server open to any client (directory, metrics).
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            connection_lifetime: Duration::from_secs(self.connection_secs),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
        }
    }
}

/// The key a client is counted and rate-limited under: an IPv4 address as is (an
/// IPv4-mapped IPv6 address as its IPv4 address), an IPv6 address by its /64 (the
/// prefix one subscriber gets; the low 64 bits are the host's to choose freely). The
/// same key as the relay's and the mesh DHT's per-network limits ([`IpKey`]).
pub fn client_key(ip: IpAddr) -> IpKey {
    IpKey::of(ip)
}

pub use crate::http_conns::{Admitted, ConnId, ConnTable};

/// A counted connection; released when dropped.
struct Slot {
    table: Arc<Mutex<ConnTable>>,
    id: ConnId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).release(self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where [`serve`] takes its connections from.
pub trait Listener: Send + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection, and the client address its requests see as `ConnectInfo`
    /// (and are counted under).
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;

    /// Whether the client of `io` (at `peer`) is on this host: a loopback address, or
    /// the very address it reached (the kernel sends from the address dialed when that
    /// is one of the host's own). Requests carry it as [`OnThisHost`].
    fn on_this_host(io: &Self::Io, peer: SocketAddr) -> bool {
        let _ = io;
        is_loopback(peer.ip())
    }
}

/// Whether a request's client is on this host (see [`Listener::on_this_host`]): a web
/// page in a browser here, say, whose name was rebound to one of the host's addresses,
/// loopback or not. Every request [`serve`] answers carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnThisHost(pub bool);

/// Whether `ip` is a loopback address, an IPv4 one mapped into IPv6 included.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.is_loopback()
        || matches!(ip, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

impl Listener for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn on_this_host(io: &Self::Io, peer: SocketAddr) -> bool {
        let own = |ip: std::net::IpAddr| match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        is_loopback(peer.ip())
            || io
                .local_addr()
                .is_ok_and(|local| own(local.ip()) == own(peer.ip()))
    }
}

/// A Unix domain socket's clients have no address: they all count as `127.0.0.1:0`.
#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((stream, SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    fn on_this_host(_: &Self::Io, _: SocketAddr) -> bool {
        true
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting, lets open connections finish their current request (at most
/// `request_timeout`) and returns.
pub async fn serve<L: Listener>(
    listener: L,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Arc::new(Mutex::new(ConnTable::new(
        limits.max_connections,
        limits.max_connections_per_client,
    )));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    // Each counted connection's task, to close one that gives way to a newcomer.
    let mut tasks: HashMap<ConnId, tokio::task::AbortHandle> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: keep serving,
                // but do not spin while the process is out of descriptors.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = lock(&table).admit(client_key(peer.ip()));
        let Some(Admitted { id, evicts }) = admitted else {
            tracing::debug!(%peer, "connection over the cap closed");
            drop(stream);
            continue;
        };
        if let Some(task) = evicts.and_then(|e| tasks.remove(&e)) {
            tracing::debug!(%peer, "connection cap: the newest of the largest network group closed for a newcomer");
            task.abort();
        }
        let slot = Slot {
            table: table.clone(),
            id,
        };
        let on_host = OnThisHost(L::on_this_host(&stream, peer));
        let task = conns.spawn(connection(
            stream,
            (peer, on_host),
            app.clone(),
            limits,
            stop_rx.clone(),
            slot,
        ));
        // Finished tasks' handles go (at most `max_connections` are held, plus those
        // ended since the last accept).
        tasks.retain(|_, t| !t.is_finished());
        tasks.insert(id, task);
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(limits.request_timeout, drain).await;
    conns.abort_all();
    Ok(())
}

/// The answer to a request that overran `request_timeout`.
fn timed_out(after: Duration) -> Response {
    let e = MeshError::new(
        ErrorCode::TransportUnavailable,
        format!("the request did not complete within {} s", after.as_secs()),
    );
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(e.to_json())).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    (peer, on_host): (SocketAddr, OnThisHost),
    app: Router,
    limits: HttpLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    _slot: Slot,
) {
    let inner = TowerToHyperService::new(app);
    let request_timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(on_host);
        let answer = hyper::service::Service::call(&inner, req);
        async move {
            match tokio::time::timeout(request_timeout, answer).await {
                Ok(Ok(r)) => Ok::<_, Infallible>(r),
                Ok(Err(never)) => match never {},
                Err(_) => Ok(timed_out(request_timeout)),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The buffer bound alone is checked only while a head is incomplete, so a head
        // that arrives in one large read could pass it: the head size is bounded too.
        .max_header_size(MAX_BUF_BYTES)
        .max_buf_size(MAX_BUF_BYTES);
    let stream = crate::http_stall::WriteStall::new(stream, request_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.connection_lifetime);
    tokio::pin!(deadline);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + request_timeout);
            }
            () = &mut deadline => {
                if closing {
                    tracing::debug!(%peer, "HTTP connection dropped after its lifetime");
                    return;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + request_timeout);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = client_key(ip("2001:db8:1:2:aaaa::1"));
        let b = client_key(ip("2001:db8:1:2:ffff:eeee:dddd:cccc"));
        let other = client_key(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_ne!(a, other);
    }

    #[test]
    fn ipv4_clients_are_keyed_by_their_address() {
        assert_eq!(client_key(ip("192.0.2.7")).to_string(), "192.0.2.7");
        assert_ne!(client_key(ip("192.0.2.7")), client_key(ip("192.0.2.8")));
        // An IPv4 client on a dual-stack socket is the same client.
        assert_eq!(
            client_key(ip("::ffff:192.0.2.7")),
            client_key(ip("192.0.2.7"))
        );
    }
}
