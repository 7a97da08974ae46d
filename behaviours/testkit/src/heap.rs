//! The heap a test process holds, for tests that run on jemalloc (as `meshd` does) and
//! measure what something costs. The test binary declares the allocator itself:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
//! ```
//!
//! jemalloc's count is process-wide: one measuring test per binary.

/// Bytes allocated and not freed (jemalloc's `stats.allocated`, refreshed).
///
/// # Panics
/// When jemalloc's statistics cannot be read (the binary does not run on jemalloc).
#[allow(clippy::expect_used)]
pub fn live() -> isize {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc's epoch");
    let bytes = tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc's statistics");
    isize::try_from(bytes).unwrap_or(isize::MAX)
}
