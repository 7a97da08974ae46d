//! Reading a request to its end under a size cap, without the doubling of
//! `read_to_end`.
//!
//! `io.take(max + 1).read_to_end(&mut Vec::new())` grows its buffer by doubling and
//! zero-fills all of it, so a peer that sends exactly `max` bytes and stalls has the
//! node hold twice the cap (2 MiB for a 1 MiB signal request) for the request timeout,
//! on every stream it may open. [`read_capped`] grows the buffer itself and never past
//! the cap.

use futures::{AsyncRead, AsyncReadExt};

/// Bytes read per call into a stack buffer.
const CHUNK: usize = 4096;

/// Reads `io` to its end: the bytes, or `None` once more than `max` came (the rest is
/// not read). The buffer never holds more than `max` bytes of room.
pub async fn read_capped<T: AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; CHUNK];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some(out));
        }
        let len = out.len() + n;
        if len > max {
            return Ok(None);
        }
        if len > out.capacity() {
            let room = out.capacity().saturating_mul(2).clamp(len, max);
            out.reserve_exact(room - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `data` in pieces of `piece` bytes.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = self.piece.min(buf.len()).min(self.data.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn read(len: usize, piece: usize, max: usize) -> Option<Vec<u8>> {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut r = Pieces { data, at: 0, piece };
        futures::executor::block_on(read_capped(&mut r, max)).unwrap()
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
}
