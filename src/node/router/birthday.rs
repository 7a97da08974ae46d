//! The birthday stage of the routing policy (issue 20, `node::birthday`): between the
//! signaling punch and the relay, in the same `connect` correlation, when one side's
//! NAT varies its ports and the other's preserves them.
//!
//! The port-preserving side C offers a probe socket (`birthday/probe`, its public IP
//! and the socket's port), the symmetric side S opens its probe sockets toward it and
//! says `ready`, C sprays S's IP, S's hit answers C; then C dials S from its probe port
//! through the probe transport, S listens on its hit socket's port. When S started the
//! correlation it asks for the offer first (`birthday/ask`).
//!
//! Only for correlations this node started (a route in this stage) or answered with a
//! punch; only when both mappings are known (an old peer sends none and is never
//! probed); probes only to an IP the peer named among its candidates in this
//! correlation; the budget of `node::birthday` per attempt and its `Limiter`; every
//! attempt ends within [`JOB_FOR`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{NodeId, SignalFrame};
use serde_json::{Map, Value, json};

use super::plan::Stage;
use super::{Actions, Router};
use crate::node::action::Action;
use crate::node::birthday::run::{ProbeEvent, any};
use crate::node::birthday::signal::{Step, put_mapping};
use crate::node::birthday::{self as bd, Budget, Limiter, Mapping, Part};
use crate::node::destination_budget::DestinationBudget;
use crate::node::view::View;

/// How long one attempt may run before it is dropped (its limiter slot freed).
pub(super) const JOB_FOR: Duration = Duration::from_secs(20);
/// Candidate IPs remembered per correlation.
const MAX_IPS: usize = 8;

/// What the other side's candidate frames told us in one correlation.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) mapping: Mapping,
    /// The IPs of its UDP candidates in scope (the only ones probed).
    pub(super) ips: Vec<IpAddr>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            mapping: Mapping::Unknown,
            ips: Vec::new(),
        }
    }
}

impl Seen {
    /// Takes in one candidate frame (its payload and its addresses in scope). The IP
    /// of the frame's first UDP address goes first: a birthday frame leads with the
    /// sender's observed address ([`Router::step_payload`]), the one to probe.
    pub(super) fn learn(&mut self, payload: &Map<String, Value>, addrs: &[Multiaddr]) {
        let m = bd::signal::mapping_of(payload);
        if m != Mapping::Unknown {
            self.mapping = m;
        }
        let ips: Vec<IpAddr> = addrs
            .iter()
            .filter_map(bd::socket_addr)
            .map(|a| a.ip())
            .collect();
        if let Some(first) = ips.first() {
            self.ips.retain(|i| i != first);
            self.ips.insert(0, *first);
        }
        for ip in ips.iter().skip(1) {
            if !self.ips.contains(ip) {
                self.ips.push(*ip);
            }
        }
        self.ips.truncate(MAX_IPS);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// C: its probe socket is being bound.
    Binding,
    /// C: offer sent, waiting for `ready`.
    Offered,
    /// C: spraying and waiting for the confirmation.
    Spraying,
    /// S: asked for an offer.
    Asked,
    /// S: probe sockets out, waiting for the hit.
    Probing,
}

#[derive(Debug)]
struct Job {
    node: NodeId,
    peer: PeerId,
    corr: String,
    via: Option<PeerId>,
    /// The route attempt, when this node started the correlation.
    route: Option<u64>,
    token: [u8; 8],
    /// The peer's candidate IPs in this correlation.
    ips: Vec<IpAddr>,
    /// S: C's probe address.
    probe: Option<SocketAddr>,
    phase: Phase,
    since: Instant,
}

/// The attempts (one at a time) and their limits: our own routes' and the ones we
/// answer have a limiter each, so that peers starting attempts with us (fresh keys
/// cost nothing) cannot use up our routes' rate; an attempt of ours also takes the
/// place of an answered one that runs (one at a time keeps the probe sockets to 256).
#[derive(Debug)]
pub(super) struct Birthday {
    own: Limiter<NodeId>,
    answered: Limiter<NodeId>,
    jobs: std::collections::HashMap<u64, Job>,
    next: u64,
    budget: Budget,
    /// Attempts probing toward one destination (the IPv4 address or IPv6 /64 of a
    /// peer's NAT): [`bd::PER_DESTINATION`], whatever their node ids.
    destinations: DestinationBudget,
    /// Routes whose attempt failed, moved on at the next tick.
    give_up: Vec<(u64, String)>,
}

impl Birthday {
    pub(super) fn new(every: Duration) -> Self {
        Birthday {
            own: Limiter::new(every),
            answered: Limiter::new(every),
            jobs: std::collections::HashMap::new(),
            next: 0,
            budget: Budget::default(),
            destinations: DestinationBudget::new(bd::PER_DESTINATION, bd::DESTINATIONS),
            give_up: Vec::new(),
        }
    }

