//! The NAT traversal matrix (issue 20): for every cell of `tests/support/nat_cell.rs`
//! (each router port-preserving, symmetric or full cone; both hosts behind one router;
//! double NAT; UDP blocked on one side; IPv6 with stateful firewalls) and both
//! transports, N attempts with fresh `meshd` nodes and a fresh lab each:
//!
//! - **routing policy**: A runs `meshd connect B` (direct stage, signaling hole punch,
//!   birthday probing where one side is symmetric, relay); counted: which path it
//!   returned, whether the signaling punch succeeded,
//!   whether A held a direct connection to B at the end (the returned one, or the one
//!   DCUtR made of the relayed connection within 10 s), and the time from the start of
//!   `connect` to that direct connection;
//! - **DCUtR alone**: B dials A's relay circuit and DCUtR (started by A over the
//!   circuit) may punch a direct connection within 10 s; its success rate and the time
//!   from the dial to the direct connection.
//!
//! Needs root, iproute2, iptables and nftables (the full-cone routers); skips (prints
//! why, exits 0) otherwise. Cells run one after the other. Prints the table as Markdown
//! (BENCHMARKS.md, "NAT traversal matrix").
//!
//! `cargo bench --bench nat_matrix`; flags after `--`: `--attempts N` (20), `--cells
//! NAME,NAME` (all), `--transports tcp,quic` (both).
//!
//! `--birthday N` measures birthday-paradox probing instead (`libmesh::node::birthday`,
//! `tests/support/birthday_lab.rs`): N attempts, each in a fresh port-preserving /
//! symmetric lab (the `pp-sym` cell, where DCUtR and the signaling punch get 0), 256
//! probe sockets on the symmetric side and 256 probes from the other, then a
//! libp2p-quic connection on the probe ports after a hit; the success rate against the
//! theoretical hit probability, datagrams sent and times; plus N/4 (at least 1)
//! attempts with both routers symmetric, which must find nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/birthday_lab.rs"]
mod birthday_lab;
#[path = "../tests/support/meshd.rs"]
mod meshd;
#[path = "../tests/support/nat_cell.rs"]
mod nat_cell;
#[path = "../tests/support/netns.rs"]
mod netns;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use nat_cell::{Cell, Expect, Transport, cells, routed, upgraded};
use netns::{Topology, full_cone_available};

struct Args {
    attempts: usize,
    cells: Option<Vec<String>>,
    transports: Vec<Transport>,
    birthday: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        attempts: 20,
        cells: None,
        transports: vec![Transport::Tcp, Transport::Quic],
        birthday: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--attempts" => {
                a.attempts = value.parse().expect("--attempts N");
                i += 1;
            }
            "--birthday" => {
                a.birthday = Some(value.parse().expect("--birthday N"));
                i += 1;
            }
            "--cells" => {
                a.cells = Some(value.split(',').map(str::to_owned).collect());
                i += 1;
            }
            "--transports" => {
                a.transports = value
                    .split(',')
                    .map(|t| match t {
                        "tcp" => Transport::Tcp,
                        "quic" => Transport::Quic,
                        other => panic!("--transports tcp,quic: {other:?}"),
                    })
                    .collect();
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    a
}

/// What N attempts of one cell and transport gave.
#[derive(Default)]
struct Tally {
    attempts: usize,
    /// Attempts whose setup (lab, nodes, advertisement) failed: not counted below.
    errors: usize,
    /// `connect` returned path direct / signaling / birthday / relay.
    path_direct: usize,
    path_signaling: usize,
    path_birthday: usize,
    path_relay: usize,
    /// The signaling stage succeeded.
    punched: usize,
    /// A held a direct connection to B at the end.
    ended_direct: usize,
    /// Milliseconds from `connect` to the direct connection.
    direct_ms: Vec<u64>,
    /// DCUtR alone: attempts (set up), successes, times.
    dcutr_attempts: usize,
    dcutr_ok: usize,
    dcutr_ms: Vec<u64>,
}

/// Nearest-rank quantile.
fn quantile(v: &[u64], q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

fn times(v: &[u64]) -> String {
    match (quantile(v, 0.5), quantile(v, 0.9)) {
        (Some(p50), Some(p90)) => format!("{:.1} / {:.1} s", p50 as f64 / 1e3, p90 as f64 / 1e3),
        _ => "—".into(),
    }
}

fn rate(ok: usize, n: usize) -> String {
    if n == 0 {
        "—".into()
    } else {
        format!("{ok}/{n} ({:.0}%)", 100.0 * ok as f64 / n as f64)
    }
}

fn prefix(kind: &str, cell: &Cell) -> String {
    format!("{kind}{}", cell.name.replace('-', ""))
        .chars()
        .take(8)
        .collect()
}

fn measure(cell: &Cell, t: Transport, attempts: usize) -> Tally {
    let mut tally = Tally {
        attempts,
        ..Tally::default()
    };
    for i in 0..attempts {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| {
            let (nodes, r) = routed(&prefix("bm", cell), cell, t);
            drop(nodes);
            r
        })) {
            Ok(r) => {
                match r.route["path"].as_str() {
                    Some("direct") => tally.path_direct += 1,
                    Some("signaling") => tally.path_signaling += 1,
                    Some("birthday") => tally.path_birthday += 1,
                    _ => tally.path_relay += 1,
                }
                tally.punched += usize::from(r.punched);
                if let Some(ms) = r.direct_ms {
                    tally.ended_direct += 1;
                    tally.direct_ms.push(ms);
                }
                eprintln!(
                    "{} {} #{i}: connect {} in {} ms, direct at the end: {:?} ({} s)",
                    cell.name,
                    t.name(),
                    r.route["path"],
                    r.ms,
                    r.direct_ms,
                    started.elapsed().as_secs()
                );
            }
            Err(_) => {
                tally.errors += 1;
                eprintln!(
                    "{} {} #{i}: connect attempt failed to set up",
                    cell.name,
                    t.name()
                );
            }
        }
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| {
            let (nodes, u) = upgraded(&prefix("bd", cell), cell, t);
            drop(nodes);
            u
        })) {
            Ok(u) => {
                tally.dcutr_attempts += 1;
                if let Some(ms) = u.ms {
                    tally.dcutr_ok += 1;
                    tally.dcutr_ms.push(ms);
                }
                eprintln!(
                    "{} {} #{i}: DCUtR {:?} ({} s)",
                    cell.name,
                    t.name(),
                    u.addr,
                    started.elapsed().as_secs()
                );
            }
            Err(_) => eprintln!(
                "{} {} #{i}: DCUtR attempt failed to set up",
                cell.name,
                t.name()
            ),
        }
    }
    tally
}

