//! Reading a request to its end under a size cap, without the doubling of
//! `read_to_end`, within a node-wide [`ReadBudget`].
//!
//! `io.take(max + 1).read_to_end(&mut Vec::new())` grows its buffer by doubling and
//! zero-fills all of it, so a peer that sends exactly `max` bytes and stalls has the
//! node hold twice the cap (2 MiB for a 1 MiB signal request) for the request timeout,
//! on every stream it may open. [`read_capped`] grows the buffer itself and never past
//! the cap, and takes the room from the budget first; a read the budget drops ends at
//! once with [`BudgetSpent`](crate::BudgetSpent) as its error.

use std::pin::Pin;
use std::task::Poll;

use futures::AsyncRead;
use futures::future::poll_fn;

use crate::read_budget::{Hold, ReadBudget};

/// The room a read takes at its first byte; it doubles from there.
const FIRST: usize = 256;

/// Reads `io` to its end: the bytes, or `None` once more than `max` came (the rest is
/// not read). The buffer never holds more than `max` bytes of room, and all of it is
/// taken from `budget` until the read ends: nothing before the first byte (so a read
/// ages from its first byte, and an open stream that sends nothing holds one byte),
/// then room that doubles from 256 bytes, at most twice what came. `Err` (an
/// [`std::io::ErrorKind::Other`] around [`BudgetSpent`](crate::BudgetSpent)) when the
/// budget dropped or refused the read.
pub async fn read_capped<T: AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
    budget: &ReadBudget,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut byte = [0u8; 1];
    if read(io, &mut byte, None, budget).await? == 0 {
        return Ok(Some(Vec::new()));
    }
    if max == 0 {
        return Ok(None);
    }
    let hold = budget.hold();
    let mut out: Vec<u8> = Vec::new();
    let mut filled = 0;
    let first = FIRST.min(max);
    hold.grow(first)?;
    out.reserve_exact(first);
    out.resize(first, 0);
    out[0] = byte[0];
    filled += 1;
    loop {
        if filled == out.len() {
            if filled == max {
                // Full: one more byte says it is over the cap.
                return Ok(match read(io, &mut byte, Some(&hold), budget).await? {
                    0 => Some(out),
                    _ => None,
                });
            }
            let room = out.len().saturating_mul(2).min(max);
            hold.grow(room - out.len())?;
            out.reserve_exact(room - out.len());
            out.resize(room, 0);
        }
        let n = read(io, &mut out[filled..], Some(&hold), budget).await?;
        if n == 0 {
            out.truncate(filled);
            return Ok(Some(out));
        }
        filled += n;
    }
}

/// One read into `buf`, ended at once with the budget's error if `hold` is dropped.
async fn read<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut [u8],
    hold: Option<&Hold>,
    budget: &ReadBudget,
) -> std::io::Result<usize> {
    poll_fn(|cx| {
        if hold.is_some_and(|h| h.poll_dropped(cx)) {
            return Poll::Ready(Err(crate::BudgetSpent { cap: budget.cap() }.into()));
        }
        Pin::new(&mut *io).poll_read(cx, buf)
    })
    .await
}

/// Reads the file at `path` whole if it holds at most `max` bytes. Never reads more
/// than `max + 1` bytes, whatever the file's metadata said before (a device such as
/// `/dev/zero` or a file that grows between the check and the read): beyond `max` is
/// an `InvalidData` error.
///
/// The buffer is sized once from the file's length when that is within `max` (one
/// byte more, to see the end), so a regular file is read without the buffer growing:
/// no copies of a secret key file are left in freed memory.
pub fn read_file_capped(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let len = file.metadata().map_or(0, |m| m.len()).min(max);
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    file.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {max} bytes"),
        ));
    }
    Ok(out)
}

