//! `meshd advert publish|lookup` against a directory behind TLS (issue 16 item 6): a
//! real `meshd directory` behind a TLS terminator made here (tokio-rustls, on loopback)
//! with a certificate from a test CA. With the CA given by `--tls-root` both commands
//! work (by name and by IP address); without it the publish fails with an unknown
//! issuer; a certificate for another name fails too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

/// `meshd --data-dir DIR ARGS…`, without any proxy from the environment.
fn meshd(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meshd"));
    c.arg("--data-dir").arg(dir).args(args);
    for v in [
        "MESHD_DATA_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    c.output().unwrap()
}

fn stdout_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "meshd failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

struct Directory(Child);

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `meshd directory` on a free loopback port: the process and its address.
fn directory(dir: &Path) -> (Directory, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--data-dir")
        .arg(dir)
        .args(["directory", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let guard = Directory(child);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    let url = v["directory"].as_str().unwrap();
    let addr = url.trim_start_matches("http://").parse().unwrap();
    (guard, addr)
}

/// A test CA: its certificate and key.
fn ca() -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "libmesh test CA");
    (params.self_signed(&key).unwrap(), key)
}

/// A server certificate for `names` signed by the CA, with its key.
fn server_cert(names: &[&str], ca: &Certificate, ca_key: &KeyPair) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let params = CertificateParams::new(names).unwrap();
    (params.signed_by(&key, ca, ca_key).unwrap(), key)
}

/// A TLS terminator on a free loopback port forwarding each connection to `backend`
/// (runs on `rt` until it is dropped); its port.
fn terminator(
    rt: &tokio::runtime::Runtime,
    cert: &Certificate,
    key: &KeyPair,
    backend: SocketAddr,
) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (the client did not trust us) just ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut back) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
            });
        }
    });
    port
}

fn stderr_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stderr)
        .unwrap_or_else(|_| panic!("stderr: {}", String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn publish_and_lookup_through_a_tls_directory() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir_store = tempfile::tempdir().unwrap();
    let node_dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let (_directory, backend) = directory(dir_store.path());

    let (ca, ca_key) = ca();
    let roots = tempfile::tempdir().unwrap();
    let ca_pem = roots.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let ca_pem = ca_pem.to_str().unwrap();
    let (cert, key) = server_cert(&["localhost", "127.0.0.1"], &ca, &ca_key);
    let port = terminator(&rt, &cert, &key, backend);
    let (wrong, wrong_key) = server_cert(&["directory.example.org"], &ca, &ca_key);
    let wrong_port = terminator(&rt, &wrong, &wrong_key, backend);

    // Publish by name, trusting the test CA.
    let url = format!("https://localhost:{port}");
    let addr = "/ip4/192.0.2.7/tcp/4001";
    let published = stdout_json(&meshd(
        node_dir.path(),
        &[
            "advert",
            "publish",
            "--to",
            &url,
            "--tls-root",
            ca_pem,
            "--addr",
            addr,
        ],
    ));
    let node = published["published"]["node/id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(published["to"], url.as_str());

    // Look it up from elsewhere, by IP address (the certificate names both).
    let ip_url = format!("https://127.0.0.1:{port}/");
    let found = stdout_json(&meshd(
        other_dir.path(),
        &[
            "advert",
            "lookup",
            &node,
            "--from",
            &ip_url,
            "--tls-root",
            ca_pem,
        ],
    ));
    assert_eq!(found["node/id"], node.as_str());
    assert_eq!(found, published["published"]);

    // Without the CA: the web PKI roots do not know it.
    let out = meshd(
        node_dir.path(),
        &["advert", "publish", "--to", &url, "--addr", addr],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_json(&out);
    assert_eq!(err["error/code"], "E_TRANSPORT_REJECTED", "{err}");
    let detail = err["detail"].as_str().unwrap();
    assert!(detail.contains("UnknownIssuer"), "{detail}");
    assert!(detail.contains("--tls-root"), "{detail}");
    let out = meshd(
        other_dir.path(),
        &["advert", "lookup", &node, "--from", &ip_url],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_json(&out)["detail"]
            .as_str()
            .unwrap()
            .contains("UnknownIssuer")
    );

    // A certificate from the trusted CA, for another name.
    let out = meshd(
        node_dir.path(),
        &[
            "advert",
            "publish",
            "--to",
            &format!("https://localhost:{wrong_port}"),
            "--tls-root",
            ca_pem,
            "--addr",
            addr,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_json(&out);
    assert_eq!(err["error/code"], "E_TRANSPORT_REJECTED", "{err}");
    assert!(
        err["detail"]
            .as_str()
            .unwrap()
            .contains("not valid for name \"localhost\""),
        "{err}"
    );

    // A roots file that is no certificate: a clear error before any connection.
    let bad = roots.path().join("bad.pem");
    std::fs::write(&bad, "nothing here\n").unwrap();
    let out = meshd(
        node_dir.path(),
        &[
            "advert",
            "publish",
            "--to",
            &url,
            "--tls-root",
            bad.to_str().unwrap(),
            "--addr",
            addr,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_json(&out);
    assert_eq!(err["error/code"], "E_PROTO_INVALID", "{err}");
    assert!(err["detail"].as_str().unwrap().contains("bad.pem"), "{err}");
}
