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

/// One RPC frame (length-prefixed) publishing `msg`.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut rpc = Vec::new();
    field(2, msg, &mut rpc);
    let mut out = Vec::new();
    crate::kad_wire::varint(rpc.len(), &mut out);
    out.extend(rpc);
    out
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
