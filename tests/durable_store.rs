//! The durable advertisement store: restarts and a process killed while writing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libmesh::advert_store::DurableStore;
use mesh_advert::own::advert_for;
use mesh_advert::{AdvertStore, NodeWithdrawal, Source, StoreLimits};
use mesh_core::{ErrorCode, NodeAdvertisement, NodeKeypair, RateLimit, Timestamp};

fn limits() -> StoreLimits {
    StoreLimits {
        per_publisher: RateLimit::per_minute(1000, 60_000),
        ..StoreLimits::default()
    }
}

fn ad(key: &NodeKeypair, seq: u64, now: &Timestamp, ttl: i64) -> NodeAdvertisement {
    advert_for(
        key,
        &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        seq,
        now,
        ttl,
    )
    .unwrap()
}

#[test]
fn survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let keys: Vec<NodeKeypair> = (0..40).map(|_| NodeKeypair::generate()).collect();
    {
        let (s, report) = DurableStore::open(dir.path(), limits(), &now).unwrap();
        assert_eq!(report.loaded, 0);
        let results = s.insert_batch(keys.iter().map(|k| ad(k, 3, &now, 600)).collect(), &now);
        assert!(results.iter().all(Result::is_ok));
        s.insert(ad(&keys[0], 4, &now, 600), &now).unwrap();
        s.withdraw(&NodeWithdrawal::create(&keys[1], 9, &now).unwrap(), &now)
            .unwrap();
        s.set_own_sequence(77).unwrap();
    }
    let (s, report) = DurableStore::open(dir.path(), limits(), &now).unwrap();
    assert_eq!(report.loaded, 39);
    assert_eq!(report.unreadable, 0);
    assert_eq!(s.get(&keys[0].node_id(), &now).unwrap().sequence_no(), 4);
    assert!(s.get(&keys[1].node_id(), &now).is_none());
    // The withdrawal's tombstone survived: a replay is still refused.
    let err = s.insert(ad(&keys[1], 5, &now, 600), &now).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AdvStaleSeq));
    // Stale against the reloaded entry too.
    assert_eq!(
        s.insert(ad(&keys[2], 3, &now, 600), &now)
            .unwrap_err()
            .code(),
        Some(ErrorCode::AdvStaleSeq)
    );
    assert_eq!(s.own_sequence().unwrap(), Some(77));
    // A cursor walk after the restart sees each of them once.
    let mut seen = HashSet::new();
    let mut cursor = 0;
    loop {
        let page = s.since(cursor, 7);
        if page.items.is_empty() {
            break;
        }
        for i in page.items {
            assert!(seen.insert(i.node_id()));
        }
        cursor = page.next;
    }
    assert_eq!(seen.len(), 39);
    // New revisions continue after the reloaded ones.
    s.insert(ad(&keys[3], 8, &now, 600), &now).unwrap();
    assert_eq!(s.since(cursor, 10).items.len(), 1);
}

#[test]
fn expired_entries_are_dropped_on_reload_and_swept_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp::now();
    let later = t0.plus_secs(120);
    let (short, long) = (NodeKeypair::generate(), NodeKeypair::generate());
    let open = |at: &Timestamp| DurableStore::open(dir.path(), limits(), at).unwrap();

    let (s, _) = open(&t0);
    s.insert(ad(&short, 1, &t0, 60), &t0).unwrap();
    s.insert(ad(&long, 1, &t0, 600), &t0).unwrap();
    drop(s);

    // A sweep deletes the expired one from memory and from the file.
    let (s, report) = open(&t0);
    assert_eq!(report.loaded, 2);
    assert_eq!(s.sweep(&later).unwrap(), 1);
    assert_eq!(s.len(), 1);
    assert_eq!(s.disk_counts().unwrap().adverts, 1);
    drop(s);
    let (s, report) = open(&t0);
    assert_eq!((report.loaded, report.expired), (1, 0));
    assert!(s.get(&long.node_id(), &t0).is_some());
}

