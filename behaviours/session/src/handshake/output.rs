//! What the handshake machine hands its caller: [`Output`]s to carry out, and the
//! [`Reply`] to a request.

use libp2p::PeerId;

use crate::event::Event;

/// What the caller carries out, in order.
#[derive(Debug)]
pub enum Output {
    /// Send `bytes` (an encoded hello) to `peer` as a `/mesh/session/1.0.0` request; the
    /// response goes to [`super::Handshakes::on_response`].
    Send {
        /// The peer.
        peer: PeerId,
        /// The request.
        bytes: Vec<u8>,
    },
    /// Close every connection to `peer` now.
    Close(PeerId),
    /// Tell the application.
    Event(Event),
}

/// The answer to a request ([`super::Handshakes::on_request`]).
#[derive(Debug)]
pub struct Reply {
    /// The encoded response: an ack, or a refusal with its code.
    pub bytes: Vec<u8>,
    /// A hard refusal: close the connections to the peer once `bytes` has been sent.
    pub close_after: bool,
}