/// [`read_file_capped`] as UTF-8 text (`InvalidData` if it is not).
pub fn read_text_capped(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_file_capped(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, Future};

    /// A reader that hands out `data` in pieces of `piece` bytes, then ends (or stalls,
    /// pending for ever, with `stall`).
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
        stall: bool,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = self.piece.min(buf.len()).min(self.data.len() - self.at);
            if n == 0 && self.stall {
                return std::task::Poll::Pending;
            }
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn read(len: usize, piece: usize, max: usize) -> Option<Vec<u8>> {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut r = Pieces {
            data,
            at: 0,
            piece,
            stall: false,
        };
        futures::executor::block_on(read_capped(&mut r, max, &ReadBudget::default())).unwrap()
    }

    #[test]
    fn a_body_at_the_cap_takes_no_more_room_than_the_cap() {
        let max = 1024 * 1024;
        let got = read(max, 1000, max).unwrap();
        assert_eq!(got.len(), max);
        assert_eq!(got[1234], (1234 % 256) as u8);
        assert!(got.capacity() <= max, "{} of room", got.capacity());
        // libp2p's codecs' way held twice that.
        let mut r = Pieces {
            data: vec![0; max],
            at: 0,
            piece: 1000,
            stall: false,
        };
        let mut b = Vec::new();
        futures::executor::block_on((&mut r).take(max as u64 + 1).read_to_end(&mut b)).unwrap();
        assert!(b.capacity() >= 2 * max);
    }

    #[test]
    fn a_body_over_the_cap_is_none_and_short_ones_come_whole() {
        assert_eq!(read(65, 7, 64), None);
        assert_eq!(read(64, 7, 64).map(|b| b.len()), Some(64));
        assert_eq!(read(0, 7, 64), Some(Vec::new()));
        assert_eq!(read(10_000, 4096, 100_000).map(|b| b.len()), Some(10_000));
    }

    #[test]
    fn the_budget_drops_a_stalled_read_for_a_newer_one_and_holds_no_more_than_its_cap() {
        use std::task::Context;
        let budget = ReadBudget::new(48 * 1024);
        let stalled = |len| Pieces {
            data: vec![7; len],
            at: 0,
            piece: 4096,
            stall: true,
        };
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let (mut a, mut b) = (stalled(20_000), stalled(20_000));
        let mut read_a = Box::pin(read_capped(&mut a, 1 << 20, &budget));
        assert!(read_a.as_mut().poll(&mut cx).is_pending());
        let after_a = budget.held();
        assert!(after_a >= 20_000, "{after_a}");
        let mut read_b = Box::pin(read_capped(&mut b, 1 << 20, &budget));
        assert!(read_b.as_mut().poll(&mut cx).is_pending());
        assert!(budget.held() <= budget.cap(), "{}", budget.held());
        // `a` began first and stalled: it went for `b`'s room, and its next poll ends it.
        let Poll::Ready(Err(e)) = read_a.as_mut().poll(&mut cx) else {
            panic!("the oldest read goes on");
        };
        assert!(
            e.get_ref().is_some_and(|e| e.is::<crate::BudgetSpent>()),
            "{e}"
        );
        assert_eq!(budget.dropped(), 1);
        drop(read_a);
        drop(read_b);
        assert_eq!(budget.held(), 0);
        // A finished read gives all of its room back.
        assert_eq!(read(10_000, 999, 100_000).map(|b| b.len()), Some(10_000));
        let mut c = Pieces {
            data: vec![1; 25_000],
            at: 0,
            piece: 4096,
            stall: false,
        };
        let got = futures::executor::block_on(read_capped(&mut c, 1 << 20, &budget)).unwrap();
        assert_eq!(got.map(|b| b.len()), Some(25_000));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_read_takes_room_from_its_first_byte_at_most_twice_what_came() {
        use std::task::Context;
        let budget = ReadBudget::new(1 << 20);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let stalled = |len| Pieces {
            data: vec![7; len],
            at: 0,
            piece: 100,
            stall: true,
        };
        // An open stream that sends nothing holds nothing.
        let mut silent = stalled(0);
        let mut read_silent = Box::pin(read_capped(&mut silent, 1 << 20, &budget));
        assert!(read_silent.as_mut().poll(&mut cx).is_pending());
        assert_eq!(budget.held(), 0);
        // One byte: the first room; 300 bytes: that doubled.
        let mut one = stalled(1);
        let mut read_one = Box::pin(read_capped(&mut one, 1 << 20, &budget));
        assert!(read_one.as_mut().poll(&mut cx).is_pending());
        assert_eq!(budget.held(), FIRST);
        let mut some = stalled(300);
        let mut read_some = Box::pin(read_capped(&mut some, 1 << 20, &budget));
        assert!(read_some.as_mut().poll(&mut cx).is_pending());
        assert_eq!(budget.held(), FIRST + 512);
    }

    #[test]
    fn a_file_is_read_at_most_one_byte_past_its_cap() {
        let dir = std::env::temp_dir().join(format!("mesh-capped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(super::read_file_capped(&f, 10).unwrap(), b"0123456789");
        let e = super::read_file_capped(&f, 9).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        // A device whose metadata says 0 bytes and that never ends.
        let zero = std::path::Path::new("/dev/zero");
        if zero.exists() {
            let e = super::read_file_capped(zero, 4096).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        }
        // A regular file fills the buffer sized once.
        let body = vec![7u8; 3000];
        std::fs::write(&f, &body).unwrap();
        let read = super::read_file_capped(&f, 4096).unwrap();
        assert_eq!(read, body);
        assert_eq!(read.capacity(), 3001, "the buffer grew");
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(super::read_text_capped(&f, 10).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
