//! The swarm: QUIC v1, TCP + Noise + Yamux, WebSocket (WS and WSS, listening on WSS
//! from certificate files), WebRTC-direct (for browsers; its certificate comes from
//! [`super::webrtc_cert`]), DNS and the relay client, built with `SwarmBuilder`.
//!
//! The builder's own WebSocket transport dials only (its TLS has no server side and
//! trusts only the web PKI), so the node adds its own `websocket::Config` with
//! `with_other_transport`: it listens on `/ws` and, with a certificate, on `/wss`, and it
//! dials `/wss` trusting the web PKI plus the configured extra roots.
//!
//! The order of the transports matters for WSS to a DNS name. `libp2p-dns` resolves every
//! `/dns*` component of an address before its inner transport sees it, and
//! libp2p-websocket takes the TLS server name (SNI), the name the certificate must be
//! valid for and the HTTP `Host` header from the address it is given: behind the builder's
//! `with_dns()`, `/dns/node.example/tcp/443/tls/ws` would reach it as
//! `/ip4/…/tcp/443/tls/ws` and be checked against the IP address. So the WebSocket
//! transport comes first, outside any resolver, with a resolver of its own under it
//! (`ws(dns(tcp))`, which resolves only the TCP part); WebRTC-direct comes next (its
//! addresses carry IPs; `libp2p-dns` takes every address it is offered and fails only in
//! the dial future, so nothing placed behind a resolver is ever tried); TCP and QUIC
//! follow behind the system resolver, with a second WebSocket transport there for the WebSocket addresses
//! that only resolution yields (`/dnsaddr` records), as before. The probe ports of
//! birthday-paradox probing ([`super::birthday::quic::ProbeQuic`], a second libp2p-quic
//! instance that takes only the addresses its [`ProbePorts`] table registered) sit
//! after WebRTC-direct and before the resolver, for the same reason.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::metrics::Registry;
use libp2p::{PeerId, SwarmBuilder, dns, noise, quic, tcp, websocket};
use mesh_core::NodeKeypair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::birthday::quic::{ProbePorts, ProbeQuic};
use super::build::{self, Parts};
use super::circuit_addrs::CircuitAddrs;
use super::config::NodeConfig;
use super::muxer;

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate or key file is missing or not PEM.
    #[error("TLS: {0}")]
    Tls(String),
    /// A transport or behaviour failed to initialise.
    #[error("{0}")]
    Build(String),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the swarm for `key` with every transport and the node's behaviour;
/// `webrtc` is the WebRTC-direct certificate, `probe_ports` the table of birthday probe
/// ports the node shares with the probe transport.
pub fn build_swarm(
    key: &NodeKeypair,
    config: &NodeConfig,
    webrtc: libp2p_webrtc::tokio::Certificate,
    probe_ports: ProbePorts,
    parts: Parts,
    registry: &mut Registry,
) -> Result<super::NodeSwarm, TransportError> {
    // libp2p-webrtc's DTLS (webrtc-rs) builds rustls configs from the process-wide
    // crypto provider, and with both `ring` and `aws-lc-rs` compiled in (different
    // crates ask for each) rustls cannot pick one and panics in the first handshake.
    // libmesh uses `ring` everywhere; an application that installed its own provider
    // keeps it (the error is that one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = tls_config(config)?;
    let build = |e: &dyn std::fmt::Display| TransportError::Build(e.to_string());
    let inner_tls = tls.clone();
    let read_budget = mesh_core::ReadBudget::new(config.limits.read_budget_bytes);
    super::stats::read_budget::register(registry, &read_budget);
    // The node's QUIC handshakes, counted over all its QUIC listeners (the probes' too).
    let retry = config.limits.quic_pending_before_retry();
    let quic_handshakes = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::clone(&quic_handshakes);
    let identity = key.to_libp2p();
    let (relay_transport, relay_client) =
        libp2p::relay::client::new(identity.public().to_peer_id());
    let swarm = SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        // Relay circuits first, as the builder's `with_relay_client` puts them: every
        // transport after takes only addresses without `/p2p-circuit`, but a resolver
        // takes any address (see below).
        .with_other_transport(|key| circuit_transport(key, relay_transport))
        .map_err(|e| build(&e))?
        // Next, so that it sees `/dns` names unresolved (see the module docs).
        .with_other_transport(|key| websocket_transport(key, tls))
        .map_err(|e| build(&e))?
        // WebRTC-direct addresses carry IP addresses (a browser dials them); no resolver.
        // Before the resolver: `libp2p-dns` accepts every address and fails only later,
        // in the dial future, so a transport behind it is never asked.
        .with_other_transport(|key| {
            libp2p_webrtc::tokio::Transport::new(key.clone(), webrtc)
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        })
        .map_err(|e| build(&e))?
        // Only registered probe ports and their peers; anything else goes on to the
        // node's own QUIC behind the resolver.
        .with_other_transport(|key| {
            ProbeQuic::new(muxer::quic::config(key, retry, &handshakes), probe_ports)
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        })
        .map_err(|e| build(&e))?
        .with_other_transport(|key| resolved_transports(key, inner_tls, (retry, &quic_handshakes)))
        .map_err(|e| build(&e))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|_| {
            build::build(key, relay_client, config, parts, read_budget)
                .map(|b| super::boxed::Boxed(super::dial_budget::DialBudget::new(b)))
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| build(&e))?
        // Substreams keep libp2p's default negotiation (multistream-select `V1`); see
        // the README, "Substream negotiation", for why not `V1Lazy`.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(config.idle_timeout())
                .with_max_negotiating_inbound_streams(muxer::MAX_NEGOTIATING_INBOUND_STREAMS)
        })
        .build();
    Ok(swarm)
}

