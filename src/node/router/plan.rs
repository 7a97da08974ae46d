//! The routing policy of `connect(node-id)` as pure logic (DESIGN.md, "Signaling and
//! swarms"): direct (advertised endpoints, then DHT addresses), then signaling then
//! direct (candidates exchanged through a signaling host, both sides dialing at once),
//! then a relay circuit. Which addresses and hosts each stage uses, when a stage has
//! run out of time, and the report of the chosen path. Every call takes `now`.

use std::time::{Duration, Instant};

use super::policy::RouteSettings;
use crate::node::addrs::without_peer;
use crate::node::api::{Route, StageReport};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// How long the birthday stage may take: the offer and `ready` frames, 5 s for the
/// hit, 3 s for the confirmation, the QUIC handshake.
pub const BIRTHDAY_SECS: u64 = 15;

/// The stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Finding the node's advertisement (store, mesh DHT, Amino).
    Lookup,
    /// Dialing its direct addresses.
    Direct,
    /// Signaling through a host, then dialing each other's candidates.
    Signaling,
    /// Birthday-paradox probing in the same correlation (one side symmetric), then a
    /// QUIC dial between the probe ports (`router/birthday.rs`).
    Birthday,
    /// A `/p2p-circuit` through a relay.
    Relay,
}

impl Stage {
    /// The path name used in reports and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lookup => "lookup",
            Stage::Direct => "direct",
            Stage::Signaling => "signaling",
            Stage::Birthday => "birthday",
            Stage::Relay => "relay",
        }
    }

    /// The stage after this one (`None` after the relay).
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Lookup => Some(Stage::Direct),
            Stage::Direct => Some(Stage::Signaling),
            Stage::Signaling => Some(Stage::Birthday),
            Stage::Birthday => Some(Stage::Relay),
            Stage::Relay => None,
        }
    }
}

/// Whether `addr` goes through a relay.
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Splits a node's addresses into direct ones and relay circuits.
pub fn split_addrs(addrs: &[Multiaddr]) -> (Vec<Multiaddr>, Vec<Multiaddr>) {
    addrs.iter().cloned().partition(|a| !is_circuit(a))
}

