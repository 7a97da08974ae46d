//! The HTTP servers' bounds over real loopback sockets (the seed directory's server; the
//! metrics and control servers run on the same `http_serve::serve`): slow headers and
//! slow bodies are cut off, connections over the cap are closed at once, and a normal
//! client is served once the slow ones are gone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libmesh::directory::{DirectoryConfig, SharedStore, serve};
use libmesh::http_serve::HttpLimits;
use mesh_advert::{MemoryStore, StoreLimits};
use serde_json::Value;

/// Longest any single read in these tests waits.
const READ_WAIT: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(http: HttpLimits) -> Server {
    let store: SharedStore = Arc::new(Mutex::new(MemoryStore::new(StoreLimits::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = DirectoryConfig {
        http,
        ..DirectoryConfig::default()
    };
    tokio::spawn(serve(listener, store, config, async {
        let _ = rx.await;
    }));
    Server { addr, _stop: tx }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_WAIT)).unwrap();
    s
}

/// Reads until the server closes the connection; what it sent. Panics if it is still
/// open after [`READ_WAIT`].
fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset is a close too (the kernel may answer with RST).
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A slowloris client: a request line and part of a header, never finished.
fn slow_client(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(b"GET /adv?since=0 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    s
}

/// One complete request on a fresh connection; status and JSON body.
fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let text = read_until_closed(&mut s);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn limits(header_secs: u64, max_connections: usize) -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_secs(header_secs),
        request_timeout: Duration::from_secs(2),
        connection_lifetime: Duration::from_secs(60),
        max_connections,
        max_connections_per_client: max_connections,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_header_is_disconnected() {
    let s = start(limits(1, 16)).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let mut slow = slow_client(addr);
        // The server closes it (EOF) after the header timeout, without an answer.
        let got = read_until_closed(&mut slow);
        assert!(!got.contains("200 OK"), "{got}");
        // A connection that sends nothing at all is closed the same way.
        let mut silent = connect(addr);
        read_until_closed(&mut silent);
        // Normal clients are unaffected.
        let (status, body) = get(addr, "/adv?since=0");
        assert_eq!(status, 200, "{body}");
        assert!(body["items"].is_array(), "{body}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_service_resumes() {
    const CAP: usize = 4;
    let header = Duration::from_secs(4);
    let s = start(limits(header.as_secs(), CAP)).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let mut slow: Vec<TcpStream> = (0..CAP).map(|_| slow_client(addr)).collect();
        // The cap is reached: the next connection is closed at once, long before the
        // header timeout could have closed it.
        let started = Instant::now();
        let mut over = connect(addr);
        let _ = over.write_all(b"GET /adv?since=0 HTTP/1.1\r\nHost: x\r\n\r\n");
        let got = read_until_closed(&mut over);
        assert!(
            got.is_empty(),
            "a connection over the cap was served: {got}"
        );
        assert!(
            started.elapsed() < header,
            "closed only after {:?}: by the header timeout, not the cap",
            started.elapsed()
        );
        // The slow ones are dropped by the header timeout ...
        for c in &mut slow {
            read_until_closed(c);
        }
        // ... and a normal client is served again.
        let (status, body) = get(addr, "/adv?since=0");
        assert_eq!(status, 200, "{body}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_cut_off_with_a_coded_503() {
    let s = start(limits(5, 16)).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let node = mesh_core::NodeKeypair::generate().node_id();
        let mut c = connect(addr);
        write!(
            c,
            "PUT /adv/{node} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"node/id\""
        )
        .unwrap();
        let text = read_until_closed(&mut c);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let err: Value = serde_json::from_str(body).unwrap();
        assert_eq!(err["error/code"], "E_TRANSPORT_UNAVAILABLE", "{err}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused() {
    let s = start(limits(5, 16)).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        let filler = "a".repeat(100 * 1024);
        // The server may close while the head is still being written.
        let _ = write!(
            c,
            "GET /adv?since=0 HTTP/1.1\r\nHost: {addr}\r\nX-Big: {filler}\r\n\r\n"
        );
        let text = read_until_closed(&mut c);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 431"),
            "{}",
            &text[..text.len().min(200)]
        );
        assert!(!text.contains("200 OK"));
        // The server is still there for others.
        let (status, _) = get(addr, "/adv?since=0");
        assert_eq!(status, 200);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_holding_every_connection_gives_way_to_a_client_elsewhere() {
    const CAP: usize = 4;
    // A header timeout far beyond the test: the slow clients would hold their slots.
    let header = Duration::from_secs(60);
    let s = start(limits(header.as_secs(), CAP)).await;
    let addr = s.addr;
    // Every slot held by slow clients of 127.0.0.1 (the group 127.0.0.0/16).
    let mut slow = tokio::task::spawn_blocking(move || {
        let slow: Vec<TcpStream> = (0..CAP).map(|_| slow_client(addr)).collect();
        // One more of theirs is closed at once.
        let mut over = connect(addr);
        assert!(read_until_closed(&mut over).is_empty());
        slow
    })
    .await
    .unwrap();
    // A client of another group (127.1.0.1) is served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 1, 0, 1], 0).into()).unwrap();
    let elsewhere = socket.connect(addr).await.unwrap().into_std().unwrap();
    elsewhere.set_nonblocking(false).unwrap();
    elsewhere.set_read_timeout(Some(READ_WAIT)).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut c = elsewhere;
        write!(
            c,
            "GET /adv?since=0 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let text = read_until_closed(&mut c);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        // The newest slow client gave way, long before the header timeout.
        let started = Instant::now();
        let last = slow.last_mut().unwrap();
        assert!(read_until_closed(last).is_empty());
        assert!(started.elapsed() < header / 2);
    })
    .await
    .unwrap();
}

/// A client that asks for a large answer and reads nothing is cut off once the socket
/// took nothing for `request_timeout`: the response was held (and the connection open)
/// until the connection's lifetime ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off() {
    const BODY: usize = 64 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        axum::Router::new().route("/big", axum::routing::get(|| async { vec![0x5au8; BODY] }));
    let limits = HttpLimits {
        request_timeout: Duration::from_secs(2),
        ..HttpLimits::default()
    };
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(libmesh::http_serve::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    let got = tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        write!(s, "GET /big HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_secs(6));
        let mut n = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the server kept the connection open: {e}"),
            }
        }
        n
    })
    .await
    .unwrap();
    assert!(
        got < BODY,
        "{got} of {BODY} bytes came after the client read nothing for 6 s"
    );
}
