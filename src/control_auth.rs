//! Who may use the control API: a local process of the node's user, not every local
//! process and not a web page.
//!
//! - **Token.** `meshd run` draws 32 random bytes at every start and writes them, as 64
//!   hex digits, to `<data-dir>/control.token`, created with mode 0600 (never readable
//!   by others, not even for a moment). Every request carries `Authorization: Bearer
//!   <token>`; the comparison takes the same time wherever the first difference is. A
//!   request without it, or with another, gets `401` and `E_TRANSPORT_REJECTED`.
//! - **Host.** The `Host` header must be the address served (`127.0.0.1:PORT`, or
//!   `[::1]:PORT`) or `localhost:PORT`: a page whose DNS name was rebound to loopback
//!   sends its own name and gets `403`.
//! - **Origin.** A request with an `Origin` other than the control API's own (every
//!   browser request from a page of another site) gets `403`, so a cross-origin "simple"
//!   `POST` from a web page does nothing. Command-line clients send no `Origin`.
//!
//! `control.addr` is written with mode 0600 as well; both files are removed on a clean
//! stop (Ctrl-C or SIGTERM).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mesh_core::{ErrorCode, MeshError};
use rand_core::RngCore as _;

/// The file in the data directory that holds the control API's token while a node runs.
pub const TOKEN_FILE: &str = "control.token";

/// Where a node with data directory `dir` keeps its control token.
pub fn token_file(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// A fresh token: 32 random bytes from the operating system, as 64 hex digits.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Writes `text` to `path` atomically, readable and writable by the owner only: a
/// temporary file created with mode 0600 (on Unix) before any byte is written, then
/// renamed over `path` (so a file left by an earlier run, whatever its mode, is
/// replaced, and a reader never sees half a file).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "control".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    // A temporary file left by a crashed process with the same pid.
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the token of the node whose data directory is `dir`: a regular file (never
/// through a symlink) holding a token as [`generate_token`] makes them, nothing else.
/// Root may run the CLI against a data dir another user owns (a service's), whose owner
/// could otherwise make `control.token` a link to any one-line secret of root's, which
/// the CLI would then send to a listener of theirs.
pub fn read_token(dir: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = opts.open(token_file(dir))?;
    if !file.metadata()?.is_file() {
        return Err(invalid("control.token is not a regular file"));
    }
    let mut text = String::new();
    file.take(256).read_to_string(&mut text)?;
    let token = text.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("control.token does not hold a control token"));
    }
    Ok(token.to_owned())
}

/// What the control API checks on every request.
#[derive(Debug, Clone)]
pub struct ControlAuth {
    token: String,
    host: LoopbackHost,
    /// The API's own origin; `None`: every `Origin` is refused.
    origin: Option<String>,
}

/// The `Host` rule of a server on a loopback address: the address served
/// (`127.0.0.1:PORT`, `[::1]:PORT`) or `localhost:PORT`, nothing else. A page whose DNS
/// name was rebound to loopback sends its own name and gets `403`. The control API
/// applies it, and so do the web page's and the metrics' servers when they are bound to
/// loopback ([`require_host`]).
#[derive(Debug, Clone)]
pub struct LoopbackHost {
    host: String,
    localhost: String,
    what: &'static str,
}

impl LoopbackHost {
    /// The rule for `what` (a name for the refusal: "the control API") served on
    /// `served`.
    pub fn new(served: SocketAddr, what: &'static str) -> Self {
        LoopbackHost {
            host: served.to_string(),
            localhost: format!("localhost:{}", served.port()),
            what,
        }
    }

    /// Whether a request with these headers names the address served (pure).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let served =
            |h: &str| h.eq_ignore_ascii_case(&self.host) || h.eq_ignore_ascii_case(&self.localhost);
        if host.is_some_and(served) {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "Host {:?} is not {}'s address {}",
                host.unwrap_or(""),
                self.what,
                self.host
            ),
        ))
    }
}

/// The middleware that applies [`LoopbackHost::check`]
/// (`axum::middleware::from_fn_with_state`).
pub async fn require_host(State(rule): State<LoopbackHost>, req: Request, next: Next) -> Response {
    match rule.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(detail = %refusal.error, "request refused");
            refusal.into_response()
        }
    }
}

/// Why a request was refused: its status and coded error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `401` (token) or `403` (`Host`, `Origin`).
    pub status: StatusCode,
    /// Always `E_TRANSPORT_REJECTED`.
    pub error: MeshError,
}

impl Refusal {
    /// `403` with `detail`.
    pub fn forbidden(detail: String) -> Self {
        Refusal::new(StatusCode::FORBIDDEN, detail)
    }

    fn new(status: StatusCode, detail: String) -> Self {
        Refusal {
            status,
            error: MeshError::new(ErrorCode::TransportRejected, detail),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut r = (self.status, axum::Json(self.error.to_json())).into_response();
        if unauthorized {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// `a == b` in a time that depends on the lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl ControlAuth {
    /// Checks for the API served on `served` with `token`.
    pub fn new(token: String, served: SocketAddr) -> Self {
        ControlAuth {
            token,
            host: LoopbackHost::new(served, "the control API"),
            origin: Some(format!("http://{served}")),
        }
    }

    /// Checks for the API served on the Unix domain socket with `token`: `Host` must be
    /// `localhost` (what the CLI sends; a browser cannot reach a Unix socket, but a
    /// local proxy could forward a page's request to it) and any `Origin` is refused.
    pub fn for_socket(token: String) -> Self {
        ControlAuth {
            token,
            host: LoopbackHost {
                host: "localhost".into(),
                localhost: "localhost".into(),
                what: "the control API's socket",
            },
            origin: None,
        }
    }

    /// Whether a request with these headers may use the API (pure: no I/O).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        self.host.check(headers)?;
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ok = origin.to_str().is_ok_and(|o| {
                self.origin
                    .as_deref()
                    .is_some_and(|own| o.eq_ignore_ascii_case(own))
            });
            if !ok {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "requests from web pages ({}) are refused",
                        String::from_utf8_lossy(origin.as_bytes())
                    ),
                ));
            }
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii);
        match presented {
            Some(t) if same_secret(t, self.token.as_bytes()) => Ok(()),
            Some(_) => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!("wrong control token (the node's is in <data-dir>/{TOKEN_FILE})"),
            )),
            None => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "the control API needs `Authorization: Bearer <token>` (in <data-dir>/{TOKEN_FILE})"
                ),
            )),
        }
    }
}

