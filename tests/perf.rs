//! The perf protocol between two real libp2p swarms on loopback, over TCP (noise +
//! yamux) and over QUIC. Every wait is bounded by a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::{Net, net_swarm};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libmesh::perf::{self, Behaviour, MAX_DOWNLOAD_BYTES, PROTOCOL, PerfError, RunParams};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm};
use libp2p_stream::Control;
use libp2p_swarm_test::SwarmExt;
use tokio::task::JoinHandle;

/// The bound on any single wait in these tests.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {LIMIT:?}"))
}

fn swarm(net: Net) -> Swarm<Behaviour> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    net_swarm(&key, net, Duration::from_secs(60), Behaviour::new())
}

/// A swarm driven by a task, aborted on drop.
struct Node {
    peer: PeerId,
    control: Control,
    task: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn drive(mut swarm: Swarm<Behaviour>) -> Node {
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    let task = tokio::spawn(async move {
        // Runs until the test drops the node (abort).
        loop {
            swarm.select_next_some().await;
        }
    });
    Node {
        peer,
        control,
        task,
    }
}

/// A server and a client swarm, connected over loopback.
async fn connected(net: Net) -> (Node, Node) {
    let mut server = swarm(net);
    server.listen_on(net.listen_addr()).unwrap();
    let addr = within("listen", async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                break address;
            }
        }
    })
    .await;
    // libp2p-swarm-test's `connect` dials the server's external addresses and drives
    // both swarms until each has the connection (it panics when they fall silent).
    server.add_external_address(addr);
    let mut client = swarm(net);
    within("connect", client.connect(&mut server)).await;
    (drive(server), drive(client))
}

