//! What an unauthenticated WebSocket client can make `meshd` hold: a client that
//! completes the WebSocket handshake and announces one 64 MiB message is cut off at the
//! frame header (the node accepts messages up to `MAX_WS_MESSAGE`, 1 MiB), instead of
//! being read to the end into memory before Noise sees a byte (libp2p-websocket's
//! default allows 256 MiB). The same holds for a WebSocket server the node dials.
//! The real binary, a raw TCP client and server, loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use meshd::Meshd;

/// The announced message: far beyond the node's limit, far below libp2p's default.
const ANNOUNCED: u64 = 64 * 1024 * 1024;

/// The port of the node's `/ws` listener.
fn ws_port(n: &Meshd) -> u16 {
    let addr = n.ready["listen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.ends_with("/ws"))
        .unwrap_or_else(|| panic!("no /ws listen address in {}", n.ready))
        .to_owned();
    addr.split('/').nth(4).unwrap().parse().unwrap()
}

/// Opens a WebSocket to `port` (the HTTP upgrade, answered 101).
fn open(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") && answer.len() < 4096 {
        s.read_exact(&mut byte).unwrap();
        answer.push(byte[0]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    s
}

/// Sends the header of one binary frame of `len` bytes (final, masked, as a client
/// must), then up to `len` bytes of it; returns how many were written before the node
/// closed the connection.
fn send_frame(s: &mut TcpStream, len: u64) -> u64 {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    write_frame(s, &header, len)
}

/// Writes `header`, then up to `len` bytes; how many were written before the other side
/// closed the connection.
fn write_frame(s: &mut TcpStream, header: &[u8], len: u64) -> u64 {
    s.write_all(header).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < len {
        match s.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n as u64,
        }
    }
    sent
}

#[test]
fn a_websocket_message_beyond_the_limit_closes_the_connection_at_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let n = Meshd::start(
        dir.path(),
        &["--listen", "/ip4/127.0.0.1/tcp/0/ws", "--bootstrap", "none"],
    );
    let port = ws_port(&n);

    let mut s = open(port);
    let sent = send_frame(&mut s, ANNOUNCED);
    // The kernel's socket buffers take a few MiB after the node has closed; the 64 MiB
    // it would otherwise read are far beyond that.
    assert!(
        sent < ANNOUNCED / 2,
        "the node read {sent} bytes of a {ANNOUNCED}-byte message before closing"
    );

    // The listener still serves: a new client gets its handshake answered.
    drop(open(port));
}

/// Answers one WebSocket handshake on `s` as a server would (101, with the accept key).
fn accept_handshake(s: &mut TcpStream) {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
        s.read_exact(&mut byte).unwrap();
        request.push(byte[0]);
    }
    let request = String::from_utf8_lossy(&request).into_owned();
    let key = request
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no key in {request}"));
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    write!(
        s,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .unwrap();
}

#[test]
fn a_websocket_server_the_node_dials_cannot_announce_a_huge_message() {
    let dir = tempfile::tempdir().unwrap();
    let _node = Meshd::start(
        dir.path(),
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "none"],
    );
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let target = format!("/ip4/127.0.0.1/tcp/{port}/ws/p2p/{peer}");
    // The dial answers only once it failed, so it runs beside the server.
    let dial = std::thread::spawn({
        let bin = meshd::bin().to_owned();
        let dir = dir.path().to_owned();
        move || {
            std::process::Command::new(bin)
                .arg("--data-dir")
                .arg(dir)
                .args(["dial", &target])
                .output()
                .unwrap()
        }
    });
    let (mut s, _) = server.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    accept_handshake(&mut s);
    // A server's frame is not masked.
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&ANNOUNCED.to_be_bytes());
    let sent = write_frame(&mut s, &header, ANNOUNCED);
    assert!(
        sent < ANNOUNCED / 2,
        "the node read {sent} bytes of a {ANNOUNCED}-byte message before closing"
    );
    let out = dial.join().unwrap();
    assert!(!out.status.success(), "the dial succeeded: {out:?}");
}
