//! A fast base58btc decoder for the one shape libmesh parses on hot paths: a did:key
//! payload of exactly 34 bytes whose first byte is not zero (so the text has no leading
//! `1` and its spelling is canonical by construction).

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

const fn decode_table() -> [u8; 128] {
    let mut t = [0xffu8; 128];
    let mut i = 0;
    while i < 58 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
}

static DIGITS: [u8; 128] = decode_table();

/// Limbs of 32 bits, least significant first; 9 limbs hold 288 bits >= 34 bytes.
const LIMBS: usize = 9;

/// Decodes base58btc text into exactly 34 bytes with a non-zero first byte. Any other
/// length, a leading `1`, or a non-alphabet character gives `None`.
pub(crate) fn decode_34(text: &str) -> Option<[u8; 34]> {
    let bytes = text.as_bytes();
    // 34 bytes take 46 or 47 characters; refuse early what cannot fit.
    if bytes.is_empty() || bytes.len() > 47 || bytes[0] == b'1' {
        return None;
    }
    let mut limbs = [0u32; LIMBS];
    // Five digits at a time: 58^5 < 2^32.
    for chunk in bytes.chunks(5) {
        let mut mul: u64 = 1;
        let mut add: u64 = 0;
        for &c in chunk {
            let d = *DIGITS.get(c as usize)?;
            if d == 0xff {
                return None;
            }
            mul *= 58;
            add = add * 58 + u64::from(d);
        }
        let mut carry = add;
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * mul + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            return None; // more than 288 bits
        }
    }
    // 34 bytes = 272 bits: the top limb may use only its low 16 bits.
    if limbs[LIMBS - 1] >> 16 != 0 {
        return None;
    }
    let mut out = [0u8; 34];
    for (i, limb) in limbs.iter().enumerate() {
        let be = limb.to_be_bytes();
        // limb i covers bytes [34 - 4(i+1), 34 - 4i) from the end.
        let end = 34 - 4 * i;
        if end >= 4 {
            out[end - 4..end].copy_from_slice(&be);
        } else {
            out[..end].copy_from_slice(&be[4 - end..]);
        }
    }
    if out[0] == 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_multibase_on_random_keys() {
        for seed in 0u8..=255 {
            let mut bytes = [seed; 34];
            bytes[0] = 0xed;
            bytes[1] = 0x01;
            bytes[2] = seed.wrapping_mul(31);
            bytes[33] = seed ^ 0x5a;
            let text = multibase::encode(multibase::Base::Base58Btc, bytes);
            assert_eq!(decode_34(&text[1..]), Some(bytes), "{text}");
        }
    }

    #[test]
    fn refuses_other_shapes() {
        let good = "6MkwJFpvJVFe15ygGgYLTYuiPwfhkkDRkMG4eKQFT8g65yE";
        assert!(decode_34(good).is_some());
        assert!(decode_34(&format!("1{good}")).is_none());
        // A shorter text is a different (smaller) number: never the same ed25519 prefix.
        assert_ne!(
            decode_34(&good[..good.len() - 1]).map(|b| [b[0], b[1]]),
            Some([0xed, 0x01])
        );
        assert!(decode_34(&format!("{good}z")).is_none());
        assert!(decode_34(&good.replace('J', "0")).is_none());
        assert!(decode_34("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz").is_none());
        assert!(decode_34("").is_none());
        assert!(decode_34("é").is_none());
    }
}