    fn job_of(&self, node: &NodeId, corr: &str) -> Option<u64> {
        self.jobs
            .iter()
            .find(|(_, j)| j.node == *node && j.corr == corr)
            .map(|(id, _)| *id)
    }
}

/// Where a step came from: the frame's sender and the host that handed it over.
pub(super) struct StepFrom<'a> {
    pub(super) frame: &'a SignalFrame,
    pub(super) peer: PeerId,
    pub(super) via: Option<PeerId>,
    /// The route attempt whose correlation this is (`None`: one we answered).
    pub(super) route: Option<u64>,
    pub(super) seen: Seen,
}

impl Router {
    /// Our mapping as our observed addresses tell.
    pub(super) fn our_mapping(&self, view: &dyn View, now: Instant) -> Mapping {
        bd::classify(&view.listen_addrs(), &self.seen_at(view, now))
    }

    fn seen_at(&self, view: &dyn View, now: Instant) -> Vec<Multiaddr> {
        let o = self.observed.ranked(now);
        let mut seen = view.external_addrs();
        seen.extend(o.confirmed);
        seen.extend(o.unconfirmed);
        seen
    }

    /// A candidate payload with our addresses, our mapping and `step`; `None` without
    /// addresses (every frame must carry some).
    fn step_payload(
        &self,
        step: Step,
        view: &dyn View,
        now: Instant,
    ) -> Option<Map<String, Value>> {
        let lead = bd::counted_ips(&view.listen_addrs(), &self.seen_at(view, now));
        let mut addrs = self.our_candidates(view, now);
        addrs.sort_by_key(|a| !bd::socket_addr(a).is_some_and(|s| lead.contains(&s.ip())));
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        if addrs.is_empty() {
            return None;
        }
        let mut p = Map::new();
        p.insert("addrs".into(), json!(addrs));
        put_mapping(&mut p, self.our_mapping(view, now));
        step.put(&mut p);
        Some(p)
    }

    fn send_step(&self, id: u64, step: Step, view: &dyn View, now: Instant) -> Option<Action> {
        let j = self.birthday.jobs.get(&id)?;
        let p = self.step_payload(step, view, now)?;
        match self.signed_frame(j.node, "candidate", &j.corr, p) {
            Ok(f) => Some(Action::SendFrame {
                frame: Box::new(f),
                via: j.via,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "birthday frame not signed");
                None
            }
        }
    }

    /// The birthday stage of route `id` begins: C offers, S asks. When no attempt can
    /// start (no correlation, mappings that do not fit, an old peer, the limiter) the
    /// stage is skipped without a report: the route's report stays as before.
    pub(super) fn birthday_stage(
        &mut self,
        id: u64,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) {
        let Some(a) = self.attempts.get(&id) else {
            return;
        };
        let (node, peer) = (a.node, a.peer);
        let started = match a.outbound.as_ref().and_then(|c| self.outbound.get(c)) {
            Some(o) => {
                let from = Start {
                    node,
                    peer,
                    corr: o.correlation.clone(),
                    via: o.via,
                    route: Some(id),
                    seen: o.seen.clone(),
                };
                self.begin(from, None, view, now, out)
            }
            None => Err("no correlation".into()),
        };
        if let Err(e) = started {
            tracing::debug!(%peer, error = %e, "birthday stage skipped");
            let Some(a) = self.attempts.get_mut(&id) else {
                return;
            };
            if let Some(c) = a.outbound.take() {
                self.outbound.remove(&c);
            }
            if a.plan.skip(now).is_some() {
                self.stage(id, view, now, out);
            }
        }
    }

