//! The array framing both signal wire forms share: canonical CBOR heads and runs of
//! byte strings (a batch holds one frame per item, a member-table page one presence per
//! item).

/// CBOR major type 2, a byte string.
pub(crate) const MAJOR_BYTES: u8 = 2;

/// A canonical CBOR head at `*at` (shortest form only, arguments up to 8 bytes):
/// `(major type, argument)`; advances `at` past it. `None` for anything else.
pub(crate) fn head(b: &[u8], at: &mut usize) -> Option<(u8, u64)> {
    let first = *b.get(*at)?;
    let (major, ai) = (first >> 5, first & 0x1f);
    let n = match ai {
        0..=23 => u64::from(ai),
        24..=27 => {
            let len = 1usize << (ai - 24);
            let bytes = b.get(*at + 1..*at + 1 + len)?;
            let n = bytes.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
            let min = match ai {
                24 => 24,
                25 => 0x100,
                26 => 0x1_0000,
                _ => 0x1_0000_0000,
            };
            if n < min {
                return None;
            }
            *at += len;
            n
        }
        _ => return None,
    };
    *at += 1;
    Some((major, n))
}

/// Why [`byte_items`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemError {
    /// A head that is not canonical, or a length that does not fit.
    Malformed,
    /// An item that is not a byte string, or one over the size cap.
    NotAnItem,
    /// An item that runs past the end of the body.
    Truncated,
}

/// `n` byte strings of at most `max` bytes each, from `*at` on; advances `at`.
pub(crate) fn byte_items<'a>(
    b: &'a [u8],
    at: &mut usize,
    n: usize,
    max: usize,
) -> Result<Vec<&'a [u8]>, ItemError> {
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let (major, len) = head(b, at).ok_or(ItemError::Malformed)?;
        let len = usize::try_from(len).map_err(|_| ItemError::Malformed)?;
        if major != MAJOR_BYTES || len > max {
            return Err(ItemError::NotAnItem);
        }
        let end = at
            .checked_add(len)
            .filter(|&e| e <= b.len())
            .ok_or(ItemError::Truncated)?;
        items.push(&b[*at..end]);
        *at = end;
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_in_shortest_form_only() {
        let mut at = 0;
        assert_eq!(head(&[0x45], &mut at), Some((2, 5)));
        assert_eq!(at, 1);
        let mut at = 0;
        assert_eq!(head(&[0x58, 24], &mut at), Some((2, 24)));
        assert_eq!(at, 2);
        // 23 fits in the first byte: a one-byte argument for it is not canonical.
        assert_eq!(head(&[0x58, 23], &mut 0), None);
        assert_eq!(head(&[0x59, 0x00, 0xff], &mut 0), None);
        // Truncated argument, indefinite length.
        assert_eq!(head(&[0x59, 0x01], &mut 0), None);
        assert_eq!(head(&[0x5f], &mut 0), None);
    }

    #[test]
    fn byte_items_checks_type_size_and_end() {
        let body = [0x42, 1, 2, 0x41, 3];
        let mut at = 0;
        assert_eq!(
            byte_items(&body, &mut at, 2, 8),
            Ok(vec![&[1u8, 2][..], &[3u8][..]])
        );
        assert_eq!(at, 5);
        assert_eq!(byte_items(&body, &mut 0, 2, 1), Err(ItemError::NotAnItem));
        assert_eq!(
            byte_items(&[0x62, b'a', b'b'], &mut 0, 1, 8),
            Err(ItemError::NotAnItem)
        );
        assert_eq!(
            byte_items(&[0x43, 1], &mut 0, 1, 8),
            Err(ItemError::Truncated)
        );
        assert_eq!(
            byte_items(&[0x58, 1], &mut 0, 1, 8),
            Err(ItemError::Malformed)
        );
    }
}
