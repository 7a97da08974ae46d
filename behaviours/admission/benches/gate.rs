//! Cost of the relay's admission check per request against one raw Ed25519 verification
//! (target: at most 1.2x).
//!
//! Candidate: `Gate::check` on the CBOR wire bytes of a real signed
//! `relay-admission-request.v1` (decode, schema, signature, signer = connection peer,
//! addressed to this relay, `ts` fresh, nonce unused (then remembered), not revoked,
//! allowlist policy), every request with a fresh nonce. The requests (from 16 nodes, so
//! the nonce memory of each node fills as it would on a busy relay) are built and signed
//! before each round, within the 30 s `ts` window.
//!
//! Baseline: `ed25519_dalek::VerifyingKey::verify_strict` of the same requests' signing
//! inputs (`relay-admission-request.v1` || 0x00 || deterministic CBOR without
//! `signature`), keys decompressed and signatures parsed beforehand.
//!
//! Baseline and candidate alternate in `--rounds` rounds (default 15) over the same
//! number of requests; the medians are compared. Criterion's own figures follow unless
//! `--ratios-only` is given.
//!
//! `cargo bench -p mesh-admission --bench gate [-- --ratios-only] [--rounds N]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use ed25519_dalek::{Signature, VerifyingKey};
use mesh_admission::{Allowlist, Gate, Grants, NoAdverts, Purpose, server};
use mesh_core::artifact::read_signature;
use mesh_core::{Artifact, NodeId, NodeKeypair, Timestamp};
use mesh_testkit::median;

const TARGET: f64 = 1.2;
const NODES: usize = 16;
const PER_ROUND: usize = 3000;

struct Setup {
    relay: NodeKeypair,
    nodes: Vec<NodeKeypair>,
}

impl Setup {
    fn new() -> Self {
        Setup {
            relay: NodeKeypair::generate(),
            nodes: (0..NODES).map(|_| NodeKeypair::generate()).collect(),
        }
    }

    fn gate(&self) -> Gate {
        let policy = Allowlist {
            nodes: self.nodes.iter().map(NodeKeypair::node_id).collect(),
            limits: server::DEFAULT_CAPS,
        };
        Gate::new(
            self.relay.node_id(),
            Arc::new(policy),
            Arc::new(NoAdverts),
            server::DEFAULT_CAPS,
        )
    }

    /// `n` signed requests (wire bytes, signer), round-robin over the nodes.
    fn requests(&self, n: usize) -> Vec<(Vec<u8>, NodeId)> {
        let now = Timestamp::now();
        (0..n)
            .map(|i| {
                let k = &self.nodes[i % NODES];
                let purpose = if i % 2 == 0 {
                    Purpose::Reservation
                } else {
                    Purpose::Circuit { target: None }
                };
                let r =
                    mesh_admission::request::request(k, self.relay.node_id(), purpose, None, &now)
                        .unwrap();
                (r.to_cbor(), k.node_id())
            })
            .collect()
    }
}

/// The raw verification inputs of `requests`.
fn raw(requests: &[(Vec<u8>, NodeId)]) -> Vec<(VerifyingKey, Signature, Vec<u8>)> {
    requests
        .iter()
        .map(|(bytes, node)| {
            let r = mesh_core::RelayAdmissionRequest::from_cbor(bytes).unwrap();
            (
                node.fingerprint().verifying_key().unwrap(),
                read_signature(r.as_map()).unwrap(),
                r.signing_input(),
            )
        })
        .collect()
}

fn ratios(rounds: usize) {
    let s = Setup::new();
    let mut gate = s.gate();
    let grants = Grants::new(1024);
    let sample = s.requests(1);
    println!(
        "relay-admission-request.v1: wire form {} bytes, signing input {} bytes",
        sample[0].0.len(),
        raw(&sample)[0].2.len()
    );
    let (mut base, mut cand) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let requests = s.requests(PER_ROUND);
        let inputs = raw(&requests);
        let now = Timestamp::now();
        let start = Instant::now();
        for (vk, sig, input) in &inputs {
            black_box(vk.verify_strict(black_box(input), sig)).unwrap();
        }
        let b = start.elapsed();
        let start = Instant::now();
        for (bytes, node) in &requests {
            black_box(gate.check(black_box(bytes), node, &grants, &now)).unwrap();
        }
        let c = start.elapsed();
        if round > 0 {
            base.push(b.as_nanos() as f64 / PER_ROUND as f64);
            cand.push(c.as_nanos() as f64 / PER_ROUND as f64);
        }
    }
    let (b, c) = (median(&base), median(&cand));
    println!(
        "\n| what | verify_strict | Gate::check | ratio | target |\n|---|---|---|---|---|\n| admission check per request (fresh nonce, allowlist of {NODES}) | {:.1} µs | {:.1} µs | **{:.2}x** | <= {TARGET}x{} |",
        b / 1000.0,
        c / 1000.0,
        c / b,
        if c / b <= TARGET {
            " (met)"
        } else {
            " (MISSED)"
        }
    );
}

fn criterion_runs() {
    let s = Setup::new();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut gate = s.gate();
    let grants = Grants::new(1024);
    c.bench_function("admission/gate_check", |bch| {
        bch.iter_batched(
            || s.requests(1).pop().unwrap(),
            |(bytes, node)| {
                gate.check(&bytes, &node, &grants, &Timestamp::now())
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let inputs = raw(&s.requests(1));
    let (vk, sig, input) = &inputs[0];
    c.bench_function("admission/raw_verify_strict", |bch| {
        bch.iter(|| vk.verify_strict(black_box(input), sig).unwrap())
    });
    c.final_summary();
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let rounds = argv
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    if !argv.iter().any(|a| a == "--ratios-only") {
        criterion_runs();
    }
    ratios(rounds);
}
