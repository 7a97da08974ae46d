//! The node's side of birthday probing: the sockets of [`super::probe`] run as tasks
//! whose results come back to the node loop as [`ProbeEvent`]s through a bounded
//! channel. The routing stage (`router/birthday.rs`) decides what runs; this only
//! binds, sends and waits, within the budget it is given and the deadlines below.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::probe::{self, Hit};
use super::{MAX_PROBES, MAX_SOCKETS, choose_ports};

/// How long S's sockets wait for C's probes.
pub const WAIT_HIT: Duration = Duration::from_secs(5);
/// How long C waits for S's confirmation.
pub const WAIT_CONFIRM: Duration = Duration::from_secs(3);
/// C's probes go out this many at a time, with [`PAUSE`] between.
const CHUNK: usize = 32;
const PAUSE: Duration = Duration::from_millis(20);
/// Room in the channel (one attempt at a time sends at most two events).
const EVENTS: usize = 8;

/// What a probe task found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeEvent {
    /// S: every probe is out (`sent` datagrams); the other side may spray now.
    Probed {
        /// The attempt.
        job: u64,
        /// Probes sent.
        sent: usize,
    },
    /// S: the wait for C's probes ended, with a hit or without.
    Hit {
        /// The attempt.
        job: u64,
        /// The socket C's probe reached.
        hit: Option<Hit>,
        /// Datagrams S sent in all.
        sent: usize,
    },
    /// C: the wait for S's confirmation ended; `from` is S's address toward us.
    Confirmed {
        /// The attempt.
        job: u64,
        /// Our probe socket's local address (the QUIC endpoint binds it next).
        local: SocketAddr,
        /// S's external address, if the confirmation came.
        from: Option<SocketAddr>,
        /// Probes C sent.
        sent: usize,
    },
}

/// The probe sockets of the node: at most one held socket (C's, between its bind and
/// its spray) and the running tasks.
#[derive(Debug)]
pub struct Prober {
    tx: mpsc::Sender<ProbeEvent>,
    rx: mpsc::Receiver<ProbeEvent>,
    held: Option<(u64, StdUdpSocket)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for Prober {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(EVENTS);
        Prober {
            tx,
            rx,
            held: None,
            tasks: Vec::new(),
        }
    }
}

/// The unspecified address of `like`'s family, port `port`.
pub fn any(like: IpAddr, port: u16) -> SocketAddr {
    let ip = match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, port)
}

impl Prober {
    /// The next result (never `None`: the prober holds a sender).
    pub async fn recv(&mut self) -> Option<ProbeEvent> {
        self.rx.recv().await
    }

    fn reap(&mut self) {
        self.tasks.retain(|t| !t.is_finished());
    }

    /// C: binds the probe socket of `job` (an ephemeral port of `toward`'s family) and
    /// holds it until [`Prober::spray`]; a socket held for another job is closed.
    pub fn bind(&mut self, job: u64, toward: IpAddr) -> io::Result<u16> {
        let s = StdUdpSocket::bind(any(toward, 0))?;
        s.set_nonblocking(true)?;
        let port = s.local_addr()?.port();
        self.held = Some((job, s));
        Ok(port)
    }

    /// C: sprays `count` (at most [`MAX_PROBES`]) probes from `job`'s socket to random
    /// ports of `ip`, then waits for S's confirmation ([`ProbeEvent::Confirmed`]).
    pub fn spray(&mut self, job: u64, ip: IpAddr, token: [u8; 8], count: u16) -> io::Result<()> {
        let sock = match self.held.take() {
            Some((j, s)) if j == job => s,
            other => {
                self.held = other;
                return Err(io::Error::other("no probe socket for this attempt"));
            }
        };
        let local = sock.local_addr()?;
        let sock = tokio::net::UdpSocket::from_std(sock)?;
        let tx = self.tx.clone();
        let ports = choose_ports(count.min(MAX_PROBES), probe::random_u16);
        self.reap();
        self.tasks.push(tokio::spawn(async move {
            let sent = probe::spray(&sock, ip, &ports, token, CHUNK, PAUSE).await;
            let from = probe::wait_confirm(&sock, ip, token, WAIT_CONFIRM).await;
            drop(sock);
            let _ = tx
                .send(ProbeEvent::Confirmed {
                    job,
                    local,
                    from,
                    sent,
                })
                .await;
        }));
        Ok(())
    }

    /// S: opens `count` (at most [`MAX_SOCKETS`]) sockets, one probe each to `target`
    /// ([`ProbeEvent::Probed`]), then waits for C's probes ([`ProbeEvent::Hit`]).
    pub fn sockets(
        &mut self,
        job: u64,
        target: SocketAddr,
        token: [u8; 8],
        count: u16,
    ) -> io::Result<()> {
        let socks = probe::bind(count.min(MAX_SOCKETS), target.ip())?;
        let mut s = probe::Sockets::new(socks, target, token)?;
        let tx = self.tx.clone();
        self.reap();
        self.tasks.push(tokio::spawn(async move {
            s.probe().await;
            let _ = tx.send(ProbeEvent::Probed { job, sent: s.sent }).await;
            let (hit, sent) = s.wait_hit(WAIT_HIT).await;
            let _ = tx.send(ProbeEvent::Hit { job, hit, sent }).await;
        }));
        Ok(())
    }

    /// `job` ended: its held socket (if any) is closed.
    pub fn end(&mut self, job: u64) {
        if self.held.as_ref().is_some_and(|(j, _)| *j == job) {
            self.held = None;
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Loopback, no NAT: S's sockets probe C's socket, C sprays S's IP; whether a port
    // of S's is among C's random ones is chance, so only the events and the budget are
    // checked, and a sprayed job without its socket is refused.
    #[tokio::test]
    async fn the_tasks_report_back_within_the_budget() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut p = Prober::default();
        let port = p.bind(1, lo).unwrap();
        assert!(p.spray(2, lo, [1; 8], 4).is_err(), "job 2 holds no socket");
        p.sockets(1, SocketAddr::new(lo, port), [1; 8], 4).unwrap();
        assert_eq!(p.recv().await, Some(ProbeEvent::Probed { job: 1, sent: 4 }));
        p.spray(1, lo, [1; 8], 8).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let ev = tokio::time::timeout(Duration::from_secs(10), p.recv())
                .await
                .unwrap()
                .unwrap();
            seen.push(ev);
        }
        for ev in seen {
            match ev {
                ProbeEvent::Hit { job, sent, .. } => {
                    assert_eq!(job, 1);
                    assert!((4..=5).contains(&sent), "{sent}");
                }
                ProbeEvent::Confirmed {
                    job, local, sent, ..
                } => {
                    assert_eq!((job, local.port(), sent), (1, port, 8));
                }
                other => panic!("{other:?}"),
            }
        }
        p.bind(3, lo).unwrap();
        p.end(3);
        assert!(p.spray(3, lo, [1; 8], 1).is_err(), "ended: socket closed");
    }
}
