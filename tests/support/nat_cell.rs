//! One cell of the NAT traversal matrix (issue 20): a lab from `netns.rs`, a public
//! `meshd` (seed, DHT server, relay) and two private ones, A and B, started fresh for
//! each attempt; A reaches B by the routing policy ([`routed`]: `meshd connect`, whose
//! signaling stage is the hole punch) or B dials A's relay circuit and DCUtR upgrades it
//! ([`upgraded`]). Shared by `tests/node_nat_matrix.rs` (one attempt per cell, the path
//! asserted) and `benches/nat_matrix.rs` (N attempts, rates and times).
//!
//! Use with `#[path = "support/meshd.rs"] mod meshd;` and
//! `#[path = "support/netns.rs"] mod netns;` beside it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::meshd::Meshd;
use crate::netns::{Host, Lab, Layout, NatKind, Topology, tool};

/// The port every node listens on (QUIC and TCP).
pub(crate) const PORT: u16 = 4001;
/// Bound on each wait for the mesh to settle (sessions, reservations, advertisement).
const SETTLE: Duration = Duration::from_secs(40);
/// How long DCUtR gets to turn the relayed connection into a direct one.
const UPGRADE: Duration = Duration::from_secs(10);

/// Which transport the private nodes listen on (and reach the public node over).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Quic => "QUIC",
        }
    }
}

/// Where a connection from A to B must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    Direct,
    Relay,
    /// Either, from one attempt to the next (a race): only the rate is measured.
    Either,
    /// Direct by the birthday stage (`connect` path `birthday`) when a probe meets
    /// the symmetric NAT's mapping (about 65 % of attempts), the relay otherwise.
    Birthday,
}

/// One cell: a lab and what the routing policy must end on for each transport.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cell {
    /// Short name (letters, digits, `-`), e.g. `pp-sym`.
    pub(crate) name: &'static str,
    /// What a reader sees in the table.
    pub(crate) title: &'static str,
    pub(crate) lab: Lab,
    pub(crate) tcp: Expect,
    pub(crate) quic: Expect,
}

impl Cell {
    pub(crate) fn expect(&self, t: Transport) -> Expect {
        match t {
            Transport::Tcp => self.tcp,
            Transport::Quic => self.quic,
        }
    }

    /// Whether the lab needs `nft` (a full-cone router).
    pub(crate) fn needs_nft(&self) -> bool {
        self.lab.a == NatKind::FullCone || self.lab.b == NatKind::FullCone
    }
}

fn sep(a: NatKind, b: NatKind) -> Lab {
    Lab {
        a,
        b,
        layout: Layout::Separate,
        block_udp_a: false,
    }
}

/// Every cell of the matrix, in table order.
pub(crate) fn cells() -> Vec<Cell> {
    use Expect::{Birthday, Direct, Either, Relay};
    use NatKind::{FullCone as Fc, PortPreserving as Pp, RandomFully as Sym};
    let cell = |name, title, lab, tcp, quic| Cell {
        name,
        title,
        lab,
        tcp,
        quic,
    };
    vec![
        cell(
            "pp-pp",
            "port-preserving / port-preserving",
            sep(Pp, Pp),
            Direct,
            Direct,
        ),
        // QUIC: DCUtR and the signaling punch cannot work; the birthday stage can.
        cell(
            "pp-sym",
            "port-preserving / symmetric",
            sep(Pp, Sym),
            Relay,
            Birthday,
        ),
        cell(
            "sym-sym",
            "symmetric / symmetric",
            sep(Sym, Sym),
            Relay,
            Relay,
        ),
        cell(
            "fc-fc",
            "full cone / full cone",
            sep(Fc, Fc),
            Direct,
            Direct,
        ),
        cell(
            "fc-pp",
            "full cone / port-preserving",
            sep(Fc, Pp),
            Direct,
            Direct,
        ),
        // TCP: DCUtR's dials race. B's SYN to A's mapped port reaches A's listening
        // socket (A's router lets anything in) while A's own dial to B's observed
        // address gets nowhere; some attempts end direct, some stay relayed.
        cell(
            "fc-sym",
            "full cone / symmetric",
            sep(Fc, Sym),
            Either,
            Direct,
        ),
        cell(
            "same",
            "both behind one router (port-preserving)",
            Lab {
                layout: Layout::SameRouter,
                ..sep(Pp, Pp)
            },
            Direct,
            Direct,
        ),
        cell(
            "cgnat",
            "double NAT (home + carrier, both port-preserving) / port-preserving",
            Lab {
                layout: Layout::DoubleNat(Pp),
                ..sep(Pp, Pp)
            },
            Direct,
            Direct,
        ),
        cell(
            "noudp",
            "UDP blocked at A / port-preserving",
            Lab {
                block_udp_a: true,
                ..sep(Pp, Pp)
            },
            Direct,
            Relay,
        ),
        // TCP: DCUtR alone punched 2 of 2, but after `connect` (whose direct stage
        // first sent SYNs into B's firewall) the relayed connection was upgraded within
        // 10 s in 1 of 2 bench attempts: measured, not asserted.
        cell(
            "v6fw",
            "IPv6, no NAT, stateful firewall on both sides",
            Lab {
                layout: Layout::Ipv6Firewall,
                ..sep(Pp, Pp)
            },
            Either,
            Direct,
        ),
    ]
}

