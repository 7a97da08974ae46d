//! A bound on the warnings and errors one line of code may write to the log.
//!
//! Many lines at `warn` or `error` in libp2p's crates are written once per thing a peer
//! sends: gossipsub warns for every message whose signature fails and for every oversized
//! prune backoff, others for every refused subscription, every stream beyond a cap.
//! A peer that sends them as fast as it can makes the node write its log as fast as it
//! can (disk, journald's rate limit, the operator's attention). [`LogLimit`] is a
//! `tracing-subscriber` layer that lets each call site (one `warn!` or `error!` in the
//! source) write at most [`Budget::lines`] lines per [`Budget::window`]; beyond that the
//! lines are dropped, with one notice when a site starts being suppressed and one line
//! with the count when its window ends (written at the next warning or error of any
//! site). Lines below `warn` pass untouched: they are seen only when the operator asks
//! for them with `RUST_LOG`.
//!
//! The counting ([`SiteLimits`]) is pure and takes `now`; the layer writes the notices
//! itself (an event emitted from inside the subscriber would be dropped by `tracing`,
//! which does not dispatch re-entrantly).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// How many lines one call site may write per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Lines per window.
    pub lines: u32,
    /// The window.
    pub window: Duration,
}

impl Default for Budget {
    /// 10 lines a minute per call site.
    fn default() -> Self {
        Budget {
            lines: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// What to do with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Write,
    /// The site's budget is spent: this is the first line dropped in its window, say so.
    SuppressFirst,
    /// Drop it.
    Suppress,
}

/// A window that ended with lines dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The call site's target (its module path, usually).
    pub target: &'static str,
    /// The call site's name (`event src/file.rs:123`).
    pub name: &'static str,
    /// Lines dropped in the window.
    pub lines: u64,
}

/// A call site: its target and its name (`event src/file.rs:123`).
pub type SiteKey = (&'static str, &'static str);

#[derive(Debug)]
struct Site {
    window_start: Instant,
    written: u32,
    dropped: u64,
}

/// The per-call-site counts. Call sites are static (the source's `warn!`s and
/// `error!`s), so the map is bounded by the program, not by peers.
#[derive(Debug, Default)]
pub struct SiteLimits {
    budget: Budget,
    sites: HashMap<SiteKey, Site>,
}

impl SiteLimits {
    /// Counts against `budget`.
    pub fn new(budget: Budget) -> Self {
        SiteLimits {
            budget,
            sites: HashMap::new(),
        }
    }

    /// Counts a line of the call site `key` at `now`. Call [`SiteLimits::ended`] first,
    /// which ends the windows with lines dropped.
    pub fn admit(&mut self, key: SiteKey, now: Instant) -> Verdict {
        let site = self.sites.entry(key).or_insert(Site {
            window_start: now,
            written: 0,
            dropped: 0,
        });
        if now.saturating_duration_since(site.window_start) >= self.budget.window
            && site.dropped == 0
        {
            // A window without drops ends here; one with drops ends in `ended`, so that
            // its count is reported first.
            site.window_start = now;
            site.written = 0;
        }
        if site.written < self.budget.lines {
            site.written += 1;
            Verdict::Write
        } else {
            site.dropped += 1;
            if site.dropped == 1 {
                Verdict::SuppressFirst
            } else {
                Verdict::Suppress
            }
        }
    }

    /// The windows that have ended by `now` with lines dropped, each reported once (and
    /// its site's count started again).
    pub fn ended(&mut self, now: Instant) -> Vec<Dropped> {
        let window = self.budget.window;
        let mut out = Vec::new();
        for (&(target, name), site) in self.sites.iter_mut() {
            if site.dropped > 0 && now.saturating_duration_since(site.window_start) >= window {
                out.push(Dropped {
                    target,
                    name,
                    lines: site.dropped,
                });
                site.window_start = now;
                site.written = 0;
                site.dropped = 0;
            }
        }
        out.sort_by_key(|d| (d.target, d.name));
        out
    }
}

/// The layer: see the module's documentation. `W` is where the notices go (the same
/// writer as the formatting layer's, usually standard error).
pub struct LogLimit<W> {
    limits: Mutex<SiteLimits>,
    writer: W,
}

impl LogLimit<fn() -> std::io::Stderr> {
    /// A limit of `budget` whose notices go to standard error.
    pub fn stderr(budget: Budget) -> Self {
        LogLimit::new(budget, std::io::stderr)
    }
}

impl<W> LogLimit<W> {
    /// A limit of `budget` whose notices go to `writer`.
    pub fn new(budget: Budget, writer: W) -> Self {
        LogLimit {
            limits: Mutex::new(SiteLimits::new(budget)),
            writer,
        }
    }
}

impl<W> LogLimit<W>
where
    W: for<'w> MakeWriter<'w>,
{
    fn notice(&self, line: std::fmt::Arguments<'_>) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        // A notice that cannot be written is lost like any log line.
        let _ = writeln!(
            self.writer.make_writer(),
            "{now}  WARN libmesh::log_limit: {line}"
        );
    }
}

impl<S, W> Layer<S> for LogLimit<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return true;
        }
        let now = Instant::now();
        let (verdict, ended, window, lines) = match self.limits.lock() {
            Ok(mut limits) => {
                let ended = limits.ended(now);
                (
                    limits.admit((meta.target(), meta.name()), now),
                    ended,
                    limits.budget.window,
                    limits.budget.lines,
                )
            }
            // A panic while counting: write rather than lose lines.
            Err(_) => return true,
        };
        for d in ended {
            self.notice(format_args!(
                "{} more lines like `{}` ({}) were suppressed (at most {} are written per {} s)",
                d.lines,
                d.name,
                d.target,
                lines,
                window.as_secs()
            ));
        }
        match verdict {
            Verdict::Write => true,
            Verdict::SuppressFirst => {
                self.notice(format_args!(
                    "lines like `{}` ({}) come faster than the log takes; \
                     the rest of this {} s window is suppressed",
                    meta.name(),
                    meta.target(),
                    window.as_secs()
                ));
                false
            }
            Verdict::Suppress => false,
        }
    }
}

#[cfg(test)]
#[path = "log_limit_tests.rs"]
mod tests;
