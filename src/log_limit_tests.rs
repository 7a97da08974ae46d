#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;

use mesh_testkit::log_capture::Captured;

use super::*;

const A: SiteKey = ("peer", "event src/a.rs:1");
const B: SiteKey = ("peer", "event src/b.rs:2");

fn budget() -> Budget {
    Budget {
        lines: 3,
        window: Duration::from_secs(60),
    }
}

#[test]
fn a_site_writes_its_budget_then_is_suppressed_until_its_window_ends() {
    let mut l = SiteLimits::new(budget());
    let t0 = Instant::now();
    let v: Vec<_> = (0..6)
        .map(|i| l.admit(A, t0 + Duration::from_secs(i)))
        .collect();
    assert_eq!(
        v,
        [
            Verdict::Write,
            Verdict::Write,
            Verdict::Write,
            Verdict::SuppressFirst,
            Verdict::Suppress,
            Verdict::Suppress
        ]
    );
    // Another site has its own budget.
    assert_eq!(l.admit(B, t0), Verdict::Write);
    // Before the window's end nothing is reported.
    assert!(l.ended(t0 + Duration::from_secs(59)).is_empty());
    let ended = l.ended(t0 + Duration::from_secs(60));
    assert_eq!(
        ended,
        [Dropped {
            target: "peer",
            name: "event src/a.rs:1",
            lines: 3
        }]
    );
    // Reported once; the site writes again.
    assert!(l.ended(t0 + Duration::from_secs(61)).is_empty());
    assert_eq!(l.admit(A, t0 + Duration::from_secs(61)), Verdict::Write);
}

#[test]
fn a_window_without_drops_starts_again_on_the_next_line() {
    let mut l = SiteLimits::new(budget());
    let t0 = Instant::now();
    for i in 0..3 {
        assert_eq!(l.admit(A, t0 + Duration::from_secs(i)), Verdict::Write);
    }
    // Sixty seconds after the first line, the budget is whole again.
    for i in 0..3 {
        assert_eq!(l.admit(A, t0 + Duration::from_secs(60 + i)), Verdict::Write);
    }
    assert_eq!(
        l.admit(A, t0 + Duration::from_secs(70)),
        Verdict::SuppressFirst
    );
}

#[test]
fn the_layer_drops_a_flood_of_warnings_from_one_site_and_says_so() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(LogLimit::new(budget(), out.clone()))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(out.clone())
                .with_ansi(false),
        );
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..100 {
            tracing::warn!(i, "a peer sent a bad thing");
        }
        for i in 0..5 {
            tracing::error!(i, "another site");
        }
        for i in 0..20 {
            tracing::info!(i, "below warn");
        }
    });
    let text = out.text();
    assert_eq!(text.matches("a peer sent a bad thing").count(), 3, "{text}");
    assert_eq!(text.matches("another site").count(), 3, "{text}");
    assert_eq!(text.matches("below warn").count(), 20, "{text}");
    // One notice per suppressed site, none per dropped line.
    assert_eq!(
        text.matches("the rest of this 60 s window is suppressed")
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn the_count_of_dropped_lines_is_written_after_the_window() {
    let out = Captured::default();
    let budget = Budget {
        lines: 3,
        window: Duration::from_millis(50),
    };
    let subscriber = tracing_subscriber::registry()
        .with(LogLimit::new(budget, out.clone()))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(out.clone())
                .with_ansi(false),
        );
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..10 {
            tracing::warn!(i, "flooded");
        }
        std::thread::sleep(Duration::from_millis(100));
        tracing::error!("something else");
    });
    let text = out.text();
    assert!(
        text.contains("7 more lines like `event src/log_limit_tests.rs:"),
        "{text}"
    );
    assert!(text.contains("something else"), "{text}");
}
