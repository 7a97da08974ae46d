//! A NAT lab in Linux network namespaces for integration tests.
//!
//! Use from a test file with `#[path = "support/netns.rs"] mod netns;`.
//!
//! [`Topology::new`] builds, in namespaces of its own (nothing touches the machine's own
//! network):
//!
//! ```text
//!                      internet: bridge br0, 10.77.0.0/24
//!        ┌──────────────────────┼───────────────────────┐
//!   pub 10.77.0.1        router A wan 10.77.0.2     router B wan 10.77.0.3
//!                        (MASQUERADE)               (MASQUERADE)
//!                        lan 192.168.1.1            lan 192.168.2.1
//!                              │                          │
//!                        host A 192.168.1.2         host B 192.168.2.2
//! ```
//!
//! The routers forward LAN → WAN, masquerade it (port-preserving, or with
//! `--random-fully`: a random external port for every new flow, "symmetric-like"), and
//! let in from the WAN only what conntrack matches to an outgoing flow: no port
//! forwards, unsolicited packets to the WAN address are dropped in INPUT (so they leave
//! no conntrack entry behind that could block a later hole punch), forwarding
//! WAN → LAN needs an established flow. The public host has no route to 192.168.x.
//! IPv4 only. Every namespace has `lo` up.
//!
//! [`Topology::with`] builds variants of it from a [`Lab`] (the NAT traversal matrix):
//! each router independently port-preserving, symmetric or full cone ([`NatKind`]);
//! both hosts behind router A ([`Layout::SameRouter`], host B at 192.168.1.3 on A's LAN
//! bridge); router A behind a carrier-grade NAT ([`Layout::DoubleNat`]: A's home router
//! gets 100.64.0.2/10 from a carrier router whose WAN is 10.77.0.2); UDP dropped by
//! router A ([`Lab::block_udp_a`]); and IPv6 without NAT ([`Layout::Ipv6Firewall`]:
//! global-scope 2001:db8:… addresses everywhere, no IPv4, each router a stateful
//! firewall that forwards WAN → LAN only what conntrack matches to an outgoing flow).
//!
//! Run programs inside with [`Topology::cmd`] (`ip netns exec NS program`), open sockets
//! inside with [`Topology::within`] (a thread that joins the namespace: sockets it creates
//! stay in that namespace wherever they are used afterwards).
//!
//! Dropping the topology deletes its namespaces (which removes the veths and the bridge),
//! also when a test panics; leftovers of crashed runs (same prefix, dead process id) are
//! deleted by the next `Topology::new`. Processes started with `cmd` must be stopped
//! before the drop: a namespace lives on, nameless, while a process is inside.
//!
//! Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), `ip` (iproute2) and `iptables`.
//! [`available_or_skip`] is what a test calls first: it skips (prints
//! `skipping: <reason>`) where the machine forbids this, or fails when
//! `MESH_REQUIRE_NETNS=1` (CI) is set.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// How the routers translate source ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum NatKind {
    /// Plain `MASQUERADE`: keeps the source port when it is free, one mapping per
    /// socket whatever the destination (endpoint-independent), like most home routers.
    PortPreserving,
    /// `MASQUERADE --random-fully`: a random external port for every new flow
    /// (address-and-port-dependent mapping, "symmetric").
    RandomFully,
    /// Plain `MASQUERADE` plus endpoint-independent filtering ("full cone"): once the
    /// host sent a packet out of port P, the router forwards whatever reaches its WAN
    /// address on P (same protocol) to the host, from any source. Emulated with an
    /// nftables dynamic set: every LAN → WAN packet adds (protocol, source port) with a
    /// 120 s timeout (refreshed by traffic, like a NAT mapping), and a `dnat` in
    /// prerouting sends WAN packets whose (protocol, destination port) is in the set to
    /// the host. The external port equals the internal one because the host is the
    /// router's only one and `MASQUERADE` keeps free ports. Needs `nft`.
    FullCone,
}

