//! `meshd` identity commands, run as a real process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const VECTOR_SECRET: &str = "2929292929292929292929292929292929292929292929292929292929292929";
const VECTOR_NODE: &str = "node:did:key:z6MkwJFpvJVFe15ygGgYLTYuiPwfhkkDRkMG4eKQFT8g65yE";

fn meshd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("MESHD_DATA_DIR")
        .output()
        .unwrap()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn json_err(o: &Output) -> Value {
    serde_json::from_slice(&o.stderr).unwrap_or_else(|e| {
        panic!(
            "stderr not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn init_show_export_import_round_trip() {
    let a = tempfile::tempdir().unwrap();
    let init = meshd(a.path(), &["identity", "init"]);
    assert!(init.status.success(), "{init:?}");
    let record = json_out(&init);
    let node = record["node/id"].as_str().unwrap().to_owned();
    assert!(node.starts_with("node:did:key:z6Mk"));
    assert_eq!(
        record["key/storage-ref"],
        "local-file:identity/node-signing-key.v1.json"
    );

    // init again loads, never regenerates.
    let again = json_out(&meshd(a.path(), &["identity", "init"]));
    assert_eq!(again, record);

    let show = json_out(&meshd(a.path(), &["identity", "show"]));
    assert_eq!(show["node/id"], node.as_str());
    let peer = show["libp2p/peer-id"].as_str().unwrap();
    let node_id = mesh_core::NodeId::parse(&node).unwrap();
    assert_eq!(node_id.to_peer_id().unwrap().to_string(), peer);

    let export = json_out(&meshd(a.path(), &["identity", "export"]));
    assert_eq!(export, record);
    mesh_core::Family::NodeIdentity
        .validate_json(export, &mesh_core::Timestamp::now())
        .unwrap();

    // The secret file moves the identity to another data dir.
    let b = tempfile::tempdir().unwrap();
    let secret_file = a.path().join("identity/node-signing-key.v1.json");
    let imported = meshd(
        b.path(),
        &[
            "identity",
            "import",
            "--secret-key-file",
            secret_file.to_str().unwrap(),
        ],
    );
    assert!(imported.status.success(), "{imported:?}");
    assert_eq!(json_out(&imported)["node/id"], node.as_str());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(b.path().join("identity/node-signing-key.v1.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn import_hex_matches_vector_and_refuses_silent_replacement() {
    let d = tempfile::tempdir().unwrap();
    let out = meshd(
        d.path(),
        &["identity", "import", "--secret-key-hex", VECTOR_SECRET],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_out(&out)["node/id"], VECTOR_NODE);
    let show = json_out(&meshd(d.path(), &["identity", "show"]));
    assert_eq!(
        show["libp2p/peer-id"],
        "12D3KooWSfMx5BpXVMrzyfMGHVLQe6UWNWX13ZBPLDmVoAKZ4oun"
    );

    // Importing the same key again is a no-op.
    assert!(
        meshd(
            d.path(),
            &["identity", "import", "--secret-key-hex", VECTOR_SECRET]
        )
        .status
        .success()
    );

    // Another key needs --force, and then the old files are kept as backups.
    let other = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let refused = meshd(d.path(), &["identity", "import", "--secret-key-hex", other]);
    assert!(!refused.status.success());
    assert_eq!(json_err(&refused)["error/code"], "E_PROTO_INVALID");
    assert_eq!(
        json_out(&meshd(d.path(), &["identity", "show"]))["node/id"],
        VECTOR_NODE
    );

    let forced = meshd(
        d.path(),
        &["identity", "import", "--secret-key-hex", other, "--force"],
    );
    assert!(forced.status.success(), "{forced:?}");
    assert_eq!(
        json_out(&forced)["node/id"],
        "node:did:key:z6MkehRgf7yJbgaGfYsdoAsKdBPE3dj2CYhowQdcjqSJgvVd"
    );
    let backups = std::fs::read_dir(d.path().join("identity"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("replaced-")
        })
        .count();
    assert_eq!(backups, 2);

    // Bad hex is refused with a code.
    let bad = meshd(d.path(), &["identity", "import", "--secret-key-hex", "abc"]);
    assert!(!bad.status.success());
    assert_eq!(json_err(&bad)["error/code"], "E_PROTO_INVALID");
}

fn assert_refused_untouched(dir: &Path, file: &str, content: &[u8], expect_in_detail: &str) {
    let path = dir.join(file);
    std::fs::write(&path, content).unwrap();
    for args in [&["identity", "show"][..], &["identity", "init"], &["run"]] {
        let out = meshd(dir, args);
        assert!(!out.status.success(), "{args:?} accepted a damaged {file}");
        let err = json_err(&out);
        let detail = err["detail"].as_str().unwrap();
        assert!(
            detail.contains(file),
            "error does not name the file: {detail}"
        );
        assert!(detail.contains(expect_in_detail), "{detail}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            content,
            "{file} was modified"
        );
    }
}

#[test]
fn corrupt_identity_files_are_clear_errors_and_left_untouched() {
    let d = tempfile::tempdir().unwrap();
    assert!(meshd(d.path(), &["identity", "init"]).status.success());
    let record = std::fs::read(d.path().join("identity/node-identity.v1.json")).unwrap();
    let secret = std::fs::read(d.path().join("identity/node-signing-key.v1.json")).unwrap();

    assert_refused_untouched(
        d.path(),
        "identity/node-identity.v1.json",
        b"{\"schema/v\": 1, trunc",
        "damaged",
    );
    std::fs::write(d.path().join("identity/node-identity.v1.json"), &record).unwrap();

    // A record that is not active is refused.
    let mut inactive: Value = serde_json::from_slice(&record).unwrap();
    inactive["identity/status"] = "retired".into();
    assert_refused_untouched(
        d.path(),
        "identity/node-identity.v1.json",
        serde_json::to_string(&inactive).unwrap().as_bytes(),
        "identity/status",
    );
    std::fs::write(d.path().join("identity/node-identity.v1.json"), &record).unwrap();

    // A foreign secret (valid file, other key) is a mismatch, not a new identity.
    let other = tempfile::tempdir().unwrap();
    assert!(meshd(other.path(), &["identity", "init"]).status.success());
    let foreign = std::fs::read(other.path().join("identity/node-signing-key.v1.json")).unwrap();
    assert_refused_untouched(
        d.path(),
        "identity/node-signing-key.v1.json",
        &foreign,
        "node-identity.v1.json",
    );

    // A secret whose bytes were edited no longer matches its own public key.
    let mut edited: Value = serde_json::from_slice(&secret).unwrap();
    edited["key/secret-hex"] = "11".repeat(32).into();
    assert_refused_untouched(
        d.path(),
        "identity/node-signing-key.v1.json",
        serde_json::to_string(&edited).unwrap().as_bytes(),
        "does not match",
    );

    std::fs::write(d.path().join("identity/node-signing-key.v1.json"), &secret).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let p = d.path().join("identity/node-signing-key.v1.json");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = meshd(d.path(), &["identity", "show"]);
        assert!(!out.status.success());
        assert!(
            json_err(&out)["detail"]
                .as_str()
                .unwrap()
                .contains("chmod 600")
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(meshd(d.path(), &["identity", "show"]).status.success());
}

#[test]
fn missing_secret_is_an_error_not_a_new_identity() {
    let d = tempfile::tempdir().unwrap();
    let record = json_out(&meshd(d.path(), &["identity", "init"]));
    std::fs::remove_file(d.path().join("identity/node-signing-key.v1.json")).unwrap();
    let out = meshd(d.path(), &["identity", "init"]);
    assert!(!out.status.success());
    assert!(
        json_err(&out)["detail"]
            .as_str()
            .unwrap()
            .contains("node-signing-key.v1.json")
    );
    assert!(!d.path().join("identity/node-signing-key.v1.json").exists());
    let kept: Value = serde_json::from_slice(
        &std::fs::read(d.path().join("identity/node-identity.v1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept, record);
}

#[test]
fn trace_file_records_generated_then_loaded() {
    let d = tempfile::tempdir().unwrap();
    let trace = d.path().join("trace.jsonl");
    let t = trace.to_str().unwrap();
    assert!(
        meshd(d.path(), &["--trace", t, "identity", "init"])
            .status
            .success()
    );
    assert!(
        meshd(d.path(), &["--trace", t, "identity", "show"])
            .status
            .success()
    );
    let lines: Vec<Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["event/type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["identity/generated", "identity/loaded"]);
}

/// `meshd identity show | head -c0`: a reader that went away before the output is a
/// quiet exit with 141 (as a process killed by SIGPIPE), not a panic.
#[test]
fn a_closed_stdout_is_a_quiet_exit_not_a_panic() {
    let a = tempfile::tempdir().unwrap();
    assert!(meshd(a.path(), &["identity", "init"]).status.success());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(a.path())
        .args(["identity", "show"])
        .env_remove("MESHD_DATA_DIR")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "meshd panicked: {stderr}");
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
    assert!(stderr.is_empty(), "stderr: {stderr}");
}

/// `meshd identity import --secret-key-file -` in `dir` with `text` on its standard
/// input; also whether the secret was among its arguments while it ran.
fn import_from_stdin(dir: &Path, text: &str) -> (Output, bool) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(dir)
        .args(["identity", "import", "--secret-key-file", "-"])
        .env_remove("MESHD_DATA_DIR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    let in_args = String::from_utf8_lossy(&cmdline).contains(text.trim());
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{text}").unwrap();
    drop(stdin);
    (child.wait_with_output().unwrap(), in_args)
}

/// The secret can be piped in (`--secret-key-file -`), so it is never among the
/// command's arguments, which other local users can read while it runs.
#[test]
fn import_reads_the_secret_from_standard_input() {
    let d = tempfile::tempdir().unwrap();
    let (out, in_args) = import_from_stdin(d.path(), VECTOR_SECRET);
    assert!(!in_args);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_out(&out)["node/id"], VECTOR_NODE);
    // Not a secret: refused with a code, nothing imported.
    let e = tempfile::tempdir().unwrap();
    let (out, _) = import_from_stdin(e.path(), "abc");
    assert!(!out.status.success());
    assert!(json_err(&out)["error/code"].is_string(), "{out:?}");
    assert!(meshd(e.path(), &["identity", "show"]).status.code() != Some(0));
}
