//! One budget for the bytes that requests and answers being read hold, across every
//! connection and protocol that shares it.
//!
//! Each protocol caps what one connection may hold (streams at once × the largest
//! message), but nothing bounded the sum: a peer that opens many connections and sends
//! every request but its last byte made the node hold tens of MiB per connection. A
//! [`ReadBudget`] caps the sum. A read takes room as its buffer grows
//! ([`Hold::grow`]) and gives it back when it ends (the [`Hold`] is dropped). When a
//! read needs room the budget does not have, the oldest reads started before it are
//! dropped to make room. A read is as old as its first byte ([`crate::read_capped`]
//! takes room only then): an honest request or answer comes whole soon after, while a
//! half-sent one grows old, so holding old reads does not keep the budget full. A read
//! that cannot make room (only younger reads hold the budget) is refused.
//!
//! A dropped read learns it on its next poll ([`Hold::poll_dropped`]); the budget wakes
//! it, so a stalled stream does not keep its buffer until its timeout (its buffer is
//! freed when its task next runs; until then the node holds it beyond the cap).
//!
//! The budget does not know whose a read is: one peer's reads are dropped as readily as
//! another's, by age alone (the protocols' codecs are not told the peer). A peer that
//! wants honest reads dropped must begin newer ones that take their room, about the
//! budget's size in data for each interval it starves them.
//!
//! Pure bookkeeping: no clock (age is the order in which reads began).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Context;

use futures::task::AtomicWaker;

/// The budget a protocol's codec makes for itself when nobody shares one with it, bytes.
pub const DEFAULT_READ_BUDGET: usize = 64 * 1024 * 1024;

/// A read was dropped (or refused) for room in the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reads in progress hold the node's read budget ({cap} bytes): this read was dropped")]
pub struct BudgetSpent {
    /// The budget's cap, bytes.
    pub cap: usize,
}

impl From<BudgetSpent> for std::io::Error {
    fn from(e: BudgetSpent) -> Self {
        std::io::Error::other(e)
    }
}

/// A byte budget shared by reads. Cheap to clone (clones share it).
#[derive(Clone)]
pub struct ReadBudget {
    ledger: Arc<Mutex<Ledger>>,
}

impl std::fmt::Debug for ReadBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = self.lock();
        f.debug_struct("ReadBudget")
            .field("cap", &l.cap)
            .field("held", &l.held)
            .field("dropped", &l.dropped)
            .finish()
    }
}

impl Default for ReadBudget {
    /// A budget of its own of [`DEFAULT_READ_BUDGET`] bytes.
    fn default() -> Self {
        ReadBudget::new(DEFAULT_READ_BUDGET)
    }
}

struct Ledger {
    cap: usize,
    held: usize,
    /// The number the next read gets: reads are dropped lowest first.
    next: u64,
    readers: BTreeMap<u64, Reader>,
    dropped: u64,
}

struct Reader {
    bytes: usize,
    signal: Arc<Signal>,
}

/// How the budget tells a read it was dropped.
#[derive(Default)]
struct Signal {
    dropped: AtomicBool,
    waker: AtomicWaker,
}

