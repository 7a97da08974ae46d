//! What libp2p-metrics is told of identify. It keeps every peer's last identify `Info`
//! and, at each scrape, labels `libp2p_identify_remote_listen_addresses` and
//! `libp2p_identify_local_observed_addresses` with the protocol stacks of what the
//! peers said (`/ip4/tcp/ws`…), whatever they are: one identify answer of 4 KiB named
//! hundreds of made-up stacks (`/ip4/tcp/tls/tls/…`), each a series of its own, from
//! every peer. The node hands it only addresses its transports dial (a fixed set of
//! stacks), at most [`MAX_LISTEN_ADDRS`] per peer, and an empty observed address for
//! one it does not dial.

use libp2p::metrics::{Metrics, Recorder as _};
use libp2p::{Multiaddr, identify};

use super::addrs::dialable;

/// Listen addresses of one peer that libp2p-metrics is told of.
pub(crate) const MAX_LISTEN_ADDRS: usize = 16;

/// Records `event` in `metrics`, a received `Info` bounded as the module says.
pub(crate) fn record(metrics: &Metrics, event: &identify::Event) {
    let identify::Event::Received {
        connection_id,
        peer_id,
        info,
    } = event
    else {
        metrics.record(event);
        return;
    };
    let mut info = info.clone();
    info.listen_addrs.retain(dialable);
    info.listen_addrs.truncate(MAX_LISTEN_ADDRS);
    if !dialable(&info.observed_addr) {
        info.observed_addr = Multiaddr::empty();
    }
    metrics.record(&identify::Event::Received {
        connection_id: *connection_id,
        peer_id: *peer_id,
        info,
    });
}

#[cfg(test)]
mod tests {
    use libp2p::metrics::Registry;
    use libp2p::swarm::ConnectionId;
    use libp2p::{PeerId, identity};

    use super::*;

    /// Peers naming hundreds of made-up address stacks add no series: the exposition
    /// holds the stacks the node dials, however many peers say what.
    #[test]
    fn made_up_address_stacks_add_no_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        for p in 0..20 {
            let mut listen: Vec<Multiaddr> = (0..300)
                .map(|i| format!("/ip4/192.0.2.{p}/tcp/1{}", "/tls".repeat(i + 1)))
                .map(|a| a.parse().unwrap())
                .collect();
            listen.push("/ip4/192.0.2.1/tcp/4001".parse().unwrap());
            listen.push("/ip4/192.0.2.1/udp/4001/quic-v1".parse().unwrap());
            let info = identify::Info {
                public_key: identity::Keypair::generate_ed25519().public(),
                protocol_version: "ipfs/0.1.0".into(),
                agent_version: "x".into(),
                listen_addrs: listen,
                protocols: Vec::new(),
                observed_addr: format!("/ip4/192.0.2.9/tcp/1{}", "/http".repeat(p + 1))
                    .parse()
                    .unwrap(),
                signed_peer_record: None,
            };
            let event = identify::Event::Received {
                connection_id: ConnectionId::new_unchecked(p),
                peer_id: PeerId::random(),
                info,
            };
            record(&metrics, &event);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = |family: &str| {
            text.lines()
                .filter(|l| l.starts_with(family) && l.contains('{'))
                .count()
        };
        assert_eq!(
            series("libp2p_identify_remote_listen_addresses"),
            2,
            "{text}"
        );
        assert_eq!(
            series("libp2p_identify_local_observed_addresses"),
            1,
            "{text}"
        );
    }
}
