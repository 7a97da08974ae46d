//! Unit tests of the durable store: undo after failed commits, readers during a commit,
//! sweeps on disk.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use mesh_advert::NodeWithdrawal;
use mesh_advert::own::advert_for;
use mesh_core::{ErrorCode, NodeKeypair, RateLimit};

/// Bound on waits that only a deadlock would reach (not a speed assertion).
const STUCK: Duration = Duration::from_secs(30);

fn ad_at(key: &NodeKeypair, seq: u64, at: &Timestamp, ttl: i64) -> NodeAdvertisement {
    let addr = "/ip4/127.0.0.1/tcp/4001"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    advert_for(key, &[addr], seq, at, ttl).unwrap_or_else(|e| panic!("{e}"))
}

fn ad(key: &NodeKeypair, seq: u64, now: &Timestamp) -> NodeAdvertisement {
    ad_at(key, seq, now, 600)
}

fn generous() -> StoreLimits {
    StoreLimits {
        per_publisher: RateLimit::per_minute(1000, 1000),
        ..StoreLimits::default()
    }
}

fn open(dir: &Path, limits: StoreLimits, now: &Timestamp) -> DurableStore {
    DurableStore::open(dir, limits, now)
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

fn counts(s: &DurableStore) -> (u64, u64) {
    let c = s.disk_counts().unwrap_or_else(|e| panic!("{e}"));
    (c.adverts, c.tombstones)
}

#[test]
fn a_failed_commit_undoes_memory_completely() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::now();
    let s = open(dir.path(), generous(), &now);
    let (k, fresh) = (NodeKeypair::generate(), NodeKeypair::generate());
    s.insert(ad(&k, 5, &now), &now)
        .unwrap_or_else(|e| panic!("{e}"));
    s.withdraw(
        &NodeWithdrawal::create(&k, 6, &now).unwrap_or_else(|e| panic!("{e}")),
        &now,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    s.fail_commits(true);
    let results = s.insert_batch(vec![ad(&k, 7, &now), ad(&fresh, 1, &now)], &now);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(StoreError::Storage(_))))
    );
    s.fail_commits(false);

    // Memory is as before the batch: no entries, and the tombstone still refuses
    // replays of sequences at or below the withdrawal.
    assert!(s.get(&fresh.node_id(), &now).is_none());
    assert!(s.get(&k.node_id(), &now).is_none());
    let replay = s.insert(ad(&k, 6, &now), &now).unwrap_err();
    assert_eq!(replay.code(), Some(ErrorCode::AdvStaleSeq));
    s.insert(ad(&k, 7, &now), &now)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_failed_withdrawal_commit_keeps_the_earlier_tombstone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::now();
    let s = open(dir.path(), generous(), &now);
    let k = NodeKeypair::generate();
    let w = |seq| NodeWithdrawal::create(&k, seq, &now).unwrap_or_else(|e| panic!("{e}"));
    s.withdraw(&w(6), &now).unwrap_or_else(|e| panic!("{e}"));
    s.fail_commits(true);
    assert!(matches!(
        s.withdraw(&w(8), &now),
        Err(StoreError::Storage(_))
    ));
    s.fail_commits(false);
    let replay = s.insert(ad(&k, 5, &now), &now).unwrap_err();
    assert_eq!(
        replay.code(),
        Some(ErrorCode::AdvStaleSeq),
        "the seq-6 tombstone still holds"
    );
}

/// Item 8: a writer's commit (its fsync) holds no lock a reader needs.
#[test]
fn readers_are_not_blocked_behind_a_commit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::now();
    let s = Arc::new(open(dir.path(), generous(), &now));
    let (held, writer) = (NodeKeypair::generate(), NodeKeypair::generate());
    s.insert(ad(&held, 1, &now), &now)
        .unwrap_or_else(|e| panic!("{e}"));

    // The next commit stops inside the hook until released.
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    s.before_commit(move || {
        let _ = entered_tx.send(());
        let _ = lock(&release_rx).recv_timeout(STUCK);
    });
    let w = s.clone();
    let advert = ad(&writer, 1, &now);
    let at = now.clone();
    let write = std::thread::spawn(move || w.insert(advert, &at));
    entered.recv_timeout(STUCK).expect("the commit started");

    // While that commit is in flight, every read answers (run on another thread so a
    // blocked read fails the test instead of hanging it).
    let r = s.clone();
    let (held_id, at) = (held.node_id(), now.clone());
    let (answer_tx, answer) = mpsc::channel();
    std::thread::spawn(move || {
        let got = r.get(&held_id, &at).is_some();
        let walked = r.since(0, 10).items.len();
        let _ = answer_tx.send((got, walked, r.len()));
    });
    let (got, walked, len) = answer
        .recv_timeout(STUCK)
        .expect("a read waited for the commit");
    assert!(got);
    assert!(walked >= 1 && len >= 1);

    release.send(()).unwrap_or_else(|e| panic!("{e}"));
    let outcome = write.join().unwrap_or_else(|_| panic!("writer panicked"));
    assert_eq!(outcome, Ok(InsertOutcome::Stored));
    assert!(s.get(&writer.node_id(), &now).is_some());
    assert_eq!(counts(&s), (2, 0));
}

