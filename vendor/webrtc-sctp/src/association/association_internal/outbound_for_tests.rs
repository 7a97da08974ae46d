//! Patched for libmesh, for tests only: what an association sends when the process's
//! [`super::super::set_outbound_for_tests`] asks it to play a hostile peer.

use super::*;

/// How far ahead the copy of a chunk goes ([`OutboundForTests::Gap`],
/// [`OutboundForTests::AheadCopy`]): within the 16 bits of a SACK's gap offsets.
const COPY_AHEAD: u32 = 60_000;

/// How far each FORWARD TSN moves the peer's cumulative TSN
/// ([`OutboundForTests::ForwardTsnJumps`]): as far as serial number arithmetic goes.
const JUMP: u32 = (1 << 31) - 1;

/// The heartbeat information that pads each DATA chunk's packet
/// ([`OutboundForTests::GapPadded`]): as much as a small chunk leaves room for in the
/// 1,460 bytes webrtc's mux reads of a datagram.
const PADDING: usize = 1300;

/// How far ahead of what it sent an association's reset requests say their data ends
/// ([`OutboundForTests::ResetsAhead`]): deferred by the peer, and within reach.
const RESETS_AHEAD: u32 = 30_000;

/// The congestion window of an association that plays a hostile peer with a gap or a
/// chunk far ahead: its own window would shrink to one packet for good (the gap's chunk
/// is never acknowledged), and a sender with no window at all loses most of what it
/// sends to the receiver's socket buffer.
const TEST_CWND: u32 = 256 * 1024;

impl AssociationInternal {
    /// The last TSN a reset request of this side names, from `tsn` (the last one sent),
    /// and counts it ([`super::super::reset_responses_for_tests`]).
    pub(super) fn reset_request_tsn_for_tests(&self, tsn: u32) -> u32 {
        match outbound_for_tests() {
            OutboundForTests::ResetsAhead => {
                count_reset_request_for_tests();
                tsn.wrapping_add(RESETS_AHEAD)
            }
            _ => tsn,
        }
    }

    /// The congestion and receive windows a send may fill: the association's own, or
    /// for a hostile peer with a gap or a chunk far ahead, [`TEST_CWND`] and no receive
    /// window at all.
    pub(super) fn send_windows(&self) -> (u32, u32) {
        match outbound_for_tests() {
            OutboundForTests::Gap
            | OutboundForTests::AheadCopy
            | OutboundForTests::GapPadded
            | OutboundForTests::Hole => (TEST_CWND, u32::MAX),
            _ => (self.cwnd, self.rwnd),
        }
    }

    /// `packets` as the test mode says they go out.
    pub(super) fn outbound_for_tests(&mut self, packets: Vec<Packet>) -> Vec<Packet> {
        match outbound_for_tests() {
            OutboundForTests::Normal | OutboundForTests::ResetsAhead => packets,
            OutboundForTests::Gap => self.copy_ahead(packets, true),
            OutboundForTests::Hole => self.hole(packets),
            OutboundForTests::GapPadded => {
                let packets = self.copy_ahead(packets, true);
                self.padded(packets)
            }
            OutboundForTests::AheadCopy => self.copy_ahead(packets, false),
            OutboundForTests::ForwardTsnJumps => {
                let mut packets = packets;
                if !self.tests_jumped && self.get_state() == AssociationState::Established {
                    self.tests_jumped = true;
                    let mut cumulative = self.cumulative_tsn_ack_point;
                    for _ in 0..3 {
                        cumulative = cumulative.wrapping_add(JUMP);
                        packets.push(self.create_packet(vec![Box::new(ChunkForwardTsn {
                            new_cumulative_tsn: cumulative,
                            streams: vec![],
                        })]));
                    }
                }
                packets
            }
        }
    }

    /// Leaves out the first DATA chunk sent in this mode, for as long as it lasts.
    fn hole(&mut self, packets: Vec<Packet>) -> Vec<Packet> {
        let mut out = Vec::with_capacity(packets.len());
        for mut p in packets {
            p.chunks.retain(|c| {
                let Some(d) = c.as_any().downcast_ref::<ChunkPayloadData>() else {
                    return true;
                };
                let hole = *self.tests_gap_tsn.get_or_insert(d.tsn);
                d.tsn != hole
            });
            if !p.chunks.is_empty() {
                out.push(p);
            }
        }
        out
    }

    /// Puts each DATA chunk of `packets` in a packet of its own, with a heartbeat of
    /// [`PADDING`] bytes behind it.
    fn padded(&self, packets: Vec<Packet>) -> Vec<Packet> {
        let mut out = Vec::with_capacity(packets.len());
        for mut p in packets {
            let (data, rest): (Vec<_>, Vec<_>) = p
                .chunks
                .into_iter()
                .partition(|c| c.as_any().downcast_ref::<ChunkPayloadData>().is_some());
            p.chunks = rest;
            if !p.chunks.is_empty() {
                out.push(p);
            }
            for d in data {
                let heartbeat = ChunkHeartbeat {
                    params: vec![Box::new(ParamHeartbeatInfo {
                        heartbeat_information: Bytes::from(vec![0u8; PADDING]),
                    })],
                };
                out.push(self.create_packet(vec![d, Box::new(heartbeat)]));
            }
        }
        out
    }

    /// Sends a copy of the first DATA chunk sent in this mode under a TSN far ahead,
    /// once, and leaves that chunk out for good if `gap`.
    fn copy_ahead(&mut self, packets: Vec<Packet>, gap: bool) -> Vec<Packet> {
        let mut out = Vec::with_capacity(packets.len() + 1);
        for mut p in packets {
            let mut copy = None;
            p.chunks.retain(|c| {
                let Some(d) = c.as_any().downcast_ref::<ChunkPayloadData>() else {
                    return true;
                };
                match self.tests_gap_tsn {
                    Some(first) => !gap || d.tsn != first,
                    None => {
                        self.tests_gap_tsn = Some(d.tsn);
                        let mut far = d.clone();
                        far.tsn = d.tsn.wrapping_add(COPY_AHEAD);
                        copy = Some(far);
                        !gap
                    }
                }
            });
            if !p.chunks.is_empty() {
                out.push(p);
            }
            if let Some(far) = copy {
                // In flight like any chunk sent, so that the peer's SACK of it is taken
                // (one of a TSN never sent would be refused, and every SACK after it).
                self.inflight_queue.push_no_check(far.clone());
                out.push(self.create_packet(vec![Box::new(far)]));
            }
        }
        out
    }
}
