//! The node's status for HTTP pages anyone who reaches the server may load: the web
//! server's `/api/info` (bound wherever browsers reach it) and the metrics server's
//! `/status`. Each request used to send one command to the node, whose status walks
//! the listeners, the governor, both routing tables and every record of the mesh DHT's
//! store on the node's own task: a client looping on the page had that task do it as
//! often as it asked, beside the swarm's events. [`SharedStatus`] asks the node once at
//! a time and answers from that for [`MAX_AGE`], however many requests come.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

#[cfg(test)]
#[path = "status_cache_tests.rs"]
mod tests;
