//! `GET /metrics` as an operator reads it, after real traffic between `meshd` processes
//! on loopback: libmesh's own families (`libmesh_…`) with their labels and non-zero
//! values — sessions, refused handshakes, adverts stored and refused, DHT records
//! refused, each DHT on its own, signaling frames, relay grants and denials, swarm
//! members —, libp2p's families with a single `libp2p_` prefix and no mixed Kademlia
//! family; dropped events on an in-process node whose application does not read; and
//! the Grafana dashboard (`deploy/grafana/meshd.json`) names only metrics a node
//! exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/raw_http.rs"]
mod raw_http;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use meshd::{LOCAL, Meshd, bin};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `k="v",k2="v2"` split at the commas outside quotes.
fn split_labels(body: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        out.push(&body[start..]);
    }
    out
}

/// The samples of a Prometheus/OpenMetrics text.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line: name value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = split_labels(body)
                    .into_iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label k=v");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The sum of the samples named `name` whose labels include `want` (a wanted value
/// `a|b` matches either).
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter().all(|(k, v)| {
                s.labels
                    .get(*k)
                    .is_some_and(|have| v.split('|').any(|v| v == have))
            })
        })
        .map(|s| s.value)
        .sum()
}

/// `GET /metrics` of a node started with `--metrics`.
fn metrics(n: &Meshd) -> String {
    let base = n.ready["metrics"].as_str().expect("metrics address");
    let (code, text) = raw_http::get(&format!("{base}/metrics"));
    assert_eq!(code, 200, "{text}");
    text
}