async fn upload_and_download(net: Net) {
    let (server, mut client) = connected(net).await;
    let _serving = perf::spawn_server(server.control.clone(), 4).unwrap();
    for (up, down) in [
        (3 * 1024 * 1024 + 7, 5 * 1024 * 1024 + 3),
        (0, 0),
        (1, 0),
        (0, 1),
    ] {
        let params = RunParams {
            upload_bytes: up,
            download_bytes: down,
        };
        let stats = within("run", perf::run(&mut client.control, server.peer, params))
            .await
            .unwrap();
        assert_eq!((stats.uploaded, stats.downloaded), (up, down), "{net:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_over_tcp() {
    upload_and_download(Net::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_over_quic() {
    upload_and_download(Net::Quic).await;
}

async fn oversized_request_is_refused(net: Net) {
    let (server, mut client) = connected(net).await;
    let _serving = perf::spawn_server(server.control.clone(), 4).unwrap();
    let too_much = RunParams {
        upload_bytes: 0,
        download_bytes: MAX_DOWNLOAD_BYTES + 1,
    };

    // Our client does not even ask.
    let err = within("run", perf::run(&mut client.control, server.peer, too_much))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PerfError::DownloadTooLarge { requested, max }
            if requested == MAX_DOWNLOAD_BYTES + 1 && max == MAX_DOWNLOAD_BYTES),
        "{err}"
    );

    // A client that does ask gets nothing back: the stream ends or is reset.
    let mut stream = within("open", client.control.open_stream(server.peer, PROTOCOL))
        .await
        .unwrap();
    within("header", async {
        stream.write_all(&u64::MAX.to_be_bytes()).await?;
        stream.close().await
    })
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = within("answer", stream.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty(),
        "{net:?}: the server sent {} bytes",
        answer.len()
    );
    eprintln!("{net:?}: refused request reads as {read:?}");

    // The server still serves ordinary requests.
    let ok = RunParams {
        upload_bytes: 10,
        download_bytes: 20,
    };
    let stats = within("run", perf::run(&mut client.control, server.peer, ok))
        .await
        .unwrap();
    assert_eq!((stats.uploaded, stats.downloaded), (10, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused_over_tcp() {
    oversized_request_is_refused(Net::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused_over_quic() {
    oversized_request_is_refused(Net::Quic).await;
}

async fn early_close_is_an_error(net: Net) {
    let (mut server, mut client) = connected(net).await;
    let mut incoming = server.control.accept(PROTOCOL).unwrap();

    // A server that reads the request and drops the stream without answering.
    let params = RunParams {
        upload_bytes: 1000,
        download_bytes: 1_000_000,
    };
    let (result, ()) = within("run against a dropping server", async {
        futures::join!(perf::run(&mut client.control, server.peer, params), async {
            let (_, mut stream) = incoming.next().await.unwrap();
            let mut header = [0u8; 8];
            stream.read_exact(&mut header).await.unwrap();
            drop(stream);
        })
    })
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            PerfError::ShortDownload {
                expected: 1_000_000,
                received: 0
            } | PerfError::Io(_)
        ),
        "{net:?}: {err}"
    );

    // A client that closes after half the request: the server reports an error.
    let (served, ()) = within("serve a truncated request", async {
        futures::join!(
            async {
                let (_, stream) = incoming.next().await.unwrap();
                perf::serve(stream).await
            },
            async {
                let mut stream = client
                    .control
                    .open_stream(server.peer, PROTOCOL)
                    .await
                    .unwrap();
                stream.write_all(&[0, 0, 0]).await.unwrap();
                stream.close().await.unwrap();
                // Keep the stream until the server has seen its end.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            }
        )
    })
    .await;
    let err = served.unwrap_err();
    assert!(matches!(err, PerfError::Io(_)), "{net:?}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_close_is_an_error_over_tcp() {
    early_close_is_an_error(Net::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_close_is_an_error_over_quic() {
    early_close_is_an_error(Net::Quic).await;
}

/// With one stream allowed at a time, a second stream while the first is open is
/// dropped; the first still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_dropped() {
    let (server, mut client) = connected(Net::Tcp).await;
    let _serving = perf::spawn_server(server.control.clone(), 1).unwrap();

    // The first stream asks for 4 bytes and keeps its upload open.
    let mut first = within("open", client.control.open_stream(server.peer, PROTOCOL))
        .await
        .unwrap();
    within("header", async {
        first.write_all(&4u64.to_be_bytes()).await?;
        first.flush().await
    })
    .await
    .unwrap();
    // Let the server take it (and its permit) before the second arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let params = RunParams {
        upload_bytes: 0,
        download_bytes: 8,
    };
    let err = within(
        "second run",
        perf::run(&mut client.control, server.peer, params),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PerfError::ShortDownload { received: 0, .. } | PerfError::Io(_)
        ),
        "{err}"
    );

    // The first finishes normally.
    let answer = within("first", async {
        first.write_all(&[1, 2, 3]).await?;
        first.close().await?;
        let mut answer = Vec::new();
        first.read_to_end(&mut answer).await.map(|_| answer)
    })
    .await
    .unwrap();
    assert_eq!(answer, vec![0; 4]);

    // And with the permit back, the next run succeeds, at once: the server gives the
    // permit back before it closes the stream, so it is free when our read ends.
    let third = within(
        "third run",
        perf::run(&mut client.control, server.peer, params),
    )
    .await;
    assert_eq!(third.unwrap().downloaded, 8);
}

/// A run whose future is dropped (a caller's timeout) stops its client: the stream
/// goes, the server's only permit comes back, and the next run is served. (The client
/// runs on a task of its own, which would otherwise go on uploading.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_stops_its_client() {
    let (server, mut client) = connected(Net::Tcp).await;
    let _serving = perf::spawn_server(server.control.clone(), 1).unwrap();
    let endless = RunParams {
        upload_bytes: 1 << 40,
        download_bytes: 0,
    };
    let dropped = tokio::time::timeout(
        Duration::from_millis(500),
        perf::run(&mut client.control, server.peer, endless),
    )
    .await;
    assert!(dropped.is_err(), "a 1 TiB upload ended within 500 ms");

    let params = RunParams {
        upload_bytes: 0,
        download_bytes: 8,
    };
    // The server sees the reset a moment later; bounded retries.
    let mut last = None;
    for _ in 0..20 {
        match within(
            "next run",
            perf::run(&mut client.control, server.peer, params),
        )
        .await
        {
            Ok(stats) => {
                assert_eq!(stats.downloaded, 8);
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the server's permit never came back: {last:?}");
}

/// Outside a tokio runtime `run` says so instead of panicking.
#[test]
fn run_outside_a_runtime_is_an_error() {
    let mut control = Behaviour::new().new_control();
    let params = RunParams {
        upload_bytes: 1,
        download_bytes: 1,
    };
    let err =
        futures::executor::block_on(perf::run(&mut control, PeerId::random(), params)).unwrap_err();
    assert!(matches!(err, PerfError::NoRuntime), "{err}");
}