#[test]
fn a_sweep_under_cap_pressure_deletes_the_rows_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let t0 = Timestamp::now();
    let later = t0.plus_secs(120);
    let limits = StoreLimits {
        max_entries: 3,
        ..generous()
    };
    let s = open(dir.path(), limits, &t0);
    for _ in 0..3 {
        s.insert(ad_at(&NodeKeypair::generate(), 1, &t0, 60), &t0)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let fresh = NodeKeypair::generate();
    assert_eq!(
        s.insert(ad_at(&fresh, 1, &t0, 600), &t0)
            .unwrap_err()
            .code(),
        Some(ErrorCode::TransportRejected)
    );
    // After they expired, the same store takes a new node and the file drops them.
    s.insert(ad_at(&fresh, 1, &later, 600), &later)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.len(), 1);
    assert_eq!(counts(&s), (1, 0));
}

#[test]
fn a_failed_commit_puts_back_what_was_swept() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let t0 = Timestamp::now();
    let later = t0.plus_secs(120);
    let limits = StoreLimits {
        max_entries: 2,
        ..generous()
    };
    let s = open(dir.path(), limits, &t0);
    let short = NodeKeypair::generate();
    s.insert(ad_at(&short, 1, &t0, 60), &t0)
        .unwrap_or_else(|e| panic!("{e}"));
    s.insert(ad_at(&NodeKeypair::generate(), 1, &t0, 600), &t0)
        .unwrap_or_else(|e| panic!("{e}"));
    s.fail_commits(true);
    let fresh = NodeKeypair::generate();
    assert!(matches!(
        s.insert(ad_at(&fresh, 1, &later, 600), &later),
        Err(StoreError::Storage(_))
    ));
    assert!(matches!(s.sweep(&later), Err(StoreError::Storage(_))));
    s.fail_commits(false);
    // Memory agrees with the file: both still hold the expired advertisement.
    assert_eq!(s.len(), 2);
    assert!(s.index().entry(&short.node_id()).is_some());
    assert_eq!(counts(&s), (2, 0));
    assert_eq!(s.sweep(&later), Ok(1));
    assert_eq!((s.len(), counts(&s)), (1, (1, 0)));
}

#[test]
fn writers_take_turns_in_arrival_order() {
    let t = Arc::new(Turnstile::default());
    let first = t.enter();
    let tickets: Vec<u64> = (0..3).map(|_| t.ticket()).collect();
    let (order_tx, order) = mpsc::channel();
    // Started last-ticket first: the turns still come in ticket order.
    let threads: Vec<_> = tickets
        .into_iter()
        .rev()
        .map(|ticket| {
            let (t, tx) = (t.clone(), order_tx.clone());
            std::thread::spawn(move || {
                let _turn = t.wait_for(ticket);
                let _ = tx.send(ticket);
            })
        })
        .collect();
    drop(first);
    let got: Vec<u64> = (0..3)
        .map(|_| order.recv_timeout(STUCK).expect("turn came"))
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    for th in threads {
        th.join().unwrap_or_else(|_| panic!("panicked"));
    }
}

