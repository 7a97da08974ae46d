//! The strict decoder: accepts only deterministic, JSON-shaped CBOR.

use std::ops::Range;

use serde_json::{Map, Number, Value};

use super::float;
use super::{
    MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NINT, MAJOR_SIMPLE, MAJOR_TAG, MAJOR_TEXT,
    MAJOR_UINT,
};
use crate::error::{ErrorCode, MeshError};

/// Deepest nesting the decoder follows by default.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest input accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and maps.
    pub max_depth: usize,
    /// Most values in all (each item of an array, each key and each value of a map
    /// counts, and so does the top one). A value takes 32 bytes or more decoded and as
    /// little as one byte on the wire: `max_bytes` of `null`s decode to 32 times their
    /// size. Unlimited by default (the size cap bounds it); an artifact family caps it
    /// with `Artifact::MAX_ITEMS`.
    pub max_items: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: crate::MAX_ARTIFACT_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_items: usize::MAX,
        }
    }
}

/// Why bytes were refused; always `E_PROTO_INVALID` at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CBOR at byte {offset}: {reason}")]
pub struct CborError {
    /// Byte offset where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

impl From<CborError> for MeshError {
    fn from(e: CborError) -> Self {
        MeshError::new(ErrorCode::ProtoInvalid, e.to_string())
    }
}

/// Where one top-level map entry (key and value) sits in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntrySpan {
    /// Byte range of the encoded key.
    pub key: Range<usize>,
    /// Byte range of the whole entry, key and value.
    pub entry: Range<usize>,
}

/// Whether `value` nests no deeper than the decoder takes with `max_depth` (its
/// top-level container at depth 0, each container inside one deeper, none at
/// `max_depth` or below): a value built from JSON outside that bound encodes to CBOR
/// that no decoder with the same limit reads back. Iterative, so a deep value costs no
/// stack.
pub fn depth_within(value: &Value, max_depth: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth >= max_depth {
            return false;
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    true
}

/// Decodes `bytes` with the default limits (64 KiB, depth 32).
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    decode_with(bytes, DecodeLimits::default())
}

/// Decodes `bytes` with explicit limits.
pub fn decode_with(bytes: &[u8], limits: DecodeLimits) -> Result<Value, CborError> {
    let mut d = Decoder::new(bytes, limits)?;
    let v = d.value(0)?;
    d.finish()?;
    Ok(v)
}