/// The largest WebSocket message (and frame) a peer may send us: libp2p-websocket
/// reads a whole message into memory before Noise sees a byte of it, and its default
/// is 256 MiB, so any client could make the node hold 256 MiB per connection before
/// authenticating (a few hundred connections would exhaust memory). Senders put one
/// Noise message (at most 65,537 bytes) in a WebSocket message (rust-libp2p and
/// js-libp2p alike); 1 MiB leaves room for one that packs several and matches the
/// largest yamux frame rust-yamux accepts. A message beyond it closes the connection.
/// It bounds the connections the node dials too: libp2p-websocket 0.46 applies it only
/// to accepted ones, so the workspace patches that crate (`vendor/libp2p-websocket`).
pub const MAX_WS_MESSAGE: usize = 1024 * 1024;

/// The relay client's circuits, Noise and Yamux, as `SwarmBuilder::with_relay_client`
/// makes them, with the reservation addresses of [`CircuitAddrs`]: a circuit listener
/// reports the relay address it was opened on and, of those the relay names, only its
/// others on that host.
fn circuit_transport(
    key: &Keypair,
    relay: libp2p::relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    Ok(CircuitAddrs::new(relay, key.public().to_peer_id())
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(muxer::circuit_config())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// WebSocket (WS and WSS) over TCP with its own resolver under it, Noise and Yamux: the
/// host of the address it dials is the TLS server name and the `Host` header.
fn websocket_transport(
    key: &Keypair,
    tls: websocket::tls::Config,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let mut ws = websocket::Config::new(dns::tokio::Transport::system(tcp)?);
    ws.set_tls_config(tls);
    ws.set_max_data_size(MAX_WS_MESSAGE);
    Ok(ws
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(muxer::config())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// TCP + Noise + Yamux, QUIC v1 and WebSocket behind the system resolver (what
/// `with_tcp`, `with_quic` and `with_dns` of the builder would make, plus WebSocket for
/// addresses that resolution yields).
fn resolved_transports(
    key: &Keypair,
    tls: websocket::tls::Config,
    (retry, handshakes): (usize, &Arc<AtomicUsize>),
) -> Result<dns::tokio::Transport<Boxed<(PeerId, StreamMuxerBox)>>, BoxError> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(muxer::config())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let quic = quic::tokio::Transport::new(muxer::quic::config(key, retry, handshakes))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let all = tcp
        .or_transport(quic)
        .map(|either, _| either.into_inner())
        .or_transport(websocket_transport(key, tls)?)
        .map(|either, _| either.into_inner())
        .boxed();
    Ok(dns::tokio::Transport::system(all)?)
}

/// The WebSocket TLS settings: a server side when `[wss]` is configured, and a client
/// side trusting the web PKI plus `tls_roots`.
fn tls_config(config: &NodeConfig) -> Result<websocket::tls::Config, TransportError> {
    let mut builder = websocket::tls::Config::builder();
    for root in &config.tls_roots {
        for cert in read_certs(root)? {
            builder
                .add_trust(&cert)
                .map_err(|e| TransportError::Tls(format!("{}: {e}", root.display())))?;
        }
    }
    if let Some(wss) = &config.wss {
        let certs = read_certs(&wss.cert)?;
        let key = read_key(&wss.key)?;
        builder
            .server(key, certs)
            .map_err(|e| TransportError::Tls(format!("{}: {e}", wss.cert.display())))?;
    }
    Ok(builder.finish())
}

fn read_certs(path: &Path) -> Result<Vec<websocket::tls::Certificate>, TransportError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?
        .map(|c| c.map(|c| websocket::tls::Certificate::new(c.to_vec())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TransportError::Tls(format!(
            "{}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<websocket::tls::PrivateKey, TransportError> {
    let key = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
    let der = key.secret_der().to_vec();
    // `PrivateKey::new` panics on a format it cannot detect; check first.
    PrivateKeyDer::try_from(der.clone())
        .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
    Ok(websocket::tls::PrivateKey::new(der))
}
