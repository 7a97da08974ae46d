//! Shortest-width float encoding and decoding (binary16/32/64).

/// The shortest CBOR float form of a finite `v`: `(additional info, big-endian bytes)`.
pub(crate) fn shortest(v: f64) -> (u8, Vec<u8>) {
    if let Some(h) = to_f16_exact(v) {
        return (25, h.to_be_bytes().to_vec());
    }
    let f = v as f32;
    if f64::from(f) == v {
        return (26, f.to_bits().to_be_bytes().to_vec());
    }
    (27, v.to_bits().to_be_bytes().to_vec())
}

/// The binary16 bits of `v` when binary16 holds `v` exactly.
pub(crate) fn to_f16_exact(v: f64) -> Option<u16> {
    let f = v as f32;
    if f64::from(f) != v || !f.is_finite() {
        return None;
    }
    let bits = f.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x007f_ffff;
    if exp == 0 && mant == 0 {
        return Some(sign); // +-0
    }
    if exp == 0 {
        return None; // f32 subnormals are far below the binary16 range
    }
    let e = exp - 127;
    if (-14..=15).contains(&e) {
        if mant & 0x1fff != 0 {
            return None;
        }
        return Some(sign | (((e + 15) as u16) << 10) | ((mant >> 13) as u16));
    }
    if (-24..-14).contains(&e) {
        // binary16 subnormal: value = m * 2^-24 with m < 1024.
        let sig = mant | 0x0080_0000;
        let shift = (-(e + 1)) as u32; // 14..=23
        if sig & ((1u32 << shift) - 1) != 0 {
            return None;
        }
        return Some(sign | (sig >> shift) as u16);
    }
    None
}

/// The value of binary16 bits.
pub(crate) fn from_f16(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    let magnitude = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
    };
    sign * magnitude
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8949_appendix_a_floats() {
        // (value, expected encoding after the initial byte) from RFC 8949 Appendix A.
        let cases: &[(f64, &str)] = &[
            (0.0, "f90000"),
            (-0.0, "f98000"),
            (1.0, "f93c00"),
            (1.1, "fb3ff199999999999a"),
            (1.5, "f93e00"),
            (65504.0, "f97bff"),
            (100000.0, "fa47c35000"),
            (3.4028234663852886e+38, "fa7f7fffff"),
            (1.0e+300, "fb7e37e43c8800759c"),
            (5.960464477539063e-8, "f90001"),
            (0.00006103515625, "f90400"),
            (-4.0, "f9c400"),
            (-4.1, "fbc010666666666666"),
        ];
        for &(v, hex_expected) in cases {
            let (ai, bytes) = shortest(v);
            let mut enc = vec![0xe0 | ai];
            enc.extend(bytes);
            assert_eq!(hex::encode(&enc), hex_expected, "{v}");
        }
    }

    #[test]
    fn f16_round_trips_every_finite_pattern() {
        for h in 0u16..=u16::MAX {
            let v = from_f16(h);
            if !v.is_finite() {
                continue;
            }
            assert_eq!(to_f16_exact(v), Some(h), "pattern {h:#06x} value {v}");
        }
    }
}