/// Item 1: rows that expired while the node was down are deleted at start-up, so the
/// file does not grow with every restart.
#[test]
fn expired_rows_are_deleted_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp::now();
    let long = NodeKeypair::generate();
    {
        let (s, _) = DurableStore::open(dir.path(), limits(), &t0).unwrap();
        s.insert(ad(&long, 1, &t0, 6 * 3600), &t0).unwrap();
    }
    for round in 1..=4i64 {
        // Each run stores ten adverts with a minute of life, then stops.
        let start = t0.plus_secs(round * 600);
        let (s, report) = DurableStore::open(dir.path(), limits(), &start).unwrap();
        let expected_expired = if round == 1 { 0 } else { 10 };
        assert_eq!(
            (report.loaded, report.expired),
            (1, expected_expired),
            "round {round}: only the last run's adverts were left to delete"
        );
        let batch = (0..10)
            .map(|_| ad(&NodeKeypair::generate(), 1, &start, 60))
            .collect();
        assert!(s.insert_batch(batch, &start).iter().all(Result::is_ok));
    }
    // Opened once more while they are still live (the clock of the last run): only the
    // long-lived row and the last run's ten are in the file.
    let last = t0.plus_secs(4 * 600);
    let (s, report) = DurableStore::open(dir.path(), limits(), &last).unwrap();
    assert_eq!((report.loaded, report.expired), (11, 0));
    let c = s.disk_counts().unwrap();
    assert_eq!((c.adverts, c.tombstones), (11, 0));
}

#[test]
fn lapsed_tombstones_are_deleted_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp::now();
    let short = StoreLimits {
        max_lifetime_secs: 600,
        ..limits()
    };
    {
        let (s, _) = DurableStore::open(dir.path(), short, &t0).unwrap();
        for _ in 0..5 {
            let k = NodeKeypair::generate();
            s.withdraw(&NodeWithdrawal::create(&k, 1, &t0).unwrap(), &t0)
                .unwrap();
        }
        assert_eq!(s.disk_counts().unwrap().tombstones, 5);
    }
    let (s, report) = DurableStore::open(dir.path(), short, &t0.plus_secs(700)).unwrap();
    assert_eq!(report.lapsed, 5);
    assert_eq!(s.disk_counts().unwrap().tombstones, 0);
}