/// The relays named by circuit addresses (`…/p2p/<relay>/p2p-circuit…`).
pub fn relays_of(circuits: &[Multiaddr]) -> Vec<PeerId> {
    let mut out = Vec::new();
    for a in circuits {
        let mut last = None;
        for p in a.iter() {
            match p {
                Protocol::P2p(id) => last = Some(id),
                Protocol::P2pCircuit => {
                    if let Some(r) = last
                        && !out.contains(&r)
                    {
                        out.push(r);
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    out
}

/// The address of `relay` in the circuit address `circuit` (the part before
/// `/p2p/<relay>/p2p-circuit`), if `circuit` goes through it.
pub fn relay_addr_of(circuit: &Multiaddr, relay: &PeerId) -> Option<Multiaddr> {
    let mut out = Multiaddr::empty();
    for p in circuit.iter() {
        match p {
            Protocol::P2p(id) if id == *relay => return Some(out),
            Protocol::P2p(_) | Protocol::P2pCircuit => return None,
            other => out.push(other),
        }
    }
    None
}

/// Signaling hosts in the order to try: the target's relays first (they hold its
/// reservation, so they are connected to it), then the other candidates as given.
pub fn order_hosts(hosts: Vec<PeerId>, target_relays: &[PeerId]) -> Vec<PeerId> {
    let (mut first, rest): (Vec<PeerId>, Vec<PeerId>) =
        hosts.into_iter().partition(|h| target_relays.contains(h));
    first.extend(rest);
    first
}

/// Our dial candidates for the other side: confirmed external addresses, then
/// addresses that several unrelated peers observed (`confirmed`), then listen
/// addresses, then addresses only one observer group claimed (`unconfirmed`, see
/// [`super::super::observed`]); no circuits, no unspecified addresses, no duplicates,
/// at most `max`, of which the observed ones (`confirmed`) at most a quarter: enough
/// observer groups (a tunnel broker's /48 holds 256 of them) can confirm addresses of
/// their choosing, which otherwise filled the list before any listen address. Loopback
/// addresses come last (they only help a node on the same host, which fails fast on a
/// wrong peer id otherwise).
pub fn candidates(
    external: &[Multiaddr],
    confirmed: &[Multiaddr],
    listen: &[Multiaddr],
    unconfirmed: &[Multiaddr],
    max: usize,
) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    let mut loopback: Vec<Multiaddr> = Vec::new();
    for a in external
        .iter()
        .chain(confirmed.iter().take((max / 4).max(1)))
        .chain(listen)
        .chain(unconfirmed)
    {
        let a = without_peer(a);
        if is_circuit(&a) || out.contains(&a) || loopback.contains(&a) {
            continue;
        }
        match a.iter().next() {
            Some(Protocol::Ip4(ip)) if ip.is_unspecified() => continue,
            Some(Protocol::Ip6(ip)) if ip.is_unspecified() => continue,
            Some(Protocol::Ip4(ip)) if ip.is_loopback() => loopback.push(a),
            Some(Protocol::Ip6(ip)) if ip.is_loopback() => loopback.push(a),
            _ => out.push(a),
        }
    }
    out.extend(loopback);
    out.truncate(max);
    out
}

/// The clock of one attempt: when it started, which stage runs, since when, and the
/// reports of the stages that ended.
#[derive(Debug, Clone)]
pub struct Plan {
    settings: RouteSettings,
    started: Instant,
    stage: Stage,
    stage_started: Instant,
    reports: Vec<StageReport>,
}

impl Plan {
    /// A plan that starts with the lookup at `now`.
    pub fn new(settings: RouteSettings, now: Instant) -> Self {
        Plan {
            settings,
            started: now,
            stage: Stage::Lookup,
            stage_started: now,
            reports: Vec::new(),
        }
    }

    /// The running stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// How long the running stage has run.
    pub fn stage_elapsed(&self, now: Instant) -> Duration {
        now.duration_since(self.stage_started)
    }

    /// How long the running stage may take (the lookup counts into the direct
    /// stage's time).
    pub fn budget(&self) -> Duration {
        Duration::from_secs(match self.stage {
            Stage::Lookup | Stage::Direct => self.settings.direct_secs,
            Stage::Signaling => self.settings.signaling_secs,
            Stage::Birthday => BIRTHDAY_SECS,
            Stage::Relay => self.settings.relay_secs,
        })
    }

    /// Whether the running stage has run out of time.
    pub fn timed_out(&self, now: Instant) -> bool {
        now.duration_since(self.stage_started) >= self.budget()
    }

    /// Ends the running stage with `error` and moves to the next one; `None` when the
    /// relay stage was the last hope. The lookup moves into the direct stage without
    /// a report of its own (its time counts there).
    pub fn fail_stage(&mut self, error: impl Into<String>, now: Instant) -> Option<Stage> {
        let next = self.stage.next()?;
        if self.stage == Stage::Lookup {
            self.stage = next;
            return Some(next);
        }
        self.report(false, Some(error.into()), now);
        self.stage = next;
        self.stage_started = now;
        Some(next)
    }

    /// Leaves the running stage without a report: it did not apply (the birthday stage
    /// when no attempt could start). `None` after the last stage.
    pub fn skip(&mut self, now: Instant) -> Option<Stage> {
        let next = self.stage.next()?;
        self.stage = next;
        self.stage_started = now;
        Some(next)
    }

    /// Skips from the lookup to the direct stage (the lookup answered).
    pub fn looked_up(&mut self) {
        if self.stage == Stage::Lookup {
            self.stage = Stage::Direct;
        }
    }

    fn report(&mut self, ok: bool, error: Option<String>, now: Instant) {
        let stage = match self.stage {
            Stage::Lookup => Stage::Direct,
            s => s,
        };
        self.reports.push(StageReport {
            stage: stage.as_str(),
            ok,
            ms: millis(now.duration_since(self.stage_started)),
            error,
        });
    }

    /// Ends the last stage with `error`: the whole attempt failed.
    pub fn fail_all(&mut self, error: impl Into<String>, now: Instant) -> Vec<StageReport> {
        self.report(false, Some(error.into()), now);
        self.reports.clone()
    }

    /// A connection came up: the route, its path named after the connection (a
    /// circuit is `relay`) or the running stage.
    pub fn succeed(
        &mut self,
        node: String,
        peer: &PeerId,
        addr: &Multiaddr,
        now: Instant,
    ) -> Route {
        let path = if is_circuit(addr) {
            Stage::Relay
        } else {
            match self.stage {
                Stage::Lookup | Stage::Direct | Stage::Relay => Stage::Direct,
                Stage::Signaling => Stage::Signaling,
                Stage::Birthday => Stage::Birthday,
            }
        };
        self.report(true, None, now);
        Route {
            node,
            peer: peer.to_string(),
            path: path.as_str(),
            addr: addr.to_string(),
            ms: millis(now.duration_since(self.started)),
            stages: self.reports.clone(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_relay_part_of_a_circuit_address() {
        let r = PeerId::random();
        let t = PeerId::random();
        let c: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{r}/p2p-circuit/p2p/{t}")
            .parse()
            .unwrap();
        assert_eq!(
            relay_addr_of(&c, &r),
            Some("/ip4/10.0.0.1/tcp/4001".parse().unwrap())
        );
        assert_eq!(relay_addr_of(&c, &t), None);
        assert_eq!(relay_addr_of(&c, &PeerId::random()), None);
    }

    #[test]
    fn addresses_split_and_relays_found() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let circuit = a(&format!(
            "/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}"
        ));
        let direct = a("/ip4/192.168.1.2/udp/4001/quic-v1");
        let (d, c) = split_addrs(&[direct.clone(), circuit.clone()]);
        assert_eq!(d, vec![direct]);
        assert_eq!(c, vec![circuit.clone()]);
        assert_eq!(relays_of(&c), vec![relay]);
        let other = PeerId::random();
        assert_eq!(
            order_hosts(vec![other, relay], &[relay]),
            vec![relay, other]
        );
    }

    #[test]
    fn observed_addresses_leave_room_for_listen_addresses() {
        let obs: Vec<Multiaddr> = (0..16)
            .map(|i| a(&format!("/ip4/198.51.100.{i}/tcp/4001")))
            .collect();
        let listen = [a("/ip4/192.168.1.2/tcp/4001")];
        let c = candidates(&[], &obs, &listen, &[], 16);
        assert_eq!(c.len(), 5, "{c:?}");
        assert_eq!(c[4], listen[0]);
    }

    #[test]
    fn candidates_put_loopback_last() {
        let ext = [a("/ip4/203.0.113.5/udp/4001/quic-v1")];
        let obs = [
            a("/ip4/203.0.113.5/udp/4001/quic-v1"),
            a("/ip4/198.51.100.7/tcp/4001"),
        ];
        let listen = [
            a("/ip4/0.0.0.0/tcp/4001"),
            a("/ip4/127.0.0.1/tcp/4001"),
            a("/ip4/192.168.1.2/tcp/4001"),
        ];
        let single = [a("/ip4/198.51.100.99/tcp/4001")];
        let c = candidates(&ext, &obs, &listen, &single, 16);
        assert_eq!(
            c,
            vec![
                a("/ip4/203.0.113.5/udp/4001/quic-v1"),
                a("/ip4/198.51.100.7/tcp/4001"),
                a("/ip4/192.168.1.2/tcp/4001"),
                a("/ip4/198.51.100.99/tcp/4001"),
                a("/ip4/127.0.0.1/tcp/4001"),
            ]
        );
        assert_eq!(
            candidates(&ext, &obs, &listen, &single, 1),
            vec![a("/ip4/203.0.113.5/udp/4001/quic-v1")]
        );
    }

    #[test]
    fn stages_advance_on_failure_and_time() {
        let s = RouteSettings {
            direct_secs: 2,
            signaling_secs: 3,
            relay_secs: 4,
        };
        let t = Instant::now();
        let mut p = Plan::new(s, t);
        assert_eq!(p.stage(), Stage::Lookup);
        assert!(!p.timed_out(t + Duration::from_secs(1)));
        assert!(p.timed_out(t + Duration::from_secs(2)));
        p.looked_up();
        assert_eq!(p.stage(), Stage::Direct);
        assert_eq!(
            p.fail_stage("unreachable", t + Duration::from_secs(1)),
            Some(Stage::Signaling)
        );
        assert!(!p.timed_out(t + Duration::from_secs(3)));
        assert!(p.timed_out(t + Duration::from_secs(4)));
        assert_eq!(
            p.fail_stage("no answer", t + Duration::from_secs(4)),
            Some(Stage::Birthday)
        );
        assert_eq!(p.budget(), Duration::from_secs(BIRTHDAY_SECS));
        assert_eq!(
            p.fail_stage("not applicable", t + Duration::from_secs(4)),
            Some(Stage::Relay)
        );
        let peer = PeerId::random();
        let route = p.succeed(
            "n".into(),
            &peer,
            &a(&format!("/ip4/10.0.0.1/tcp/1/p2p/{peer}/p2p-circuit")),
            t + Duration::from_secs(5),
        );
        assert_eq!(route.path, "relay");
        assert_eq!(route.ms, 5000);
        let stages: Vec<(&str, bool)> = route.stages.iter().map(|r| (r.stage, r.ok)).collect();
        assert_eq!(
            stages,
            vec![
                ("direct", false),
                ("signaling", false),
                ("birthday", false),
                ("relay", true)
            ]
        );
        assert_eq!(route.stages[0].ms, 1000);
        // The relay was the last stage.
        let mut q = Plan::new(s, t);
        for _ in 0..4 {
            q.fail_stage("x", t);
        }
        assert_eq!(q.fail_stage("x", t), None);
        assert_eq!(q.fail_all("no relay", t).len(), 4);
    }

    #[test]
    fn a_signaled_connection_is_named_signaling() {
        let t = Instant::now();
        let mut p = Plan::new(RouteSettings::default(), t);
        p.looked_up();
        p.fail_stage("unreachable", t);
        let peer = PeerId::random();
        let r = p.succeed("n".into(), &peer, &a("/ip4/10.0.0.2/udp/4001/quic-v1"), t);
        assert_eq!(r.path, "signaling");
        let mut p = Plan::new(RouteSettings::default(), t);
        p.looked_up();
        p.fail_stage("unreachable", t);
        p.fail_stage("no punch", t);
        let r = p.succeed("n".into(), &peer, &a("/ip4/10.0.0.2/udp/40123/quic-v1"), t);
        assert_eq!(r.path, "birthday");
        let stages: Vec<&str> = r.stages.iter().map(|s| s.stage).collect();
        assert_eq!(stages, ["direct", "signaling", "birthday"]);
        // A birthday stage that did not apply leaves no report.
        let mut p = Plan::new(RouteSettings::default(), t);
        p.looked_up();
        p.fail_stage("unreachable", t);
        p.fail_stage("no punch", t);
        assert_eq!(p.skip(t + Duration::from_secs(1)), Some(Stage::Relay));
        assert!(!p.timed_out(t + Duration::from_secs(1)));
        let circuit = a(&format!("/ip4/10.0.0.1/tcp/1/p2p/{peer}/p2p-circuit"));
        let r = p.succeed("n".into(), &peer, &circuit, t + Duration::from_secs(2));
        let stages: Vec<&str> = r.stages.iter().map(|s| s.stage).collect();
        assert_eq!(stages, ["direct", "signaling", "relay"]);
    }
}
