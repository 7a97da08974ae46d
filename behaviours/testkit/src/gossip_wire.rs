//! Gossipsub's wire format written by hand, for tests that play a peer sending what
//! libp2p's gossipsub never would (forgeries, copies, fresh authors by the hundred) on
//! a raw `/meshsub/1.1.0` stream.

use libp2p::identity::Keypair;

/// The protocol of a raw gossipsub stream.
pub const MESHSUB: &str = "/meshsub/1.1.0";

/// A length-delimited protobuf field numbered `num` (1 to 15).
fn field(num: u8, bytes: &[u8], out: &mut Vec<u8>) {
    crate::kad_wire::field((num << 3) | 2, bytes, out);
}

/// A gossipsub `Message` (fields in order, as prost writes them).
fn message(from: &[u8], data: &[u8], seqno: u64, topic: &str, sig: Option<&[u8]>) -> Vec<u8> {
    let mut m = Vec::new();
    field(1, from, &mut m);
    field(2, data, &mut m);
    field(3, &seqno.to_be_bytes(), &mut m);
    field(4, topic.as_bytes(), &mut m);
    if let Some(sig) = sig {
        field(5, sig, &mut m);
    }
    m
}

/// A message of `key` on `topic` signed over `data` (gossipsub's strict signing),
/// carrying `shown` on the wire: a forgery when it differs from `data`.
///
/// # Panics
/// When `key` cannot sign (never for the key types libp2p generates).
#[allow(clippy::expect_used)]
pub fn signed(key: &Keypair, data: &[u8], shown: &[u8], seqno: u64, topic: &str) -> Vec<u8> {
    let from = key.public().to_peer_id().to_bytes();
    let mut input = b"libp2p-pubsub:".to_vec();
    input.extend(message(&from, data, seqno, topic, None));
    let sig = key.sign(&input).expect("a key that signs");
    message(&from, shown, seqno, topic, Some(&sig))
}

/// One RPC frame (length-prefixed) holding `body` as its field `num` (1: a
/// subscription, 2: a published message, 3: control messages).
fn rpc(num: u8, body: &[u8]) -> Vec<u8> {
    let mut rpc = Vec::new();
    field(num, body, &mut rpc);
    let mut out = Vec::new();
    crate::kad_wire::varint(rpc.len(), &mut out);
    out.extend(rpc);
    out
}

/// One RPC frame (length-prefixed) publishing `msg`.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    rpc(2, msg)
}

/// One RPC frame (length-prefixed) pruning the other side from our mesh on each of
/// `topics`, asking it to back off `backoff_secs` (gossipsub v1.1's `ControlPrune`).
pub fn prune(topics: &[&str], backoff_secs: u64) -> Vec<u8> {
    let mut control = Vec::new();
    for topic in topics {
        let mut p = Vec::new();
        field(1, topic.as_bytes(), &mut p);
        // Field 3, a varint.
        p.push(3 << 3);
        crate::kad_wire::varint(usize::try_from(backoff_secs).unwrap_or(usize::MAX), &mut p);
        field(4, &p, &mut control);
    }
    rpc(3, &control)
}

/// One RPC frame (length-prefixed) subscribing to `topic`.
pub fn subscribe(topic: &str) -> Vec<u8> {
    let mut sub = Vec::new();
    // Field 1 (subscribe), a varint: true.
    sub.extend([1 << 3, 1]);
    field(2, topic.as_bytes(), &mut sub);
    rpc(1, &sub)
}

/// One RPC frame (length-prefixed) asking with IWANT for the messages `ids`.
pub fn iwant(ids: &[Vec<u8>]) -> Vec<u8> {
    let mut want = Vec::new();
    for id in ids {
        field(1, id, &mut want);
    }
    let mut control = Vec::new();
    field(2, &want, &mut control);
    rpc(3, &control)
}