#[test]
fn the_page_cache_stays_within_its_bound_as_the_file_grows() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::now();
    let s = open(dir.path(), generous(), &now);
    // About 1.3 KiB a row on disk: 400 rows are several times the cache.
    let keys: Vec<NodeKeypair> = (0..400).map(|_| NodeKeypair::generate()).collect();
    for chunk in keys.chunks(50) {
        let batch = chunk.iter().map(|k| ad(k, 1, &now)).collect();
        for r in s.insert_batch(batch, &now) {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let file = std::fs::metadata(s.path()).map_or(0, |m| m.len());
    assert!(file > 256 * 1024, "the file is {file} bytes");
    // The rows are in the index already; redb must not keep a second copy of them.
    let cached = s
        .db()
        .unwrap_or_else(|e| panic!("{e}"))
        .cache_stats()
        .used_bytes() as u64;
    assert!(
        cached <= CACHE_BYTES as u64 && cached * 4 <= file,
        "redb caches {cached} bytes of a {file}-byte file (bound {CACHE_BYTES})"
    );
    // Nothing is lost to the small cache: every row is on disk and comes back.
    assert_eq!(counts(&s), (400, 0));
    drop(s);
    let s = open(dir.path(), generous(), &now);
    for k in &keys {
        assert!(s.index().get(&k.node_id(), &now).is_some());
    }
}

/// Unsynced changes cost no fsync each: 50 inserts from one network and a withdrawal are
/// committed without one, one flush makes them all durable, and the store reopened
/// holds them. A plain insert is fsync'd before it returns.
#[test]
fn unsynced_changes_wait_for_one_flush_plain_ones_do_not() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::now();
    let peer = Source::of_ip("192.0.2.1".parse().unwrap_or_else(|_| unreachable!()));
    let keys: Vec<NodeKeypair> = (0..50).map(|_| NodeKeypair::generate()).collect();
    {
        let s = open(dir.path(), generous(), &now);
        // The first change raises the revision mark: fsync'd.
        s.insert_unsynced_from(ad(&NodeKeypair::generate(), 1, &now), peer, &now)
            .unwrap_or_else(|e| panic!("{e}"));
        let base = s.synced_commits();
        assert_eq!(base, 1);
        assert!(!s.unflushed());
        for k in &keys {
            s.insert_unsynced_from(ad(k, 1, &now), peer, &now)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let w = NodeWithdrawal::create(&keys[0], 2, &now).unwrap_or_else(|e| panic!("{e}"));
        s.withdraw_unsynced_from(&w, peer, &now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.synced_commits(), base, "an unsynced change was fsync'd");
        assert!(s.unflushed());
        assert_eq!(s.flush().ok(), Some(true));
        assert_eq!(s.synced_commits(), base + 1);
        assert!(!s.unflushed());
        assert_eq!(s.flush().ok(), Some(false), "nothing left to flush");
        let own = NodeKeypair::generate();
        s.insert(ad(&own, 1, &now), &now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.synced_commits(), base + 2, "a plain insert is fsync'd");
    }
    let s = open(dir.path(), generous(), &now);
    assert_eq!(s.len(), 51);
    assert_eq!(counts(&s), (51, 1));
}

/// A file that fails every write, resize and sync while `fail` is set (a full disk).
#[derive(Debug)]
struct Flaky {
    inner: redb::backends::FileBackend,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Flaky {
    fn check(&self) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("no space left (injected)"));
        }
        Ok(())
    }
}

impl redb::StorageBackend for Flaky {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// A store on a [`Flaky`] file at `dir`, and its switch.
fn flaky(
    dir: &Path,
    now: &Timestamp,
) -> (DurableStore, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = dir.join(FILE_NAME);
    let (at, switch) = (path.clone(), fail.clone());
    let opener: reopen::Opener = Box::new(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&at)
            .map_err(storage)?;
        let inner = redb::backends::FileBackend::new(file).map_err(storage)?;
        redb::Database::builder()
            .create_with_backend(Flaky {
                inner,
                fail: switch.clone(),
            })
            .map_err(storage)
    });
    let (s, _) =
        DurableStore::open_with(path, opener, generous(), now).unwrap_or_else(|e| panic!("{e}"));
    (s, fail)
}

/// After an I/O error (a full disk), redb refused every later operation until the
/// database was opened again: the node's store refused every change until a restart.
/// Now the next change reopens the file and writes memory over it, unsynced changes
/// lost by the reopen included.
#[test]
fn an_io_error_does_not_leave_the_store_refusing_changes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::now();
    let keys: Vec<NodeKeypair> = (0..5).map(|_| NodeKeypair::generate()).collect();
    let id = |i: usize| keys[i].node_id();
    {
        let (s, fail) = flaky(dir.path(), &now);
        s.insert(ad(&keys[0], 1, &now), &now)
            .unwrap_or_else(|e| panic!("{e}"));
        s.insert(ad(&keys[4], 1, &now), &now)
            .unwrap_or_else(|e| panic!("{e}"));
        // Unsynced: a reopen goes back to the last fsync'd commit, before these two.
        s.insert_unsynced_from(ad(&keys[1], 1, &now), Source::Local, &now)
            .unwrap_or_else(|e| panic!("{e}"));
        s.withdraw_unsynced_from(
            &NodeWithdrawal::create(&keys[4], 2, &now).unwrap_or_else(|e| panic!("{e}")),
            Source::Local,
            &now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = s.insert(ad(&keys[2], 1, &now), &now);
        assert!(err.is_err(), "the write failed: {err:?}");
        assert!(s.get(&id(2), &now).is_none(), "undone in memory");
        // While the disk is full, changes are refused (and undone) one by one.
        assert!(s.insert(ad(&keys[2], 1, &now), &now).is_err());
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        s.insert(ad(&keys[3], 1, &now), &now)
            .unwrap_or_else(|e| panic!("a change after the error: {e}"));
        assert_eq!(counts(&s), (3, 1), "0, 1, 3 and 4's tombstone on disk");
        s.set_own_sequence(9).unwrap_or_else(|e| panic!("{e}"));
    }
    let s = open(dir.path(), generous(), &now);
    for i in [0, 1, 3] {
        assert!(s.get(&id(i), &now).is_some(), "{i} survived the reopen");
    }
    assert!(s.get(&id(2), &now).is_none());
    assert!(s.get(&id(4), &now).is_none(), "withdrawn");
    assert_eq!(
        s.held_sequence(&id(4)),
        Some(mesh_advert::HeldSequence::Withdrawn(2))
    );
    assert_eq!(counts(&s), (3, 1));
    assert_eq!(s.own_sequence().unwrap_or_else(|e| panic!("{e}")), Some(9));
}
