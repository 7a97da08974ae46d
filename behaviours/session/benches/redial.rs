//! Dial to session established for a peer met before (a redial), against a redial plus
//! the first ping, on loopback TCP and QUIC (issue 18, item 4).
//!
//! The `session` bench builds fresh nodes for every sample, so every handshake is a first
//! contact. A node mostly redials peers it has met (after an idle close, a restart of the
//! peer's connection, a Kademlia refresh), and then the peer's capability advertisement
//! and passports are the bytes it verified before. Here one pair of swarms (so one pair of
//! nodes) connects, establishes, disconnects and connects again: both cases (bare libp2p
//! with ping; the session behaviour) redial the same listener, samples interleaved after
//! warm-up, medians compared. Two variants: both swarms polled by one task, and each side
//! polled by its own task (as two processes would be).
//!
//! `cargo bench -p mesh-session --bench redial` (about 20 s).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId, ping};
use mesh_core::{NodeKeypair, RateLimit};
use mesh_session::governor::GovernorConfig;
use mesh_session::{Behaviour, Config, Event};
use mesh_testkit::ratio::{Ratio, print_table};
use mesh_testkit::{Net, median};
use tokio::sync::mpsc;

const SAMPLES: usize = 100;
const WARMUP: usize = 5;
const BOUND: Duration = Duration::from_secs(10);

type Hit<B> = fn(&SwarmEvent<<B as NetworkBehaviour>::ToSwarm>) -> bool;

/// A session behaviour that neither dials on its own (no hot sessions wanted) nor limits
/// the redials of this bench (hundreds a minute from one node).
fn session(key: &NodeKeypair) -> Behaviour {
    Behaviour::new(
        key.clone(),
        Config {
            governor: GovernorConfig {
                target_hot: 0,
                handshakes: RateLimit::per_minute(100_000, 100_000),
                ..GovernorConfig::default()
            },
            ..Config::default()
        },
    )
}

fn swarm<B: NetworkBehaviour>(net: Net, make: &impl Fn(&NodeKeypair) -> B) -> Swarm<B> {
    let key = NodeKeypair::generate();
    mesh_testkit::net_swarm(&key.to_libp2p(), net, Duration::from_secs(60), make(&key))
}

fn session_done(ev: &SwarmEvent<Event>) -> bool {
    matches!(ev, SwarmEvent::Behaviour(Event::SessionEstablished { .. }))
}

fn pinged(ev: &SwarmEvent<ping::Event>) -> bool {
    matches!(ev, SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }))
}

fn closed<T>(ev: &SwarmEvent<T>) -> bool {
    matches!(ev, SwarmEvent::ConnectionClosed { .. })
}

/// What the listener's side reports to the dialer's: it reached `done`, or the
/// connection closed.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Done(Instant),
    Closed,
}

/// A dialer and its listener, connected again and again.
struct Pair<B: NetworkBehaviour> {
    d: Swarm<B>,
    peer: PeerId,
    addr: Multiaddr,
    listener: Listener<B>,
    /// When the dialer is done; `None` when the listener need not be (the ping baseline).
    l_done: Option<Hit<B>>,
    d_done: Hit<B>,
}

/// The listener: polled beside the dialer, or by its own task reporting through a channel.
enum Listener<B: NetworkBehaviour> {
    Inline(Box<Swarm<B>>),
    Task(mpsc::Receiver<Seen>, tokio::task::JoinHandle<()>),
}

impl<B> Pair<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send,
{
    async fn new(
        net: Net,
        make: impl Fn(&NodeKeypair) -> B,
        d_done: Hit<B>,
        l_done: Option<Hit<B>>,
        split: bool,
    ) -> Self {
        let mut l = swarm(net, &make);
        let d = swarm(net, &make);
        l.listen_on(net.listen_addr()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = l.select_next_some().await {
                break address;
            }
        };
        let peer = *l.local_peer_id();
        let listener = if split {
            let (tx, rx) = mpsc::channel(16);
            let task = tokio::spawn(async move {
                loop {
                    let ev = l.select_next_some().await;
                    let seen = if l_done.is_some_and(|f| f(&ev)) {
                        Seen::Done(Instant::now())
                    } else if closed(&ev) {
                        Seen::Closed
                    } else {
                        continue;
                    };
                    if tx.send(seen).await.is_err() {
                        return;
                    }
                }
            });
            Listener::Task(rx, task)
        } else {
            Listener::Inline(Box::new(l))
        };
        Pair {
            d,
            peer,
            addr,
            listener,
            l_done,
            d_done,
        }
    }

