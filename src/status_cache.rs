//! The node's status for HTTP pages anyone who reaches the server may load: the web
//! server's `/api/info` (bound wherever browsers reach it) and the metrics server's
//! `/status`. Each request used to send one command to the node, whose status walks
//! the listeners, the governor, both routing tables and every record of the mesh DHT's
//! store on the node's own task: a client looping on the page had that task do it as
//! often as it asked, beside the swarm's events. [`SharedStatus`] asks the node once at
//! a time and answers from that for [`MAX_AGE`], however many requests come.
//!
//! The metrics server's `/metrics` the same way ([`SharedMetrics`]): each request
//! encoded the whole registry under its lock, libp2p's identify collector walking every
//! peer's protocols under the lock the swarm's task takes on each identify event, on
//! one of the runtime's two workers; a client (or a web page, `no-cors`) looping on it
//! held both workers. It is encoded once at a time, off the workers
//! (`spawn_blocking`), and the text serves every request for [`MAX_AGE`]; a request
//! that goes away while it waits leaves the encoding to the others.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use prometheus_client::registry::Registry;

use tokio::sync::Mutex;

use crate::node::{HandleError, NodeHandle, Status};

/// How long one answer of the node serves every request.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// A node's status, asked for at most once at a time and once per [`MAX_AGE`].
#[derive(Debug, Clone)]
pub struct SharedStatus {
    handle: NodeHandle,
    last: Arc<Mutex<Option<(Instant, Status)>>>,
}

impl SharedStatus {
    /// The status of the node behind `handle`.
    pub fn new(handle: NodeHandle) -> Self {
        SharedStatus {
            handle,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The node's status, no older than [`MAX_AGE`]. Requests that come while the
    /// node is asked wait for its answer (tokio's mutex is fair) and take it.
    pub async fn get(&self) -> Result<Status, HandleError> {
        let mut last = self.last.lock().await;
        if let Some((at, status)) = last.as_ref()
            && at.elapsed() < MAX_AGE
        {
            return Ok(status.clone());
        }
        let status = self.handle.status().await?;
        *last = Some((Instant::now(), status.clone()));
        Ok(status)
    }
}

/// An encoding under way, which every request waiting for it shares (it runs on to
/// the end if they all go away: a request cancelled, by its timeout or its client,
/// does not start another).
type Encoding = futures::future::Shared<futures::future::BoxFuture<'static, Result<Bytes, String>>>;

/// The last text and when it was encoded, and the encoding under way.
#[derive(Default)]
struct Texts {
    last: Option<(Instant, Bytes)>,
    running: Option<Encoding>,
}

/// Clears the encoding under way when dropped.
struct Over(Arc<std::sync::Mutex<Texts>>);

impl Drop for Over {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running = None;
    }
}

/// A registry's text, encoded at most once at a time and once per [`MAX_AGE`].
#[derive(Clone)]
pub struct SharedMetrics {
    registry: Arc<std::sync::Mutex<Registry>>,
    texts: Arc<std::sync::Mutex<Texts>>,
}

impl std::fmt::Debug for SharedMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMetrics").finish_non_exhaustive()
    }
}

impl SharedMetrics {
    /// The metrics of `registry`.
    pub fn new(registry: Arc<std::sync::Mutex<Registry>>) -> Self {
        SharedMetrics {
            registry,
            texts: Arc::default(),
        }
    }

    /// The registry's text (see `node::stats::encode`), no older than [`MAX_AGE`];
    /// requests that come while it is encoded wait for that encoding and take it.
    pub async fn get(&self) -> Result<Bytes, String> {
        let encoding = {
            let mut t = self.texts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, text)) = &t.last
                && at.elapsed() < MAX_AGE
            {
                return Ok(text.clone());
            }
            match &t.running {
                Some(e) => e.clone(),
                None => {
                    let e = self.encode();
                    t.running = Some(e.clone());
                    e
                }
            }
        };
        encoding.await
    }

    /// Starts an encoding on the blocking pool; when it ends it becomes the last text.
    fn encode(&self) -> Encoding {
        use futures::FutureExt as _;
        let (registry, texts) = (self.registry.clone(), self.texts.clone());
        let work = tokio::task::spawn_blocking(move || {
            // The encoding under way is over however this ends (a collector that
            // panics included): the next request starts another.
            let over = Over(texts.clone());
            let text = {
                let registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
                crate::node::stats::encode(&registry)
            };
            let result = text.map(Bytes::from).map_err(|e| format!("metrics: {e}"));
            if let Ok(text) = &result {
                let mut t = texts.lock().unwrap_or_else(PoisonError::into_inner);
                t.last = Some((Instant::now(), text.clone()));
            }
            drop(over);
            result
        });
        async move { work.await.map_err(|e| format!("metrics: {e}"))? }
            .boxed()
            .shared()
    }
}

#[cfg(test)]
#[path = "status_cache_tests.rs"]
mod tests;
