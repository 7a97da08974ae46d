//! A js-libp2p node (`tests/interop/js/node.mjs`) run as a child process for interop
//! tests: spawn it, send it JSON commands, read its JSON events.
//!
//! Use from a test file with
//! `#[path = "support/js_node.rs"] mod js_node;`.
//!
//! The node listens on loopback only and knows no peer until told: no bootstrap list,
//! no mDNS. Every wait here is bounded.
//!
//! `JsNode::spawn()` returns `Ok(None)` (the caller skips its test) only when
//! `tests/interop/js/node_modules` is missing and `MESH_REQUIRE_JS_INTEROP` is unset;
//! with that variable set (as in CI) a missing install is an error.
#![allow(dead_code)] // each test file uses a different part

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};

/// How long the node may take to start and print its `ready` line.
const READY_TIMEOUT: Duration = Duration::from_secs(45);
/// The node's own per-command bound when the command names none (`timeoutMs`).
const DEFAULT_COMMAND_MS: u64 = 20_000;
/// Extra time past a command's own bound before the caller gives up on the answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);
/// Events kept for later `wait_event` calls; older ones are dropped.
const BACKLOG_LIMIT: usize = 4096;
/// Lines of the node's stderr kept for error messages.
const STDERR_LINES: usize = 40;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running js-libp2p node.
pub(crate) struct JsNode {
    /// The node's peer id.
    pub(crate) peer_id: PeerId,
    /// Its listen addresses, each ending in `/p2p/<peer_id>`.
    pub(crate) addrs: Vec<Multiaddr>,
    child: Child,
    stdin: ChildStdin,
    pending: Pending,
    events: mpsc::UnboundedReceiver<Value>,
    backlog: VecDeque<Value>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    next_id: u64,
}

