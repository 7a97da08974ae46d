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
//! that goes away while it waits leaves the encoding to the others. Both run on a task
//! of their own (`Recent`): a status request that went away used to let the next one
//! ask the node again.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures::FutureExt as _;
use prometheus_client::registry::Registry;

use crate::node::{HandleError, NodeHandle, Status};

/// How long one answer of the node serves every request.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// A run under way, which every request waiting for it shares.
type Run<T> = futures::future::Shared<futures::future::BoxFuture<'static, T>>;

/// The last value kept and when it was made, and the run under way.
struct Runs<T> {
    last: Option<(Instant, T)>,
    running: Option<Run<T>>,
}

/// Clears the run under way when dropped (a run that panics included).
struct Over<T>(Arc<std::sync::Mutex<Runs<T>>>);

impl<T> Drop for Over<T> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running = None;
    }
}

/// A value made at most once at a time, on a task of its own, and served for
/// [`MAX_AGE`]: requests that come while it is made wait for that run and take it; a
/// request that goes away (its timeout, its client) leaves the run to the others, so
/// it does not start another.
struct Recent<T> {
    runs: Arc<std::sync::Mutex<Runs<T>>>,
}

impl<T> Clone for Recent<T> {
    fn clone(&self) -> Self {
        Recent {
            runs: self.runs.clone(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Recent<T> {
    fn new() -> Self {
        Recent {
            runs: Arc::new(std::sync::Mutex::new(Runs {
                last: None,
                running: None,
            })),
        }
    }

    /// The last value kept, if younger than [`MAX_AGE`]; else the run under way; else
    /// a new run of `make()` on a task of its own (on the current Tokio runtime), whose
    /// value is kept if `keep` says so. A run whose task panicked gives `lost`.
    async fn get<F>(&self, make: impl FnOnce() -> F, keep: fn(&T) -> bool, lost: fn() -> T) -> T
    where
        F: Future<Output = T> + Send + 'static,
    {
        let run = {
            let mut r = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, v)) = &r.last
                && at.elapsed() < MAX_AGE
            {
                return v.clone();
            }
            // A run that ended without clearing itself (its task cancelled before it
            // ran, at a runtime's shutdown) is not waited for: another starts.
            match &r.running {
                Some(run) if run.peek().is_none() => run.clone(),
                _ => {
                    let (runs, work) = (self.runs.clone(), make());
                    let task = tokio::spawn(async move {
                        let over = Over(runs.clone());
                        let v = work.await;
                        if keep(&v) {
                            let mut r = runs.lock().unwrap_or_else(PoisonError::into_inner);
                            r.last = Some((Instant::now(), v.clone()));
                        }
                        drop(over);
                        v
                    });
                    let run = async move { task.await.unwrap_or_else(|_| lost()) }
                        .boxed()
                        .shared();
                    r.running = Some(run.clone());
                    run
                }
            }
        };
        run.await
    }
}

/// A node's status, asked for at most once at a time and once per [`MAX_AGE`].
#[derive(Clone)]
pub struct SharedStatus {
    handle: NodeHandle,
    recent: Recent<Result<Status, HandleError>>,
}

impl std::fmt::Debug for SharedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStatus").finish_non_exhaustive()
    }
}

impl SharedStatus {
    /// The status of the node behind `handle`.
    pub fn new(handle: NodeHandle) -> Self {
        SharedStatus {
            handle,
            recent: Recent::new(),
        }
    }

    /// The node's status, no older than [`MAX_AGE`]. Requests that come while the
    /// node is asked wait for its answer and take it, and one that goes away leaves
    /// the question asked for the next (the node is not asked again). Call it on a
    /// Tokio runtime (it asks on a task of its own).
    pub async fn get(&self) -> Result<Status, HandleError> {
        let handle = self.handle.clone();
        self.recent
            .get(
                move || async move { handle.status().await },
                Result::is_ok,
                || Err(HandleError::Stopped),
            )
            .await
    }
}

/// A registry's text, encoded at most once at a time and once per [`MAX_AGE`].
#[derive(Clone)]
pub struct SharedMetrics {
    registry: Arc<std::sync::Mutex<Registry>>,
    recent: Recent<Result<Bytes, String>>,
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
            recent: Recent::new(),
        }
    }

    /// The registry's text (see `node::stats::encode`), no older than [`MAX_AGE`];
    /// requests that come while it is encoded wait for that encoding and take it. It is
    /// encoded on the blocking pool.
    pub async fn get(&self) -> Result<Bytes, String> {
        let registry = self.registry.clone();
        let encode = move || async move {
            let text = tokio::task::spawn_blocking(move || {
                let registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
                crate::node::stats::encode(&registry)
            })
            .await
            .map_err(|e| format!("metrics: {e}"))?;
            text.map(Bytes::from).map_err(|e| format!("metrics: {e}"))
        };
        self.recent
            .get(encode, Result::is_ok, || {
                Err("metrics: the encoding was lost".into())
            })
            .await
    }
}

#[cfg(test)]
#[path = "status_cache_tests.rs"]
mod tests;
