//! Relay admission on a plain rust-libp2p circuit relay v2.
//!
//! Three roles in one process, each an ordinary rust-libp2p app over TCP:
//!
//! - the relay: `mesh_admission::server::Behaviour` (an allowlist policy), which is the
//!   circuit relay v2 server with admission: no glue, nothing to feed it;
//! - A: asks the relay for a reservation grant (`mesh_admission::client::Behaviour`),
//!   then reserves (listens on `<relay>/p2p-circuit`);
//! - B: asks for a circuit grant to A, then dials A through the relay and pings it;
//! - C, not on the allowlist, is denied (`E_TRANSPORT_REJECTED`) and its reservation is
//!   refused by the relay itself.
//!
//! ```sh
//! cargo run --example relay_admission -- --demo   # exits 0 on success
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, noise, ping, relay, tcp, yamux};
use mesh_admission::{Allowlist, Purpose, client, server};
use mesh_core::NodeKeypair;

/// The relay's behaviour: relay v2 with admission, and ping.
#[derive(NetworkBehaviour)]
struct RelayApp {
    admission: server::Behaviour,
    ping: ping::Behaviour,
}

/// A client's behaviour: the relay client, admission requests, ping.
#[derive(NetworkBehaviour)]
struct ClientApp {
    relay_client: relay::client::Behaviour,
    admission: client::Behaviour,
    ping: ping::Behaviour,
}

#[derive(Debug, Parser)]
#[command(about = "mesh-admission on a plain rust-libp2p relay")]
struct Args {
    /// Run the relay and three clients in this process; exit 0 on success.
    #[arg(long)]
    demo: bool,
}

const STEP: Duration = Duration::from_secs(30);

fn relay_swarm(
    key: &NodeKeypair,
    allowed: HashSet<mesh_core::NodeId>,
) -> anyhow::Result<Swarm<RelayApp>> {
    let config = server::Config {
        policy: Arc::new(Allowlist {
            nodes: allowed,
            limits: server::DEFAULT_CAPS,
        }),
        ..server::Config::default()
    };
    // Everything runs on 127.0.0.1: leave out relay v2's per-IP rate limiters.
    let base = relay::Config {
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
        ..relay::Config::default()
    };
    let app = RelayApp {
        admission: server::Behaviour::with_relay_config(key.clone(), config, base),
        ping: ping::Behaviour::default(),
    };
    Ok(
        libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| app)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build(),
    )
}

fn client_swarm(key: &NodeKeypair) -> anyhow::Result<Swarm<ClientApp>> {
    let admission = client::Behaviour::new(key.clone(), client::Config::default());
    Ok(
        libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_relay_client(noise::Config::new, yamux::Config::default)?
            .with_behaviour(|_, relay_client| ClientApp {
                relay_client,
                admission,
                ping: ping::Behaviour::default(),
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build(),
    )
}

/// Drives the relay in the background for the rest of the demo.
fn spawn_relay(mut swarm: Swarm<RelayApp>) {
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(ev) = swarm.select_next_some().await {
                match ev {
                    RelayAppEvent::Admission(server::Event::Relay(_)) => {}
                    RelayAppEvent::Admission(server::Event::Granted { grant, .. }) => {
                        println!("relay: admitted {} ({})", grant.node_id(), grant.purpose());
                    }
                    RelayAppEvent::Admission(server::Event::Admitted { grant, what, .. }) => {
                        println!(
                            "relay: admitted {} for a {what} without a request",
                            grant.node
                        );
                    }
                    RelayAppEvent::Admission(server::Event::Denied { peer, error }) => {
                        println!("relay: denied {peer}: {}", error.code.as_str());
                    }
                    RelayAppEvent::Admission(server::Event::Refused { peer, what, .. }) => {
                        println!("relay: refused a {what} of {peer}");
                    }
                    RelayAppEvent::Admission(server::Event::Revoked { node }) => {
                        println!("relay: revoked {node}");
                    }
                    RelayAppEvent::Ping(_) => {}
                }
            }
        }
    });
}

