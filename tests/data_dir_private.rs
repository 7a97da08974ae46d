//! The data directory is the user's alone: a directory others may write to (or another
//! user owns) let them replace its control files, so that the next `meshd status` sent
//! the live control token to their listener. The real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

#[path = "support/meshd.rs"]
mod meshd;

use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use meshd::{LOCAL, Meshd};

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn run_refuses_a_data_dir_others_may_write_and_creates_a_private_one() {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o777);
    let mut child = Command::new(meshd::bin())
        .arg("--data-dir")
        .arg(d.path())
        .arg("run")
        .args(LOCAL)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a node that starts (the defect) is stopped and fails the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meshd ran in a data dir others may write to");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("writable by its group or others"), "{err}");
    assert!(
        std::fs::read_dir(d.path()).unwrap().next().is_none(),
        "nothing written into it"
    );

    // A missing one is made 0700.
    let fresh = d.path().join("fresh");
    chmod(d.path(), 0o700);
    let n = Meshd::start(&fresh, LOCAL);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    drop(n);
}

/// `run` checks the directory its configuration names (the `data_dir` key wins over
/// `--data-dir`), not the one on the command line.
#[test]
fn run_checks_the_data_dir_its_configuration_names() {
    let d = tempfile::tempdir().unwrap();
    let named = d.path().join("named");
    std::fs::create_dir(&named).unwrap();
    chmod(&named, 0o777);
    let config = d.path().join("node.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", named.to_str().unwrap()),
    )
    .unwrap();
    let cli_dir = d.path().join("cli");
    let mut args: Vec<&str> = LOCAL.to_vec();
    args.extend(["--config", config.to_str().unwrap()]);
    let out = Command::new(meshd::bin())
        .arg("--data-dir")
        .arg(&cli_dir)
        .arg("run")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .output();
    let out = out.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by its group or others"), "{err}");
    assert!(!cli_dir.exists(), "the unused --data-dir was made");
}

/// Root may use a data dir of any owner (a systemd `DynamicUser`'s state directory):
/// only when the tests run as root.
#[test]
fn root_uses_a_data_dir_of_another_owner() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: not root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("service");
    let init = Command::new(meshd::bin())
        .arg("--data-dir")
        .arg(&dir)
        .args(["identity", "init"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&dir, Some(nobody), None).unwrap();
    let show = Command::new(meshd::bin())
        .arg("--data-dir")
        .arg(&dir)
        .args(["identity", "show"])
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
}

#[test]
fn a_client_sends_no_token_into_a_data_dir_others_may_write() {
    let d = tempfile::tempdir().unwrap();
    let n = Meshd::start(d.path(), LOCAL);
    assert!(n.cli(&["status"]).status.success());
    // Another user, able to write the directory, puts a listener of their own where
    // the node's socket was.
    chmod(d.path(), 0o777);
    let socket = d.path().join("control.sock");
    std::fs::remove_file(&socket).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = n.cli(&["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by its group or others"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    match listener.accept() {
        Ok((mut s, _)) => {
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            panic!("the client connected to the planted socket: {got}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}
