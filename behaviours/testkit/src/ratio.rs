//! A small interleaved timer: runs a baseline and a candidate in alternating rounds and
//! reports the ratio of their median per-iteration times, so that machine noise and
//! frequency drift hit both sides alike.

use std::time::{Duration, Instant};

use crate::stats::median;

/// One row of a ratio table.
#[derive(Debug, Clone)]
pub struct Ratio {
    /// What is measured.
    pub name: &'static str,
    /// Median ns per iteration of the baseline.
    pub baseline_ns: f64,
    /// Median ns per iteration of the candidate.
    pub candidate_ns: f64,
    /// The target, as "candidate/baseline must be <= target" (or >= when `at_least`).
    pub target: f64,
    /// The target is a lower bound.
    pub at_least: bool,
}

impl Ratio {
    /// Candidate over baseline.
    pub fn ratio(&self) -> f64 {
        self.candidate_ns / self.baseline_ns
    }

    /// Whether the ratio meets the target.
    pub fn met(&self) -> bool {
        if self.at_least {
            self.ratio() >= self.target
        } else {
            self.ratio() <= self.target
        }
    }
}

fn time_per_iter(iters: u32, f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// Median ns/iter of `baseline` and `candidate`, measured in `rounds` alternating rounds
/// of about `round_time` each.
pub fn compare(
    rounds: usize,
    round_time: Duration,
    baseline: &mut dyn FnMut(),
    candidate: &mut dyn FnMut(),
) -> (f64, f64) {
    // Warm up and size a round.
    let probe = time_per_iter(10, baseline).max(1.0);
    let iters = ((round_time.as_nanos() as f64 / probe) as u32).clamp(1, 1_000_000);
    time_per_iter(iters, candidate);
    let mut b = Vec::with_capacity(rounds);
    let mut c = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        b.push(time_per_iter(iters, baseline));
        c.push(time_per_iter(iters, candidate));
    }
    (median(&b), median(&c))
}

/// Like [`compare`], but each candidate iteration consumes an input made by `setup`
/// just before it (so the input is as warm in cache as in real use), and only the call
/// itself is timed. The baseline is timed the same way, call by call, so the cost of
/// reading the clock cancels out in the ratio.
pub fn compare_with_setup<S>(
    rounds: usize,
    round_time: Duration,
    baseline: &mut dyn FnMut(),
    setup: &mut dyn FnMut() -> S,
    candidate: &mut dyn FnMut(S),
) -> (f64, f64) {
    let probe = time_per_iter(10, baseline).max(1.0);
    let iters = ((round_time.as_nanos() as f64 / probe) as u32).clamp(1, 1_000_000);
    let mut b = Vec::with_capacity(rounds);
    let mut c = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let mut base = Duration::ZERO;
        let mut cand = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            baseline();
            base += start.elapsed();
            let input = setup();
            let start = Instant::now();
            candidate(input);
            cand += start.elapsed();
        }
        if round > 0 {
            // Round 0 is the warm-up.
            b.push(base.as_nanos() as f64 / f64::from(iters));
            c.push(cand.as_nanos() as f64 / f64::from(iters));
        }
    }
    (median(&b), median(&c))
}

/// Prints `rows` as a table under `title` (a row with an infinite target is
/// informational).
pub fn print_table(title: &str, rows: &[Ratio]) {
    println!("\n{title}");
    println!(
        "{:<58} {:>12} {:>12} {:>8} {:>10}",
        "benchmark", "baseline", "candidate", "ratio", "target"
    );
    for r in rows {
        if r.target.is_infinite() {
            println!(
                "{:<58} {:>9.0} ns {:>9.0} ns {:>8.3}   (info)",
                r.name,
                r.baseline_ns,
                r.candidate_ns,
                r.ratio()
            );
            continue;
        }
        let cmp = if r.at_least { ">=" } else { "<=" };
        println!(
            "{:<58} {:>9.0} ns {:>9.0} ns {:>8.3} {:>4}{:<5} {}",
            r.name,
            r.baseline_ns,
            r.candidate_ns,
            r.ratio(),
            cmp,
            r.target,
            if r.met() { "ok" } else { "MISSED" }
        );
    }
}