/// Where the hosts sit (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Layout {
    /// Host A behind router A, host B behind router B (what [`Topology::new`] builds).
    Separate,
    /// Hosts A (192.168.1.2) and B (192.168.1.3) both behind router A, on one LAN
    /// (router B exists but has no host).
    SameRouter,
    /// Router A is a home router behind a carrier router (CGNAT) of this kind: host A
    /// 192.168.1.2 → router A 100.64.0.2 → carrier 10.77.0.2.
    DoubleNat(NatKind),
    /// IPv6 only, no NAT: `a`/`b` of the [`Lab`] are ignored, the routers are stateful
    /// firewalls.
    Ipv6Firewall,
}

/// What [`Topology::with`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Lab {
    /// Router A's NAT.
    pub(crate) a: NatKind,
    /// Router B's NAT.
    pub(crate) b: NatKind,
    pub(crate) layout: Layout,
    /// Router A drops every UDP packet its LAN sends out (QUIC impossible from A).
    pub(crate) block_udp_a: bool,
}

impl Lab {
    /// Both routers of `kind`, separate LANs, nothing blocked (what [`Topology::new`]
    /// builds).
    pub(crate) fn both(kind: NatKind) -> Lab {
        Lab {
            a: kind,
            b: kind,
            layout: Layout::Separate,
            block_udp_a: false,
        }
    }
}

/// An end host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// The public host, directly on the internet bridge.
    Pub,
    /// Private host behind router A.
    A,
    /// Private host behind router B.
    B,
}

/// A NAT router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Router {
    A,
    B,
}

impl Host {
    /// The router a private host is behind (`None` for the public host).
    pub(crate) fn router(self) -> Option<Router> {
        match self {
            Host::Pub => None,
            Host::A => Some(Router::A),
            Host::B => Some(Router::B),
        }
    }
}

/// The namespaces of one lab.
pub(crate) struct Topology {
    lab: Lab,
    /// internet, pub, router A, router B, host A, host B, and the carrier router with
    /// [`Layout::DoubleNat`].
    names: Vec<String>,
}