    /// Starts an attempt (C: bind then offer; S: ask, or probe at once for an offer
    /// in hand).
    fn begin(
        &mut self,
        s: Start,
        offer: Option<Step>,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) -> Result<(), String> {
        let ours = self.our_mapping(view, now);
        let part = bd::part(ours, s.seen.mapping).ok_or_else(|| {
            format!(
                "not applicable (mappings: ours {}, theirs {})",
                ours.as_str(),
                s.seen.mapping.as_str()
            )
        })?;
        // C answers an ask (or starts), S answers an offer (or asks).
        let in_turn = matches!(
            (part, offer),
            (Part::Probes, None | Some(Step::Ask { .. }))
                | (Part::Sockets, None | Some(Step::Offer { .. }))
        );
        if !in_turn {
            return Err(format!("{offer:?} out of turn for {part:?}"));
        }
        let Some(toward) = s.seen.ips.first().copied() else {
            return Err("no candidate IP of the peer".into());
        };
        if part == Part::Probes
            && bd::preserved_ip(&view.listen_addrs(), &self.seen_at(view, now)).is_none()
        {
            return Err("no public address of ours".into());
        }
        let own = s.route.is_some();
        let running = self
            .birthday
            .jobs
            .iter()
            .next()
            .map(|(id, j)| (*id, j.route));
        // One at a time: ours may take an answered one's place (once our limiter
        // allows it, so that a refusal ends nothing), nothing else may.
        let displaced = match running {
            Some((id, None)) if own => Some(id),
            Some(_) => return Err(format!("rate limited ({:?})", bd::Refused::Busy)),
            None => None,
        };
        let limiter = if own {
            &mut self.birthday.own
        } else {
            &mut self.birthday.answered
        };
        limiter
            .start(&s.node, now)
            .map_err(|r| format!("rate limited ({r:?})"))?;
        if let Some(id) = displaced {
            self.fail_job(id, "an attempt of ours takes its place".into(), out);
        }
        let id = self.birthday.next;
        self.birthday.next += 1;
        let token = match offer {
            Some(step) => step.token(),
            None => bd::probe::random_token(),
        };
        self.birthday.jobs.insert(
            id,
            Job {
                node: s.node,
                peer: s.peer,
                corr: s.corr,
                via: s.via,
                route: s.route,
                token,
                ips: s.seen.ips,
                probe: None,
                phase: if part == Part::Probes {
                    Phase::Binding
                } else {
                    Phase::Asked
                },
                since: now,
            },
        );
        tracing::debug!(peer = %s.peer, ?part, "birthday attempt");
        match (part, offer) {
            (Part::Probes, _) => out.push(Action::ProbeBind { job: id, toward }),
            (Part::Sockets, Some(Step::Offer { probe, .. })) => {
                self.probe_toward(id, probe, now, out)
            }
            (Part::Sockets, _) => match self.send_step(id, Step::Ask { token }, view, now) {
                Some(a) => out.push(a),
                None => {
                    self.end_job(id, out);
                    return Err("no candidates to send".into());
                }
            },
        }
        Ok(())
    }

    /// S: probes toward C's probe address, if its IP is one of C's candidates and has
    /// a token of its destination.
    fn probe_toward(&mut self, id: u64, probe: SocketAddr, now: Instant, out: &mut Actions) {
        let Some(j) = self.birthday.jobs.get_mut(&id) else {
            return;
        };
        if !j.ips.contains(&probe.ip()) {
            tracing::debug!(%probe, "birthday offer to an address the peer did not name");
            return self.fail_job(id, "offer outside the peer's candidates".into(), out);
        }
        if !self.birthday.destinations.admit_ip(probe.ip(), now) {
            return self.fail_job(id, "its destination's budget is spent".into(), out);
        }
        let Some(j) = self.birthday.jobs.get_mut(&id) else {
            return;
        };
        j.probe = Some(probe);
        j.phase = Phase::Probing;
        tracing::info!(job = id, %probe, "birthday: probing");
        out.push(Action::ProbeSockets {
            job: id,
            target: probe,
            token: j.token,
            count: self.birthday.budget.sockets,
        });
    }

