//! `meshd sign` and `meshd verify`, run as a real process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use mesh_testkit::shared_dir;
use serde_json::{Value, json};

fn meshd(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("MESHD_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // The child may stop reading early (size cap): ignore a broken pipe.
        let _ = input.write_all(bytes);
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn init(dir: &Path) -> String {
    let out = meshd(dir, &["identity", "init"], None);
    assert!(out.status.success());
    stdout_json(&out)["node/id"].as_str().unwrap().to_owned()
}

fn advert_payload(node: &str) -> Value {
    json!({
        "schema/v": 1,
        "advertisement/id": "adv:cli-test",
        "node/id": node,
        "sequence/no": 3,
        "advertised-at": "2026-03-23T18:08:00Z",
        "expires-at": "2026-03-23T18:18:00Z",
        "endpoints": [{
            "endpoint/url": "multiaddr:/ip4/127.0.0.1/udp/4001/quic-v1",
            "endpoint/transport": "quic",
            "endpoint/role": "listener",
            "endpoint/priority": 0
        }],
        "transports/supported": ["quic", "tcp"]
    })
}

const NOW: &str = "2026-03-23T18:10:00Z";

#[test]
fn sign_then_verify_and_tamper() {
    let d = tempfile::tempdir().unwrap();
    let node = init(d.path());
    let payload = serde_json::to_vec(&advert_payload(&node)).unwrap();
    let signed = meshd(
        d.path(),
        &["sign", "--kind", "node-advertisement.v1", "-"],
        Some(&payload),
    );
    assert!(signed.status.success(), "{signed:?}");
    let artifact = stdout_json(&signed);
    assert_eq!(artifact["signature"]["alg"], "ed25519");
    let file = d.path().join("advert.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&artifact).unwrap()).unwrap();
    let f = file.to_str().unwrap();

    let ok = meshd(
        d.path(),
        &["verify", "--kind", "node-advertisement", "--now", NOW, f],
        None,
    );
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let verdict = stdout_json(&ok);
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["signer"], node.as_str());

    // Tampered: exit 1 with E_SIG_INVALID.
    let mut tampered = artifact.clone();
    tampered["endpoints"][0]["endpoint/priority"] = 1.into();
    std::fs::write(&file, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let bad = meshd(
        d.path(),
        &["verify", "--kind", "node-advertisement", "--now", NOW, f],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));
    let v = stdout_json(&bad);
    assert_eq!(v["valid"], false);
    assert_eq!(v["error/code"], "E_SIG_INVALID");
    assert_eq!(v["error/class"], "signature/invalid");

    // Expired: exit 1 with E_ADV_EXPIRED.
    std::fs::write(&file, serde_json::to_vec(&artifact).unwrap()).unwrap();
    let late = meshd(
        d.path(),
        &[
            "verify",
            "--kind",
            "node-advertisement",
            "--now",
            "2026-03-23T19:00:00Z",
            f,
        ],
        None,
    );
    assert_eq!(late.status.code(), Some(1));
    assert_eq!(stdout_json(&late)["error/code"], "E_ADV_EXPIRED");
}

#[test]
fn sign_reproduces_the_vector_signature() {
    let d = tempfile::tempdir().unwrap();
    let vectors: Value =
        serde_json::from_slice(&std::fs::read(shared_dir().join("vectors/signing.json")).unwrap())
            .unwrap();
    let secret = vectors["identities"][0]["secret_key_hex"].as_str().unwrap();
    assert!(
        meshd(
            d.path(),
            &["identity", "import", "--secret-key-hex", secret],
            None
        )
        .status
        .success()
    );
    for vector in vectors["artifacts"].as_array().unwrap() {
        let fixture_path = shared_dir().join(vector["fixture"].as_str().unwrap());
        let mut fixture: Value =
            serde_json::from_slice(&std::fs::read(&fixture_path).unwrap()).unwrap();
        fixture.as_object_mut().unwrap().remove("signature");
        let out = meshd(
            d.path(),
            &["sign", "--kind", vector["domain"].as_str().unwrap(), "-"],
            Some(&serde_json::to_vec(&fixture).unwrap()),
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            stdout_json(&out)["signature"]["value"],
            vector["signature_base64url"]
        );
        // And the fixture itself verifies through the CLI.
        let v = meshd(
            d.path(),
            &[
                "verify",
                "--kind",
                vector["domain"].as_str().unwrap(),
                "--now",
                "2026-03-23T18:10:05Z",
                fixture_path.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(
            v.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&v.stdout)
        );
    }
}

#[test]
fn sign_refuses_a_payload_naming_another_signer() {
    let d = tempfile::tempdir().unwrap();
    init(d.path());
    let other = "node:did:key:z6MkwJFpvJVFe15ygGgYLTYuiPwfhkkDRkMG4eKQFT8g65yE";
    let payload = serde_json::to_vec(&advert_payload(other)).unwrap();
    let out = meshd(
        d.path(),
        &["sign", "--kind", "node-advertisement", "-"],
        Some(&payload),
    );
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error/code"], "E_PROTO_INVALID");
    assert!(out.stdout.is_empty(), "nothing may be signed");

    let env = json!({
        "schema/v": 1, "message/id": "msg:1", "protocol/version": "0.1.0-mvp",
        "message/kind": "signal-marker-envelope.v1",
        "sender/participant-id": "participant:did:key:z6MkwJFpvJVFe15ygGgYLTYuiPwfhkkDRkMG4eKQFT8g65yE",
        "created-at": "2026-03-30T14:00:00Z", "marker/ref": "signal-marker:1"
    });
    let out = meshd(
        d.path(),
        &["sign", "--kind", "signal-marker-envelope", "-"],
        Some(&serde_json::to_vec(&env).unwrap()),
    );
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error/code"], "E_PROTO_INVALID");
}

#[test]
fn verify_bad_input_gets_codes_not_crashes() {
    let d = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"{not json".to_vec(),
            "node-advertisement",
            "E_PROTO_INVALID",
        ),
        (b"[1,2]".to_vec(), "node-advertisement", "E_PROTO_INVALID"),
        (
            vec![0xff, 0xfe, 0x00],
            "node-advertisement",
            "E_PROTO_INVALID",
        ),
        (vec![b' '; 70_000], "node-advertisement", "E_PROTO_INVALID"),
        (
            std::fs::read(
                shared_dir().join("orbiplex-schemas/examples/bootstrap.hello.peer-handshake.json"),
            )
            .unwrap(),
            "peer-handshake",
            "E_PROTO_INVALID", // placeholder signature
        ),
        (
            std::fs::read(shared_dir().join(
                "orbiplex-schemas/examples/invalid/no-core-caps.capability-advertisement.json",
            ))
            .unwrap(),
            "capability-advertisement",
            "E_PROTO_CAP_MISSING",
        ),
    ];
    for (input, kind, code) in cases {
        let out = meshd(
            d.path(),
            &["verify", "--kind", kind, "--now", NOW, "-"],
            Some(&input),
        );
        assert_eq!(out.status.code(), Some(1), "{kind}: {out:?}");
        let v = stdout_json(&out);
        assert_eq!(v["valid"], false);
        assert_eq!(v["error/code"], code, "{kind}: {v}");
    }
    // Unsigned families validate without a signature.
    let out = meshd(
        d.path(),
        &["verify", "--kind", "node-identity", "-"],
        Some(
            &std::fs::read(
                shared_dir().join("orbiplex-schemas/examples/bootstrap.node-identity.json"),
            )
            .unwrap(),
        ),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_json(&out)["signed"], false);
    // An unknown family is an error with a code.
    let out = meshd(d.path(), &["verify", "--kind", "nope", "-"], Some(b"{}"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn signal_frames_sign_and_verify_and_hosts_may_only_count_hops() {
    let d = tempfile::tempdir().unwrap();
    let me = init(d.path());
    let other = mesh_core::NodeKeypair::generate().node_id().to_string();
    let now = mesh_core::Timestamp::now();
    let payload = json!({
        "schema/v": 1,
        "message/kind": "signal-frame.v1",
        "frame/id": "sf:cli",
        "kind": "candidate",
        "from": me,
        "to": other,
        "correlation/id": "c-cli",
        "created-at": now.as_str(),
        "expires-at": now.plus_secs(60).as_str(),
        "payload": {"addrs": ["/ip4/192.0.2.7/udp/4001/quic-v1"]},
    });
    let out = meshd(
        d.path(),
        &["sign", "--kind", "signal-frame", "-"],
        Some(payload.to_string().as_bytes()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut signed = stdout_json(&out);
    signed["hops"] = json!(1);
    let out = meshd(
        d.path(),
        &["verify", "--kind", "signal-frame.v1", "-"],
        Some(signed.to_string().as_bytes()),
    );
    let v = stdout_json(&out);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["signer"], me.as_str());
    signed["payload"]["addrs"] = json!(["/ip4/203.0.113.9/udp/4001/quic-v1"]);
    let out = meshd(
        d.path(),
        &["verify", "--kind", "signal-frame.v1", "-"],
        Some(signed.to_string().as_bytes()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_json(&out)["error/code"], "E_SIG_INVALID");
    // Naming another node as `from` is refused at signing.
    let mut foreign = payload.clone();
    foreign["from"] = json!(other);
    foreign["to"] = json!(me);
    let out = meshd(
        d.path(),
        &["sign", "--kind", "signal-frame", "-"],
        Some(foreign.to_string().as_bytes()),
    );
    assert_eq!(out.status.code(), Some(1));
}

/// `federation-endorsement.v1` (relay admission's federation membership): the node signs
/// as endorser of another node; a changed field or an expired one does not verify.
#[test]
fn federation_endorsements_sign_and_verify() {
    let op = tempfile::tempdir().unwrap();
    let member = tempfile::tempdir().unwrap();
    let op_id = init(op.path());
    let member_id = init(member.path());
    let payload = json!({
        "schema/v": 1,
        "message/kind": "federation-endorsement.v1",
        "federation/id": "fed:cli",
        "node/id": member_id,
        "issued-at": "2026-03-23T18:08:00Z",
        "expires-at": "2026-04-23T18:08:00Z",
    });
    let bytes = payload.to_string().into_bytes();
    let out = meshd(
        op.path(),
        &["sign", "--kind", "federation-endorsement", "-"],
        Some(&bytes),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = stdout_json(&out);
    assert_eq!(signed["endorser/node-id"], json!(op_id));
    let text = signed.to_string().into_bytes();
    let verify = |now: &str, doc: &[u8]| {
        meshd(
            op.path(),
            &[
                "verify",
                "--kind",
                "federation-endorsement.v1",
                "--now",
                now,
                "-",
            ],
            Some(doc),
        )
    };
    let ok = verify("2026-03-24T00:00:00Z", &text);
    assert!(ok.status.success());
    assert_eq!(stdout_json(&ok)["signer"], json!(op_id));
    let mut forged = signed.clone();
    forged["federation/id"] = json!("fed:other");
    let bad = verify("2026-03-24T00:00:00Z", forged.to_string().as_bytes());
    assert!(!bad.status.success());
    assert_eq!(stdout_json(&bad)["error/code"], json!("E_SIG_INVALID"));
    let late = verify("2026-05-01T00:00:00Z", &text);
    assert_eq!(stdout_json(&late)["error/code"], json!("E_ADV_EXPIRED"));
}
