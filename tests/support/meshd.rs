//! Runs `meshd run` processes for tests: the ready line, the event lines, the control
//! API through the CLI, and clean or hard stops. Loopback only, no public bootstrap.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The meshd binary.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshd")
}

/// A running `meshd run`.
pub(crate) struct Meshd {
    child: Option<Child>,
    pub(crate) data_dir: PathBuf,
    pub(crate) ready: Value,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    /// Runs `meshd` through this launcher (e.g. `ip netns exec NS`), else directly.
    launcher: Option<Vec<String>>,
}

/// `program` run through `launcher` (e.g. `["ip", "netns", "exec", "ns1"]`) or directly.
fn command(launcher: Option<&[String]>, program: &str) -> Command {
    match launcher {
        Some([first, rest @ ..]) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

/// Flags every test node gets: loopback TCP, no Amino bootstrap, DHT server mode, and
/// loopback addresses kept in the Amino table (all there are here).
pub(crate) const LOCAL: &[&str] = &[
    "--listen",
    "/ip4/127.0.0.1/tcp/0",
    "--bootstrap",
    "none",
    "--kad-mode",
    "server",
    "--amino-private-addrs",
    "--events",
];

impl Meshd {
    /// Starts `meshd --data-dir DIR run ARGS…` and waits for its ready line.
    pub(crate) fn start(data_dir: &Path, args: &[&str]) -> Meshd {
        Self::start_with(None, data_dir, args)
    }

    /// [`Meshd::start`] through `launcher` (e.g. `ip netns exec NS`); client commands
    /// go through it too.
    pub(crate) fn start_with(
        launcher: Option<Vec<String>>,
        data_dir: &Path,
        args: &[&str],
    ) -> Meshd {
        Self::spawn(launcher, data_dir, args, None)
    }

    /// [`Meshd::start_with`] with `RUST_LOG=rust_log` and the logs (stderr) in
    /// [`Meshd::log_file`] (to show when a test fails); an empty `rust_log` leaves
    /// `RUST_LOG` unset, so `meshd` logs with its default filter.
    pub(crate) fn start_logged(
        launcher: Option<Vec<String>>,
        data_dir: &Path,
        args: &[&str],
        rust_log: &str,
    ) -> Meshd {
        Self::spawn(launcher, data_dir, args, Some(rust_log))
    }

    fn spawn(
        launcher: Option<Vec<String>>,
        data_dir: &Path,
        args: &[&str],
        rust_log: Option<&str>,
    ) -> Meshd {
        let mut cmd = command(launcher.as_deref(), bin());
        cmd.arg("--data-dir")
            .arg(data_dir)
            .arg("run")
            .args(args)
            .stdout(Stdio::piped());
        match rust_log {
            Some(filter) => {
                std::fs::create_dir_all(data_dir).expect("create the data dir");
                let log = std::fs::File::create(Self::log_path(data_dir)).expect("log file");
                if filter.is_empty() {
                    cmd.env_remove("RUST_LOG");
                } else {
                    cmd.env("RUST_LOG", filter);
                }
                cmd.stderr(log);
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        let mut child = cmd.spawn().expect("spawn meshd");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::sync_channel(4096);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut m = Meshd {
            child: Some(child),
            data_dir: data_dir.to_owned(),
            ready: Value::Null,
            lines: rx,
            seen: Vec::new(),
            launcher,
        };
        let ready = m
            .wait_line(Duration::from_secs(30), |v| v.get("node/id").is_some())
            .expect("meshd printed no ready line");
        m.ready = ready;
        m
    }

    fn log_path(data_dir: &Path) -> PathBuf {
        data_dir.join("meshd.log")
    }

    /// Where [`Meshd::start_logged`] writes the logs.
    pub(crate) fn log_file(&self) -> PathBuf {
        Self::log_path(&self.data_dir)
    }

    /// SIGKILL (a crash: no departure, no clean close) and reap.
    pub(crate) fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn node_id(&self) -> String {
        self.ready["node/id"].as_str().unwrap().to_owned()
    }

    pub(crate) fn peer_id(&self) -> String {
        self.ready["libp2p/peer-id"].as_str().unwrap().to_owned()
    }

    /// The first listen address.
    pub(crate) fn addr(&self) -> String {
        self.ready["listen"][0].as_str().unwrap().to_owned()
    }

    /// `NODE_ID@ADDR`, for `--seed`.
    pub(crate) fn seed(&self) -> String {
        format!("{}@{}", self.node_id(), self.addr())
    }

    /// Waits for an output line matching `pred` (lines seen before count too).
    pub(crate) fn wait_line(
        &mut self,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Runs a client command against this node (`meshd --data-dir DIR ARGS…`).
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        command(self.launcher.as_deref(), bin())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("run meshd client")
    }

    /// A client command that must succeed; its JSON output.
    pub(crate) fn cli_ok(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "meshd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Polls `status` until `pred` holds (bounded).
    pub(crate) fn wait_status(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let out = self.cli(&["status"]);
            if out.status.success() {
                last = serde_json::from_slice(&out.stdout).unwrap();
                if pred(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("status condition not met within {within:?}; last: {last}");
    }

    /// Ctrl-C (SIGINT) and wait for a clean exit.
    pub(crate) fn interrupt(self) -> std::process::ExitStatus {
        self.stop_with("INT")
    }

    /// SIGTERM (what systemd, Docker and Kubernetes send) and wait for the exit.
    pub(crate) fn terminate(self) -> std::process::ExitStatus {
        self.stop_with("TERM")
    }

    fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("meshd did not exit after SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Meshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
