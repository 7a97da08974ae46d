//! The sockets of birthday probing (see the parent module for the method).
//!
//! S's side: [`bind`] the probe sockets (synchronously, so that a caller can create
//! them in a network namespace of its choice), [`Sockets::probe`] sends one probe from
//! each to C's probe address, [`Sockets::wait_hit`] waits for C's probe to reach one of
//! them, answers it once from that socket (the confirmation: it now passes C's NAT,
//! whose filter C's probe opened) and closes every socket. The hit tells the local port
//! to bind a QUIC endpoint on and the external port C must dial.
//!
//! C's side: [`spray`] sends the probes from C's probe socket to S's IP, paced in
//! chunks, and [`wait_confirm`] waits for S's confirmation on the same socket, which
//! names the external port S's NAT chose (the source port of the packet).
//!
//! Then each side closes its probe socket and binds a QUIC endpoint on the same local
//! port: S accepts, C dials S's IP at the hit port from that endpoint (its only
//! listener, so libp2p-quic dials from it). The NAT mappings belong to the flows, not to
//! the sockets, and survive the swap (tested in `tests/node_birthday.rs`).
//!
//! Every socket is closed when the value holding it drops; every wait has a deadline.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::UdpSocket;

use super::{PROBE_LEN, Probe};

/// A random `u16` from the operating system.
pub fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u16::from_be_bytes(b)
}

/// A random attempt token.
pub fn random_token() -> [u8; 8] {
    let mut b = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Binds `count` UDP sockets on ephemeral ports of the family of `toward`, non-blocking
/// (ready for [`Sockets::new`]). Fails as a whole if one cannot be bound (e.g. out of
/// file descriptors): the ones bound are closed again.
pub fn bind(count: u16, toward: IpAddr) -> io::Result<Vec<StdUdpSocket>> {
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let s = StdUdpSocket::bind(SocketAddr::new(unspecified(toward), 0))?;
        s.set_nonblocking(true)?;
        out.push(s);
    }
    Ok(out)
}

/// What S's probe sockets found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The local port of the socket C's probe reached.
    pub local_port: u16,
    /// Its external port toward C (what C's probe was sent to).
    pub external_port: u16,
}

/// S's probe sockets toward one target.
#[derive(Debug)]
pub struct Sockets {
    socks: Vec<UdpSocket>,
    target: SocketAddr,
    token: [u8; 8],
    /// Datagrams sent so far.
    pub sent: usize,
}

impl Sockets {
    /// Takes over sockets from [`bind`] (inside a tokio runtime).
    pub fn new(socks: Vec<StdUdpSocket>, target: SocketAddr, token: [u8; 8]) -> io::Result<Self> {
        let socks = socks
            .into_iter()
            .map(UdpSocket::from_std)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Sockets {
            socks,
            target,
            token,
            sent: 0,
        })
    }

    /// How many sockets are open.
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// Sends one probe from every socket to the target. A socket whose send fails is
    /// skipped (counted as not sent).
    pub async fn probe(&mut self) {
        let wire = Probe {
            token: self.token,
            port: 0,
        }
        .encode();
        for s in &self.socks {
            if s.send_to(&wire, self.target).await.is_ok() {
                self.sent += 1;
            }
        }
    }

    /// Waits up to `within` for a probe of this attempt from the target on any socket;
    /// answers it once from that socket and closes every socket (also when nothing
    /// came). Datagrams from elsewhere, or without this attempt's token, are ignored.
    pub async fn wait_hit(mut self, within: Duration) -> (Option<Hit>, usize) {
        let (target, token) = (self.target, self.token);
        let found = {
            let mut waits: FuturesUnordered<_> = self
                .socks
                .iter()
                .enumerate()
                .map(|(i, s)| async move {
                    let mut buf = [0u8; 64];
                    loop {
                        let Ok((n, from)) = s.recv_from(&mut buf).await else {
                            // Errors (an ICMP error reported on the socket) end this
                            // socket's wait, not the others'.
                            return None;
                        };
                        if from != target {
                            continue;
                        }
                        match Probe::decode(&buf[..n]) {
                            Some(p) if p.token == token => return Some((i, p.port)),
                            _ => continue,
                        }
                    }
                })
                .collect();
            let first = async {
                while let Some(r) = waits.next().await {
                    if r.is_some() {
                        return r;
                    }
                }
                None
            };
            tokio::time::timeout(within, first).await.ok().flatten()
        };
        let Some((i, external_port)) = found else {
            return (None, self.sent);
        };
        let Some(s) = self.socks.get(i) else {
            return (None, self.sent);
        };
        let local_port = match s.local_addr() {
            Ok(a) => a.port(),
            Err(_) => return (None, self.sent),
        };
        let confirm = Probe {
            token,
            port: external_port,
        }
        .encode();
        if s.send_to(&confirm, target).await.is_ok() {
            self.sent += 1;
        }
        let sent = self.sent;
        drop(self);
        (
            Some(Hit {
                local_port,
                external_port,
            }),
            sent,
        )
    }
}