const INTERNET: usize = 0;
const PUB: usize = 1;
const ROUTER_A: usize = 2;
const ROUTER_B: usize = 3;
const HOST_A: usize = 4;
const HOST_B: usize = 5;
const CARRIER: usize = 6;
const ROLES: [&str; 7] = ["net", "pub", "ra", "rb", "a", "b", "ca"];

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// Whether this machine lets us build the lab (checked once per process): root or
    /// CAP_NET_ADMIN + CAP_SYS_ADMIN, `ip` and `iptables` present, and a throwaway
    /// namespace can be created, entered, given a `MASQUERADE --random-fully` rule and
    /// deleted.
    pub(crate) fn available() -> Result<(), String> {
        static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
        RESULT.get_or_init(probe).clone()
    }

    /// Builds the lab. `prefix` (letters and digits, at most 8) starts every namespace
    /// name, followed by the process id and a counter. Leftover namespaces with the same
    /// prefix from processes that are gone are deleted first.
    pub(crate) fn new(prefix: &str, nat: NatKind) -> Result<Topology, String> {
        Self::with(prefix, Lab::both(nat))
    }

    /// Builds a variant of the lab (see [`Lab`]); `prefix` as for [`Topology::new`].
    pub(crate) fn with(prefix: &str, lab: Lab) -> Result<Topology, String> {
        assert!(
            !prefix.is_empty()
                && prefix.len() <= 8
                && prefix.chars().all(|c| c.is_ascii_alphanumeric()),
            "prefix must be 1-8 letters or digits: {prefix:?}"
        );
        remove_leftovers(prefix);
        let id = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let roles = if matches!(lab.layout, Layout::DoubleNat(_)) {
            &ROLES[..]
        } else {
            &ROLES[..CARRIER]
        };
        let topo = Topology {
            lab,
            names: roles.iter().map(|role| format!("{id}-{role}")).collect(),
        };
        // On error `topo` is dropped here, which deletes what was created.
        topo.build()?;
        Ok(topo)
    }

    fn build(&self) -> Result<(), String> {
        let n = &self.names;
        for name in n {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        if self.lab.layout == Layout::Ipv6Firewall {
            return self.build_v6();
        }
        // The internet: a bridge with the public host and both routers' WANs (router
        // A's is the carrier's with double NAT).
        ip(&["-n", &n[INTERNET], "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &n[INTERNET], "link", "set", "br0", "up"])?;
        let a_edge = match self.lab.layout {
            Layout::DoubleNat(_) => CARRIER,
            _ => ROUTER_A,
        };
        for (port, ns, dev, addr) in [
            ("p-pub", PUB, "eth0", "10.77.0.1/24"),
            ("p-ra", a_edge, "wan", "10.77.0.2/24"),
            ("p-rb", ROUTER_B, "wan", "10.77.0.3/24"),
        ] {
            veth(&n[INTERNET], port, &n[ns], dev)?;
            ip(&["-n", &n[INTERNET], "link", "set", port, "master", "br0"])?;
            ip(&["-n", &n[INTERNET], "link", "set", port, "up"])?;
            ip(&["-n", &n[ns], "addr", "add", addr, "dev", dev])?;
            ip(&["-n", &n[ns], "link", "set", dev, "up"])?;
        }
        if let Layout::DoubleNat(carrier) = self.lab.layout {
            // Carrier LAN 100.64.0.0/10 ↔ router A's WAN.
            veth(&n[CARRIER], "lan", &n[ROUTER_A], "wan")?;
            ip(&[
                "-n",
                &n[CARRIER],
                "addr",
                "add",
                "100.64.0.1/10",
                "dev",
                "lan",
            ])?;
            ip(&["-n", &n[CARRIER], "link", "set", "lan", "up"])?;
            ip(&[
                "-n",
                &n[ROUTER_A],
                "addr",
                "add",
                "100.64.0.2/10",
                "dev",
                "wan",
            ])?;
            ip(&["-n", &n[ROUTER_A], "link", "set", "wan", "up"])?;
            ip(&[
                "-n",
                &n[ROUTER_A],
                "route",
                "add",
                "default",
                "via",
                "100.64.0.1",
            ])?;
            self.setup_router(&n[CARRIER], carrier, "100.64.0.2", false)?;
        }
        // The private networks: router LAN ↔ host, default route via the router.
        let same = self.lab.layout == Layout::SameRouter;
        for (router, host, lan, addr) in [
            (ROUTER_A, HOST_A, "192.168.1.1/24", "192.168.1.2/24"),
            (ROUTER_B, HOST_B, "192.168.2.1/24", "192.168.2.2/24"),
        ] {
            if same && router == ROUTER_B {
                break;
            }
            let gw = &lan[..lan.len() - 3];
            if same {
                // One LAN bridge `lan` on router A with both hosts.
                ip(&["-n", &n[router], "link", "add", "lan", "type", "bridge"])?;
                for (i, (h, a)) in [(HOST_A, addr), (HOST_B, "192.168.1.3/24")]
                    .into_iter()
                    .enumerate()
                {
                    let port = format!("lan{i}");
                    veth(&n[router], &port, &n[h], "eth0")?;
                    ip(&["-n", &n[router], "link", "set", &port, "master", "lan"])?;
                    ip(&["-n", &n[router], "link", "set", &port, "up"])?;
                    ip(&["-n", &n[h], "addr", "add", a, "dev", "eth0"])?;
                    ip(&["-n", &n[h], "link", "set", "eth0", "up"])?;
                    ip(&["-n", &n[h], "route", "add", "default", "via", gw])?;
                }
            } else {
                veth(&n[router], "lan", &n[host], "eth0")?;
                ip(&["-n", &n[host], "addr", "add", addr, "dev", "eth0"])?;
                ip(&["-n", &n[host], "link", "set", "eth0", "up"])?;
                ip(&["-n", &n[host], "route", "add", "default", "via", gw])?;
            }
            ip(&["-n", &n[router], "addr", "add", lan, "dev", "lan"])?;
            ip(&["-n", &n[router], "link", "set", "lan", "up"])?;
            let (kind, block_udp) = if router == ROUTER_A {
                (self.lab.a, self.lab.block_udp_a)
            } else {
                (self.lab.b, false)
            };
            self.setup_router(&n[router], kind, &addr[..addr.len() - 3], block_udp)?;
        }
        if same {
            // The LAN switch forwards between its ports (where `br_netfilter` sends
            // bridged frames through FORWARD, whose policy is DROP). No hairpinning: a
            // host reaching the router's WAN address gets the router itself (a reset).
            iptables(
                &n[ROUTER_A],
                &["-I", "FORWARD", "-i", "lan", "-o", "lan", "-j", "ACCEPT"],
            )?;
            // Router B stays, without a LAN, so that the names are the same in every
            // layout; it has a WAN address but no host.
            self.setup_router(&n[ROUTER_B], self.lab.b, "192.168.2.2", false)?;
        }
        Ok(())
    }

    /// IPv6, no NAT: the internet 2001:db8:77::/64, LAN A 2001:db8:1::/64, LAN B
    /// 2001:db8:2::/64 (global scope: nodes treat them as public), routes between
    /// them through the routers, stateful firewalls on the routers.
    fn build_v6(&self) -> Result<(), String> {
        let n = &self.names;
        ip(&["-n", &n[INTERNET], "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &n[INTERNET], "link", "set", "br0", "up"])?;
        for (port, ns, dev, addr) in [
            ("p-pub", PUB, "eth0", "2001:db8:77::1/64"),
            ("p-ra", ROUTER_A, "wan", "2001:db8:77::2/64"),
            ("p-rb", ROUTER_B, "wan", "2001:db8:77::3/64"),
        ] {
            veth(&n[INTERNET], port, &n[ns], dev)?;
            ip(&["-n", &n[INTERNET], "link", "set", port, "master", "br0"])?;
            ip(&["-n", &n[INTERNET], "link", "set", port, "up"])?;
            // `nodad`: usable at once (no duplicate address detection delay).
            ip(&["-n", &n[ns], "addr", "add", addr, "dev", dev, "nodad"])?;
            ip(&["-n", &n[ns], "link", "set", dev, "up"])?;
        }
        let lan_a = "2001:db8:1::/64";
        let lan_b = "2001:db8:2::/64";
        ip(&[
            "-n",
            &n[PUB],
            "-6",
            "route",
            "add",
            lan_a,
            "via",
            "2001:db8:77::2",
        ])?;
        ip(&[
            "-n",
            &n[PUB],
            "-6",
            "route",
            "add",
            lan_b,
            "via",
            "2001:db8:77::3",
        ])?;
        ip(&[
            "-n",
            &n[ROUTER_A],
            "-6",
            "route",
            "add",
            lan_b,
            "via",
            "2001:db8:77::3",
        ])?;
        ip(&[
            "-n",
            &n[ROUTER_B],
            "-6",
            "route",
            "add",
            lan_a,
            "via",
            "2001:db8:77::2",
        ])?;
        for (router, host, lan, addr) in [
            (ROUTER_A, HOST_A, "2001:db8:1::1/64", "2001:db8:1::2/64"),
            (ROUTER_B, HOST_B, "2001:db8:2::1/64", "2001:db8:2::2/64"),
        ] {
            veth(&n[router], "lan", &n[host], "eth0")?;
            ip(&["-n", &n[router], "addr", "add", lan, "dev", "lan", "nodad"])?;
            ip(&["-n", &n[router], "link", "set", "lan", "up"])?;
            ip(&["-n", &n[host], "addr", "add", addr, "dev", "eth0", "nodad"])?;
            ip(&["-n", &n[host], "link", "set", "eth0", "up"])?;
            let gw = &lan[..lan.len() - 3];
            ip(&["-n", &n[host], "-6", "route", "add", "default", "via", gw])?;
            let ns = &n[router];
            within_ns(ns, || {
                std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
                    .map_err(|e| format!("ipv6 forwarding in {ns}: {e}"))
            })??;
            let est = "ESTABLISHED,RELATED";
            let rules: [&[&str]; 3] = [
                &["-P", "FORWARD", "DROP"],
                &["-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"],
                &[
                    "-A",
                    "FORWARD",
                    "-i",
                    "wan",
                    "-o",
                    "lan",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    est,
                    "-j",
                    "ACCEPT",
                ],
            ];
            for rule in rules {
                run(ns_cmd(ns, tool("ip6tables")).args(["-w", "5"]).args(rule))?;
            }
        }
        Ok(())
    }

    /// NAT and filtering on a router with interfaces `lan` and `wan`; `host` is the
    /// (only) LAN address a full-cone router forwards to.
    fn setup_router(
        &self,
        ns: &str,
        kind: NatKind,
        host: &str,
        block_udp: bool,
    ) -> Result<(), String> {
        within_ns(ns, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(|e| format!("ip_forward in {ns}: {e}"))
        })??;
        let mut masquerade = vec![
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ];
        if kind == NatKind::RandomFully {
            masquerade.push("--random-fully");
        }
        let est = "ESTABLISHED,RELATED";
        let rules: [&[&str]; 6] = [
            &masquerade,
            // Forward LAN → WAN, and WAN → LAN only for flows the LAN started.
            &["-P", "FORWARD", "DROP"],
            &["-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"],
            &[
                "-A",
                "FORWARD",
                "-i",
                "wan",
                "-o",
                "lan",
                "-m",
                "conntrack",
                "--ctstate",
                est,
                "-j",
                "ACCEPT",
            ],
            // Unsolicited packets to the WAN address are dropped before conntrack confirms
            // them, so they leave no entry that would later clash with an outgoing flow.
            &[
                "-A",
                "INPUT",
                "-i",
                "wan",
                "-m",
                "conntrack",
                "--ctstate",
                est,
                "-j",
                "ACCEPT",
            ],
            &["-A", "INPUT", "-i", "wan", "-j", "DROP"],
        ];
        for rule in rules {
            iptables(ns, rule)?;
        }
        if block_udp {
            iptables(
                ns,
                &[
                    "-I", "FORWARD", "-i", "lan", "-o", "wan", "-p", "udp", "-j", "DROP",
                ],
            )?;
        }
        if kind == NatKind::FullCone {
            // What the full-cone set let in (DNAT to the host) is forwarded too.
            iptables(
                ns,
                &[
                    "-A",
                    "FORWARD",
                    "-i",
                    "wan",
                    "-o",
                    "lan",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "DNAT",
                    "-j",
                    "ACCEPT",
                ],
            )?;
            let ruleset = [
                "table ip fullcone {",
                "  set mapped { type inet_proto . inet_service; flags dynamic,timeout; timeout 120s; }",
                "  chain track { type filter hook forward priority -10; policy accept;",
                "    iifname \"lan\" oifname \"wan\" update @mapped { meta l4proto . th sport }",
                "  }",
                "  chain open { type nat hook prerouting priority -110; policy accept;",
                &format!("    iifname \"wan\" meta l4proto . th dport @mapped dnat to {host}"),
                "  }",
                "}",
                "",
            ]
            .join("\n");
            nft(ns, &ruleset)?;
        }
        Ok(())
    }

    /// The NAT kind router A uses (both, for [`Topology::new`]).
    pub(crate) fn nat(&self) -> NatKind {
        self.lab.a
    }

    /// What this lab was built from.
    pub(crate) fn lab(&self) -> Lab {
        self.lab
    }

    /// The router a host is behind (`None` for the public host): with
    /// [`Layout::SameRouter`] both are behind router A.
    pub(crate) fn router_of(&self, host: Host) -> Option<Router> {
        match (host, self.lab.layout) {
            (Host::B, Layout::SameRouter) => Some(Router::A),
            _ => host.router(),
        }
    }

    /// A host's own address, IPv6 in [`Layout::Ipv6Firewall`] (else as [`Topology::ip`]).
    pub(crate) fn host_ip(&self, host: Host) -> std::net::IpAddr {
        if self.lab.layout == Layout::Ipv6Firewall {
            let last = match host {
                Host::Pub => return "2001:db8:77::1".parse().unwrap(),
                Host::A => 1,
                Host::B => 2,
            };
            return std::net::Ipv6Addr::new(0x2001, 0xdb8, last, 0, 0, 0, 0, 2).into();
        }
        self.ip(host).into()
    }

    /// The namespace of a host.
    pub(crate) fn ns(&self, host: Host) -> &str {
        &self.names[match host {
            Host::Pub => PUB,
            Host::A => HOST_A,
            Host::B => HOST_B,
        }]
    }

    /// The namespace of a router.
    pub(crate) fn router_ns(&self, router: Router) -> &str {
        &self.names[match router {
            Router::A => ROUTER_A,
            Router::B => ROUTER_B,
        }]
    }

    /// The namespace holding the internet bridge.
    pub(crate) fn internet_ns(&self) -> &str {
        &self.names[INTERNET]
    }

    /// A host's IPv4 address (private for A and B; none in [`Layout::Ipv6Firewall`],
    /// see [`Topology::host_ip`]).
    pub(crate) fn ip(&self, host: Host) -> Ipv4Addr {
        match host {
            Host::Pub => Ipv4Addr::new(10, 77, 0, 1),
            Host::A => Ipv4Addr::new(192, 168, 1, 2),
            Host::B if self.lab.layout == Layout::SameRouter => Ipv4Addr::new(192, 168, 1, 3),
            Host::B => Ipv4Addr::new(192, 168, 2, 2),
        }
    }

    /// A router's public (WAN) address: what the internet sees as the source of its
    /// host's packets (router A's carrier's with [`Layout::DoubleNat`]).
    pub(crate) fn wan_ip(&self, router: Router) -> Ipv4Addr {
        match router {
            Router::A => Ipv4Addr::new(10, 77, 0, 2),
            Router::B => Ipv4Addr::new(10, 77, 0, 3),
        }
    }

    /// A router's LAN address (its host's gateway).
    pub(crate) fn lan_ip(&self, router: Router) -> Ipv4Addr {
        match router {
            Router::A => Ipv4Addr::new(192, 168, 1, 1),
            Router::B => Ipv4Addr::new(192, 168, 2, 1),
        }
    }

    /// `ip netns exec NS program`: the caller adds arguments, stdio, and spawns.
    pub(crate) fn cmd(&self, host: Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        ns_cmd(self.ns(host), program)
    }

    /// Runs `f` on a thread inside the host's namespace and returns its result. Sockets
    /// created by `f` belong to that namespace and may be used from any thread.
    pub(crate) fn within<T: Send>(&self, host: Host, f: impl FnOnce() -> T + Send) -> T {
        within_ns(self.ns(host), f).expect("enter namespace")
    }
}

/// Another public host on the internet bridge, made by [`Topology::add_public_host`]:
/// the `n`th (from 2) is `10.77.0.{n + 2}`, no NAT, no firewall, like the public host.
/// Dropping it deletes its namespace (stop the processes inside first); a crashed run's
/// leftover goes with the topology's (same name prefix).
pub(crate) struct PublicHost {
    ns: String,
    n: u8,
}

impl PublicHost {
    /// Its namespace.
    pub(crate) fn ns(&self) -> &str {
        &self.ns
    }

    /// Its address.
    pub(crate) fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, self.n + 2)
    }
}

impl Drop for PublicHost {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

impl Topology {
    /// Adds public host `n` (2 to 9; see [`PublicHost`]), e.g. for peers that a node
    /// on the public host dials (AutoNAT v2 asks only servers it dialed, and two of
    /// different networks must agree). One of each `n` per topology.
    pub(crate) fn add_public_host(&self, n: u8) -> Result<PublicHost, String> {
        if !(2..=9).contains(&n) {
            return Err(format!("public host {n}: 2 to 9"));
        }
        let id = self.names[INTERNET]
            .strip_suffix("-net")
            .ok_or("unexpected namespace name")?;
        let host = PublicHost {
            ns: format!("{id}-pub{n}"),
            n,
        };
        ip(&["netns", "add", &host.ns])?;
        ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
        let net = &self.names[INTERNET];
        let port = format!("p-pub{n}");
        veth(net, &port, &host.ns, "eth0")?;
        ip(&["-n", net, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", net, "link", "set", &port, "up"])?;
        let cidr = format!("{}/24", host.ip());
        ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
        Ok(host)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// `ip netns exec NS program`.
pub(crate) fn ns_cmd(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(tool("ip"));
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Runs `f` on a new thread that has joined the network namespace `ns` (by name, as in
/// `/run/netns`). Sockets `f` creates belong to that namespace.
pub(crate) fn within_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Call first in a test that needs the lab: `true` if it is available; otherwise prints
/// `skipping: <reason>` and returns `false` (the test returns), or panics when
/// `MESH_REQUIRE_NETNS` is set to anything but `0` or empty.
pub(crate) fn available_or_skip(test: &str) -> bool {
    match Topology::available() {
        Ok(()) => true,
        Err(reason) => {
            let required = std::env::var("MESH_REQUIRE_NETNS")
                .map(|v| !v.is_empty() && v != "0")
                .unwrap_or(false);
            assert!(
                !required,
                "MESH_REQUIRE_NETNS is set but network namespaces are unavailable: {reason}"
            );
            eprintln!(
                "skipping: {test}: no network-namespace NAT lab here: {reason} \
                 (it needs root, iproute2 and iptables; set MESH_REQUIRE_NETNS=1 to fail instead)"
            );
            false
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `name` from PATH, else from /usr/sbin or /sbin (which a non-login PATH may lack).
pub(crate) fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !on_path {
        for dir in ["/usr/sbin", "/sbin"] {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    PathBuf::from(name)
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new(tool("ip")).args(args))
}

fn iptables(ns: &str, args: &[&str]) -> Result<(), String> {
    run(ns_cmd(ns, tool("iptables")).args(["-w", "5"]).args(args))
}

/// Loads an nftables ruleset (`nft -f -`) in namespace `ns`.
fn nft(ns: &str, ruleset: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = ns_cmd(ns, tool("nft"))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|e| format!("nft stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this machine can build the full-cone router (`nft` present and a dynamic
/// set loads in a throwaway namespace); checked once per process.
pub(crate) fn full_cone_available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            Topology::available()?;
            let name = format!(
                "meshprobe-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            ip(&["netns", "add", &name])?;
            let result = nft(
                &name,
                "table ip t {\n set s { type inet_proto . inet_service; flags dynamic,timeout; timeout 1s; }\n}\n",
            );
            let _ = ip(&["netns", "del", &name]);
            result
        })
        .clone()
}

/// A veth pair with one end in each namespace (never in the machine's own).
fn veth(ns1: &str, dev1: &str, ns2: &str, dev2: &str) -> Result<(), String> {
    ip(&[
        "-n", ns1, "link", "add", dev1, "type", "veth", "peer", "name", dev2, "netns", ns2,
    ])
}

/// Deletes namespaces `PREFIX-PID-…` whose process is gone.
fn remove_leftovers(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let own = std::process::id();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('-');
        if parts.next() != Some(prefix) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != own && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// CAP_NET_ADMIN and CAP_SYS_ADMIN in the effective set.
fn has_caps() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    if eff & NET_ADMIN != 0 && eff & SYS_ADMIN != 0 {
        Ok(())
    } else {
        Err("not root (needs CAP_NET_ADMIN and CAP_SYS_ADMIN)".into())
    }
}

fn probe() -> Result<(), String> {
    has_caps()?;
    for tool in ["ip", "iptables"] {
        Command::new(self::tool(tool))
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("`{tool}` not found ({e}): install iproute2 and iptables"))?;
    }
    let name = format!(
        "meshprobe-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    remove_leftovers("meshprobe");
    ip(&["netns", "add", &name]).map_err(|e| format!("cannot create a namespace: {e}"))?;
    let result = within_ns(&name, || ()).and_then(|()| {
        iptables(
            &name,
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "lo",
                "-j",
                "MASQUERADE",
                "--random-fully",
            ],
        )
        .map_err(|e| format!("iptables MASQUERADE --random-fully in a namespace: {e}"))
    });
    let deleted = ip(&["netns", "del", &name]);
    result?;
    deleted.map_err(|e| format!("cannot delete a namespace: {e}"))
}
