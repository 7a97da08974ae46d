//! `meshd run --web ADDR`: serves the browser node (the page and its bundle, built by
//! `web/build.mjs` into `web/dist`, see the README, "Browsers") and tells it the node's
//! addresses at `GET /api/info`.
//!
//! Only three fixed paths are served (no file-system paths come from the request); the
//! files are read at request time from the web root, each capped at
//! [`MAX_FILE_BYTES`], so a rebuilt bundle is served without a restart.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::node::NodeHandle;
use crate::status_cache::SharedStatus;

/// The largest file served (the bundle is about 1 MiB).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The files of the page: request path, file name in the web root, content type.
const FILES: &[(&str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
];

#[derive(Clone)]
struct WebState {
    status: SharedStatus,
    root: PathBuf,
}

/// The web router: the page from `root` and `/api/info` from the node (asked at most
/// once a second, see [`crate::status_cache`]).
pub fn web_router(handle: NodeHandle, root: PathBuf) -> Router {
    let mut router = Router::new().route("/api/info", get(info));
    for &(path, file, mime) in FILES {
        router = router.route(
            path,
            get(move |State(s): State<WebState>| async move {
                serve_file(&s.root.join(file), mime).await
            }),
        );
    }
    router.with_state(WebState {
        status: SharedStatus::new(handle),
        root,
    })
}

/// Whether `root` holds the page (checked at start, to fail early with a hint).
pub fn check_root(root: &Path) -> Result<(), String> {
    for &(_, file, _) in FILES {
        let p = root.join(file);
        if !p.is_file() {
            return Err(format!(
                "{} is missing: build the page with `npm ci --prefix web && npm run build --prefix web`, or point --web-root at it",
                p.display()
            ));
        }
    }
    Ok(())
}

async fn serve_file(path: &Path, mime: &'static str) -> Response {
    let read = async {
        let meta = tokio::fs::metadata(path).await?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(std::io::Error::other("file too large"));
        }
        tokio::fs::read(path).await
    };
    match read.await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "web page file unavailable");
            (StatusCode::NOT_FOUND, "not built\n").into_response()
        }
    }
}

/// The node's id, peer id and addresses a browser can dial (`/webrtc-direct` with its
/// certhash, `/ws`), each with `/p2p/<peer id>`.
async fn info(State(s): State<WebState>) -> Response {
    match s.status.get().await {
        Ok(st) => {
            let suffix = format!("/p2p/{}", st.peer_id);
            let all: Vec<String> = st
                .external_addrs
                .iter()
                .chain(&st.listen_addrs)
                .map(|a| format!("{a}{suffix}"))
                .collect();
            let pick = |pred: &dyn Fn(&str) -> bool| -> Vec<&String> {
                let mut out: Vec<&String> = all.iter().filter(|a| pred(a)).collect();
                out.dedup();
                out
            };
            let webrtc = pick(&|a: &str| a.contains("/webrtc-direct/certhash/"));
            let ws = pick(&|a: &str| a.contains("/ws/") && !a.contains("/tls/"));
            axum::Json(json!({
                "node_id": st.node_id,
                "peer_id": st.peer_id,
                "webrtc_direct": webrtc,
                "ws": ws,
                "addrs": all,
            }))
            .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
