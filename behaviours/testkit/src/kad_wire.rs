//! Kademlia requests as raw bytes, for a [`crate::hostile::HostilePeer`] to send on
//! `/mesh/kad/1.0.0` (or any Kademlia protocol, Amino's `/ipfs/kad/1.0.0` too) without a
//! Kademlia behaviour.

pub(crate) fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A length-delimited protobuf field.
pub(crate) fn field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// A Kademlia `PUT_VALUE` request for `key` with `value`, varint-length-prefixed as
/// libp2p-kad frames it.
pub fn put_value(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    field(0x0a, key, &mut record); // Record.key = 1
    field(0x12, value, &mut record); // Record.value = 2
    let mut msg = vec![0x08, 0x00]; // Message.type = PUT_VALUE (0)
    field(0x12, key, &mut msg); // Message.key = 2
    field(0x1a, &record, &mut msg); // Message.record = 3
    let mut framed = Vec::new();
    varint(msg.len(), &mut framed);
    framed.extend_from_slice(&msg);
    framed
}

/// A Kademlia `ADD_PROVIDER` request: `provider` (a peer id's bytes, which must be the
/// sender's) provides `key` at `addrs` (multiaddrs' bytes), framed as [`put_value`].
pub fn add_provider(key: &[u8], provider: &[u8], addrs: &[Vec<u8>]) -> Vec<u8> {
    let mut peer = Vec::new();
    field(0x0a, provider, &mut peer); // Peer.id = 1
    for a in addrs {
        field(0x12, a, &mut peer); // Peer.addrs = 2
    }
    let mut msg = vec![0x08, 0x02]; // Message.type = ADD_PROVIDER (2)
    field(0x12, key, &mut msg); // Message.key = 2
    field(0x4a, &peer, &mut msg); // Message.providerPeers = 9
    let mut framed = Vec::new();
    varint(msg.len(), &mut framed);
    framed.extend_from_slice(&msg);
    framed
}

/// A Kademlia `FIND_NODE` request for `key`, framed as [`put_value`].
pub fn find_node(key: &[u8]) -> Vec<u8> {
    let mut msg = vec![0x08, 0x04]; // Message.type = FIND_NODE (4)
    field(0x12, key, &mut msg); // Message.key = 2
    let mut framed = Vec::new();
    varint(msg.len(), &mut framed);
    framed.extend_from_slice(&msg);
    framed
}
