//! Deterministic CBOR (RFC 8949 section 4.2.1, "core deterministic encoding") for
//! JSON-shaped data.
//!
//! The data model is JSON's: null, booleans, integers in `i64`/`u64`, finite floats,
//! UTF-8 text, arrays and maps with text keys. Encoding is canonical: shortest heads,
//! definite lengths, the shortest float width that keeps the value, map keys sorted by
//! their encoded bytes. The decoder accepts exactly those byte images and nothing else
//! (so one artifact has one byte image), refuses tags, byte strings, `undefined` and other
//! simple values, caps input size and nesting depth, and never allocates more than the
//! input could describe.

mod decode;
mod encode;
mod float;

pub use decode::{
    CborError, DEFAULT_MAX_DEPTH, DecodeLimits, MapEntrySpan, decode, decode_top_map, decode_with,
    depth_within,
};
pub use encode::{encode, encode_into, encode_map_into, write_head};

/// Major type of unsigned integers.
pub(crate) const MAJOR_UINT: u8 = 0;
/// Major type of negative integers.
pub(crate) const MAJOR_NINT: u8 = 1;
/// Major type of byte strings (not in the JSON data model; always refused).
pub(crate) const MAJOR_BYTES: u8 = 2;
/// Major type of text strings.
pub(crate) const MAJOR_TEXT: u8 = 3;
/// Major type of arrays.
pub(crate) const MAJOR_ARRAY: u8 = 4;
/// Major type of maps.
pub(crate) const MAJOR_MAP: u8 = 5;
/// Major type of tags (refused).
pub(crate) const MAJOR_TAG: u8 = 6;
/// Major type of simple values and floats.
pub(crate) const MAJOR_SIMPLE: u8 = 7;