/// Item 1: the running node sweeps its store on a timer: an advert that expired leaves
/// memory (the walk no longer returns it) and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_node_sweeps_expired_adverts_from_memory_and_disk() {
    use libmesh::node::{Bootstrap, BootstrapName, NodeConfig};
    use mesh_core::NoTrace;
    use std::sync::Arc;

    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        autonat: false,
        ..NodeConfig::default()
    };
    let wait = Duration::from_secs(30);
    let (n, mut store) = mesh_testkit::node::start_node_with(
        NodeKeypair::generate(),
        config,
        Arc::new(NoTrace),
        wait,
        |node| node.store(),
    )
    .await;
    // An advert that expires two seconds from now.
    let now = Timestamp::now();
    let short = NodeKeypair::generate();
    store
        .insert(ad(&short, 1, &now.plus_secs(-58), 60), &now)
        .unwrap();
    let in_walk = |store: &libmesh::node::SharedAdverts| {
        store
            .since(0, 10_000)
            .items
            .iter()
            .any(|i| i.node_id() == short.node_id())
    };
    assert!(in_walk(&store));
    // The default sweep period is 10 s: give it three periods (a bound, not a speed).
    let deadline = Instant::now() + Duration::from_secs(40);
    while in_walk(&store) {
        assert!(
            Instant::now() < deadline,
            "the expired advert was never swept"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    n.handle.shutdown().await;
    let _ = tokio::time::timeout(wait, n.task).await;
    let dir = n.dir;
    drop(store);
    // The row is gone from the file: reopened with a clock at which it would still be
    // live, it is not loaded.
    let deadline = Instant::now() + wait;
    let reopened = loop {
        match DurableStore::open(dir.path(), limits(), &now) {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "store still open: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (s, _) = reopened;
    assert!(s.get(&short.node_id(), &now).is_none());
}

#[test]
fn a_second_open_of_the_same_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let (_s, _) = DurableStore::open(dir.path(), limits(), &now).unwrap();
    assert!(DurableStore::open(dir.path(), limits(), &now).is_err());
}

const BATCH: usize = 25;

/// The child side of `kill_during_writes_loses_at_most_the_open_batch`: writes batches
/// forever (until killed), printing each commit. Does nothing when run normally.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("MESH_CRASH_DIR") else {
        return;
    };
    let now = Timestamp::now();
    let (s, _) = DurableStore::open(std::path::Path::new(&dir), limits(), &now).unwrap();
    let mut out = std::io::stdout();
    for i in 0..10_000 {
        let batch: Vec<NodeAdvertisement> = (0..BATCH)
            .map(|_| ad(&NodeKeypair::generate(), 1, &now, 600))
            .collect();
        assert!(s.insert_batch(batch, &now).iter().all(Result::is_ok));
        writeln!(out, "committed {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_during_writes_loses_at_most_the_open_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MESH_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut committed = 0;
    while committed < 8 {
        assert!(Instant::now() < deadline, "child did not commit in time");
        let line = lines.next().expect("child exited early").unwrap();
        if line.starts_with("committed ") {
            committed += 1;
        }
    }
    // SIGKILL while it is in the middle of building or committing the next batches.
    child.kill().unwrap();
    child.wait().unwrap();

    let (s, report) = DurableStore::open(dir.path(), limits(), &Timestamp::now()).unwrap();
    assert_eq!(report.unreadable, 0, "a torn entry became visible");
    assert_eq!(
        report.loaded % BATCH,
        0,
        "a batch was half-committed: {}",
        report.loaded
    );
    assert!(
        report.loaded >= committed * BATCH,
        "committed batches lost: {} < {}",
        report.loaded,
        committed * BATCH
    );
    assert_eq!(s.len(), report.loaded);
}

/// A record evicted to make room for another network's is deleted from the file in the
/// same commit; what stays survives a restart, as one share of its own that makes room
/// again for newcomers.
#[test]
fn an_eviction_for_another_network_reaches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let small = StoreLimits {
        max_entries: 4,
        ..limits()
    };
    let flood = Source::of_ip("192.0.2.1".parse().unwrap());
    let other = Source::of_ip("2001:db8::1".parse().unwrap());
    let keys: Vec<NodeKeypair> = (0..6).map(|_| NodeKeypair::generate()).collect();
    {
        let (s, _) = DurableStore::open(dir.path(), small, &now).unwrap();
        let batch = keys[..4].iter().map(|k| ad(k, 1, &now, 600)).collect();
        let r = s.insert_batch_from(batch, flood, &now);
        assert!(r.iter().all(Result::is_ok));
        s.insert_from(ad(&keys[4], 1, &now, 600), other, &now)
            .unwrap();
        assert_eq!(s.disk_counts().unwrap().adverts, 4);
        assert_eq!(s.index().held_by(&flood).0, 3);
    }
    let (s, report) = DurableStore::open(dir.path(), small, &now).unwrap();
    assert_eq!(report.loaded, 4);
    assert!(s.get(&keys[0].node_id(), &now).is_none(), "the oldest went");
    for k in &keys[1..5] {
        assert!(s.get(&k.node_id(), &now).is_some());
    }
    // Read back from disk: one share, which gives way to a newcomer.
    assert_eq!(s.index().held_by(&Source::Restored).0, 4);
    s.insert_from(ad(&keys[5], 1, &now, 600), other, &now)
        .unwrap();
    assert_eq!(s.index().held_by(&Source::Restored).0, 3);
    assert_eq!(s.disk_counts().unwrap().adverts, 4);
}

/// A file damaged on disk (one byte changed, at 160 places in turn) is refused with a
/// storage error or, when the byte was in no page the store uses, loads every row as
/// written: never a panic, a loop without end or altered rows. redb checked its pages'
/// checksums only after a crash, so a plain open of such a file panicked, spun or loaded
/// what the damage left.
#[test]
fn a_damaged_file_is_refused_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let keys: Vec<NodeKeypair> = (0..300).map(|_| NodeKeypair::generate()).collect();
    {
        let (s, _) = DurableStore::open(dir.path(), limits(), &now).unwrap();
        let results = s.insert_batch(keys.iter().map(|k| ad(k, 3, &now, 600)).collect(), &now);
        assert!(results.iter().all(Result::is_ok));
    }
    let file = dir.path().join("adverts.redb");
    let good = std::fs::read(&file).unwrap();
    let expected: Vec<Option<u64>> = {
        let (s, _) = DurableStore::open(dir.path(), limits(), &now).unwrap();
        keys.iter()
            .map(|k| s.get(&k.node_id(), &now).map(|a| a.sequence_no()))
            .collect()
    };
    assert!(expected.iter().all(Option::is_some));

    let (mut refused, mut intact, mut damaged) = (0, 0, 0);
    for i in 0..160usize {
        let at = (i * 7919 + 4096) % good.len();
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        let trial = tempfile::tempdir().unwrap();
        std::fs::write(trial.path().join("adverts.redb"), &bad).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = trial.path().to_owned();
        let ids: Vec<_> = keys.iter().map(NodeKeypair::node_id).collect();
        let t = now.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| {
                DurableStore::open(&path, limits(), &t).map(|(s, _)| {
                    ids.iter()
                        .map(|id| s.get(id, &t).map(|a| a.sequence_no()))
                        .collect::<Vec<_>>()
                })
            });
            let _ = tx.send(outcome.map_err(|_| ()));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Err(_) => panic!("the open of a file damaged at byte {at} never ended"),
            Ok(Err(())) => panic!("the open of a file damaged at byte {at} panicked"),
            Ok(Ok(Err(e))) => {
                assert_eq!(
                    e.code(),
                    None,
                    "byte {at}: a storage error, not a rejection: {e}"
                );
                damaged += usize::from(e.to_string().contains("damaged"));
                refused += 1;
            }
            Ok(Ok(Ok(rows))) => {
                assert_eq!(rows, expected, "byte {at}: rows altered");
                intact += 1;
            }
        }
    }
    assert!(refused > 0, "no damage found ({intact} intact)");
    assert!(damaged > 0, "no refusal names the damage");
}

