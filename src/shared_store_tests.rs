//! The directory over a real loopback socket with the durable store: reads during a
//! PUT's commit, caps that count only live entries, capped free-form fields.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use hyper::{Method, StatusCode};
use mesh_advert::own::advert_for;
use mesh_advert::{AdvertStore, StoreLimits};
use mesh_core::artifact::{Artifact, signature_value, signing_input};
use mesh_core::{NodeAdvertisement, NodeKeypair, RateLimit, Timestamp};
use serde_json::Value;

use crate::advert_store::DurableStore;
use crate::directory::{DirectoryConfig, SharedStore, router};
use crate::http_client::{HttpResponse, send};

/// Bound on waits that only a deadlock would reach (not a speed assertion).
const STUCK: Duration = Duration::from_secs(30);

fn ad(key: &NodeKeypair, seq: u64, at: &Timestamp, ttl: i64) -> NodeAdvertisement {
    let addr = "/ip4/127.0.0.1/tcp/4001"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    advert_for(key, &[addr], seq, at, ttl).unwrap_or_else(|e| panic!("{e}"))
}

fn generous(limits: StoreLimits) -> StoreLimits {
    StoreLimits {
        per_publisher: RateLimit::per_minute(10_000, 60_000),
        ..limits
    }
}

struct Directory {
    base: String,
    clock: Arc<Mutex<Timestamp>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(store: SharedStore, at: Timestamp) -> Directory {
    let clock = Arc::new(Mutex::new(at));
    let c = clock.clone();
    let config = DirectoryConfig {
        per_client: RateLimit::per_minute(10_000, 60_000),
        ..DirectoryConfig::default()
    };
    let app = router(
        store,
        config,
        Arc::new(move || c.lock().unwrap_or_else(|e| e.into_inner()).clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
    });
    Directory {
        base: format!("http://{addr}"),
        clock,
        _stop: tx,
    }
}

impl Directory {
    fn set_clock(&self, at: Timestamp) {
        *self.clock.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    async fn put_json(&self, node: &str, body: &Value) -> HttpResponse {
        let url = format!("{}/adv/{node}", self.base);
        let body = serde_json::to_vec(body).unwrap_or_else(|e| panic!("{e}"));
        send(Method::PUT, &url, Some(body))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn put(&self, advert: &NodeAdvertisement) -> HttpResponse {
        self.put_json(&advert.node_id().to_string(), &advert.to_json())
            .await
    }

    async fn get(&self, path: &str) -> HttpResponse {
        send(Method::GET, &format!("{}{path}", self.base), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn code_of(r: &HttpResponse) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["error/code"].as_str().unwrap_or_default().to_owned()
}

fn open(limits: StoreLimits, at: &Timestamp) -> (Arc<DurableStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (s, _) =
        DurableStore::open(dir.path(), generous(limits), at).unwrap_or_else(|e| panic!("{e}"));
    (Arc::new(s), dir)
}

/// Item 8: while a PUT's commit (its fsync) is in flight, GETs and walks are answered
/// and the node loop's reads go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_answered_while_a_put_commits() {
    let now = Timestamp::now();
    let (store, _dir) = open(StoreLimits::default(), &now);
    let held = NodeKeypair::generate();
    store
        .insert(ad(&held, 1, &now, 600), &now)
        .unwrap_or_else(|e| panic!("{e}"));
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    store.before_commit(move || {
        let _ = entered_tx.send(());
        let _ = release_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(STUCK);
    });
    let d = Arc::new(serve(store.clone(), now.clone()).await);
    let writer = ad(&NodeKeypair::generate(), 1, &now, 600);
    let put = {
        let (d, writer) = (d.clone(), writer.clone());
        tokio::spawn(async move { d.put(&writer).await })
    };
    tokio::task::spawn_blocking(move || entered.recv_timeout(STUCK))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("the PUT's commit started");

    let reads = async {
        let one = d.get(&format!("/adv/{}", held.node_id())).await;
        let walk = d.get("/adv?since=0").await;
        // What the node loop does: a lookup through its own handle on the store.
        let s = store.clone();
        let (id, at) = (held.node_id(), now.clone());
        let looked_up = tokio::task::spawn_blocking(move || AdvertStore::get(&*s, &id, &at))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (one, walk, looked_up)
    };
    let (one, walk, looked_up) = tokio::time::timeout(STUCK, reads)
        .await
        .expect("a read waited for the PUT's commit");
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(walk.status, StatusCode::OK);
    assert!(looked_up.is_some());

    release.send(()).unwrap_or_else(|e| panic!("{e}"));
    let r = put.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, StatusCode::CREATED);
    let found = d.get(&format!("/adv/{}", writer.node_id())).await;
    assert_eq!(found.status, StatusCode::OK);
}

/// Item 1: adverts with a minute of life fill the byte cap, and once they expired a new
/// node's PUT is accepted (and the file holds only live rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_filled_with_short_lived_adverts_takes_new_nodes_once_they_expire() {
    let t0 = Timestamp::now();
    let size = ad(&NodeKeypair::generate(), 1, &t0, 60).to_cbor().len();
    let limits = StoreLimits {
        max_bytes: 3 * size + size / 2,
        ..StoreLimits::default()
    };
    let (store, _dir) = open(limits, &t0);
    let d = serve(store.clone(), t0.clone()).await;
    for _ in 0..3 {
        let r = d.put(&ad(&NodeKeypair::generate(), 1, &t0, 60)).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let newcomer = NodeKeypair::generate();
    let r = d.put(&ad(&newcomer, 1, &t0, 600)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code_of(&r), "E_TRANSPORT_REJECTED");

    let later = t0.plus_secs(120);
    d.set_clock(later.clone());
    let r = d.put(&ad(&newcomer, 1, &later, 600)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(store.len(), 1);
    let c = store.disk_counts().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.adverts, c.tombstones), (1, 0));
}

/// Item 1: a signed advertisement whose free-form fields are oversized is refused with
/// `E_PROTO_INVALID` before it reaches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_free_form_fields_are_refused() {
    let now = Timestamp::now();
    let (store, _dir) = open(StoreLimits::default(), &now);
    let d = serve(store.clone(), now.clone()).await;
    let key = NodeKeypair::generate();
    let signed = |field: &str, value: Value| {
        let mut doc = ad(&key, 1, &now, 600).into_map();
        doc.remove("signature");
        doc.insert(field.into(), value);
        let input = signing_input(NodeAdvertisement::FAMILY, &["signature"], &doc);
        doc.insert("signature".into(), signature_value(&key.sign(&input)));
        Value::Object(doc)
    };
    let node = key.node_id().to_string();
    for (field, value) in [
        (
            "advertisement/id",
            Value::from("a".repeat(mesh_core::MAX_ADVERTISEMENT_ID + 1)),
        ),
        (
            "policy_annotations",
            serde_json::json!({"pad": "x".repeat(mesh_core::MAX_POLICY_ANNOTATIONS_BYTES)}),
        ),
    ] {
        let r = d.put_json(&node, &signed(field, value)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert_eq!(code_of(&r), "E_PROTO_INVALID", "{field}");
    }
    assert!(store.is_empty());
    // Within the caps the same construction is accepted (the signing above is sound).
    let r = d
        .put_json(
            &node,
            &signed("policy_annotations", serde_json::json!({"tier": "a"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

/// Item 1, per-publisher quota: a signed record padded past the per-publisher byte cap
/// (through an unknown field, which the schema allows) is refused, and the store is
/// unchanged; the same publisher's normal record is then accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_per_publisher_byte_cap_is_refused() {
    let now = Timestamp::now();
    let (store, _dir) = open(StoreLimits::default(), &now);
    let d = serve(store.clone(), now.clone()).await;
    let key = NodeKeypair::generate();
    let mut doc = ad(&key, 1, &now, 600).into_map();
    doc.remove("signature");
    doc.insert(
        "x-padding".into(),
        "x".repeat(mesh_advert::DEFAULT_MAX_RECORD_BYTES).into(),
    );
    let input = signing_input(NodeAdvertisement::FAMILY, &["signature"], &doc);
    doc.insert("signature".into(), signature_value(&key.sign(&input)));
    let node = key.node_id().to_string();
    let r = d.put_json(&node, &Value::Object(doc)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code_of(&r), "E_TRANSPORT_REJECTED");
    assert!(store.is_empty());
    assert_eq!(
        d.put(&ad(&key, 2, &now, 600)).await.status,
        StatusCode::CREATED
    );
}