/// The directory holding `node.mjs` and `package.json`.
pub(crate) fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/js")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl JsNode {
    /// Starts the node and waits for its `ready` line. `Ok(None)`: the npm packages
    /// are not installed and not required; the caller should return (skip).
    pub(crate) async fn spawn() -> Result<Option<JsNode>, String> {
        Self::spawn_with(&[]).await
    }

    /// [`JsNode::spawn`] with arguments for `node.mjs`: `--relay-client` (circuit relay
    /// v2 transport), `--relay-server` (circuit relay v2 server). Those need
    /// `@libp2p/circuit-relay-v2`; an install without it counts as not installed.
    pub(crate) async fn spawn_with(args: &[&str]) -> Result<Option<JsNode>, String> {
        let dir = js_dir();
        let relay = args
            .iter()
            .any(|a| *a == "--relay-client" || *a == "--relay-server");
        let installed = dir.join("node_modules").is_dir()
            && (!relay
                || dir
                    .join("node_modules/@libp2p/circuit-relay-v2/package.json")
                    .is_file());
        if !installed {
            if std::env::var_os("MESH_REQUIRE_JS_INTEROP").is_some() {
                return Err(format!(
                    "MESH_REQUIRE_JS_INTEROP is set but {} lacks its npm packages: run `npm ci --prefix {}`",
                    dir.display(),
                    dir.display()
                ));
            }
            eprintln!(
                "SKIPPED: js-libp2p interop needs `npm ci --prefix {}` (set MESH_REQUIRE_JS_INTEROP=1 to fail instead)",
                dir.display()
            );
            return Ok(None);
        }
        let node_bin = std::env::var("MESH_NODE_BIN").unwrap_or_else(|_| "node".into());
        let mut child = Command::new(&node_bin)
            .arg(dir.join("node.mjs"))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run `{node_bin}`: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr_pipe = child.stderr.take().ok_or("no stderr pipe")?;

        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let kept = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[js-node] {line}");
                let mut kept = lock(&kept);
                if kept.len() == STDERR_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });

        let pending: Pending = Arc::default();
        let (ev_tx, mut events) = mpsc::unbounded_channel();
        let answers = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("[js-node stdout, not JSON] {line}");
                    continue;
                };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = lock(&answers).remove(&id) {
                        let _ = tx.send(v);
                    }
                } else if ev_tx.send(v).is_err() {
                    break;
                }
            }
        });

        let ready = timeout(READY_TIMEOUT, async {
            loop {
                match events.recv().await {
                    Some(v) if v["event"] == "ready" => return Some(v),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await;
        let tail = |stderr: &Arc<Mutex<VecDeque<String>>>| {
            lock(stderr).iter().cloned().collect::<Vec<_>>().join("\n")
        };
        let ready = match ready {
            Ok(Some(v)) => v,
            Ok(None) => return Err(format!("js node exited before ready:\n{}", tail(&stderr))),
            Err(_) => {
                return Err(format!(
                    "js node not ready within {READY_TIMEOUT:?}:\n{}",
                    tail(&stderr)
                ));
            }
        };
        let peer_id: PeerId = ready["peerId"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad ready line: {ready}"))?;
        let addrs = ready["addrs"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        Ok(Some(JsNode {
            peer_id,
            addrs,
            child,
            stdin,
            pending,
            events,
            backlog: VecDeque::new(),
            stderr,
            next_id: 0,
        }))
    }

    /// Its TCP listen address (with `/p2p/`).
    pub(crate) fn tcp_addr(&self) -> Option<Multiaddr> {
        self.addrs.iter().find(|a| !is_ws(a)).cloned()
    }

    /// Its WebSocket listen address (with `/p2p/`).
    pub(crate) fn ws_addr(&self) -> Option<Multiaddr> {
        self.addrs.iter().find(|a| is_ws(a)).cloned()
    }

    /// Its libp2p Ed25519 key as a libmesh node id.
    pub(crate) fn node_id(&self) -> mesh_core::NodeId {
        mesh_core::NodeId::from_peer_id(&self.peer_id).expect("js-libp2p peer ids are Ed25519")
    }

    /// The last lines the node wrote to stderr.
    pub(crate) fn stderr_tail(&self) -> String {
        lock(&self.stderr)
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends `cmd` (an object with `"cmd"` and its arguments; `"timeoutMs"` bounds it in
    /// the node, 20 s by default) and returns the answer, or its `error` text.
    pub(crate) async fn call(&mut self, cmd: Value) -> Result<Value, String> {
        let Value::Object(mut obj) = cmd else {
            return Err("command must be a JSON object".into());
        };
        self.next_id += 1;
        let id = self.next_id;
        obj.insert("id".into(), json!(id));
        let bound_ms = obj
            .get("timeoutMs")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_COMMAND_MS);
        let name = obj
            .get("cmd")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        let write = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await
        };
        if let Err(e) = timeout(Duration::from_secs(5), write)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("write timed out")))
        {
            lock(&self.pending).remove(&id);
            return Err(format!("{name}: cannot write to js node: {e}"));
        }
        let answer = timeout(Duration::from_millis(bound_ms) + ANSWER_MARGIN, rx).await;
        lock(&self.pending).remove(&id);
        match answer {
            Ok(Ok(v)) if v["ok"] == true => Ok(v),
            Ok(Ok(v)) => Err(format!(
                "{name}: {}",
                v["error"].as_str().unwrap_or("failed")
            )),
            Ok(Err(_)) => Err(format!("{name}: js node exited:\n{}", self.stderr_tail())),
            Err(_) => Err(format!("{name}: no answer within {bound_ms} ms + margin")),
        }
    }

    /// The first event (`{"event": ...}` line) matching `pred` within `within`, looking
    /// at events received earlier and not yet taken first. Others are kept.
    pub(crate) async fn wait_event(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, String> {
        if let Some(i) = self.backlog.iter().position(&mut pred) {
            return self.backlog.remove(i).ok_or_else(|| "backlog".into());
        }
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) if pred(&v) => return Ok(v),
                Ok(Some(v)) => {
                    if self.backlog.len() == BACKLOG_LIMIT {
                        self.backlog.pop_front();
                    }
                    self.backlog.push_back(v);
                }
                Ok(None) => {
                    return Err(format!("js node exited:\n{}", self.stderr_tail()));
                }
                Err(_) => return Err(format!("no matching js event within {within:?}")),
            }
        }
    }

    /// Stops the node: closes its stdin (it stops libp2p and exits), then kills it if
    /// it is still running after a few seconds.
    pub(crate) async fn shutdown(mut self) {
        drop(self.stdin);
        if timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Whether `addr` goes through a relay (`/p2p-circuit`).
pub(crate) fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
}

/// Whether `addr` is a WebSocket address.
pub(crate) fn is_ws(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::Ws(_)))
}