    /// A birthday step in a candidate frame of a correlation we started or answered
    /// with a punch (checked by the caller).
    pub(super) fn on_step(
        &mut self,
        step: Step,
        from: StepFrom,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) {
        let node = from.frame.from();
        let corr = from.frame.correlation().to_owned();
        let job = self.birthday.job_of(&node, &corr);
        let start = Start {
            node,
            peer: from.peer,
            corr,
            via: from.via,
            route: from.route,
            seen: from.seen,
        };
        let phase = job
            .and_then(|id| self.birthday.jobs.get(&id))
            .map(|j| (j.phase, j.token));
        let ips = start.seen.ips.clone();
        match (step, job, phase) {
            // The other side started, or answers our ask.
            (Step::Ask { .. }, None, _) | (Step::Offer { .. }, None, _) => {
                if let Err(e) = self.begin(start, Some(step), view, now, out) {
                    tracing::debug!(peer = %from.peer, error = %e, "birthday step not taken");
                }
            }
            (Step::Offer { token, probe }, Some(id), Some((Phase::Asked, t))) if t == token => {
                self.probe_toward(id, probe, now, out)
            }
            (Step::Ready { token }, Some(id), Some((Phase::Offered, t))) if t == token => {
                let Some(j) = self.birthday.jobs.get_mut(&id) else {
                    return;
                };
                // S's `ready` leads with its observed address: the IP to spray.
                j.ips = ips;
                let Some(ip) = j.ips.first().copied() else {
                    return;
                };
                if !self.birthday.destinations.admit_ip(ip, now) {
                    return self.fail_job(id, "its destination's budget is spent".into(), out);
                }
                let Some(j) = self.birthday.jobs.get_mut(&id) else {
                    return;
                };
                j.phase = Phase::Spraying;
                tracing::info!(job = id, %ip, "birthday: spraying");
                out.push(Action::ProbeSpray {
                    job: id,
                    ip,
                    token,
                    count: self.birthday.budget.probes,
                });
            }
            _ => tracing::debug!(peer = %from.peer, ?step, "birthday step out of turn, ignored"),
        }
    }

    /// C's probe socket is bound at `port` (or not): the offer goes out.
    pub(crate) fn birthday_bound(
        &mut self,
        id: u64,
        port: Result<u16, String>,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        let mut out = Vec::new();
        let Some(j) = self
            .birthday
            .jobs
            .get(&id)
            .filter(|j| j.phase == Phase::Binding)
        else {
            return out;
        };
        let token = j.token;
        let ip = bd::preserved_ip(&view.listen_addrs(), &self.seen_at(view, now));
        let (port, ip) = match (port, ip) {
            (Ok(p), Some(ip)) => (p, ip),
            (Err(e), _) => {
                self.fail_job(id, format!("probe socket: {e}"), &mut out);
                return out;
            }
            (_, None) => {
                self.fail_job(id, "no public address of ours".into(), &mut out);
                return out;
            }
        };
        let step = Step::Offer {
            token,
            probe: SocketAddr::new(ip, port),
        };
        match self.send_step(id, step, view, now) {
            Some(a) => {
                out.push(a);
                if let Some(j) = self.birthday.jobs.get_mut(&id) {
                    j.phase = Phase::Offered;
                }
            }
            None => self.fail_job(id, "offer not sent".into(), &mut out),
        }
        out
    }

    /// A probe task could not start.
    pub(crate) fn birthday_failed(&mut self, id: u64, error: String) -> Actions {
        let mut out = Vec::new();
        self.fail_job(id, error, &mut out);
        out
    }

    /// A probe task reported back.
    pub(crate) fn probe_event(&mut self, ev: ProbeEvent, view: &dyn View, now: Instant) -> Actions {
        let mut out = Vec::new();
        match ev {
            ProbeEvent::Probed { job, sent } => {
                tracing::info!(job, sent, "birthday: probes out");
                let token = match self.birthday.jobs.get(&job) {
                    Some(j) if j.phase == Phase::Probing => j.token,
                    _ => return out,
                };
                match self.send_step(job, Step::Ready { token }, view, now) {
                    Some(a) => out.push(a),
                    None => self.fail_job(job, "ready not sent".into(), &mut out),
                }
            }
            ProbeEvent::Hit { job, hit, sent } => {
                tracing::info!(job, ?hit, sent, "birthday: S's wait ended");
                let probe = self.birthday.jobs.get(&job).and_then(|j| j.probe);
                match (hit, probe) {
                    (Some(hit), Some(c)) => {
                        out.push(Action::ProbeListen {
                            local: any(c.ip(), hit.local_port),
                            remote: c,
                        });
                        self.end_job(job, &mut out);
                    }
                    _ => self.fail_job(job, format!("no hit ({sent} datagrams)"), &mut out),
                }
            }
            ProbeEvent::Confirmed {
                job,
                local,
                from,
                sent,
            } => {
                tracing::info!(job, ?from, sent, "birthday: C's wait ended");
                let Some(s) = from else {
                    self.fail_job(job, format!("no confirmation ({sent} probes)"), &mut out);
                    return out;
                };
                let Some(j) = self.birthday.jobs.get(&job) else {
                    return out;
                };
                // Only the IP we sprayed (wait_confirm checks it too).
                if !j.ips.contains(&s.ip()) {
                    self.fail_job(job, "confirmation from elsewhere".into(), &mut out);
                    return out;
                }
                let (peer, route) = (j.peer, j.route);
                out.push(Action::ProbeListen {
                    local: any(s.ip(), local.port()),
                    remote: s,
                });
                let addr: Multiaddr =
                    format!("/{}/{}/udp/{}/quic-v1", family(s.ip()), s.ip(), s.port())
                        .parse()
                        .unwrap_or_else(|_| Multiaddr::empty());
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(PeerCondition::Always)
                    .build();
                if let Some(a) = route.and_then(|r| self.attempts.get_mut(&r))
                    && a.plan.stage() == Stage::Birthday
                {
                    a.dials.insert(opts.connection_id());
                }
                out.push(Action::Dial(opts));
                self.end_job(job, &mut out);
            }
        }
        out
    }

