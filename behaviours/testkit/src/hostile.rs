//! A hostile peer: a real libp2p peer (TCP or QUIC, with noise and yamux like any
//! other) that can send any bytes on any protocol, as often as it likes.
//!
//! Every libmesh protocol (`/mesh/session`, `/mesh/marker`, `/mesh/signal`,
//! `/mesh/advert`, `/mesh/relay-admission`, …) carries one request per stream, read to
//! its end, and one answer. [`HostilePeer::send`] does exactly that with bytes of the
//! caller's choosing: well-formed frames signed by another key, replays, oversized or
//! malformed bodies. [`HostilePeer::trickle`] opens a stream and never finishes it.
//!
//! The swarm runs on its own tokio task (so a test can hold many hostile peers and
//! send from several tasks at once, through clones of the peer); dropping the last
//! clone ends it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use mesh_core::NodeKeypair;
use tokio::sync::{mpsc, oneshot};

use crate::Net;

/// Largest answer read back, bytes.
pub const MAX_ANSWER: u64 = 1 << 20;

/// What went wrong for a hostile peer.
#[derive(Debug, thiserror::Error)]
pub enum HostileError {
    /// The dial failed.
    #[error("dial failed: {0}")]
    Dial(String),
    /// The remote did not take the stream (protocol not supported, connection gone).
    #[error("stream not opened: {0}")]
    Open(String),
    /// Reading or writing the stream failed (reset, closed early).
    #[error("stream i/o: {0}")]
    Io(#[from] io::Error),
    /// Nothing happened within the time given.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The peer's swarm task is gone.
    #[error("the hostile peer's swarm task ended")]
    Gone,
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
}

type DialReply = oneshot::Sender<Result<PeerId, HostileError>>;

struct Inner {
    key: NodeKeypair,
    peer_id: PeerId,
    control: libp2p_stream::Control,
    dials: mpsc::Sender<(Multiaddr, DialReply)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw libp2p peer under a test's control. Clones share one swarm.
#[derive(Clone)]
pub struct HostilePeer(Arc<Inner>);

impl std::fmt::Debug for HostilePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostilePeer")
            .field("peer_id", &self.0.peer_id)
            .finish()
    }
}

impl HostilePeer {
    /// A hostile peer whose transport identity is `key`, over `net`, on the running
    /// tokio runtime.
    pub fn spawn(key: NodeKeypair, net: Net) -> Self {
        let behaviour = Behaviour {
            stream: libp2p_stream::Behaviour::new(),
        };
        let swarm = crate::net_swarm(&key.to_libp2p(), net, Duration::from_secs(300), behaviour);
        let control = swarm.behaviour().stream.new_control();
        let peer_id = *swarm.local_peer_id();
        let (dials, rx) = mpsc::channel(16);
        let task = tokio::spawn(drive(swarm, rx));
        HostilePeer(Arc::new(Inner {
            key,
            peer_id,
            control,
            dials,
            task,
        }))
    }

    /// The key of its transport identity.
    pub fn key(&self) -> &NodeKeypair {
        &self.0.key
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.0.peer_id
    }

    /// Dials `addr` (with or without `/p2p/`) and waits for the connection, at most
    /// `within`.
    pub async fn connect(&self, addr: Multiaddr, within: Duration) -> Result<PeerId, HostileError> {
        let (tx, rx) = oneshot::channel();
        self.0
            .dials
            .send((addr, tx))
            .await
            .map_err(|_| HostileError::Gone)?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(HostileError::Gone),
            Err(_) => Err(HostileError::TimedOut(within)),
        }
    }

    /// Opens a stream to `peer` on `protocol`, writes `bytes`, closes its side and reads
    /// the answer to its end (at most [`MAX_ANSWER`] bytes), all within `within`. The
    /// answer is read while writing, so a remote that answers (or closes) before taking
    /// the whole body, as it should for an oversized one, is heard.
    pub async fn send(
        &self,
        peer: PeerId,
        protocol: &'static str,
        bytes: &[u8],
        within: Duration,
    ) -> Result<Vec<u8>, HostileError> {
        let mut control = self.0.control.clone();
        let run = async move {
            let s = control
                .open_stream(peer, StreamProtocol::new(protocol))
                .await
                .map_err(|e| HostileError::Open(e.to_string()))?;
            let (mut r, mut w) = s.split();
            let write = async move {
                // A write the remote refuses to take is not an error of ours: its answer
                // (or its closing) is what counts.
                if w.write_all(bytes).await.is_ok() {
                    let _ = w.close().await;
                }
                // Keep the write half until the answer is read.
                futures::future::pending::<std::convert::Infallible>().await
            };
            let read = async move {
                let mut answer = Vec::new();
                (&mut r).take(MAX_ANSWER).read_to_end(&mut answer).await?;
                Ok::<_, HostileError>(answer)
            };
            futures::pin_mut!(write, read);
            match futures::future::select(write, read).await {
                futures::future::Either::Right((answer, _)) => answer,
                futures::future::Either::Left((never, _)) => match never {},
            }
        };
        tokio::time::timeout(within, run)
            .await
            .map_err(|_| HostileError::TimedOut(within))?
    }

    /// Opens a stream to `peer` on `protocol`, writes `prefix` and then nothing more,
    /// never closing its side; returns how long the remote kept the stream open (at most
    /// `within`, which is returned when the remote never gave up).
    pub async fn trickle(
        &self,
        peer: PeerId,
        protocol: &'static str,
        prefix: &[u8],
        within: Duration,
    ) -> Result<Duration, HostileError> {
        let mut control = self.0.control.clone();
        let start = tokio::time::Instant::now();
        let mut s = control
            .open_stream(peer, StreamProtocol::new(protocol))
            .await
            .map_err(|e| HostileError::Open(e.to_string()))?;
        s.write_all(prefix).await?;
        s.flush().await?;
        let mut sink = [0u8; 1024];
        let held = async {
            // Until the remote closes or resets the stream.
            loop {
                match s.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(within, held).await;
        Ok(start.elapsed().min(within))
    }
}

async fn drive(mut swarm: Swarm<Behaviour>, mut dials: mpsc::Receiver<(Multiaddr, DialReply)>) {
    use libp2p::swarm::dial_opts::DialOpts;
    use std::collections::HashMap;
    let mut waiting: HashMap<libp2p::swarm::ConnectionId, DialReply> = HashMap::new();
    loop {
        tokio::select! {
            cmd = dials.recv() => {
                let Some((addr, reply)) = cmd else { return };
                let opts = DialOpts::unknown_peer_id().address(addr).build();
                let id = opts.connection_id();
                match swarm.dial(opts) {
                    Ok(()) => {
                        waiting.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(HostileError::Dial(e.to_string())));
                    }
                }
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, .. } => {
                    if let Some(reply) = waiting.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some(reply) = waiting.remove(&connection_id) {
                        let _ = reply.send(Err(HostileError::Dial(error.to_string())));
                    }
                }
                _ => {}
            }
        }
    }
}
