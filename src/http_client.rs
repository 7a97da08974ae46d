//! A minimal HTTP/1.1 client for the node's control API on loopback (plain `http://`)
//! or on its Unix domain socket.
//! Seed directories, which sit behind TLS, are reached with
//! [`crate::directory_client`].

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// Largest response read.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host:port/...`.
    #[error("bad URL `{0}` (expected http://host:port/path)")]
    BadUrl(String),
    /// Connecting failed (nothing was sent).
    #[error("connect: {0}")]
    Connect(String),
    /// Talking failed.
    #[error("HTTP: {0}")]
    Io(String),
}

/// A response: status, `Retry-After` if any, body.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
    /// Body bytes.
    pub body: Bytes,
}

/// Sends one request and reads the whole response (capped).
pub async fn send(
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<HttpResponse, HttpError> {
    send_authorized(method, url, body, None).await
}

/// [`send`] with `Authorization: Bearer <bearer>` when `bearer` is given (the control
/// API's token).
pub async fn send_authorized(
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
    bearer: Option<&str>,
) -> Result<HttpResponse, HttpError> {
    let uri: Uri = url.parse().map_err(|_| HttpError::BadUrl(url.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(HttpError::BadUrl(url.into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| HttpError::BadUrl(url.into()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| HttpError::Connect(format!("{host}:{port}: {e}")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    exchange(
        stream,
        &format!("{host}:{port}"),
        &path,
        method,
        body,
        bearer,
    )
    .await
}

/// [`send_authorized`] over the Unix domain socket at `socket` (the control API's
/// `control.sock`), with `Host: localhost`; `path` is the request's path.
#[cfg(unix)]
pub async fn send_unix(
    socket: &std::path::Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    bearer: Option<&str>,
) -> Result<HttpResponse, HttpError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| HttpError::Connect(format!("{}: {e}", socket.display())))?;
    exchange(stream, "localhost", path, method, body, bearer).await
}

/// One request on `stream` and its whole response (capped).
async fn exchange<S>(
    stream: S,
    host: &str,
    path: &str,
    method: Method,
    body: Option<Vec<u8>>,
    bearer: Option<&str>,
) -> Result<HttpResponse, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?;
    let conn_task = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| HttpError::Io(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| HttpError::Io(e.to_string()))?
        .to_bytes();
    conn_task.abort();
    Ok(HttpResponse {
        status,
        retry_after,
        body,
    })
}
