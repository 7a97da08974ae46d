//! The signals that stop `meshd run` and `meshd directory` cleanly: SIGINT (Ctrl-C) and
//! SIGTERM (what systemd, Docker and Kubernetes send) alike.

use std::future::Future;

/// Registers the stop signals now (so one that arrives before the future is polled is
/// not lost) and returns a future that resolves with the name of the first received.
pub(crate) fn stop_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGINT: {e}"))?;
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}