/// Polls `/metrics` of `n` until every check holds (bounded); returns the last text.
fn wait_metrics(n: &Meshd, what: &str, checks: &[(&str, &[(&str, &str)])]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics(n);
        let samples = parse(&text);
        let missing: Vec<String> = checks
            .iter()
            .filter(|(name, labels)| value(&samples, name, labels) <= 0.0)
            .map(|(name, labels)| format!("{name}{labels:?}"))
            .collect();
        if missing.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no non-zero sample for {missing:?} within {WAIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn node_id(dir: &Path) -> String {
    let out = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["identity", "init"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["node/id"].as_str().unwrap().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An unsigned varint.
/// A relay admitting A and denying B, A and B in one discovery-key swarm with a setup
/// payload from A to B, and a hostile peer sending a bad hello, a bad advertisement, a
/// bad signaling frame and a bad mesh-DHT record to the relay: then every libmesh family
/// shows the traffic, and the dashboard's queries name only exported metrics.
#[test]
fn metrics_show_libmesh_traffic_and_the_dashboard_names_only_exported_metrics() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a_id = node_id(dirs[1].path());
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let policy = format!("allowlist:{a_id}");
    let relay = Meshd::start(
        dirs[0].path(),
        &[
            "--listen",
            &listen,
            "--external",
            &listen,
            "--bootstrap",
            "none",
            "--kad-mode",
            "server",
            "--amino-private-addrs",
            "--events",
            "--relay-server",
            "--admission",
            &policy,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let relay_addr = format!("{listen}/p2p/{}", relay.peer_id());
    let seed = relay.seed();
    let mut args = LOCAL.to_vec();
    args.extend([
        "--seed",
        &seed,
        "--relay",
        &relay_addr,
        "--no-autonat",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let a = Meshd::start(dirs[1].path(), &args);
    let mut b = Meshd::start(dirs[2].path(), &args);
    for n in [&a, &b] {
        n.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(1));
    }
    let b_id = b.node_id();

    // A discovery-key swarm with both, and a setup payload from A to B.
    let key = a.cli_ok(&["swarm", "join", "metrics-test"])["swarm"]
        .as_str()
        .unwrap()
        .to_owned();
    b.cli_ok(&["swarm", "join", &key]);
    let payload = dirs[1].path().join("offer.sdp");
    std::fs::write(&payload, b"v=0\r\n").unwrap();
    a.cli_ok(&[
        "signal",
        "send",
        &b_id,
        "--payload-file",
        payload.to_str().unwrap(),
    ]);
    b.wait_line(WAIT, |v| v["event"] == "signal-received")
        .expect("B got the setup payload");

    // The hostile peer: bodies no well-behaved peer sends, each on its protocol.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hostile = rt.block_on(async {
        let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let peer = hostile
            .connect(relay_addr.parse().unwrap(), WAIT)
            .await
            .unwrap();
        let garbage = [0xa1, 0x61, 0x78, 0x01]; // {"x": 1}
        for protocol in [
            "/mesh/session/1.0.0",
            "/mesh/advert/1.0.0",
            "/mesh/signal/1.0.0",
        ] {
            hostile.send(peer, protocol, &garbage, WAIT).await.unwrap();
        }
        let stranger = NodeKeypair::generate().node_id();
        let put = mesh_testkit::kad_wire::put_value(
            format!("/mesh/adv/{stranger}").as_bytes(),
            b"not an advert",
        );
        // The node answers a put (an echo) or closes; either way it saw the record.
        let _ = hostile.send(peer, "/mesh/kad/1.0.0", &put, WAIT).await;
        hostile
    });

    // The relay: sessions, the refused hello, advert and frame, the refused DHT
    // record, the grant to A and the denial to B, both DHTs.
    let r_text = wait_metrics(
        &relay,
        "relay",
        &[
            ("libmesh_sessions", &[("state", "hot|warm")]),
            ("libmesh_session_events_total", &[("event", "established")]),
            ("libmesh_sessions_refused_total", &[("by", "local")]),
            ("libmesh_adverts_refused_total", &[]),
            ("libmesh_signal_refused_total", &[("by", "local")]),
            ("libmesh_dht_records_refused_total", &[("dht", "mesh")]),
            ("libmesh_relay_grants_total", &[("purpose", "reservation")]),
            (
                "libmesh_relay_denials_total",
                &[("code", "E_TRANSPORT_REJECTED"), ("stage", "admission")],
            ),
            ("libmesh_dht_inbound_requests_total", &[("dht", "mesh")]),
            ("libmesh_dht_peers", &[("dht", "mesh")]),
            ("libmesh_dht_peers", &[("dht", "amino")]),
            ("libmesh_dht_routing_updates_total", &[("dht", "amino")]),
            ("libmesh_dht_routing_updates_total", &[("dht", "mesh")]),
            ("libmesh_adverts", &[]),
            // A and B dial the relay.
            ("libp2p_swarm_connections_incoming_total", &[]),
        ],
    );
    // A: adverts stored, a frame sent, the swarm, queries on both DHTs (the swarm's
    // provider record goes to Amino, the advertisement to the mesh DHT).
    let a_text = wait_metrics(
        &a,
        "A",
        &[
            ("libmesh_adverts_stored_total", &[]),
            (
                "libmesh_signal_frames_total",
                &[("direction", "sent"), ("kind", "setup_payload")],
            ),
            ("libmesh_swarms", &[]),
            ("libmesh_swarm_members", &[]),
            ("libmesh_dht_queries_total", &[("dht", "mesh")]),
            ("libmesh_dht_queries_total", &[("dht", "amino")]),
            (
                "libmesh_dht_query_duration_seconds_count",
                &[("dht", "mesh")],
            ),
            // A dials the relay; whether B dials A or A dials B is a race, so A's
            // incoming counter may stay at zero (it did once in a local CI run).
            (
                "libp2p_swarm_connections_established_total",
                &[("role", "Dialer")],
            ),
            ("libp2p_bandwidth_bytes_total", &[]),
            ("libmesh_relay_answers_total", &[("outcome", "granted")]),
        ],
    );
    let b_text = wait_metrics(
        &b,
        "B",
        &[
            (
                "libmesh_signal_frames_total",
                &[("direction", "received"), ("kind", "setup_payload")],
            ),
            ("libmesh_swarm_members", &[]),
            // B was denied by the relay, and sees why.
            (
                "libmesh_relay_answers_total",
                &[("outcome", "denied"), ("code", "E_TRANSPORT_REJECTED")],
            ),
        ],
    );
    drop(hostile);

    // The dropped-events counter is there on every node (non-zero: the in-process test
    // below), and the naming holds everywhere.
    let mut exported = BTreeSet::new();
    for (who, text) in [("relay", &r_text), ("A", &a_text), ("B", &b_text)] {
        assert!(
            text.contains("\nlibmesh_events_dropped_total 0\n"),
            "{who}: {text}"
        );
        for s in parse(text) {
            assert!(
                s.name.starts_with("libmesh_") || s.name.starts_with("libp2p_"),
                "{who}: {}",
                s.name
            );
            assert!(!s.name.starts_with("libp2p_libp2p_"), "{who}: {}", s.name);
            assert!(!s.name.starts_with("libp2p_kad_"), "{who}: {}", s.name);
            exported.insert(s.name);
        }
    }
    check_dashboard(&exported);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// An in-process node whose application never reads its events, flooded with bad
/// hellos (each one a `SessionRejected` event): past the queue's capacity the events
/// are dropped, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_events_are_counted() {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        ..NodeConfig::default()
    };
    let limits = config.http.limits();
    let (n, registry) = mesh_testkit::node::start_node_with(
        NodeKeypair::generate(),
        config,
        Arc::new(NoTrace),
        WAIT,
        |node| node.registry(),
    )
    .await;
    // The node's metrics server, as `meshd run --metrics` serves it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = libmesh::control::metrics_router(n.handle.clone(), registry);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(libmesh::http_serve::serve(
        listener,
        app,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    let get = || {
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let (code, text) = raw_http::get(&format!("{base}/metrics"));
                assert_eq!(code, 200, "{text}");
                text
            })
            .await
            .unwrap()
        }
    };
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(n.p2p_addr(), WAIT).await.unwrap();
    let sent = libmesh::node::EVENT_QUEUE + 64;
    let mut dropped = 0.0;
    for i in 0..sent {
        hostile
            .send(peer, "/mesh/session/1.0.0", &[0xa0], WAIT)
            .await
            .unwrap();
        if i % 128 == 127 {
            dropped = value(&parse(&get().await), "libmesh_events_dropped_total", &[]);
            if dropped > 0.0 {
                break;
            }
        }
    }
    // `/metrics` serves one encoding for up to `MAX_AGE`: the last read is a fresh one.
    tokio::time::sleep(libmesh::status_cache::MAX_AGE + Duration::from_millis(100)).await;
    let samples = parse(&get().await);
    let refused = value(
        &samples,
        "libmesh_sessions_refused_total",
        &[("by", "local")],
    );
    assert!(refused >= 128.0, "{refused} refusals counted");
    let dropped = dropped.max(value(&samples, "libmesh_events_dropped_total", &[]));
    assert!(dropped > 0.0, "no dropped event after {sent} unread events");
    // The status agrees with the metric.
    let status = n.handle.status().await.unwrap();
    assert!(status.events_dropped as f64 >= dropped);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// PromQL words that are not metric names: functions, aggregations, keywords.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "abs",
    "ceil",
    "floor",
    "round",
    "clamp_min",
    "clamp_max",
    "label_replace",
    "label_join",
    "vector",
    "scalar",
    "time",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "last_over_time",
    "changes",
    "resets",
    "absent",
    "sort",
    "sort_desc",
    "le",
    "inf",
    "nan",
];