fn main() {
    let a = args();
    if let Err(reason) = Topology::available() {
        println!("skipping: nat_matrix: no network-namespace NAT lab here: {reason}");
        return;
    }
    if let Some(n) = a.birthday {
        return birthday(n);
    }
    let selected: Vec<Cell> = cells()
        .into_iter()
        .filter(|c| {
            a.cells
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == c.name))
        })
        .collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    for cell in &selected {
        if cell.needs_nft()
            && let Err(reason) = full_cone_available()
        {
            println!("skipping cell {}: {reason}", cell.name);
            continue;
        }
        for &t in &a.transports {
            let tally = measure(cell, t, a.attempts);
            rows.push((*cell, t, tally));
        }
    }
    println!(
        "\nNAT traversal matrix: {} attempt(s) per cell and transport, {} s in all\n",
        a.attempts,
        started.elapsed().as_secs()
    );
    println!(
        "| cell (A / B) | transport | must end | `connect` path direct / signaling / birthday / relay | signaling punch | ends direct (punch or DCUtR) | time to direct p50 / p90 | DCUtR alone | DCUtR time p50 / p90 | setup errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (cell, t, x) in rows {
        let n = x.attempts - x.errors;
        let must = match cell.expect(t) {
            Expect::Direct => "direct",
            Expect::Relay => "relay",
            Expect::Either => "either (a race)",
            Expect::Birthday => "direct by birthday probing (~65 %), else relay",
        };
        println!(
            "| {} (`{}`) | {} | {must} | {} / {} / {} / {} | {} | {} | {} | {} | {} | {} |",
            cell.title,
            cell.name,
            t.name(),
            x.path_direct,
            x.path_signaling,
            x.path_birthday,
            x.path_relay,
            rate(x.punched, n),
            rate(x.ended_direct, n),
            times(&x.direct_ms),
            rate(x.dcutr_ok, x.dcutr_attempts),
            times(&x.dcutr_ms),
            x.errors + (x.attempts - x.dcutr_attempts),
        );
    }
}

/// `--birthday N` (see the module docs).
fn birthday(n: usize) {
    use libmesh::node::birthday::Budget;
    use netns::{Lab, Layout, NatKind};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let budget = Budget::default();
    let lab = |a, b| Lab {
        a,
        b,
        layout: Layout::Separate,
        block_udp_a: false,
    };
    let started = Instant::now();
    let mut rows = Vec::new();
    for (name, l, count) in [
        (
            "port-preserving / symmetric",
            lab(NatKind::PortPreserving, NatKind::RandomFully),
            n,
        ),
        (
            "symmetric / symmetric",
            lab(NatKind::RandomFully, NatKind::RandomFully),
            (n / 4).max(1),
        ),
    ] {
        let (mut hits, mut quic, mut sent, mut errors) = (0, 0, 0usize, 0);
        let (mut hit_ms, mut quic_ms) = (Vec::new(), Vec::new());
        for i in 0..count {
            let topo = match Topology::with("bdbench", l) {
                Ok(t) => t,
                Err(e) => {
                    errors += 1;
                    eprintln!("{name} #{i}: lab: {e}");
                    continue;
                }
            };
            let o = rt.block_on(birthday_lab::attempt(&topo, budget));
            eprintln!("{name} #{i}: {o:?}");
            hits += usize::from(o.hit.is_some());
            quic += usize::from(o.quic);
            sent += o.s_sent + o.c_sent;
            hit_ms.extend(o.hit_ms);
            quic_ms.extend(o.quic_ms.filter(|_| o.quic));
        }
        let done = count - errors;
        rows.push((name, done, hits, quic, sent, hit_ms, quic_ms, errors));
    }
    println!(
        "\nBirthday-paradox probing: {} + {} probes per attempt (hit probability {:.0}%), {} s in all\n",
        budget.sockets,
        budget.probes,
        100.0 * budget.hit_probability(),
        started.elapsed().as_secs()
    );
    println!(
        "| cell (C / S) | attempts | hit | QUIC connection | measured / expected | datagrams per attempt | time to hit p50 / p90 | time to QUIC p50 / p90 | setup errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, (name, done, hits, quic, sent, hit_ms, quic_ms, errors)) in rows.into_iter().enumerate()
    {
        let expected = if i == 0 {
            budget.hit_probability()
        } else {
            0.0
        };
        let ratio = if done == 0 {
            "—".to_owned()
        } else if expected > 0.0 {
            format!("{:.2}", quic as f64 / done as f64 / expected)
        } else {
            format!("{quic} (0 expected)")
        };
        println!(
            "| {name} | {done} | {} | {} | {ratio} | {} | {} | {} | {errors} |",
            rate(hits, done),
            rate(quic, done),
            sent.checked_div(done).unwrap_or(0),
            times(&hit_ms),
            times(&quic_ms),
        );
    }
}