impl ReadBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        ReadBudget {
            ledger: Arc::new(Mutex::new(Ledger {
                cap,
                held: 0,
                next: 0,
                readers: BTreeMap::new(),
                dropped: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // The ledger is consistent between statements; a panic elsewhere leaves it usable.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its cap, bytes.
    pub fn cap(&self) -> usize {
        self.lock().cap
    }

    /// Bytes the reads in progress hold.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// Reads dropped or refused for room, since the budget was made.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Starts a read, holding nothing yet.
    pub fn hold(&self) -> Hold {
        let mut l = self.lock();
        let id = l.next;
        l.next += 1;
        let signal = Arc::new(Signal::default());
        l.readers.insert(
            id,
            Reader {
                bytes: 0,
                signal: signal.clone(),
            },
        );
        Hold {
            budget: self.clone(),
            id,
            signal,
        }
    }
}

/// One read's share of a [`ReadBudget`], given back when dropped.
pub struct Hold {
    budget: ReadBudget,
    id: u64,
    signal: Arc<Signal>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("id", &self.id).finish()
    }
}

impl Hold {
    /// Takes `n` more bytes, dropping the oldest reads that began before this one if the
    /// budget lacks room. `Err` when this read was dropped, or when the reads older than
    /// it do not hold enough to make room (this one is then refused).
    pub fn grow(&self, n: usize) -> Result<(), BudgetSpent> {
        let dropped = {
            let mut l = self.budget.lock();
            let spent = BudgetSpent { cap: l.cap };
            // Dropped (flagged under this lock, so never half-way), or gone.
            if self.signal.dropped.load(Ordering::Acquire) || !l.readers.contains_key(&self.id) {
                return Err(spent);
            }
            let need = l.held.saturating_add(n).saturating_sub(l.cap);
            // The oldest reads before this one that free `need`, oldest first.
            let mut victims = Vec::new();
            let mut freed = 0;
            if need > 0 {
                for (id, r) in l.readers.range(..self.id) {
                    if r.bytes > 0 {
                        victims.push(*id);
                        freed += r.bytes;
                        if freed >= need {
                            break;
                        }
                    }
                }
            }
            if freed < need {
                // Dropping every older read would not make room: drop none.
                l.dropped += 1;
                return Err(spent);
            }
            let mut signals = Vec::with_capacity(victims.len());
            for id in victims {
                if let Some(r) = l.readers.remove(&id) {
                    l.held -= r.bytes;
                    l.dropped += 1;
                    r.signal.dropped.store(true, Ordering::Release);
                    signals.push(r.signal);
                }
            }
            l.held += n;
            if let Some(me) = l.readers.get_mut(&self.id) {
                me.bytes += n;
            }
            signals
        };
        // Woken outside the lock: a waker may do anything, a `Hold`'s drop included.
        for s in dropped {
            s.waker.wake();
        }
        Ok(())
    }

    /// Whether this read was dropped to make room; if not, `cx` is woken when it is.
    pub fn poll_dropped(&self, cx: &mut Context<'_>) -> bool {
        self.signal.waker.register(cx.waker());
        self.signal.dropped.load(Ordering::Acquire)
    }

    /// Bytes this read holds (0 once dropped).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.budget
            .lock()
            .readers
            .get(&self.id)
            .map_or(0, |r| r.bytes)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut l = self.budget.lock();
        if let Some(r) = l.readers.remove(&self.id) {
            l.held -= r.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dropped(h: &Hold) -> bool {
        h.poll_dropped(&mut Context::from_waker(futures::task::noop_waker_ref()))
    }

    #[test]
    fn reads_within_the_cap_hold_what_they_took_and_give_it_back() {
        let b = ReadBudget::new(100);
        let (x, y) = (b.hold(), b.hold());
        x.grow(60).unwrap();
        y.grow(40).unwrap();
        assert_eq!(
            (b.held(), x.bytes(), y.bytes(), b.dropped()),
            (100, 60, 40, 0)
        );
        drop(x);
        assert_eq!(b.held(), 40);
        drop(y);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_read_that_needs_room_drops_the_oldest_reads_before_it() {
        let b = ReadBudget::new(100);
        let (a, c, d) = (b.hold(), b.hold(), b.hold());
        a.grow(40).unwrap();
        c.grow(40).unwrap();
        // d needs 50: a (the oldest) goes, c stays.
        d.grow(50).unwrap();
        assert!(dropped(&a) && !dropped(&c) && !dropped(&d));
        assert_eq!((b.held(), a.bytes(), b.dropped()), (90, 0, 1));
        // A dropped read takes nothing more, and its drop gives back nothing twice.
        assert_eq!(a.grow(1), Err(BudgetSpent { cap: 100 }));
        drop(a);
        assert_eq!(b.held(), 90);
    }

    #[test]
    fn an_old_read_never_drops_younger_ones_and_is_refused_instead() {
        let b = ReadBudget::new(100);
        let (old, young) = (b.hold(), b.hold());
        old.grow(10).unwrap();
        young.grow(80).unwrap();
        assert!(old.grow(20).is_err());
        assert!(!dropped(&young));
        assert_eq!((b.held(), b.dropped()), (90, 1));
        // A read that dropping every older one would not make room for drops none.
        let big = b.hold();
        assert!(big.grow(101).is_err());
        assert!(!dropped(&old) && !dropped(&young));
        assert_eq!((b.held(), b.dropped()), (90, 2));
    }

    #[test]
    fn a_dropped_read_is_woken() {
        use std::sync::atomic::AtomicUsize;
        use std::task::{Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let b = ReadBudget::new(10);
        let (a, c) = (b.hold(), b.hold());
        a.grow(10).unwrap();
        assert!(!a.poll_dropped(&mut Context::from_waker(&waker)));
        c.grow(5).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(a.poll_dropped(&mut Context::from_waker(&waker)));
    }
}
