//! A peer run as a process of its own: the test binary runs one of its own ignored tests
//! (the peer) with the environment a test gives it, and the test reads what the peer
//! prints as it comes. For peers that set a process-wide switch of the patched
//! webrtc-sctp (`set_peer_resets_for_tests`, `set_outbound_for_tests`) which the node,
//! in the test's process, must not see.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// The peer's process, with what it has printed so far (stdout and stderr, by line).
pub(crate) struct ChildPeer {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ChildPeer {
    /// Runs the ignored test `test` of this binary with `env` set.
    pub(crate) fn spawn(test: &str, env: &[(&str, String)]) -> Self {
        let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([test, "--exact", "--ignored", "--nocapture"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for pipe in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(err),
        ] {
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines }
    }

    /// What it printed.
    pub(crate) fn said(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first line it printed that starts with `prefix` (without it), waiting up to
    /// `wait` for it.
    pub(crate) async fn line(&self, prefix: &str, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string));
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last line it printed that starts with `prefix` (without it).
    pub(crate) fn last(&self, prefix: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
    }
}

impl Drop for ChildPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
