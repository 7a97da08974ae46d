//! The seed directory over a real loopback socket: every status it promises.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use libmesh::directory::{DirectoryConfig, SharedStore, serve};
use libmesh::http_client::{HttpResponse, send};
use mesh_advert::own::advert_for;
use mesh_advert::{MemoryStore, NodeWithdrawal, StoreLimits};
use mesh_core::artifact::Artifact;
use mesh_core::{NodeAdvertisement, NodeKeypair, RateLimit, Timestamp};
use serde_json::Value;

struct Server {
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: DirectoryConfig, limits: StoreLimits) -> Server {
    let store: SharedStore = Arc::new(Mutex::new(MemoryStore::new(limits)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, store, config, async {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}"),
        _stop: tx,
    }
}

fn open_limits() -> (DirectoryConfig, StoreLimits) {
    (
        DirectoryConfig {
            per_client: RateLimit::per_minute(10_000, 60_000),
            ..DirectoryConfig::default()
        },
        StoreLimits {
            per_publisher: RateLimit::per_minute(10_000, 60_000),
            ..StoreLimits::default()
        },
    )
}

fn ad(key: &NodeKeypair, seq: u64) -> NodeAdvertisement {
    advert_for(
        key,
        &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        seq,
        &Timestamp::now(),
        600,
    )
    .unwrap()
}

async fn put(s: &Server, node: &str, body: Vec<u8>) -> HttpResponse {
    send(Method::PUT, &format!("{}/adv/{node}", s.base), Some(body))
        .await
        .unwrap()
}

async fn put_ad(s: &Server, a: &NodeAdvertisement) -> HttpResponse {
    put(
        s,
        &a.node_id().to_string(),
        serde_json::to_vec(&a.to_json()).unwrap(),
    )
    .await
}

fn json(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {:?}", r.body))
}

#[tokio::test]
async fn put_and_get_statuses() {
    let (c, l) = open_limits();
    let s = start(c, l).await;
    let k = NodeKeypair::generate();
    let node = k.node_id().to_string();

    let r = put_ad(&s, &ad(&k, 5)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(json(&r)["status"], "stored");
    assert_eq!(json(&r)["replaced"], false);
    let r = put_ad(&s, &ad(&k, 6)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(json(&r)["status"], "stored");
    assert_eq!(json(&r)["replaced"], true);
    for seq in [6, 2] {
        let r = put_ad(&s, &ad(&k, seq)).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        let b = json(&r);
        assert_eq!(b["error/code"], "E_ADV_STALE_SEQ");
        assert_eq!(b["current/sequence-no"], 6);
        assert_eq!(b["submitted/sequence-no"], seq);
    }

    // GET returns the raw artifact as stored.
    let current = ad(&k, 7);
    assert_eq!(put_ad(&s, &current).await.status, StatusCode::CREATED);
    let r = send(Method::GET, &format!("{}/adv/{node}", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(json(&r), current.to_json());
    let other = NodeKeypair::generate().node_id();
    let r = send(Method::GET, &format!("{}/adv/{other}", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(Method::GET, &format!("{}/adv/not-a-node", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&r)["error/code"], "E_PROTO_INVALID");
}

/// Every key of the Orbiplex memo's example, with a value of the same JSON type (and the
/// same value for the fixed words), is in `ours`.
fn has_memo_shape(ours: &Value, example: &str) {
    let path = mesh_testkit::shared_dir()
        .join("orbiplex-schemas/seed-directory-http")
        .join(example);
    let memo: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    for (key, want) in memo.as_object().unwrap() {
        let got = ours
            .get(key)
            .unwrap_or_else(|| panic!("{example}: no `{key}` in {ours}"));
        assert_eq!(kind(got), kind(want), "{example}: `{key}` in {ours}");
        if matches!(key.as_str(), "status" | "reason") {
            assert_eq!(got, want, "{example}: `{key}`");
        }
    }
}

#[tokio::test]
async fn answers_have_the_orbiplex_memo_shapes() {
    let (c, l) = open_limits();
    let s = start(c, l).await;
    let k = NodeKeypair::generate();
    let node = k.node_id().to_string();
    let first = ad(&k, 17);
    let r = put_ad(&s, &first).await;
    assert_eq!(r.status, StatusCode::CREATED);
    has_memo_shape(&json(&r), "put-201.json");
    assert_eq!(json(&r)["advertisement/id"], first.advertisement_id());
    assert_eq!(json(&r)["expires-at"], first.expires_at().as_str());
    assert_eq!(json(&r)["node/id"], node.as_str());
    let r = put_ad(&s, &ad(&k, 16)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    has_memo_shape(&json(&r), "put-409.json");
    assert_eq!(
        json(&r)["error/code"],
        "E_ADV_STALE_SEQ",
        "the frozen code stays"
    );
    assert_eq!(json(&r)["current/sequence-no"], 17);
    assert_eq!(json(&r)["submitted/sequence-no"], 16);
    let other = NodeKeypair::generate().node_id();
    let r = send(Method::GET, &format!("{}/adv/{other}", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    has_memo_shape(&json(&r), "get-404.json");
    assert_eq!(json(&r)["node/id"], other.to_string().as_str());
    let r = send(Method::GET, &format!("{}/adv?since=0", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    has_memo_shape(&json(&r), "since-200.json");
    // The refusals the memo leaves open carry a status word beside the frozen code.
    let r = put(&s, &node, b"[1, 2]".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&r)["status"], "invalid");
    assert_eq!(json(&r)["error/code"], "E_PROTO_INVALID");
}

#[tokio::test]
async fn bad_bodies_get_codes() {
    let (c, l) = open_limits();
    let s = start(c, l).await;
    let k = NodeKeypair::generate();
    let node = k.node_id().to_string();
    let good = ad(&k, 3).to_json();

    let mut tampered = good.clone();
    tampered["sequence/no"] = 4.into();
    let mut no_endpoints = good.clone();
    no_endpoints["endpoints"] = serde_json::json!([]);
    // Validly signed, with a field nested 41 deep: its CBOR (what the store keeps) is
    // deeper than any decoder of ours reads, so it was stored and never read back.
    let mut deep = good.as_object().unwrap().clone();
    deep.remove("signature");
    deep.insert(
        "x-deep".into(),
        (0..41).fold(serde_json::json!(1), |v, _| serde_json::json!([v])),
    );
    let input = mesh_core::artifact::signing_input(
        NodeAdvertisement::FAMILY,
        NodeAdvertisement::UNSIGNED_FIELDS,
        &deep,
    );
    deep.insert(
        "signature".into(),
        mesh_core::artifact::signature_value(&k.sign(&input)),
    );
    let expired = advert_for(
        &k,
        &["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        9,
        &Timestamp::now().plus_secs(-700),
        600,
    )
    .unwrap();
    let cases: Vec<(String, Vec<u8>, StatusCode, &str)> = vec![
        (
            node.clone(),
            serde_json::to_vec(&tampered).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "E_SIG_INVALID",
        ),
        (
            node.clone(),
            serde_json::to_vec(&no_endpoints).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "E_PROTO_INVALID",
        ),
        (
            node.clone(),
            serde_json::to_vec(&deep).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "E_PROTO_INVALID",
        ),
        (
            node.clone(),
            serde_json::to_vec(&expired.to_json()).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "E_ADV_EXPIRED",
        ),
        (
            node.clone(),
            b"{\"schema/v\": 1, trunc".to_vec(),
            StatusCode::BAD_REQUEST,
            "E_PROTO_INVALID",
        ),
        (
            node.clone(),
            b"[1, 2, 3]".to_vec(),
            StatusCode::BAD_REQUEST,
            "E_PROTO_INVALID",
        ),
        (
            node.clone(),
            vec![0xff, 0xfe],
            StatusCode::BAD_REQUEST,
            "E_PROTO_INVALID",
        ),
        (
            node.clone(),
            vec![b' '; 70_000],
            StatusCode::PAYLOAD_TOO_LARGE,
            "E_PROTO_INVALID",
        ),
        (
            NodeKeypair::generate().node_id().to_string(),
            serde_json::to_vec(&good).unwrap(),
            StatusCode::BAD_REQUEST,
            "E_PROTO_INVALID",
        ),
        (
            "node:did:key:zNOPE".into(),
            serde_json::to_vec(&good).unwrap(),
            StatusCode::BAD_REQUEST,
            "E_PROTO_INVALID",
        ),
    ];
    for (path, body, status, code) in cases {
        let r = put(&s, &path, body).await;
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(json(&r)["error/code"], code);
    }
    // Nothing bad was stored; the good one still goes in.
    assert_eq!(
        put(&s, &node, serde_json::to_vec(&good).unwrap())
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn cursor_walk_returns_each_advertisement_once() {
    let (c, l) = open_limits();
    let s = start(DirectoryConfig { max_items: 10, ..c }, l).await;
    let keys: Vec<NodeKeypair> = (0..30).map(|_| NodeKeypair::generate()).collect();
    for k in &keys {
        assert_eq!(put_ad(&s, &ad(k, 1)).await.status, StatusCode::CREATED);
    }
    for k in &keys[..4] {
        assert_eq!(put_ad(&s, &ad(k, 2)).await.status, StatusCode::CREATED);
    }
    let r = send(Method::GET, &format!("{}/adv", s.base), None)
        .await
        .unwrap();
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "no listing without a cursor"
    );

    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..20 {
        let r = send(
            Method::GET,
            &format!("{}/adv?since={cursor}&limit=7", s.base),
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let b = json(&r);
        assert_eq!(b["max-items"], 10);
        let items = b["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        if items.is_empty() {
            break;
        }
        for item in items {
            let a = NodeAdvertisement::verify_json(item.clone(), &Timestamp::now()).unwrap();
            assert!(seen.insert(a.node_id()), "{} seen twice", a.node_id());
        }
        cursor = b["next"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen.len(), 30);
    let r = send(Method::GET, &format!("{}/adv?since=zzz", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let (_, l) = open_limits();
    let s = start(
        DirectoryConfig {
            per_client: RateLimit::per_minute(5, 1),
            ..DirectoryConfig::default()
        },
        l,
    )
    .await;
    let other = NodeKeypair::generate().node_id();
    for _ in 0..5 {
        let r = send(Method::GET, &format!("{}/adv/{other}", s.base), None)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let r = send(Method::GET, &format!("{}/adv/{other}", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.retry_after.unwrap() >= 1);
    assert_eq!(json(&r)["error/code"], "E_TRANSPORT_REJECTED");

    // Per publisher: two changes, then 429, whatever the client.
    let (c, _) = open_limits();
    let s = start(
        c,
        StoreLimits {
            per_publisher: RateLimit::per_minute(2, 1),
            ..StoreLimits::default()
        },
    )
    .await;
    let k = NodeKeypair::generate();
    assert_eq!(put_ad(&s, &ad(&k, 1)).await.status, StatusCode::CREATED);
    assert_eq!(put_ad(&s, &ad(&k, 2)).await.status, StatusCode::CREATED);
    let r = put_ad(&s, &ad(&k, 3)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.retry_after.unwrap() >= 1);
    assert_eq!(
        put_ad(&s, &ad(&NodeKeypair::generate(), 1)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_signed_withdrawal_removes_the_advertisement() {
    let (c, l) = open_limits();
    let s = start(c, l).await;
    let k = NodeKeypair::generate();
    let node = k.node_id().to_string();
    let url = format!("{}/adv/{node}", s.base);
    assert_eq!(put_ad(&s, &ad(&k, 5)).await.status, StatusCode::CREATED);
    let now = Timestamp::now();
    let body = |w: &NodeWithdrawal| serde_json::to_vec(&w.to_json()).unwrap();

    // Not above the held advertisement: 409.
    let stale = NodeWithdrawal::create(&k, 5, &now).unwrap();
    let r = put(&s, &node, body(&stale)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(json(&r)["error/code"], "E_ADV_STALE_SEQ");
    // Another node's withdrawal under this path: 400; a tampered one: 422.
    let other = NodeWithdrawal::create(&NodeKeypair::generate(), 9, &now).unwrap();
    assert_eq!(
        put(&s, &node, body(&other)).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut tampered = NodeWithdrawal::create(&k, 9, &now).unwrap().to_json();
    tampered["sequence/no"] = 10.into();
    let r = put(&s, &node, serde_json::to_vec(&tampered).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json(&r)["error/code"], "E_SIG_INVALID");
    assert_eq!(
        send(Method::GET, &url, None).await.unwrap().status,
        StatusCode::OK
    );

    // The node's own, above: 200, then 404 and replays refused.
    let w = NodeWithdrawal::create(&k, 6, &now).unwrap();
    let r = put(&s, &node, body(&w)).await;
    assert_eq!(r.status, StatusCode::OK);
    let b = json(&r);
    assert_eq!(b["status"], "withdrawn");
    assert_eq!(b["sequence/no"], 6);
    assert_eq!(
        send(Method::GET, &url, None).await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    for seq in [5, 6] {
        assert_eq!(put_ad(&s, &ad(&k, seq)).await.status, StatusCode::CONFLICT);
    }
    // A newer advertisement brings the node back.
    assert_eq!(put_ad(&s, &ad(&k, 7)).await.status, StatusCode::CREATED);
    assert_eq!(
        send(Method::GET, &url, None).await.unwrap().status,
        StatusCode::OK
    );
}

/// `PUT /adv/{node}` from a socket bound to `from` (a loopback address), as raw HTTP/1.1;
/// returns the status code and the body.
async fn put_ad_from(s: &Server, from: &str, a: &NodeAdvertisement) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::to_vec(&a.to_json()).unwrap();
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!(
        "PUT /adv/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        a.node_id(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("answer within 10 s")
    .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// What HTTP clients publish counts under their address: one client cannot fill the
/// store, another client's address still gets in.
#[tokio::test]
async fn each_client_address_has_its_own_share_of_the_store() {
    let (c, l) = open_limits();
    let s = start(
        c,
        StoreLimits {
            per_source_entries: 2,
            ..l
        },
    )
    .await;
    for _ in 0..2 {
        let (status, _) = put_ad_from(&s, "127.0.0.1", &ad(&NodeKeypair::generate(), 1)).await;
        assert_eq!(status, 201);
    }
    let (status, body) = put_ad_from(&s, "127.0.0.1", &ad(&NodeKeypair::generate(), 1)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error/code"], "E_TRANSPORT_REJECTED", "{body}");
    let (status, body) = put_ad_from(&s, "127.0.0.2", &ad(&NodeKeypair::generate(), 1)).await;
    assert_eq!(status, 201, "{body}");
}

/// Requests axum cannot take apart (a query that does not parse, a path that is not
/// UTF-8) are refused like every other bad request: 400 with the frozen-code error body.
/// axum answered them in plain text.
#[tokio::test]
async fn unparsable_queries_and_paths_get_codes() {
    let (c, l) = open_limits();
    let s = start(c, l).await;
    for path in [
        "/adv?since=0&limit=abc",
        "/adv?since=0&limit=-1",
        "/adv/%FF",
    ] {
        let r = send(Method::GET, &format!("{}{path}", s.base), None)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{path}");
        let body = json(&r);
        assert_eq!(body["error/code"], "E_PROTO_INVALID", "{path}: {body}");
    }
    let r = put(&s, "%FF", b"{}".to_vec()).await;
    assert_eq!(r.status, 400);
    assert_eq!(json(&r)["error/code"], "E_PROTO_INVALID");
}

/// Large advertisements (anyone may store them under fresh keys) come at most
/// `MAX_PAGE_BYTES` of wire form per answer, and the walk still returns each once: 100
/// of about 15 KiB made one answer of megabytes for a request of a hundred bytes.
#[tokio::test]
async fn a_page_of_large_advertisements_is_cut_by_bytes() {
    let (c, l) = open_limits();
    let s = start(c, l).await;
    let keys: Vec<NodeKeypair> = (0..40).map(|_| NodeKeypair::generate()).collect();
    for k in &keys {
        let mut doc = ad(k, 1).to_json();
        doc["x-pad"] = serde_json::json!("p".repeat(15 * 1024));
        let serde_json::Value::Object(mut m) = doc else {
            unreachable!()
        };
        m.remove("signature");
        let big = NodeAdvertisement::sign(m, k).unwrap();
        assert_eq!(put_ad(&s, &big).await.status, StatusCode::CREATED);
    }
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    for _ in 0..20 {
        let r = send(Method::GET, &format!("{}/adv?since={cursor}", s.base), None)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body.len() < 2 * libmesh::directory::MAX_PAGE_BYTES + 64 * 1024,
            "an answer of {} bytes",
            r.body.len()
        );
        let b = json(&r);
        let items = b["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        pages += 1;
        for item in items {
            let a = NodeAdvertisement::verify_json(item.clone(), &Timestamp::now()).unwrap();
            assert!(seen.insert(a.node_id()), "{} seen twice", a.node_id());
        }
        cursor = b["next"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen.len(), keys.len());
    assert!(pages >= 3, "{pages} pages");
}

/// An embedder's `max_items` of 0 answers pages of one (it panicked in `clamp` on every
/// listing, in the request's task).
#[tokio::test]
async fn a_max_items_of_zero_lists_one_at_a_time() {
    let (c, l) = open_limits();
    let s = start(DirectoryConfig { max_items: 0, ..c }, l).await;
    for _ in 0..2 {
        let k = NodeKeypair::generate();
        assert_eq!(put_ad(&s, &ad(&k, 1)).await.status, StatusCode::CREATED);
    }
    let r = send(Method::GET, &format!("{}/adv?since=0", s.base), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
}