/// What `meshd connect` from A to B ended on, and what A and B held afterwards.
#[derive(Clone, Debug)]
pub(crate) struct Routed {
    /// The JSON `meshd connect` printed (`path`, `addr`, `ms`, `stages`).
    pub(crate) route: Value,
    /// The connection `connect` returned is direct (not through a relay circuit).
    pub(crate) direct: bool,
    /// The signaling stage (the hole punch) succeeded.
    pub(crate) punched: bool,
    /// `ms` of the whole `connect` (every stage tried).
    pub(crate) ms: u64,
    /// The direct connection A holds to B at the end: the one `connect` returned, or
    /// the one DCUtR made of the relayed connection within [`UPGRADE`] after it.
    pub(crate) ended_direct: Option<String>,
    /// Milliseconds from the start of `connect` to that direct connection.
    pub(crate) direct_ms: Option<u64>,
}

/// What DCUtR made of B's relayed connection to A.
#[derive(Clone, Debug)]
pub(crate) struct Upgraded {
    /// Milliseconds from B's dial of A's circuit to a direct connection; `None` when
    /// none came within [`UPGRADE`].
    pub(crate) ms: Option<u64>,
    /// The direct connection's address (as B lists it).
    pub(crate) addr: Option<String>,
}

/// The three nodes of one attempt (the lab outlives them: fields drop in order).
pub(crate) struct Nodes {
    pub(crate) a: Meshd,
    pub(crate) b: Meshd,
    pub(crate) p: Meshd,
    _dirs: Vec<tempfile::TempDir>,
    pub(crate) topo: Topology,
}

fn launcher(topo: &Topology, host: Host) -> Option<Vec<String>> {
    Some(vec![
        tool("ip").display().to_string(),
        "netns".into(),
        "exec".into(),
        topo.ns(host).to_owned(),
    ])
}

/// `/ip4/IP` or `/ip6/IP`.
fn ip_proto(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("/ip4/{v4}"),
        std::net::IpAddr::V6(v6) => format!("/ip6/{v6}"),
    }
}

fn on(ip: &str, t: Transport) -> String {
    match t {
        Transport::Tcp => format!("{ip}/tcp/{PORT}"),
        Transport::Quic => format!("{ip}/udp/{PORT}/quic-v1"),
    }
}

/// `MESH_NAT_LOG=FILTER` runs the nodes with `RUST_LOG=FILTER`, their logs in their data
/// dirs ([`Nodes::log_tails`]).
fn start(topo: &Topology, host: Host, dir: &Path, args: &[String]) -> Meshd {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match std::env::var("MESH_NAT_LOG") {
        Ok(filter) if !filter.is_empty() => {
            Meshd::start_logged(launcher(topo, host), dir, &refs, &filter)
        }
        _ => Meshd::start_with(launcher(topo, host), dir, &refs),
    }
}

impl Nodes {
    /// The last `lines` log lines of A and B (empty without `MESH_NAT_LOG`).
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (name, n) in [("A", &self.a), ("B", &self.b)] {
            let text = std::fs::read_to_string(n.log_file()).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            out.push_str(&format!("----- {name} -----\n{tail}\n"));
        }
        out
    }
}

fn has_circuit(status: &Value) -> bool {
    status["listen_addrs"].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x.as_str().unwrap_or("").contains("p2p-circuit"))
    })
}

