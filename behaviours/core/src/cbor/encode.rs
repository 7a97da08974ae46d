//! The deterministic encoder.

use serde_json::{Map, Number, Value};

use super::float;
use super::{MAJOR_ARRAY, MAJOR_MAP, MAJOR_NINT, MAJOR_SIMPLE, MAJOR_TEXT, MAJOR_UINT};

/// Writes the shortest head for `major` and argument `n`.
pub fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// The deterministic encoding of `value`.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(value, &mut out);
    out
}

/// Appends the deterministic encoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Number(n) => encode_number(n, out),
        Value::String(s) => encode_text(s, out),
        Value::Array(items) => {
            write_head(out, MAJOR_ARRAY, items.len() as u64);
            for item in items {
                encode_into(item, out);
            }
        }
        Value::Object(map) => encode_map_into(map, |_| true, out),
    }
}

/// Appends the deterministic encoding of the entries of `map` whose key passes `keep`.
/// This is how a signing input leaves out `signature` without copying the map.
pub fn encode_map_into(map: &Map<String, Value>, keep: impl Fn(&str) -> bool, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| keep(k)).collect();
    // Encoded text keys compare by length first (the head), then bytewise.
    entries.sort_unstable_by(|(a, _), (b, _)| {
        a.len()
            .cmp(&b.len())
            .then_with(|| a.as_bytes().cmp(b.as_bytes()))
    });
    write_head(out, MAJOR_MAP, entries.len() as u64);
    for (k, v) in entries {
        encode_text(k, out);
        encode_into(v, out);
    }
}

fn encode_text(s: &str, out: &mut Vec<u8>) {
    write_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn encode_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        write_head(out, MAJOR_UINT, u);
    } else if let Some(i) = n.as_i64() {
        // Negative: argument is -1 - i, which fits u64 for every i64 < 0.
        write_head(out, MAJOR_NINT, (-1 - i128::from(i)) as u64);
    } else if let Some(f) = n.as_f64() {
        let (ai, bytes) = float::shortest(f);
        out.push((MAJOR_SIMPLE << 5) | ai);
        out.extend_from_slice(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex_of(v: Value) -> String {
        hex::encode(encode(&v))
    }

    #[test]
    fn rfc8949_appendix_a_examples() {
        assert_eq!(hex_of(json!(0)), "00");
        assert_eq!(hex_of(json!(23)), "17");
        assert_eq!(hex_of(json!(24)), "1818");
        assert_eq!(hex_of(json!(1000)), "1903e8");
        assert_eq!(hex_of(json!(1000000)), "1a000f4240");
        assert_eq!(hex_of(json!(1000000000000u64)), "1b000000e8d4a51000");
        assert_eq!(hex_of(json!(u64::MAX)), "1bffffffffffffffff");
        assert_eq!(hex_of(json!(-1)), "20");
        assert_eq!(hex_of(json!(-1000)), "3903e7");
        assert_eq!(hex_of(json!(i64::MIN)), "3b7fffffffffffffff");
        assert_eq!(hex_of(json!("")), "60");
        assert_eq!(hex_of(json!("IETF")), "6449455446");
        assert_eq!(hex_of(json!("\u{00fc}")), "62c3bc");
        assert_eq!(hex_of(json!([1, [2, 3], [4, 5]])), "8301820203820405");
        assert_eq!(hex_of(json!({"a": 1, "b": [2, 3]})), "a26161016162820203");
        assert_eq!(hex_of(json!(null)), "f6");
        assert_eq!(hex_of(json!(true)), "f5");
    }

    #[test]
    fn map_keys_sort_length_first() {
        // "b" (1 byte) before "aa" (2 bytes) although "aa" < "b" as strings.
        assert_eq!(
            hex_of(json!({"aa": 1, "b": 2})),
            "a2616202626161 01".replace(' ', "")
        );
    }
}