/// A directory client's cursor stays valid across a restart: what is stored after it
/// comes after the cursor. The counter restarted from the highest revision among the
/// rows, below the withdrawn entry's, so the next advertisement took a revision the
/// client had already passed and `since` never returned it.
#[test]
fn a_cursor_taken_before_a_restart_sees_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let (a, b, c) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let cursor = {
        let (s, _) = DurableStore::open(dir.path(), limits(), &now).unwrap();
        for k in [&a, &b] {
            s.insert(ad(k, 1, &now, 600), &now).unwrap();
        }
        let cursor = s.since(0, 10).next;
        s.withdraw(&NodeWithdrawal::create(&b, 2, &now).unwrap(), &now)
            .unwrap();
        cursor
    };
    let (s, _) = DurableStore::open(dir.path(), limits(), &now).unwrap();
    s.insert(ad(&c, 1, &now, 600), &now).unwrap();
    let page = s.since(cursor, 10);
    assert!(
        page.items.iter().any(|e| e.node_id() == c.node_id()),
        "the advertisement stored after the restart is not past the cursor"
    );
}

/// The child side of `a_cursor_handed_out_survives_a_crash_before_the_flush`: one
/// change fsync'd, then unsynced ones from a peer, the cursor after them printed, then
/// an abort (no close: redb loses the unsynced commits, as in a crash). Does nothing
/// when run normally.
#[test]
fn crash_child_unsynced() {
    let Ok(dir) = std::env::var("MESH_CRASH_UNSYNCED_DIR") else {
        return;
    };
    let now = Timestamp::now();
    let (s, _) = DurableStore::open(std::path::Path::new(&dir), limits(), &now).unwrap();
    s.insert(ad(&NodeKeypair::generate(), 1, &now, 600), &now)
        .unwrap();
    let peer = Source::of_ip("192.0.2.1".parse().unwrap());
    for _ in 0..20 {
        s.insert_unsynced_from(ad(&NodeKeypair::generate(), 1, &now, 600), peer, &now)
            .unwrap();
    }
    let mut out = std::io::stdout();
    writeln!(out, "cursor {}", s.since(0, 100).next).unwrap();
    out.flush().unwrap();
    std::process::abort();
}

/// A directory client's cursor stays valid across a crash that loses unsynced commits:
/// the revision counter resumes above every revision handed out (the mark on disk is
/// raised, fsync'd, ahead of the counter), so what is stored after the restart is past
/// the cursor. Before, the counter came back from the last fsync'd commit, below the
/// cursor, and the client skipped the next changes.
#[test]
fn a_cursor_handed_out_survives_a_crash_before_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_unsynced",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MESH_CRASH_UNSYNCED_DIR", dir.path())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child did not abort");
    let text = String::from_utf8_lossy(&out.stdout);
    // The harness's "test crash_child_unsynced ... " may start the same line.
    let cursor: u64 = text
        .split("cursor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the child printed its cursor")
        .parse()
        .unwrap();
    let now = Timestamp::now();
    let (s, report) = DurableStore::open(dir.path(), limits(), &now).unwrap();
    assert!(report.loaded >= 1, "the fsync'd change was lost");
    let late = NodeKeypair::generate();
    s.insert(ad(&late, 1, &now, 600), &now).unwrap();
    let page = s.since(cursor, 100);
    assert!(
        page.items.iter().any(|e| e.node_id() == late.node_id()),
        "the advertisement stored after the crash is not past the cursor {cursor}"
    );
}
