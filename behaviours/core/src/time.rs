//! Strict RFC 3339 UTC timestamps (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`).
//!
//! A [`Timestamp`] keeps the exact text it was parsed from, so an artifact that is
//! re-encoded after parsing keeps its byte image; comparisons use the instant.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};

use crate::error::MeshError;

/// Longest text a timestamp can have (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`; chrono's widest
/// years print shorter than that).
const MAX_TEXT: usize = 30;

/// A UTC instant with the text it came from (kept inline: no allocation).
#[derive(Clone)]
pub struct Timestamp {
    instant: DateTime<Utc>,
    text: [u8; MAX_TEXT],
    len: u8,
}

fn inline(s: &str) -> ([u8; MAX_TEXT], u8) {
    let mut text = [0u8; MAX_TEXT];
    let n = s.len().min(MAX_TEXT);
    text[..n].copy_from_slice(&s.as_bytes()[..n]);
    (text, n as u8)
}

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.1-9 digits]Z` and nothing else (no offsets, no
    /// lowercase `t`/`z`, no leap second 60).
    pub fn parse(s: &str) -> Result<Self, MeshError> {
        let bad = || MeshError::invalid(format!("`{s}` is not an RFC 3339 UTC timestamp (…Z)"));
        let b = s.as_bytes();
        if b.len() < 20 || b.len() > 30 || b[b.len() - 1] != b'Z' {
            return Err(bad());
        }
        let digits = |r: std::ops::Range<usize>| -> Result<u32, MeshError> {
            let part = b.get(r).ok_or_else(bad)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            Ok(part
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
        };
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let year = digits(0..4)?;
        let month = digits(5..7)?;
        let day = digits(8..10)?;
        let hour = digits(11..13)?;
        let min = digits(14..16)?;
        let sec = digits(17..19)?;
        let nanos = match b[19] {
            b'Z' if b.len() == 20 => 0,
            b'.' => {
                let frac = &b[20..b.len() - 1];
                if frac.is_empty() || frac.len() > 9 {
                    return Err(bad());
                }
                digits(20..b.len() - 1)? * 10u32.pow(9 - frac.len() as u32)
            }
            _ => return Err(bad()),
        };
        let date = NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(bad)?;
        if sec > 59 {
            return Err(bad());
        }
        let time = NaiveTime::from_hms_nano_opt(hour, min, sec, nanos).ok_or_else(bad)?;
        let (text, len) = inline(s);
        Ok(Timestamp {
            instant: NaiveDateTime::new(date, time).and_utc(),
            text,
            len,
        })
    }

    /// The timestamp of an instant, printed with whole seconds (`…:SSZ`).
    pub fn from_instant(instant: DateTime<Utc>) -> Self {
        let (text, len) = inline(&instant.to_rfc3339_opts(SecondsFormat::Secs, true));
        // Whole seconds: drop any sub-second part so instant and text agree.
        let instant = DateTime::from_timestamp(instant.timestamp(), 0).unwrap_or(instant);
        Timestamp { instant, text, len }
    }

    /// The current time, whole seconds.
    pub fn now() -> Self {
        Timestamp::from_instant(Utc::now())
    }

    /// The instant.
    pub fn instant(&self) -> DateTime<Utc> {
        self.instant
    }

    /// The exact text.
    pub fn as_str(&self) -> &str {
        // Parsed or printed ASCII, so always UTF-8.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }

    /// This timestamp moved by `secs` seconds (negative goes back), held at the ends of
    /// the range of instants rather than past them.
    pub fn plus_secs(&self, secs: i64) -> Self {
        let moved = chrono::TimeDelta::try_seconds(secs)
            .and_then(|d| self.instant.checked_add_signed(d))
            .unwrap_or(if secs < 0 {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            });
        Timestamp::from_instant(moved)
    }

    /// Signed seconds from `other` to `self` (positive when `self` is later).
    pub fn secs_since(&self, other: &Timestamp) -> i64 {
        (self.instant - other.instant).num_seconds()
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.instant == other.instant
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.instant.cmp(&other.instant)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_strict_utc() {
        for ok in [
            "2026-03-23T18:08:00Z",
            "2026-03-23T18:08:00.5Z",
            "2026-03-23T18:08:00.123456789Z",
            "2024-02-29T00:00:00Z",
        ] {
            let t = Timestamp::parse(ok).unwrap();
            assert_eq!(t.as_str(), ok);
        }
        for bad in [
            "2026-03-23T18:08:00+00:00",
            "2026-03-23t18:08:00Z",
            "2026-03-23T18:08:00z",
            "2026-03-23 18:08:00Z",
            "2026-03-23T18:08:60Z",
            "2026-02-30T18:08:00Z",
            "2025-02-29T00:00:00Z",
            "2026-03-23T24:00:00Z",
            "2026-03-23T18:08:00.Z",
            "2026-03-23T18:08:00.1234567890Z",
            "2026-3-23T18:08:00Z",
            "+026-03-23T18:08:00Z",
            "2026-03-23T18:08Z",
            "",
            "2026-03-23T18:08:00ZZ",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn extreme_instants_print_and_parse_back() {
        let far = Timestamp::parse("9999-12-31T23:59:59.999999999Z").unwrap();
        assert_eq!(far.as_str(), "9999-12-31T23:59:59.999999999Z");
        let later = far.plus_secs(10);
        assert!(later.as_str().len() <= MAX_TEXT);
        assert!(later > far);
    }

    #[test]
    fn moving_past_the_range_stops_at_its_ends() {
        let now = Timestamp::now();
        let end = now.plus_secs(i64::MAX);
        assert!(end > now.plus_secs(86_400 * 365 * 100_000));
        assert_eq!(end, now.plus_secs(i64::MAX / 2));
        assert!(now.plus_secs(i64::MIN) < now.plus_secs(-86_400 * 365 * 100_000));
        assert!(end.as_str().len() <= MAX_TEXT);
    }

    #[test]
    fn ordering_and_arithmetic_use_the_instant() {
        let a = Timestamp::parse("2026-03-23T18:08:00Z").unwrap();
        let b = Timestamp::parse("2026-03-23T18:08:00.000Z").unwrap();
        assert_eq!(a, b);
        let c = a.plus_secs(30);
        assert_eq!(c.as_str(), "2026-03-23T18:08:30Z");
        assert_eq!(c.secs_since(&a), 30);
        assert!(c > a);
    }
}