/// Decodes a top-level map and also returns where each entry sits in `bytes`, so that a
/// signing input can be cut from the wire image without re-encoding.
pub fn decode_top_map(
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<(Map<String, Value>, Vec<MapEntrySpan>), CborError> {
    let mut d = Decoder::new(bytes, limits)?;
    let start = d.pos;
    let (major, n) = d.head()?;
    if major != MAJOR_MAP {
        return Err(d.err_at(start, "expected a map at the top level"));
    }
    let mut spans = Vec::with_capacity(d.bounded_items(n, 2)?);
    let map = d.map_body(n, 1, Some(&mut spans))?;
    d.finish()?;
    Ok((map, spans))
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    limits: DecodeLimits,
    /// Heads read so far: every value and every map key starts with one.
    items: usize,
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8], limits: DecodeLimits) -> Result<Self, CborError> {
        if bytes.len() > limits.max_bytes {
            return Err(CborError {
                offset: limits.max_bytes,
                reason: "input exceeds the size cap",
            });
        }
        if bytes.is_empty() {
            return Err(CborError {
                offset: 0,
                reason: "empty input",
            });
        }
        Ok(Decoder {
            bytes,
            pos: 0,
            limits,
            items: 0,
        })
    }

    fn err(&self, reason: &'static str) -> CborError {
        CborError {
            offset: self.pos,
            reason,
        }
    }

    fn err_at(&self, offset: usize, reason: &'static str) -> CborError {
        CborError { offset, reason }
    }

    fn finish(&self) -> Result<(), CborError> {
        if self.pos != self.bytes.len() {
            return Err(self.err("trailing bytes after the value"));
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err("truncated input"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a head and enforces shortest form and definite length.
    fn head(&mut self) -> Result<(u8, u64), CborError> {
        let start = self.pos;
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(self.err_at(start, "more values than the cap"));
        }
        let ib = self.byte()?;
        let major = ib >> 5;
        let ai = ib & 0x1f;
        if major == MAJOR_SIMPLE {
            // Simple values and floats carry their own width rules; see `simple`.
            return Ok((major, u64::from(ai)));
        }
        let n = match ai {
            0..=23 => u64::from(ai),
            24 => {
                let v = u64::from(self.byte()?);
                if v < 24 {
                    return Err(self.err_at(start, "non-shortest integer or length head"));
                }
                v
            }
            25 => {
                let b = self.take(2)?;
                let v = u64::from(u16::from_be_bytes([b[0], b[1]]));
                if v <= u64::from(u8::MAX) {
                    return Err(self.err_at(start, "non-shortest integer or length head"));
                }
                v
            }
            26 => {
                let b = self.take(4)?;
                let v = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if v <= u64::from(u16::MAX) {
                    return Err(self.err_at(start, "non-shortest integer or length head"));
                }
                v
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let v = u64::from_be_bytes(a);
                if v <= u64::from(u32::MAX) {
                    return Err(self.err_at(start, "non-shortest integer or length head"));
                }
                v
            }
            31 => return Err(self.err_at(start, "indefinite lengths are not deterministic")),
            _ => return Err(self.err_at(start, "reserved additional information")),
        };
        Ok((major, n))
    }

    /// A declared element count, refused when the remaining input cannot hold it (each
    /// element takes at least `min_bytes_each` bytes), so no huge allocation happens.
    fn bounded_count(&self, n: u64, min_bytes_each: usize) -> Result<usize, CborError> {
        let remaining = self.bytes.len() - self.pos;
        usize::try_from(n)
            .ok()
            .filter(|&c| c.saturating_mul(min_bytes_each) <= remaining)
            .ok_or_else(|| self.err("declared length exceeds the input"))
    }

    /// A declared count of array items or map entries ([`Self::bounded_count`]), refused
    /// too when it alone is over what is left of [`DecodeLimits::max_items`] (so no
    /// room is made for them).
    fn bounded_items(&self, n: u64, min_bytes_each: usize) -> Result<usize, CborError> {
        let count = self.bounded_count(n, min_bytes_each)?;
        if count > self.limits.max_items.saturating_sub(self.items) {
            return Err(self.err("more values than the cap"));
        }
        Ok(count)
    }

    fn value(&mut self, depth: usize) -> Result<Value, CborError> {
        let start = self.pos;
        let (major, n) = self.head()?;
        match major {
            MAJOR_UINT => Ok(Value::Number(Number::from(n))),
            MAJOR_NINT => {
                let v = i64::try_from(n)
                    .map(|n| -1 - n)
                    .map_err(|_| self.err_at(start, "negative integer below i64::MIN"))?;
                Ok(Value::Number(Number::from(v)))
            }
            MAJOR_BYTES => Err(self.err_at(start, "byte strings are outside the data model")),
            MAJOR_TEXT => Ok(Value::String(self.text_body(n)?.to_owned())),
            MAJOR_ARRAY => {
                self.enter(depth)?;
                let count = self.bounded_items(n, 1)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            MAJOR_MAP => {
                self.enter(depth)?;
                Ok(Value::Object(self.map_body(n, depth + 1, None)?))
            }
            MAJOR_TAG => Err(self.err_at(start, "tags are outside the data model")),
            _ => self.simple(start, n as u8),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), CborError> {
        if depth >= self.limits.max_depth {
            return Err(self.err("nesting deeper than the limit"));
        }
        Ok(())
    }

    fn text_body(&mut self, n: u64) -> Result<&'a str, CborError> {
        let len = self.bounded_count(n, 1)?;
        let start = self.pos;
        let raw = self.take(len)?;
        std::str::from_utf8(raw).map_err(|_| self.err_at(start, "text is not valid UTF-8"))
    }

    fn map_body(
        &mut self,
        n: u64,
        depth: usize,
        mut spans: Option<&mut Vec<MapEntrySpan>>,
    ) -> Result<Map<String, Value>, CborError> {
        let count = self.bounded_items(n, 2)?;
        let mut map = Map::new();
        let mut prev_key: Option<Range<usize>> = None;
        for _ in 0..count {
            let key_start = self.pos;
            let (major, kn) = self.head()?;
            if major != MAJOR_TEXT {
                return Err(self.err_at(key_start, "map keys must be text"));
            }
            let key = self.text_body(kn)?;
            let key_range = key_start..self.pos;
            if let Some(prev) = &prev_key {
                // Encoded keys must be strictly ascending bytewise (this also refuses
                // duplicates).
                if self.bytes[prev.clone()] >= self.bytes[key_range.clone()] {
                    return Err(self.err_at(key_start, "map keys not in deterministic order"));
                }
            }
            let value = self.value(depth)?;
            if let Some(spans) = spans.as_deref_mut() {
                spans.push(MapEntrySpan {
                    key: key_range.clone(),
                    entry: key_start..self.pos,
                });
            }
            map.insert(key.to_owned(), value);
            prev_key = Some(key_range);
        }
        Ok(map)
    }

    fn simple(&mut self, start: usize, ai: u8) -> Result<Value, CborError> {
        let f = match ai {
            20 => return Ok(Value::Bool(false)),
            21 => return Ok(Value::Bool(true)),
            22 => return Ok(Value::Null),
            25 => {
                let b = self.take(2)?;
                float::from_f16(u16::from_be_bytes([b[0], b[1]]))
            }
            26 => {
                let b = self.take(4)?;
                f64::from(f32::from_bits(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            27 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                f64::from_bits(u64::from_be_bytes(a))
            }
            _ => return Err(self.err_at(start, "simple value outside the data model")),
        };
        if !f.is_finite() {
            return Err(self.err_at(start, "NaN and infinities are outside the data model"));
        }
        if float::shortest(f).0 != ai {
            return Err(self.err_at(start, "float not in its shortest exact width"));
        }
        let n = Number::from_f64(f).ok_or_else(|| self.err_at(start, "unrepresentable float"))?;
        Ok(Value::Number(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor::encode;
    use serde_json::json;

    fn d(hex_in: &str) -> Result<Value, CborError> {
        decode(&hex::decode(hex_in.replace(' ', "")).unwrap())
    }

    #[test]
    fn values_beyond_the_item_cap_are_refused_before_they_are_built() {
        let nulls = crate::cbor::encode(&serde_json::json!(vec![Value::Null; 1000]));
        let capped = |max_items| DecodeLimits {
            max_items,
            ..DecodeLimits::default()
        };
        // The array's declared count alone is over: refused before any allocation.
        let e = decode_with(&nulls, capped(100)).unwrap_err();
        assert_eq!(e.reason, "more values than the cap");
        assert_eq!(e.offset, 3, "at the array's head");
        // The array itself and its 1,000 items.
        assert!(decode_with(&nulls, capped(1001)).is_ok());
        assert!(decode_with(&nulls, capped(1000)).is_err());
        // Map keys count too: {"a": 1, "b": 2} is five values.
        let map = crate::cbor::encode(&serde_json::json!({"a": 1, "b": 2}));
        assert!(decode_with(&map, capped(5)).is_ok());
        assert!(decode_with(&map, capped(4)).is_err());
        assert!(decode(&nulls).is_ok(), "unlimited by default");
        // A text's length counts bytes, not values: one long string is one value.
        let text = crate::cbor::encode(&serde_json::json!(["x".repeat(5000)]));
        assert!(decode_with(&text, capped(2)).is_ok());
    }

    #[test]
    fn accepts_canonical_forms() {
        assert_eq!(
            d("a26161016162820203").unwrap(),
            json!({"a": 1, "b": [2, 3]})
        );
        assert_eq!(d("3903e7").unwrap(), json!(-1000));
        assert_eq!(d("f93e00").unwrap(), json!(1.5));
        assert_eq!(d("3b7fffffffffffffff").unwrap(), json!(i64::MIN));
    }

    #[test]
    fn refuses_every_non_deterministic_or_foreign_form() {
        for (hex_in, why) in [
            ("1817", "non-shortest uint"),
            ("190017", "non-shortest uint16"),
            ("1a0000ffff", "non-shortest uint32"),
            ("1b00000000ffffffff", "non-shortest uint64"),
            ("7801 61", "non-shortest text length"),
            ("9f01ff", "indefinite array"),
            ("7f6161ff", "indefinite text"),
            ("a2616201616101", "unsorted keys"),
            ("a2616101616102", "duplicate keys"),
            ("a10101", "integer key"),
            ("4101", "byte string"),
            ("c11a514b67b0", "tag"),
            ("f7", "undefined"),
            ("f0", "simple value 16"),
            ("f820", "simple value 32"),
            ("fa3fc00000", "1.5 as f32"),
            ("fb3ff8000000000000", "1.5 as f64"),
            ("f97e00", "NaN"),
            ("f97c00", "infinity"),
            ("3bffffffffffffffff", "below i64::MIN"),
            ("62c328", "invalid UTF-8"),
            ("0101", "trailing bytes"),
            ("1c", "reserved ai"),
            ("", "empty"),
            ("83 01 02", "truncated array"),
            ("9b ffffffffffffffff", "huge array count"),
            ("7b ffffffffffffffff", "huge text length"),
        ] {
            assert!(d(hex_in).is_err(), "{why}: {hex_in} accepted");
        }
    }

    #[test]
    fn size_and_depth_caps() {
        let big = encode(&json!("x".repeat(100)));
        let limits = DecodeLimits {
            max_bytes: 50,
            max_depth: 4,
            max_items: usize::MAX,
        };
        assert_eq!(
            decode_with(&big, limits).unwrap_err().reason,
            "input exceeds the size cap"
        );
        let deep = encode(&json!([[[[[1]]]]]));
        assert!(decode_with(&deep, limits).is_err());
        let ok = encode(&json!([[[1]]]));
        assert!(decode_with(&ok, limits).is_ok());
        // Default depth refuses a deeply nested bomb without recursion trouble.
        let bomb = vec![0x81u8; 10_000];
        assert!(decode(&bomb).is_err());
    }

    #[test]
    fn top_map_spans_cover_each_entry() {
        let v = json!({"a": 1, "bb": [1, 2], "c": {"x": null}});
        let bytes = encode(&v);
        let (map, spans) = decode_top_map(&bytes, DecodeLimits::default()).unwrap();
        assert_eq!(Value::Object(map), v);
        assert_eq!(spans.len(), 3);
        let mut rebuilt = vec![0xa3];
        for s in &spans {
            rebuilt.extend_from_slice(&bytes[s.entry.clone()]);
        }
        assert_eq!(rebuilt, bytes);
        assert_eq!(&bytes[spans[2].key.clone()], &[0x62, b'b', b'b']);
    }
}
