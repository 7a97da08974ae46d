// Copyright (c) 2019 Parity Technologies (UK) Ltd.
//
// Licensed under the Apache License, Version 2.0 or MIT license, at your option.
//
// A copy of the Apache License, Version 2.0 is included in the software as
// LICENSE-APACHE and a copy of the MIT license is included in the software
// as LICENSE-MIT. You may also obtain a copy of the Apache License, Version 2.0
// at https://www.apache.org/licenses/LICENSE-2.0 and a copy of the MIT license
// at https://opensource.org/licenses/MIT.

use std::{collections::VecDeque, io};

/// Patched for libmesh: bodies up to this size join the last chunk ([`Chunks::push`]).
const SMALL: usize = 4 * 1024;

/// Patched for libmesh: a chunk takes small bodies until it holds this many bytes.
const JOINED: usize = 64 * 1024;

/// A sequence of [`Chunk`] values.
///
/// [`Chunks::len`] considers all [`Chunk`] elements and computes the total
/// result, i.e. the length of all bytes, by summing up the lengths of all
/// [`Chunk`] elements.
#[derive(Debug)]
pub(crate) struct Chunks {
    seq: VecDeque<Chunk>,
    len: usize,
}

impl Chunks {
    /// A new empty chunk list.
    pub(crate) fn new() -> Self {
        Chunks {
            seq: VecDeque::new(),
            len: 0,
        }
    }

    /// The total length of bytes yet-to-be-read in all `Chunk`s.
    pub(crate) fn len(&self) -> usize {
        self.len - self.seq.front().map(|c| c.offset()).unwrap_or(0)
    }

    /// Add another chunk of bytes to the end.
    ///
    /// Patched for libmesh: a body of at most [`SMALL`] bytes joins the last chunk (a
    /// copy) while that holds fewer than [`JOINED`], if the chunk has room for it or
    /// was itself small (a chunk of joined bodies). Upstream gave every data frame's
    /// body a chunk and an allocation of its own, about 40 bytes besides the body, so a
    /// peer sending one-byte frames made a stream's 256 KiB window hold some 10 MiB.
    pub(crate) fn push(&mut self, x: Vec<u8>) {
        self.len += x.len();
        if x.is_empty() {
            return;
        }
        if x.len() <= SMALL {
            if let Some(last) = self.seq.back_mut() {
                let held = last.cursor.get_ref();
                // Into a chunk of joined small bodies (grown by doubling, up to
                // `JOINED`), or one with room to spare; not into a large body's exact
                // allocation, which would double it for a few bytes.
                let room = held.capacity() - held.len() >= x.len();
                if held.len() < JOINED && (room || last.joined) {
                    last.cursor.get_mut().extend_from_slice(&x);
                    return;
                }
            }
        }
        let joined = x.len() <= SMALL;
        self.seq.push_back(Chunk {
            cursor: io::Cursor::new(x),
            joined,
        })
    }

    /// Remove and return the first chunk.
    pub(crate) fn pop(&mut self) -> Option<Chunk> {
        let chunk = self.seq.pop_front();
        self.len -= chunk.as_ref().map(|c| c.len() + c.offset()).unwrap_or(0);
        chunk
    }

    /// Get a mutable reference to the first chunk.
    pub(crate) fn front_mut(&mut self) -> Option<&mut Chunk> {
        self.seq.front_mut()
    }
}

/// A `Chunk` wraps a `std::io::Cursor<Vec<u8>>`.
///
/// It provides a byte-slice view and a way to advance the cursor so the
/// vector can be consumed in steps.
#[derive(Debug)]
pub(crate) struct Chunk {
    cursor: io::Cursor<Vec<u8>>,
    /// Patched for libmesh: begun by a small body; small bodies after it join it.
    joined: bool,
}

impl Chunk {
    /// Is this chunk empty?
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The remaining number of bytes in this `Chunk`.
    pub(crate) fn len(&self) -> usize {
        self.cursor.get_ref().len() - self.offset()
    }

    /// The sum of bytes that the cursor has been `advance`d over.
    pub(crate) fn offset(&self) -> usize {
        self.cursor.position() as usize
    }

    /// Move the cursor position by `amount` bytes.
    ///
    /// The `AsRef<[u8]>` impl of `Chunk` provides a byte-slice view
    /// from the current position to the end.
    pub(crate) fn advance(&mut self, amount: usize) {
        assert!({
            // the new position must not exceed the vector's length
            let pos = self.offset().checked_add(amount);
            let max = self.cursor.get_ref().len();
            pos.is_some() && pos <= Some(max)
        });

        self.cursor
            .set_position(self.cursor.position() + amount as u64);
    }

    /// Consume `self` and return the inner vector.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.cursor.into_inner()
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.cursor.get_ref()[self.offset()..]
    }
}

#[cfg(test)]
mod libmesh_tests {
    use super::*;

    /// Patched for libmesh: one-byte bodies share chunks, and reading them back gives
    /// every byte in order.
    #[test]
    fn small_bodies_join_the_last_chunk() {
        let mut c = Chunks::new();
        for i in 0..100_000u32 {
            c.push(vec![(i % 251) as u8]);
        }
        assert_eq!(c.len(), 100_000);
        assert!(c.seq.len() <= 2, "{} chunks", c.seq.len());
        let mut out = Vec::new();
        while let Some(chunk) = c.pop() {
            out.extend_from_slice(chunk.as_ref());
        }
        let want: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(out, want);
    }
}