    /// One redial: from `dial` until the dialer (and the listener, when it has to be) is
    /// done; then the connection is closed and both sides have seen it close.
    async fn sample(&mut self) -> Duration {
        let start = Instant::now();
        let dial = DialOpts::peer_id(self.peer)
            .addresses(vec![self.addr.clone()])
            .build();
        self.d.dial(dial).unwrap();
        let elapsed = self.until(start, true).await;
        assert!(self.d.disconnect_peer_id(self.peer).is_ok());
        self.until(start, false).await;
        elapsed
    }

    /// Polls both sides until they are done (`done`) or have seen the connection close.
    async fn until(&mut self, start: Instant, done: bool) -> Duration {
        let d_done = self.d_done;
        let d_hit = |ev: &SwarmEvent<B::ToSwarm>| {
            if done { d_done(ev) } else { closed(ev) }
        };
        let mut d_at = None;
        let mut l_at = if done && self.l_done.is_none() {
            Some(start)
        } else {
            None
        };
        let l_done = self.l_done;
        let run = async {
            while d_at.is_none() || l_at.is_none() {
                match &mut self.listener {
                    Listener::Inline(l) => tokio::select! {
                        ev = self.d.select_next_some() => {
                            if d_at.is_none() && d_hit(&ev) { d_at = Some(Instant::now()); }
                        }
                        ev = l.select_next_some() => {
                            let hit = if done { l_done.is_some_and(|f| f(&ev)) } else { closed(&ev) };
                            if l_at.is_none() && hit { l_at = Some(Instant::now()); }
                        }
                    },
                    Listener::Task(rx, _) => tokio::select! {
                        ev = self.d.select_next_some() => {
                            if d_at.is_none() && d_hit(&ev) { d_at = Some(Instant::now()); }
                        }
                        seen = rx.recv() => match seen.expect("listener task ended") {
                            Seen::Done(at) if done && l_at.is_none() => l_at = Some(at),
                            Seen::Closed if !done && l_at.is_none() => l_at = Some(Instant::now()),
                            _ => {}
                        },
                    },
                }
            }
        };
        tokio::time::timeout(BOUND, run)
            .await
            .expect("redial sample timed out");
        d_at.max(l_at).unwrap_or(start) - start
    }
}

impl<B: NetworkBehaviour> Drop for Pair<B> {
    fn drop(&mut self) {
        if let Listener::Task(_, task) = &self.listener {
            task.abort();
        }
    }
}

/// Medians (ns) of interleaved redials: bare libp2p to the first ping, and the session.
async fn redial_ratio(net: Net, split: bool) -> (f64, f64) {
    let mut bare = Pair::new(
        net,
        |_| ping::Behaviour::new(ping::Config::new()),
        pinged,
        None,
        split,
    )
    .await;
    let mut sess = Pair::new(net, session, session_done, Some(session_done), split).await;
    for _ in 0..WARMUP {
        bare.sample().await;
        sess.sample().await;
    }
    let ns = |d: Duration| d.as_nanos() as f64;
    let (mut b, mut c) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
    for i in 0..SAMPLES {
        if i % 2 == 0 {
            b.push(ns(bare.sample().await));
            c.push(ns(sess.sample().await));
        } else {
            c.push(ns(sess.sample().await));
            b.push(ns(bare.sample().await));
        }
    }
    (median(&b), median(&c))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    for (split, title) in [
        (false, "both swarms polled by one task"),
        (true, "each side polled by its own task"),
    ] {
        let rows: Vec<Ratio> = [(Net::Tcp, "TCP"), (Net::Quic, "QUIC")]
            .into_iter()
            .map(|(net, name)| {
                let (b, c) = rt.block_on(redial_ratio(net, split));
                Ratio {
                    name: if name == "TCP" {
                        "TCP: redial to session / redial + first ping"
                    } else {
                        "QUIC: redial to session / redial + first ping"
                    },
                    baseline_ns: b,
                    candidate_ns: c,
                    target: if name == "TCP" { 1.2 } else { 1.1 },
                    at_least: false,
                }
            })
            .collect();
        print_table(
            &format!(
                "redial latency, a peer met before ({SAMPLES} interleaved samples each, medians; \
                 {title})"
            ),
            &rows,
        );
    }
    eprintln!(
        "redial samples took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