/// The metric names in a PromQL expression: identifiers outside label matchers,
/// ranges, strings and grouping lists, that are not functions or keywords.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    // Blank out strings, `{…}` matchers and `[…]` ranges.
    let mut flat = String::new();
    let (mut depth_brace, mut depth_bracket, mut quote) = (0, 0, None);
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => {
                flat.push(c);
                continue;
            }
            _ => {}
        }
        flat.push(' ');
    }
    // Tokens: identifiers, and whether a `(` follows.
    let chars: Vec<char> = flat.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut grouping = false; // inside `by (…)`, `without (…)`, `on (…)`, …
    let mut depth = 0usize;
    let mut grouping_depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if c == '(' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == ')' {
            if grouping && depth == grouping_depth {
                grouping = false;
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let before_paren = next == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
                && before_paren
            {
                grouping = true;
                grouping_depth = depth + 1;
                continue;
            }
            if grouping || before_paren || PROMQL_WORDS.contains(&lower.as_str()) {
                continue;
            }
            names.insert(word);
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // Numbers (and durations such as 5m outside ranges): skip the token.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    names
}

#[test]
fn promql_names_are_parsed_out_of_expressions() {
    let got = promql_metrics(
        "histogram_quantile(0.9, sum by (le, dht) (rate(libmesh_dht_query_duration_seconds_bucket{instance=~\"$instance\"}[$__rate_interval])))",
    );
    assert_eq!(
        got,
        BTreeSet::from(["libmesh_dht_query_duration_seconds_bucket".to_owned()])
    );
    let got = promql_metrics(
        "sum(libmesh_sessions{state=~\"hot|warm\"}) / on(instance) group_left() count(libp2p_swarm_connections_established_count offset 5m) or vector(0)",
    );
    assert_eq!(
        got,
        BTreeSet::from([
            "libmesh_sessions".to_owned(),
            "libp2p_swarm_connections_established_count".to_owned(),
        ])
    );
    assert!(promql_metrics("rate(x_total[5m]) * 8").contains("x_total"));
}

/// Every `expr` of every panel target in the dashboard names only metrics in
/// `exported` (sample names as `/metrics` writes them: counters with `_total`,
/// histograms as `_bucket`, `_sum`, `_count`).
fn check_dashboard(exported: &BTreeSet<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/meshd.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    check_queries(&dashboard, exported);
}

/// The checks of [`check_dashboard`] on a parsed dashboard.
fn check_queries(dashboard: &Value, exported: &BTreeSet<String>) {
    let mut panels = Vec::new();
    fn collect<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            out.push(p);
            collect(p, out);
        }
    }
    collect(dashboard, &mut panels);
    let mut exprs = 0;
    let mut named = BTreeSet::new();
    for p in &panels {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("a target has an expr");
            let names = promql_metrics(expr);
            assert!(!names.is_empty(), "panel {title}: no metric in {expr}");
            for n in names {
                assert!(
                    exported.contains(&n),
                    "panel {title}: {n} is not exported by the node (expr {expr})"
                );
                named.insert(n);
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 10, "only {exprs} queries");
    // The node picker's `label_values(METRIC, instance)` too.
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        if let Some(inner) = q.strip_prefix("label_values(") {
            let metric = inner.split(',').next().unwrap().trim();
            assert!(
                exported.contains(metric),
                "variable {}: {metric}",
                v["name"]
            );
        }
    }
    // The areas the dashboard is for.
    for area in [
        "libmesh_sessions",
        "libmesh_adverts_stored_total",
        "libmesh_signal_frames_total",
        "libmesh_relay_grants_total",
        "libmesh_relay_denials_total",
        "libmesh_dht_queries_total",
        "libp2p_gossipsub_messages_total",
        "libp2p_bandwidth_bytes_total",
    ] {
        assert!(named.contains(area), "the dashboard has no panel on {area}");
    }
}

/// The check refuses a query on a metric the node does not export (a counter without
/// its `_total`, here), in a panel nested in a row too.
#[test]
#[should_panic(expected = "libmesh_relay_grants is not exported")]
fn a_dashboard_query_on_an_unexported_metric_is_refused() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/meshd.json");
    let mut dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Everything the real dashboard names counts as exported…
    let mut exported = BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exported.extend(promql_metrics(t["expr"].as_str().unwrap()));
        }
    }
    exported.insert("libmesh_events_dropped_total".to_owned());
    // …but not a name without its counter suffix.
    dashboard["panels"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "type": "row", "title": "collapsed", "panels": [{
                "type": "timeseries", "title": "bad",
                "targets": [{"expr": "sum(rate(libmesh_relay_grants[5m]))"}],
            }],
        }));
    check_queries(&dashboard, &exported);
}
