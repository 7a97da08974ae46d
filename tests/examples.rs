//! The examples work: `embed_behaviours --demo` and `relay_admission --demo` exit 0, and
//! two `chat` processes on loopback (no public bootstrap) see each other's lines. Every
//! wait is bounded and every child is killed when its guard drops.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Building the examples may wait for the build lock and compete for the CPU.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Variables cargo sets for the crates it builds and runs (not its own configuration,
/// such as `CARGO_TARGET_DIR` or `CARGO_HOME`, which the inner build keeps).
const SET_BY_CARGO: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];
const SET_BY_CARGO_PREFIX: &[&str] = &["CARGO_PKG_", "CARGO_BIN_", "CARGO_CFG_", "CARGO_FEATURE_"];

/// Where cargo puts this profile's examples: next to the test binary
/// (`target/<profile>/deps/examples-…` → `target/<profile>/examples/`).
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    match exe.parent().and_then(|deps| deps.parent()) {
        Some(profile) => profile.join("examples"),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
            target.join("debug").join("examples")
        }
    }
}

/// Builds the examples once for the whole file (one `cargo build --examples`, bounded)
/// and returns their directory. Running the binaries directly afterwards keeps the tests
/// off the build lock.
fn examples() -> &'static PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        // Cargo gives the test process the variables it sets for crates
        // (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …). Some build scripts (ring's) watch
        // them, so an inner build that inherits them would rebuild half the dependency
        // tree, and the next outer build would rebuild it back.
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if SET_BY_CARGO.contains(&name)
                || SET_BY_CARGO_PREFIX.iter().any(|p| name.starts_with(p))
            {
                cargo.env_remove(name);
            }
        }
        let mut child = cargo
            // `--workspace`: the features `cargo test --workspace` unified, so the build
            // reuses what the outer build compiled (without it, libmesh and half its
            // dependencies were compiled again for the examples: a minute of CI).
            .args(["build", "--workspace", "--examples", "--quiet", "--locked"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = wait_bounded(&mut child, BUILD_TIMEOUT);
        let errors = reader.join().unwrap_or_default();
        match status {
            Some(s) if s.success() => Ok(examples_dir()),
            Some(s) => Err(format!("cargo build --examples: {s}\n{errors}")),
            None => Err(format!(
                "cargo build --examples took longer than {BUILD_TIMEOUT:?}\n{errors}"
            )),
        }
    });
    match built {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

/// Waits for `child` to exit; kills it and answers `None` after `within`.
fn wait_bounded(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running example: stdout lines through a channel, stderr kept for failure reports,
/// killed on drop.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn start(name: &'static str, args: &[&str]) -> Proc {
        let mut child = Command::new(examples().join(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The first stdout line (seen before or arriving within `within`) matching `pred`.
    fn wait_line(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn write_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }

    /// What the process said so far, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.seen.join("\n"),
            self.name,
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn embed_behaviours_demo_succeeds() {
    let mut p = Proc::start("embed_behaviours", &["--demo"]);
    let status = wait_bounded(&mut p.child, Duration::from_secs(120));
    // Collect what it printed (the reader thread ends with the process).
    while let Ok(l) = p.lines.recv_timeout(Duration::from_millis(200)) {
        p.seen.push(l);
    }
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("embed_behaviours --demo: {s}\n{}", p.transcript()),
        None => panic!("embed_behaviours --demo ran over 120 s\n{}", p.transcript()),
    }
    assert!(
        p.seen.iter().any(|l| l.starts_with("demo ok")),
        "{}",
        p.transcript()
    );
}

/// The `{"ready": …}` line of a chat.
#[test]
fn relay_admission_demo_succeeds() {
    let mut p = Proc::start("relay_admission", &["--demo"]);
    let status = wait_bounded(&mut p.child, Duration::from_secs(120));
    while let Ok(l) = p.lines.recv_timeout(Duration::from_millis(200)) {
        p.seen.push(l);
    }
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("relay_admission --demo: {s}\n{}", p.transcript()),
        None => panic!("relay_admission --demo ran over 120 s\n{}", p.transcript()),
    }
    let seen = p.transcript();
    assert!(seen.contains("B pinged A through the relay"), "{seen}");
    assert!(seen.contains("C denied: E_TRANSPORT_REJECTED"), "{seen}");
    assert!(seen.contains("relay: refused a reservation"), "{seen}");
    assert!(seen.contains("demo ok"), "{seen}");
}

fn ready(p: &mut Proc) -> Value {
    let line = p
        .wait_line(Duration::from_secs(60), |l| l.starts_with("{\"ready\""))
        .unwrap_or_else(|| panic!("no ready line\n{}", p.transcript()));
    serde_json::from_str::<Value>(&line).unwrap()["ready"].clone()
}

/// The last 8 characters of a peer id: how chat names a sender.
fn short(peer_id: &str) -> &str {
    &peer_id[peer_id.len() - 8..]
}

#[test]
fn two_chats_exchange_lines() {
    let base = ["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "none"];
    let topic = format!("examples-test-{}", std::process::id());
    // The test owns the data dirs: a chat killed at the end cannot clean up its own.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (da, db) = (
        dir_a.path().to_str().unwrap(),
        dir_b.path().to_str().unwrap(),
    );
    let mut a = Proc::start(
        "chat",
        &[&base[..], &["--topic", &topic, "--data-dir", da]].concat(),
    );
    let ra = ready(&mut a);
    let seed = ra["seed"].as_str().unwrap().to_owned();
    assert!(seed.contains("/ip4/127.0.0.1/tcp/"), "{ra}");

    let mut b = Proc::start(
        "chat",
        &[
            &base[..],
            &["--topic", &topic, "--data-dir", db, "--peer", &seed],
        ]
        .concat(),
    );
    let rb = ready(&mut b);

    // B → A. B retries while its gossipsub learns that A subscribed.
    b.write_line("hello from b");
    let want = format!("{}: hello from b", short(rb["peer_id"].as_str().unwrap()));
    let got = a.wait_line(Duration::from_secs(45), |l| l == want);
    assert!(
        got.is_some(),
        "A did not print {want:?}\n{}\n{}",
        a.transcript(),
        b.transcript()
    );

    // A → B.
    a.write_line("and hello from a");
    let want = format!(
        "{}: and hello from a",
        short(ra["peer_id"].as_str().unwrap())
    );
    let got = b.wait_line(Duration::from_secs(45), |l| l == want);
    assert!(
        got.is_some(),
        "B did not print {want:?}\n{}\n{}",
        a.transcript(),
        b.transcript()
    );

    // End of input ends a chat cleanly.
    drop(b.stdin.take());
    let status = wait_bounded(&mut b.child, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "chat did not exit 0 at end of input: {status:?}\n{}",
        b.transcript()
    );
}
