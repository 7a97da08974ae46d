//! A flood of status requests reaches the node once: the web server's `/api/info` and
//! the metrics server's `/status`, served on loopback, in front of a stand-in node that
//! counts the status commands it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::MAX_AGE;
use crate::node::api::Command;
use crate::node::status::{DhtStatus, MeshStatus, NatStatus};
use crate::node::{NodeHandle, Status};

fn status() -> Status {
    Status {
        node_id: "did:key:z6Mk-test".into(),
        peer_id: "12D3KooW-test".into(),
        agent: "libmesh/test".into(),
        version: "0".into(),
        uptime_secs: 0,
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        external_addrs: Vec::new(),
        nat: NatStatus::default(),
        connected_peers: 0,
        mesh: MeshStatus::default(),
        dht: DhtStatus::default(),
        adverts_stored: 0,
        own_advert_sequence: None,
        topics: Vec::new(),
        gossip_mesh_peers: 0,
        events_dropped: 0,
        gossip_send_failed: 0,
        traces_suppressed: 0,
        swarm_arrivals: Default::default(),
    }
}

/// A handle whose node answers status commands (after 20 ms, as a busy node would)
/// and counts them.
fn stand_in() -> (NodeHandle, Arc<AtomicUsize>) {
    let (tx, mut rx) = mpsc::channel::<Command>(64);
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let Command::Status { reply } = cmd {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = reply.send(Ok(status()));
            }
        }
    });
    (NodeHandle::new(tx, Duration::from_secs(10)), asked)
}

/// `router` served on 127.0.0.1; its address.
async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The status line and body of `GET path` on a fresh connection (within 10 s).
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s")
}

/// 100 requests at once, then one more after [`MAX_AGE`]: how often the node was asked.
async fn flood(addr: std::net::SocketAddr, path: &str, asked: &AtomicUsize) -> (usize, usize) {
    let all: Vec<_> = (0..100)
        .map(|_| {
            let path = path.to_string();
            tokio::spawn(async move { get(addr, &path).await })
        })
        .collect();
    for r in all {
        let answer = r.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("12D3KooW-test"), "{answer}");
    }
    let during = asked.load(Ordering::SeqCst);
    tokio::time::sleep(MAX_AGE + Duration::from_millis(100)).await;
    assert!(get(addr, path).await.starts_with("HTTP/1.1 200"));
    (during, asked.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_api_info_asks_the_node_once() {
    let (handle, asked) = stand_in();
    let root = std::env::temp_dir();
    let addr = serve(crate::web::web_router(handle, root)).await;
    let (during, after) = flood(addr, "/api/info", &asked).await;
    assert_eq!(
        during, 1,
        "100 requests at once asked the node {during} times"
    );
    assert_eq!(after, 2, "an answer older than MAX_AGE is not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_metrics_status_asks_the_node_once() {
    let (handle, asked) = stand_in();
    let registry = Arc::new(std::sync::Mutex::new(
        prometheus_client::registry::Registry::default(),
    ));
    let addr = serve(crate::control::metrics_router(handle, registry)).await;
    let (during, after) = flood(addr, "/status", &asked).await;
    assert_eq!(
        during, 1,
        "100 requests at once asked the node {during} times"
    );
    assert_eq!(after, 2, "an answer older than MAX_AGE is not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_metrics_encodes_the_registry_once() {
    let (handle, _) = stand_in();
    let encoded = Arc::new(AtomicUsize::new(0));
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Gated {
        count: encoded.clone(),
        released: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    }));
    let addr = serve(crate::control::metrics_router(
        handle,
        Arc::new(std::sync::Mutex::new(registry)),
    ))
    .await;
    let all: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { get(addr, "/metrics").await }))
        .collect();
    for r in all {
        let answer = r.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("# EOF"), "{answer}");
    }
    let during = encoded.load(Ordering::SeqCst);
    assert_eq!(during, 1, "100 requests at once encoded it {during} times");
    tokio::time::sleep(MAX_AGE + Duration::from_millis(100)).await;
    assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 200"));
    assert_eq!(
        encoded.load(Ordering::SeqCst),
        2,
        "a text older than MAX_AGE is not served"
    );
}

