//! Which addresses of a signal frame the node may dial: those in the plausible scope of
//! the side that named them (`policy`), seen from the connections to it and to the host
//! that handed the frame over.

use libp2p::{Multiaddr, PeerId};
use mesh_core::SignalFrame;

use super::Router;
use crate::node::view::View;

impl Router {
    /// The addresses of a candidate frame in the other side's plausible scope (`via`
    /// handed the frame over; see `policy`).
    pub(super) fn scoped_addrs(
        &self,
        frame: &SignalFrame,
        via: PeerId,
        peer: PeerId,
        view: &dyn View,
    ) -> Vec<Multiaddr> {
        let addrs: Vec<Multiaddr> = frame.payload()["addrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        let mut own = view.listen_addrs();
        own.extend(view.external_addrs());
        // The host's connections say where the host is, not the signer: a host on
        // this machine forwards for signers anywhere, so for a node beyond loopback its
        // loopback connection is no sign of a signer on this machine.
        let beyond = mesh_core::ipkey::beyond_loopback(&own);
        let mut path: Vec<Multiaddr> = view
            .remote_addrs(&via)
            .into_iter()
            .filter(|a| !beyond || !mesh_core::ipkey::is_loopback(a) || via == peer)
            .collect();
        path.extend(view.remote_addrs(&peer));
        self.policy
            .filter(addrs, &path, &own, mesh_core::families::MAX_CANDIDATES)
    }
}