/// Builds the cell's lab and starts the public node and A and B on `transport` (A
/// listens on TCP too when its router drops UDP, and reaches the public node over TCP
/// then: a node behind such a firewall has nothing else), each with a session to the
/// public node and a reservation on its relay.
pub(crate) fn start_nodes(prefix: &str, cell: &Cell, transport: Transport) -> Nodes {
    let topo = Topology::with(prefix, cell.lab).expect("NAT lab");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let any = if cell.lab.layout == Layout::Ipv6Firewall {
        "/ip6/::"
    } else {
        "/ip4/0.0.0.0"
    };
    let pub_ip = ip_proto(topo.host_ip(Host::Pub));
    let base = |listen: &[Transport]| {
        let mut v: Vec<String> = Vec::new();
        for t in listen {
            v.push("--listen".into());
            v.push(on(any, *t));
        }
        // The signaling stage keeps 10 s: with 4 s, fc-pp over TCP ended on the relay in
        // both attempts of one CI run (DCUtR's TCP punch after a shorter signaling stage,
        // whose own dials on the same ports may still be in flight).
        for s in [
            "--bootstrap",
            "none",
            "--route-timeouts",
            "3,10,10",
            "--events",
        ] {
            v.push(s.into());
        }
        v
    };
    let mut pargs = base(&[Transport::Quic, Transport::Tcp]);
    for t in [Transport::Quic, Transport::Tcp] {
        pargs.push("--external".into());
        pargs.push(on(&pub_ip, t));
    }
    for s in ["--kad-mode", "server", "--relay-server"] {
        pargs.push(s.into());
    }
    let p = start(&topo, Host::Pub, dirs[0].path(), &pargs);
    let private = |host: Host, dir: &Path| {
        let (listen, via): (Vec<Transport>, Transport) = if host == Host::A && cell.lab.block_udp_a
        {
            (vec![transport, Transport::Tcp], Transport::Tcp)
        } else {
            (vec![transport], transport)
        };
        let mut args = base(&listen);
        let config = dir.join("signal.toml");
        // A and B share no swarm: each must punch for the other, which the default
        // policy (session peers and swarm members) does not do for strangers.
        std::fs::write(&config, "[signal]\npunch_for = \"anyone\"\n").unwrap();
        let pub_on = on(&pub_ip, via);
        args.extend([
            "--config".into(),
            config.display().to_string(),
            "--seed".into(),
            format!("{}@{pub_on}", p.node_id()),
            "--relay".into(),
            format!("{pub_on}/p2p/{}", p.peer_id()),
            "--kad-mode".into(),
            "client".into(),
        ]);
        start(&topo, host, dir, &args)
    };
    let a = private(Host::A, dirs[1].path());
    let b = private(Host::B, dirs[2].path());
    for n in [&a, &b] {
        n.wait_status(SETTLE, |s| {
            s["mesh"]["sessions"].as_u64() >= Some(1) && has_circuit(s)
        });
    }
    Nodes {
        a,
        b,
        p,
        _dirs: dirs,
        topo,
    }
}

/// Polls `f` every 100 ms until it gives a value, at most `within`.
fn poll<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fresh nodes; A finds B's advertisement (with its circuit) through the public node's
/// DHT and runs `meshd connect B`.
pub(crate) fn routed(prefix: &str, cell: &Cell, transport: Transport) -> (Nodes, Routed) {
    let nodes = start_nodes(prefix, cell, transport);
    let b_id = nodes.b.node_id();
    let found = poll(SETTLE, || {
        let out = nodes.a.cli(&["lookup", "--fresh", &b_id]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let circuit = v["addrs"].as_array().is_some_and(|x| {
            x.iter()
                .any(|s| s.as_str().unwrap_or("").contains("p2p-circuit"))
        });
        (out.status.success() && circuit).then_some(())
    });
    assert!(found.is_some(), "B's advertisement never reached A");
    let b_peer = nodes.b.peer_id();
    let t0 = Instant::now();
    let route = nodes.a.cli_ok(&["connect", &b_id]);
    let addr = route["addr"].as_str().unwrap_or("").to_owned();
    let direct = !addr.contains("p2p-circuit");
    let punched = route["stages"].as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["stage"] == "signaling" && s["ok"] == true)
    });
    let ms = route["ms"].as_u64().unwrap_or(0);
    let (ended_direct, direct_ms) = if direct {
        (Some(addr), Some(ms))
    } else {
        // Relayed: DCUtR (B, the relayed listener, starts it) may still punch.
        let upgraded = poll(UPGRADE, || {
            connections_to(&nodes.a, &b_peer)
                .into_iter()
                .find(|c| !c.contains("/p2p-circuit"))
        });
        let at = upgraded.as_ref().map(|_| t0.elapsed().as_millis() as u64);
        (upgraded, at)
    };
    (
        nodes,
        Routed {
            route,
            direct,
            punched,
            ms,
            ended_direct,
            direct_ms,
        },
    )
}

/// The peers `from` is connected to with `peer`'s id: their addresses.
pub(crate) fn connections_to(from: &Meshd, peer: &str) -> Vec<String> {
    let out = from.cli(&["peers"]);
    let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
        return Vec::new();
    };
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["peer_id"] == peer)
        .flat_map(|p| p["addrs"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// Fresh nodes; B dials A's relay circuit (so the connection starts relayed) and DCUtR,
/// which A starts over the circuit, may punch a direct one.
pub(crate) fn upgraded(prefix: &str, cell: &Cell, transport: Transport) -> (Nodes, Upgraded) {
    let nodes = start_nodes(prefix, cell, transport);
    let a_peer = nodes.a.peer_id();
    let status = nodes.a.cli_ok(&["status"]);
    let circuit = status["listen_addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
        .find(|x| x.contains("p2p-circuit"))
        .expect("A's circuit address")
        .to_owned();
    let target = if circuit.ends_with(&format!("/p2p/{a_peer}")) {
        circuit
    } else {
        format!("{circuit}/p2p/{a_peer}")
    };
    let t0 = Instant::now();
    nodes.b.cli_ok(&["dial", &target]);
    let addr = poll(UPGRADE, || {
        connections_to(&nodes.b, &a_peer)
            .into_iter()
            .find(|c| !c.contains("/p2p-circuit"))
    });
    let ms = addr.as_ref().map(|_| t0.elapsed().as_millis() as u64);
    (nodes, Upgraded { ms, addr })
}