    /// Drops the attempt; its route (if still in this stage) moves on.
    fn fail_job(&mut self, id: u64, error: String, out: &mut Actions) {
        let route = self.birthday.jobs.get(&id).and_then(|j| j.route);
        tracing::info!(job = id, %error, "birthday: attempt failed");
        self.end_job(id, out);
        if let Some(r) = route
            && self
                .attempts
                .get(&r)
                .is_some_and(|a| a.plan.stage() == Stage::Birthday)
        {
            // Moved on at the next tick (which has the view the relay stage needs).
            self.birthday.give_up.push((r, error));
        }
    }

    fn end_job(&mut self, id: u64, out: &mut Actions) {
        if let Some(j) = self.birthday.jobs.remove(&id) {
            match j.route {
                Some(_) => self.birthday.own.finish(),
                None => self.birthday.answered.finish(),
            }
            out.push(Action::ProbeEnd(id));
        }
    }

    /// Drops attempts past [`JOB_FOR`]; routes whose attempt failed move on.
    pub(super) fn birthday_tick(&mut self, view: &dyn View, now: Instant, out: &mut Actions) {
        let late: Vec<u64> = self
            .birthday
            .jobs
            .iter()
            .filter(|(_, j)| now.saturating_duration_since(j.since) >= JOB_FOR)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.fail_job(id, "no result in time".into(), out);
        }
        for (r, error) in std::mem::take(&mut self.birthday.give_up) {
            if self
                .attempts
                .get(&r)
                .is_some_and(|a| a.plan.stage() == Stage::Birthday)
            {
                self.next_stage(r, error, view, now, out);
            }
        }
    }
}

impl Router {
    /// What an ordinary candidate frame says for a later birthday stage.
    pub(super) fn learn(&mut self, frame: &SignalFrame, addrs: &[Multiaddr]) {
        let key = (frame.from(), frame.correlation().to_owned());
        if let Some(o) = self.outbound.get_mut(&key.1).filter(|o| o.node == key.0) {
            o.seen.learn(frame.payload(), addrs);
        } else if let Some(a) = self.answering.get_mut(&key) {
            a.seen.learn(frame.payload(), addrs);
        }
    }

    /// A candidate frame with a birthday step: only in a route's correlation or one we
    /// answered with a punch; read whatever the count of dialed frames.
    pub(super) fn step_frame(
        &mut self,
        step: Step,
        frame: &SignalFrame,
        via: PeerId,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) {
        let Ok(peer) = frame.from().to_peer_id() else {
            return;
        };
        let addrs = self.scoped_addrs(frame, via, peer, view);
        self.learn(frame, &addrs);
        let corr = frame.correlation();
        let origin = match self.outbound.get(corr) {
            Some(o) if o.node == frame.from() => match o.intent {
                super::signaling::Intent::Route(id) => Some((Some(id), o.seen.clone())),
                _ => None,
            },
            _ => self
                .answering
                .get(&(frame.from(), corr.to_owned()))
                .filter(|a| a.punch)
                .map(|a| (None, a.seen.clone())),
        };
        let Some((route, seen)) = origin else {
            return tracing::debug!(%peer, "birthday step outside our correlations, ignored");
        };
        let from = StepFrom {
            frame,
            peer,
            via: (via != peer).then_some(via),
            route,
            seen,
        };
        self.on_step(step, from, view, now, out);
    }
}

/// An attempt's correlation and peer.
pub(super) struct Start {
    pub(super) node: NodeId,
    pub(super) peer: PeerId,
    pub(super) corr: String,
    pub(super) via: Option<PeerId>,
    pub(super) route: Option<u64>,
    pub(super) seen: Seen,
}

fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "ip4",
        IpAddr::V6(_) => "ip6",
    }
}