/// The middleware that applies [`ControlAuth::check`] (`axum::middleware::from_fn_with_state`).
pub async fn require(State(auth): State<ControlAuth>, req: Request, next: Next) -> Response {
    match auth.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(detail = %refusal.error, "control request refused");
            refusal.into_response()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The CLI reads a token from a regular file that holds one, never through a
    /// symlink (to a secret of root's, say) nor what is not a token.
    #[test]
    fn a_token_is_read_only_from_a_regular_file_that_holds_one() {
        let d = tempfile::tempdir().unwrap();
        let token = generate_token();
        write_private(&token_file(d.path()), &format!("{token}\n")).unwrap();
        assert_eq!(read_token(d.path()).unwrap(), token);
        write_private(&token_file(d.path()), "root's other secret\n").unwrap();
        assert!(read_token(d.path()).is_err());
        #[cfg(unix)]
        {
            let secret = d.path().join("secret");
            std::fs::write(&secret, format!("{token}\n")).unwrap();
            std::fs::remove_file(token_file(d.path())).unwrap();
            std::os::unix::fs::symlink(&secret, token_file(d.path())).unwrap();
            assert!(read_token(d.path()).is_err(), "read through a symlink");
        }
    }

    fn auth() -> ControlAuth {
        ControlAuth::new("ab".repeat(32), "127.0.0.1:7000".parse().unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn status(h: &[(&str, &str)]) -> Option<StatusCode> {
        match auth().check(&headers(h)) {
            Ok(()) => None,
            Err(r) => {
                assert_eq!(r.error.code, ErrorCode::TransportRejected);
                Some(r.status)
            }
        }
    }

    #[test]
    fn the_right_token_and_host_pass() {
        let bearer = format!("Bearer {}", "ab".repeat(32));
        assert_eq!(
            status(&[("host", "127.0.0.1:7000"), ("authorization", &bearer)]),
            None
        );
        assert_eq!(
            status(&[("host", "localhost:7000"), ("authorization", &bearer)]),
            None
        );
        // The API's own origin is not foreign.
        assert_eq!(
            status(&[
                ("host", "127.0.0.1:7000"),
                ("origin", "http://127.0.0.1:7000"),
                ("authorization", &bearer)
            ]),
            None
        );
    }

    #[test]
    fn a_missing_or_wrong_token_is_401() {
        let host = ("host", "127.0.0.1:7000");
        assert_eq!(status(&[host]), Some(StatusCode::UNAUTHORIZED));
        let wrong = format!("Bearer {}", "ac".repeat(32));
        assert_eq!(
            status(&[host, ("authorization", &wrong)]),
            Some(StatusCode::UNAUTHORIZED)
        );
        let short = format!("Bearer {}", "ab".repeat(31));
        assert_eq!(
            status(&[host, ("authorization", &short)]),
            Some(StatusCode::UNAUTHORIZED)
        );
        let basic = format!("Basic {}", "ab".repeat(32));
        assert_eq!(
            status(&[host, ("authorization", &basic)]),
            Some(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn a_foreign_host_or_origin_is_403_even_with_the_token() {
        let bearer = format!("Bearer {}", "ab".repeat(32));
        let auth = ("authorization", bearer.as_str());
        // DNS rebinding: the page's own name in Host.
        assert_eq!(
            status(&[("host", "evil.example:7000"), auth]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(&[("host", "127.0.0.1:7001"), auth]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(&[("host", "localhost.evil.example:7000"), auth]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(&[auth]), Some(StatusCode::FORBIDDEN));
        for origin in ["http://evil.example", "null", "http://127.0.0.1:8080"] {
            assert_eq!(
                status(&[("host", "127.0.0.1:7000"), ("origin", origin), auth]),
                Some(StatusCode::FORBIDDEN),
                "{origin}"
            );
        }
    }

    #[test]
    fn the_socket_takes_the_token_with_host_localhost_and_no_origin() {
        let auth = ControlAuth::for_socket("ab".repeat(32));
        let bearer = format!("Bearer {}", "ab".repeat(32));
        let check = |pairs: &[(&str, &str)]| auth.check(&headers(pairs)).err().map(|r| r.status);
        assert_eq!(
            check(&[("host", "localhost"), ("authorization", &bearer)]),
            None
        );
        assert_eq!(
            check(&[("host", "localhost")]),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            check(&[("host", "evil.example"), ("authorization", &bearer)]),
            Some(StatusCode::FORBIDDEN)
        );
        for origin in ["http://localhost", "null", ""] {
            assert_eq!(
                check(&[
                    ("host", "localhost"),
                    ("origin", origin),
                    ("authorization", &bearer)
                ]),
                Some(StatusCode::FORBIDDEN),
                "{origin:?}"
            );
        }
    }

    #[test]
    fn tokens_are_fresh_and_64_hex_digits() {
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_replace_an_open_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(TOKEN_FILE);
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let token = generate_token();
        write_private(&path, &format!("{token}\n")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_token(d.path()).unwrap(), token);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