/// Requests that go away while the registry is encoded (their timeout, their client)
/// leave that encoding to the next request: it does not start another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_goes_away_leaves_the_encoding_to_the_next() {
    let encoded = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Gated {
        count: encoded.clone(),
        released: released.clone(),
    }));
    let metrics = super::SharedMetrics::new(Arc::new(std::sync::Mutex::new(registry)));
    for _ in 0..10 {
        let gone = tokio::time::timeout(Duration::from_millis(1), metrics.get()).await;
        assert!(gone.is_err(), "answered while the encoding is held");
    }
    released.store(true, Ordering::SeqCst);
    let text = tokio::time::timeout(Duration::from_secs(10), metrics.get())
        .await
        .expect("answered")
        .unwrap();
    assert!(String::from_utf8_lossy(&text).contains("# EOF"));
    assert_eq!(encoded.load(Ordering::SeqCst), 1);
}

/// A collector that counts its scrapes (as libp2p's identify collector walks every peer,
/// under the swarm's lock, on each) and holds each for 20 ms, and until the test
/// releases it (at most 10 s).
#[derive(Debug)]
struct Gated {
    count: Arc<AtomicUsize>,
    released: Arc<std::sync::atomic::AtomicBool>,
}

impl prometheus_client::collector::Collector for Gated {
    fn encode(
        &self,
        _: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.count.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !self.released.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// A collector that panics, once: the next request encodes again.
#[derive(Debug, Default)]
struct PanicsOnce(std::sync::atomic::AtomicBool);

impl prometheus_client::collector::Collector for PanicsOnce {
    fn encode(
        &self,
        _: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("a collector's first scrape");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_encoding_does_not_stop_the_next() {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(PanicsOnce::default()));
    let metrics = super::SharedMetrics::new(Arc::new(std::sync::Mutex::new(registry)));
    assert!(metrics.get().await.is_err());
    let text = tokio::time::timeout(Duration::from_secs(10), metrics.get())
        .await
        .expect("answered")
        .expect("encoded again");
    assert!(String::from_utf8_lossy(&text).contains("# EOF"));
}

/// Requests that go away while the node is asked (their timeout, their client) leave
/// the question to the next request: the node is asked once. (Each such request used
/// to let the next one ask again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_goes_away_leaves_the_question_to_the_next() {
    let (tx, mut rx) = mpsc::channel::<Command>(64);
    let asked = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(tokio::sync::Notify::new());
    let (count, gate) = (asked.clone(), released.clone());
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let Command::Status { reply } = cmd {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::time::timeout(Duration::from_secs(10), gate.notified()).await;
                let _ = reply.send(Ok(status()));
            }
        }
    });
    let shared = super::SharedStatus::new(NodeHandle::new(tx, Duration::from_secs(30)));
    for _ in 0..10 {
        let gone = tokio::time::timeout(Duration::from_millis(5), shared.get()).await;
        assert!(gone.is_err(), "answered while the node holds its answer");
    }
    released.notify_one();
    let s = tokio::time::timeout(Duration::from_secs(10), shared.get())
        .await
        .expect("answered")
        .expect("a status");
    assert_eq!(s.node_id, "did:key:z6Mk-test");
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the node was asked again");
}

/// A run whose task panics gives `lost` to those waiting, and the next request runs
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_panics_gives_lost_and_the_next_runs_again() {
    let recent: super::Recent<Result<u32, String>> = super::Recent::new();
    let lost = || Err("lost".to_owned());
    let panics = || async {
        if recent_panics() {
            panic!("a run's panic");
        }
        Ok(0)
    };
    assert_eq!(
        recent.get(panics, Result::is_ok, lost).await,
        Err("lost".into())
    );
    let runs = || async { Ok(7) };
    assert_eq!(recent.get(runs, Result::is_ok, lost).await, Ok(7));
}

fn recent_panics() -> bool {
    true
}
