//! The writers' turnstile of the durable store (see its module docs).

use std::sync::{Condvar, Mutex, PoisonError};

use super::lock;

/// Writers served in arrival order: a writer waits at most for those that came first.
#[derive(Default)]
pub(super) struct Turnstile {
    /// (next ticket to hand out, ticket being served).
    tickets: Mutex<(u64, u64)>,
    served: Condvar,
}

pub(super) struct Turn<'a>(&'a Turnstile);

impl Turnstile {
    pub(super) fn enter(&self) -> Turn<'_> {
        self.wait_for(self.ticket())
    }

    /// Takes a place in the queue.
    pub(super) fn ticket(&self) -> u64 {
        let mut t = lock(&self.tickets);
        let mine = t.0;
        t.0 = t.0.wrapping_add(1);
        mine
    }

    /// Waits until `mine` is served.
    pub(super) fn wait_for(&self, mine: u64) -> Turn<'_> {
        let mut t = lock(&self.tickets);
        while t.1 != mine {
            t = self.served.wait(t).unwrap_or_else(PoisonError::into_inner);
        }
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.0.tickets);
        t.1 = t.1.wrapping_add(1);
        drop(t);
        self.0.served.notify_all();
    }
}