/// C's probes: one to each of `ports` of `ip` from `sock`, `chunk` at a time with
/// `pause` between chunks. Returns how many were sent.
pub async fn spray(
    sock: &UdpSocket,
    ip: IpAddr,
    ports: &[u16],
    token: [u8; 8],
    chunk: usize,
    pause: Duration,
) -> usize {
    let mut sent = 0;
    for (n, port) in ports.iter().enumerate() {
        if n > 0 && chunk > 0 && n % chunk == 0 {
            tokio::time::sleep(pause).await;
        }
        let wire = Probe { token, port: *port }.encode();
        if sock
            .send_to(&wire, SocketAddr::new(ip, *port))
            .await
            .is_ok()
        {
            sent += 1;
        }
    }
    sent
}

/// Waits up to `within` on C's probe socket for S's confirmation (a probe of this
/// attempt from `ip` naming the port it came from): S's external address toward us.
pub async fn wait_confirm(
    sock: &UdpSocket,
    ip: IpAddr,
    token: [u8; 8],
    within: Duration,
) -> Option<SocketAddr> {
    let wait = async {
        let mut buf = [0u8; 64];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.ok()?;
            if from.ip() != ip || n != PROBE_LEN {
                continue;
            }
            match Probe::decode(&buf[..n]) {
                Some(p) if p.token == token && p.port == from.port() => return Some(from),
                _ => continue,
            }
        }
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Over loopback (no NAT): S's sockets probe C's socket; C sprays the ports of S's
    // sockets among others; the hit and the confirmation name the socket both ways.
    #[tokio::test]
    async fn a_probe_on_an_open_port_is_a_hit_confirmed_both_ways() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let c = UdpSocket::bind((lo, 0)).await.unwrap();
        let c_addr = c.local_addr().unwrap();
        let token = random_token();
        let mut s = Sockets::new(bind(8, lo).unwrap(), c_addr, token).unwrap();
        assert_eq!(s.len(), 8);
        s.probe().await;
        assert_eq!(s.sent, 8);
        let s_ports: Vec<u16> = s
            .socks
            .iter()
            .map(|x| x.local_addr().unwrap().port())
            .collect();
        // S's probes reached C (no NAT here); C ignores them while it waits for a
        // confirmation (port 0 is not where they came from).
        let mut ports = vec![1, 2, 3];
        ports.push(s_ports[5]);
        let wait = tokio::spawn(s.wait_hit(Duration::from_secs(5)));
        let sent = spray(&c, lo, &ports, token, 2, Duration::from_millis(1)).await;
        assert_eq!(sent, 4);
        let (hit, sent) = wait.await.unwrap();
        assert_eq!(
            hit,
            Some(Hit {
                local_port: s_ports[5],
                external_port: s_ports[5]
            })
        );
        assert_eq!(sent, 9, "8 probes and one confirmation");
        let from = wait_confirm(&c, lo, token, Duration::from_secs(5)).await;
        assert_eq!(from, Some(SocketAddr::new(lo, s_ports[5])));
        // The sockets are closed: the port can be bound again (as QUIC will).
        StdUdpSocket::bind((lo, s_ports[5])).unwrap();
    }

    #[tokio::test]
    async fn foreign_datagrams_are_no_hit_and_the_wait_ends() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let c = UdpSocket::bind((lo, 0)).await.unwrap();
        let other = UdpSocket::bind((lo, 0)).await.unwrap();
        let token = random_token();
        let s = Sockets::new(bind(2, lo).unwrap(), c.local_addr().unwrap(), token).unwrap();
        let port = s.socks[0].local_addr().unwrap().port();
        // Wrong token from the right address, right token from the wrong address,
        // garbage: none is a hit.
        let wrong = Probe {
            token: [9; 8],
            port,
        }
        .encode();
        c.send_to(&wrong, (lo, port)).await.unwrap();
        let right = Probe { token, port }.encode();
        other.send_to(&right, (lo, port)).await.unwrap();
        c.send_to(b"hello", (lo, port)).await.unwrap();
        let (hit, sent) = s.wait_hit(Duration::from_millis(300)).await;
        assert_eq!(hit, None);
        assert_eq!(sent, 0);
        assert_eq!(
            wait_confirm(&c, lo, token, Duration::from_millis(100)).await,
            None
        );
    }
}
