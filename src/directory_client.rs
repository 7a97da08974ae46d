//! The seed directory's HTTP client (`meshd advert publish --to URL`, `meshd advert
//! lookup --from URL`): `https://` (and plain `http://` for a directory on loopback or a
//! private network) through reqwest with rustls. Servers are checked against the web PKI
//! roots (Mozilla's, compiled in) plus any extra roots given as PEM files
//! (`--tls-root`, for a private CA). Responses are read up to
//! [`MAX_RESPONSE_BYTES`]; connecting and the whole exchange have timeouts; redirects
//! are not followed (reported as the status they are); proxies come from the usual
//! `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` environment variables, as with curl.
//!
//! The control API's loopback client stays in [`crate::http_client`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use mesh_core::{ErrorCode, MeshError};

/// Largest response body read, bytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Largest `--tls-root` file read, bytes.
pub const MAX_ROOTS_FILE_BYTES: u64 = 1024 * 1024;
/// Connecting (TCP and TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole request, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a directory request failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryClientError {
    /// The URL is not `https://host[:port]/…` or `http://host[:port]/…`.
    #[error("bad directory URL `{0}` (expected https://host[:port] or http://host[:port])")]
    BadUrl(String),
    /// A `--tls-root` file cannot be read or holds no PEM certificate.
    #[error("TLS root {path}: {reason}")]
    Roots {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The server's certificate was refused (unknown issuer, another name, expired).
    #[error("{0}")]
    Certificate(String),
    /// Connecting, the TLS handshake, or the exchange failed.
    #[error("{0}")]
    Transport(String),
    /// The response body is larger than [`MAX_RESPONSE_BYTES`].
    #[error("response from {url} larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge {
        /// The URL asked.
        url: String,
    },
}

impl DirectoryClientError {
    /// The frozen error code: a refused certificate is a rejected transport, a failed
    /// connection an unavailable one, a bad URL, roots file or answer invalid input.
    pub fn code(&self) -> ErrorCode {
        match self {
            DirectoryClientError::Certificate(_) => ErrorCode::TransportRejected,
            DirectoryClientError::Transport(_) => ErrorCode::TransportUnavailable,
            DirectoryClientError::BadUrl(_)
            | DirectoryClientError::Roots { .. }
            | DirectoryClientError::TooLarge { .. } => ErrorCode::ProtoInvalid,
        }
    }
}