/// Makes the peer of `control` accept the gossipsub streams the other side opens and
/// hold them without reading a byte (a peer that reads nothing), until the returned
/// task is aborted.
///
/// # Panics
/// When the protocol is already accepted on `control`'s behaviour (a test setup error).
#[allow(clippy::expect_used)]
pub fn hold_gossip(mut control: libp2p_stream::Control) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    let mut incoming = control
        .accept(libp2p::StreamProtocol::new(MESHSUB))
        .expect("meshsub accepted once");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((_, s)) = incoming.next().await {
            held.push(s);
        }
    })
}

/// Makes the peer of `control` accept the gossipsub streams the other side opens (and
/// read them to nothing), as a gossipsub peer would: a node whose own gossipsub stream
/// is refused takes the peer for one without gossipsub and refuses the peer's streams
/// too. Runs until the returned task is aborted.
///
/// # Panics
/// When the protocol is already accepted on `control`'s behaviour (a test setup error).
#[allow(clippy::expect_used)]
pub fn accept_gossip(mut control: libp2p_stream::Control) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    let mut incoming = control
        .accept(libp2p::StreamProtocol::new(MESHSUB))
        .expect("meshsub accepted once");
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            tokio::spawn(async move {
                let _ = futures::io::copy(&mut s, &mut futures::io::sink()).await;
            });
        }
    })
}

/// A raw gossipsub peer: a swarm of `libp2p_stream` with a fresh key, driven by a task of
/// its own, that accepts the other side's gossipsub streams ([`accept_gossip`]) and has
/// dialed an address. Tests write hand-made frames on the streams they open with
/// `control`. Its tasks stop when it is dropped.
pub struct RawPeer {
    /// The peer's key (the author of the messages it signs, if the test likes).
    pub key: Keypair,
    /// The peer's id.
    pub peer: libp2p::PeerId,
    /// Opens streams to the other side.
    pub control: libp2p_stream::Control,
    connected: Option<tokio::sync::oneshot::Receiver<()>>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl RawPeer {
    /// A raw peer on `net` (idle connections closed after `idle`) dialing `addr`.
    ///
    /// # Panics
    /// When `addr` cannot be dialed at all (a test setup error).
    #[allow(clippy::expect_used)]
    pub fn dial(addr: libp2p::Multiaddr, net: crate::Net, idle: std::time::Duration) -> RawPeer {
        use futures::StreamExt;
        let key = Keypair::generate_ed25519();
        let mut p = crate::net_swarm(&key, net, idle, libp2p_stream::Behaviour::new());
        let peer = *p.local_peer_id();
        let control = p.behaviour().new_control();
        let accepting = accept_gossip(p.behaviour().new_control());
        p.dial(addr).expect("a dialable address");
        let (up, connected) = tokio::sync::oneshot::channel();
        let driving = tokio::spawn(async move {
            let mut up = Some(up);
            loop {
                if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } =
                    p.select_next_some().await
                    && let Some(up) = up.take()
                {
                    let _ = up.send(());
                }
            }
        });
        RawPeer {
            key,
            peer,
            control,
            connected: Some(connected),
            tasks: [accepting, driving],
        }
    }

    /// A raw peer dialing `g` at `addr`, returned once `g` holds the connection; `g` is
    /// driven meanwhile (its events dropped).
    ///
    /// # Panics
    /// When no connection came within 10 s.
    pub async fn connect_to<B: libp2p::swarm::NetworkBehaviour>(
        g: &mut libp2p::Swarm<B>,
        addr: libp2p::Multiaddr,
        net: crate::Net,
        idle: std::time::Duration,
    ) -> RawPeer {
        use futures::StreamExt;
        let p = RawPeer::dial(addr, net, idle);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !g.is_connected(&p.peer) {
            assert!(std::time::Instant::now() < deadline, "no connection");
            let step = std::time::Duration::from_millis(100);
            let _ = tokio::time::timeout(step, g.select_next_some()).await;
        }
        p
    }

    /// Waits until the peer's first connection is up (at once if it was already).
    ///
    /// # Panics
    /// When no connection came within `within`.
    pub async fn connected(&mut self, within: std::time::Duration) {
        if let Some(rx) = self.connected.take() {
            match tokio::time::timeout(within, rx).await {
                Ok(Ok(())) => {}
                _ => panic!("the raw peer did not connect within {within:?}"),
            }
        }
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