/// Polls `swarm` until `f` returns a value, at most [`STEP`].
async fn until<T>(
    swarm: &mut Swarm<ClientApp>,
    what: &str,
    mut f: impl FnMut(&mut Swarm<ClientApp>, SwarmEvent<ClientAppEvent>) -> Option<T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(STEP, async {
        loop {
            let ev = swarm.select_next_some().await;
            if let Some(t) = f(swarm, ev) {
                return t;
            }
        }
    })
    .await
    .with_context(|| format!("{what}: nothing within {STEP:?}"))
}

async fn grant(
    swarm: &mut Swarm<ClientApp>,
    relay: PeerId,
    purpose: Purpose,
    addr: &Multiaddr,
) -> anyhow::Result<Result<(), mesh_core::MeshError>> {
    swarm
        .behaviour_mut()
        .admission
        .request(relay, purpose, vec![addr.clone()])?;
    until(swarm, "admission answer", |_, ev| match ev {
        SwarmEvent::Behaviour(ClientAppEvent::Admission(client::Event::Granted {
            grant, ..
        })) => {
            println!(
                "granted ticket {} until {}",
                grant.ticket_id(),
                grant.expires_at().as_str()
            );
            Some(Ok(()))
        }
        SwarmEvent::Behaviour(ClientAppEvent::Admission(client::Event::Denied {
            error, ..
        })) => Some(Err(error)),
        _ => None,
    })
    .await
}

async fn demo() -> anyhow::Result<()> {
    let (rk, ak, bk, ck) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut r = relay_swarm(&rk, [ak.node_id(), bk.node_id()].into())?;
    r.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = r.select_next_some().await {
                return address;
            }
        }
    })
    .await?;
    // A relay v2 server accepts reservations only once it has an external address.
    r.add_external_address(addr.clone());
    let relay_peer = *r.local_peer_id();
    spawn_relay(r);

    // A: admitted, reserves.
    let mut a = client_swarm(&ak)?;
    if let Err(e) = grant(&mut a, relay_peer, Purpose::Reservation, &addr).await? {
        bail!("A was denied: {e}");
    }
    let circuit = addr
        .clone()
        .with(Protocol::P2p(relay_peer))
        .with(Protocol::P2pCircuit);
    a.listen_on(circuit.clone())?;
    until(&mut a, "A's reservation", |_, ev| match ev {
        SwarmEvent::Behaviour(ClientAppEvent::RelayClient(
            relay::client::Event::ReservationReqAccepted { .. },
        )) => Some(()),
        _ => None,
    })
    .await?;
    println!("A reserved: {circuit}");
    let a_peer = *a.local_peer_id();
    tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });

    // B: a circuit grant to A, then a ping through the relay.
    let mut b = client_swarm(&bk)?;
    let target = Purpose::Circuit {
        target: Some(ak.node_id()),
    };
    if let Err(e) = grant(&mut b, relay_peer, target, &addr).await? {
        bail!("B was denied: {e}");
    }
    b.dial(circuit.with(Protocol::P2p(a_peer)))?;
    let rtt = until(&mut b, "a ping through the relay", |_, ev| match ev {
        SwarmEvent::Behaviour(ClientAppEvent::Ping(ping::Event {
            peer,
            result: Ok(rtt),
            ..
        })) if peer == a_peer => Some(rtt),
        _ => None,
    })
    .await?;
    println!("B pinged A through the relay: {rtt:?}");

    // C: not on the allowlist.
    let mut c = client_swarm(&ck)?;
    match grant(&mut c, relay_peer, Purpose::Reservation, &addr).await? {
        Ok(()) => bail!("C was admitted"),
        Err(e) => println!("C denied: {} {}", e.code.as_str(), e.detail),
    }
    c.listen_on(
        addr.with(Protocol::P2p(relay_peer))
            .with(Protocol::P2pCircuit),
    )?;
    until(&mut c, "C's refused reservation", |_, ev| match ev {
        SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
            println!("C's reservation refused: {e}");
            Some(())
        }
        _ => None,
    })
    .await?;
    println!("demo ok");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.demo {
        bail!("run with --demo");
    }
    demo().await
}