impl From<DirectoryClientError> for MeshError {
    fn from(e: DirectoryClientError) -> Self {
        MeshError::new(e.code(), e.to_string())
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct DirectoryResponse {
    /// Status code.
    pub status: StatusCode,
    /// Body bytes (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Bytes,
}

/// A client for seed directories.
#[derive(Debug, Clone)]
pub struct DirectoryClient {
    client: reqwest::Client,
}

/// Whether `s` is a directory URL (rather than a multiaddr).
pub fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

fn read_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, DirectoryClientError> {
    let err = |reason: String| DirectoryClientError::Roots {
        path: path.to_owned(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_ROOTS_FILE_BYTES {
        return Err(err(format!("larger than {MAX_ROOTS_FILE_BYTES} bytes")));
    }
    let pem =
        mesh_core::read_file_capped(path, MAX_ROOTS_FILE_BYTES).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// `e` and its sources, joined: reqwest's own message names only the URL, the reason
/// (a refused connection, an unknown issuer) is in the sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A transport error, with a hint for the TLS failure an operator meets first (a
/// private CA not given).
fn transport(e: &reqwest::Error) -> DirectoryClientError {
    let mut text = error_chain(e);
    if text.contains("UnknownIssuer") {
        text.push_str(
            " (the server's certificate is not signed by a trusted root: for a private CA \
             pass its certificate with --tls-root FILE)",
        );
    }
    if e.is_timeout() {
        text.push_str(" (timed out)");
    }
    if text.contains("invalid peer certificate") {
        DirectoryClientError::Certificate(text)
    } else {
        DirectoryClientError::Transport(text)
    }
}

impl DirectoryClient {
    /// A client trusting the web PKI roots and the certificates in `extra_roots` (PEM
    /// files, each one or more certificates).
    pub fn new(extra_roots: &[PathBuf]) -> Result<Self, DirectoryClientError> {
        Self::build(extra_roots, true)
    }

    /// [`DirectoryClient::new`]; `env_proxies` false ignores the proxy variables (tests).
    fn build(extra_roots: &[PathBuf], env_proxies: bool) -> Result<Self, DirectoryClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("meshd/", env!("CARGO_PKG_VERSION")));
        if !env_proxies {
            builder = builder.no_proxy();
        }
        for path in extra_roots {
            for cert in read_roots(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| DirectoryClientError::Transport(error_chain(&e)))?;
        Ok(DirectoryClient { client })
    }

    /// Sends one request (`body` as JSON) and reads the response, capped.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<DirectoryResponse, DirectoryClientError> {
        let parsed: reqwest::Url = url
            .parse()
            .map_err(|_| DirectoryClientError::BadUrl(url.into()))?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
            return Err(DirectoryClientError::BadUrl(url.into()));
        }
        let mut req = self.client.request(method, parsed);
        if let Some(b) = body {
            req = req
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let mut resp = req.send().await.map_err(|e| transport(&e))?;
        let status = resp.status();
        let too_large = || DirectoryClientError::TooLarge { url: url.into() };
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(DirectoryResponse {
            status,
            body: Bytes::from(body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_multiaddrs() {
        assert!(is_url("https://dir.example.org"));
        assert!(is_url("http://127.0.0.1:8080/"));
        assert!(!is_url("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW"));
        assert!(!is_url("ftp://example.org"));
    }

    #[test]
    fn a_roots_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, b"not a certificate\n").unwrap();
        let e = DirectoryClient::new(&[p]).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = DirectoryClient::new(&[dir.path().join("missing.pem")]).unwrap_err();
        assert!(matches!(e, DirectoryClientError::Roots { .. }), "{e}");
    }

    /// A loopback server answering every connection with `head` then `body_len` bytes
    /// (at most `conns` connections); its URL.
    async fn serve_once(head: String, body_len: usize, conns: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/adv/x", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for _ in 0..conns {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(head.as_bytes()).await;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            }
        });
        url
    }

    #[tokio::test]
    async fn answers_over_the_cap_are_refused() {
        let c = DirectoryClient::build(&[], false).unwrap();
        // Announced too large: refused before reading.
        let big = MAX_RESPONSE_BYTES + 1;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {big}\r\n\r\n");
        let url = serve_once(head, 0, 1).await;
        let e = c.send(Method::GET, &url, None).await.unwrap_err();
        assert!(matches!(e, DirectoryClientError::TooLarge { .. }), "{e}");
        assert_eq!(MeshError::from(e).code, ErrorCode::ProtoInvalid);
        // Unannounced (read to the end of the connection): cut at the cap.
        let head = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned();
        let url = serve_once(head, big, 1).await;
        let e = c.send(Method::GET, &url, None).await.unwrap_err();
        assert!(matches!(e, DirectoryClientError::TooLarge { .. }), "{e}");
        // At the cap: read whole.
        let head = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned();
        let url = serve_once(head, MAX_RESPONSE_BYTES, 1).await;
        let r = c.send(Method::GET, &url, None).await.unwrap();
        assert_eq!(r.body.len(), MAX_RESPONSE_BYTES);
    }

    #[tokio::test]
    async fn a_refused_connection_is_transport_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/adv/x", listener.local_addr().unwrap());
        drop(listener);
        let c = DirectoryClient::build(&[], false).unwrap();
        let e = c.send(Method::GET, &url, None).await.unwrap_err();
        assert_eq!(MeshError::from(e).code, ErrorCode::TransportUnavailable);
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let c = DirectoryClient::build(&[], false).unwrap();
        let e = c.send(Method::GET, "ftp://example.org/adv/x", None).await;
        assert!(matches!(e, Err(DirectoryClientError::BadUrl(_))));
    }
}
