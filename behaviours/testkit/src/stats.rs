//! Sample statistics for benchmark reports.

/// The median of `samples`: the middle one after sorting (the upper middle one for an
/// even count).
///
/// # Panics
/// When `samples` is empty.
pub fn median(samples: &[f64]) -> f64 {
    match try_median(samples) {
        Some(m) => m,
        None => panic!("the median of no samples"),
    }
}

/// As [`median`], `None` when `samples` is empty.
pub fn try_median(samples: &[f64]) -> Option<f64> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_middle_of_sorted_samples() {
        assert_eq!(try_median(&[]), None);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[3.0, 1.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
