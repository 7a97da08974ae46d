// Copyright 2020 Sigma Prime Pty Ltd.
//
// Permission is hereby granted, free of charge, to any person obtaining a
// copy of this software and associated documentation files (the "Software"),
// to deal in the Software without restriction, including without limitation
// the rights to use, copy, modify, merge, publish, distribute, sublicense,
// and/or sell copies of the Software, and to permit persons to whom the
// Software is furnished to do so, subject to the following conditions:
//
// The above copyright notice and this permission notice shall be included in
// all copies or substantial portions of the Software.
//
// THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
// OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
// FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
// AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
// LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
// FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
// DEALINGS IN THE SOFTWARE.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex, atomic::AtomicUsize},
    task::{Context, Poll, Waker},
};

use crate::{MessageId, types::RpcOut};

const CONTROL_MSGS_LIMIT: usize = 20_000;

/// Patched for libmesh: bounds on the bytes of the low-priority queues (publish,
/// forward, IHAVE, IWANT), which upstream bounded by count alone (5,000 messages of up to
/// `max_transmit_size` each, 312 MiB at 64 KiB, for each peer; a peer that reads nothing
/// and asks with IWANT for cached messages filled its own). One per behaviour, shared by
/// the queues of all its peers.
#[derive(Debug, Clone)]
pub(crate) struct QueueBytes {
    /// Bytes queued for all peers together.
    total: Arc<AtomicUsize>,
    /// Queues that count (one per connected peer).
    queues: Arc<AtomicUsize>,
    /// Most bytes queued for one peer (`None`: unbounded, as upstream).
    pub(crate) per_peer: Option<usize>,
    /// Most bytes queued for all peers together, beyond which a peer holding more than
    /// its share takes no more.
    pub(crate) all: Option<usize>,
    /// What a peer may hold whatever the others hold, at least (its share is `all`
    /// divided among the queues, when that is more).
    pub(crate) free: usize,
}

impl Default for QueueBytes {
    fn default() -> Self {
        QueueBytes {
            total: Arc::new(AtomicUsize::new(0)),
            queues: Arc::new(AtomicUsize::new(0)),
            per_peer: None,
            all: None,
            free: 0,
        }
    }
}

impl QueueBytes {
    /// Bytes queued for all peers together.
    pub(crate) fn total(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a peer holding `held` bytes may take `more`.
    fn room(&self, held: usize, more: usize) -> bool {
        let after = held.saturating_add(more);
        if held == 0 {
            // One message at least, whatever its size.
            return true;
        }
        if self.per_peer.is_some_and(|max| after > max) {
            return false;
        }
        let Some(all) = self.all else {
            return true;
        };
        // A peer within its share of `all` is not held back by peers beyond theirs
        // (a few silent peers filling `all` would have every busy honest peer's
        // messages refused, each refusal a slow-peer penalty).
        let queues = self.queues.load(std::sync::atomic::Ordering::Relaxed).max(1);
        after <= self.free.max(all / queues) || self.total().saturating_add(more) <= all
    }
}

/// Patched for libmesh: about the bytes `rpc` takes in a queue (the message's data,
/// signature, key and topic, or the ids it names, and some framing).
pub(crate) fn queued_bytes(rpc: &RpcOut) -> usize {
    const FRAMING: usize = 64;
    match rpc {
        RpcOut::Publish { message, .. } => {
            message.data.len()
                + message.signature.as_ref().map_or(0, Vec::len)
                + message.key.as_ref().map_or(0, Vec::len)
                + message.topic.as_str().len()
                + FRAMING
        }
        RpcOut::IHave(i) => {
            i.message_ids.iter().map(|m| m.0.len() + 2).sum::<usize>()
                + i.topic_hash.as_str().len()
                + FRAMING
        }
        RpcOut::IWant(i) => i.message_ids.iter().map(|m| m.0.len() + 2).sum::<usize>() + FRAMING,
        _ => FRAMING,
    }
}

/// An async priority queue used to dispatch messages from the `NetworkBehaviour`
/// Provides a clean abstraction over high-priority (unbounded), control (bounded),
/// and non priority (bounded) message queues.
#[derive(Debug)]
pub(crate) struct Queue {
    /// High-priority unbounded queue (Subscribe, Unsubscribe)
    pub(crate) priority: Shared,
    /// Control messages bounded queue (Graft, Prune, IDontWant)
    pub(crate) control: Shared,
    /// Low-priority bounded queue (Publish, Forward, IHave, IWant)
    pub(crate) non_priority: Shared,
    /// The id of the current reference of the counter.
    pub(crate) id: usize,
    /// The total number of references for the queue.
    pub(crate) count: Arc<AtomicUsize>,
}

impl Queue {
    /// Create a new `Queue` with `capacity` (patched for libmesh: and the low-priority
    /// queue's `bytes`).
    pub(crate) fn new(capacity: usize, bytes: QueueBytes) -> Self {
        let mut non_priority = Shared::with_capacity(capacity);
        {
            let mut inner = non_priority.inner.lock().expect("lock to not be poisoned");
            inner.total = Some(bytes.total.clone());
            inner.queues = Some(bytes.queues.clone());
        }
        bytes
            .queues
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        non_priority.bytes = Some(bytes);
        Self {
            priority: Shared::new(),
            control: Shared::with_capacity(CONTROL_MSGS_LIMIT),
            non_priority,
            id: 1,
            count: Arc::new(AtomicUsize::new(1)),
        }
    }

    /// Try to push a message to the Queue, return Err if the queue is full,
    /// which will only happen for control and non priority messages.
    pub(crate) fn try_push(&mut self, message: RpcOut) -> Result<(), Box<RpcOut>> {
        match message {
            RpcOut::Extensions(_)
            | RpcOut::Subscribe { .. }
            | RpcOut::SubscribeMany(_)
            | RpcOut::Unsubscribe(_) => {
                self.priority
                    .try_push(message)
                    .expect("Shared is unbounded");
                Ok(())
            }
            RpcOut::Graft(_) | RpcOut::Prune(_) | RpcOut::IDontWant(_) => {
                self.control.try_push(message)
            }
            RpcOut::Publish { .. }
            | RpcOut::IHave(_)
            | RpcOut::TestExtension
            | RpcOut::IWant(_) => self.non_priority.try_push(message),
            #[cfg(feature = "partial-messages")]
            RpcOut::PartialMessage(_) => self.non_priority.try_push(message),
        }
    }

    /// Remove pending low priority Publish and Forward messages.
    /// Returns the number of messages removed.
    pub(crate) fn remove_data_messages(&mut self, message_ids: &[MessageId]) -> usize {
        if message_ids.is_empty() {
            return 0;
        }

        let mut count = 0;
        self.non_priority.retain(|message| match message {
            RpcOut::Publish { message_id, .. } if message_ids.contains(message_id) => {
                count += 1;
                false
            }
            _ => true,
        });
        count
    }

    /// Pop an element from the queue.
    pub(crate) fn poll_pop(&mut self, cx: &mut Context) -> Poll<RpcOut> {
        // First we try the priority messages.
        if let Poll::Ready(rpc) = Pin::new(&mut self.priority).poll_pop(cx) {
            return Poll::Ready(rpc);
        }

        // Then we try the control messages.
        if let Poll::Ready(rpc) = Pin::new(&mut self.control).poll_pop(cx) {
            return Poll::Ready(rpc);
        }

        // Finally we try the non priority messages
        if let Poll::Ready(rpc) = Pin::new(&mut self.non_priority).poll_pop(cx) {
            return Poll::Ready(rpc);
        }

        Poll::Pending
    }

    /// Check if the queue is empty.
    pub(crate) fn is_empty(&self) -> bool {
        if !self.priority.is_empty() {
            return false;
        }

        if !self.control.is_empty() {
            return false;
        }

        if !self.non_priority.is_empty() {
            return false;
        }

        true
    }

    /// Returns the length of the priority queue.
    #[cfg(feature = "metrics")]
    pub(crate) fn priority_len(&self) -> usize {
        self.priority.len() + self.control.len()
    }

    /// Returns the length of the non priority queue.
    #[cfg(feature = "metrics")]
    pub(crate) fn non_priority_len(&self) -> usize {
        self.non_priority.len()
    }

    /// Attempts to pop a message from the queue.
    /// returns None if the queue is empty.
    #[cfg(test)]
    pub(crate) fn try_pop(&mut self) -> Option<RpcOut> {
        // Try priority first
        self.priority
            .try_pop()
            // Then control messages
            .or_else(|| self.control.try_pop())
            // Finally non priority
            .or_else(|| self.non_priority.try_pop())
    }
}

impl Clone for Queue {
    fn clone(&self) -> Self {
        let new_id = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self {
            priority: Shared {
                inner: self.priority.inner.clone(),
                capacity: self.priority.capacity,
                id: new_id,
                bytes: None,
            },
            control: Shared {
                inner: self.control.inner.clone(),
                capacity: self.control.capacity,
                id: new_id,
                bytes: None,
            },
            non_priority: Shared {
                inner: self.non_priority.inner.clone(),
                capacity: self.non_priority.capacity,
                id: new_id,
                bytes: self.non_priority.bytes.clone(),
            },
            id: self.id,
            count: self.count.clone(),
        }
    }
}

/// The internal shared part of the queue,
/// that allows for shallow copies of the queue among each connection of the remote.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Arc<Mutex<SharedInner>>,
    capacity: Option<usize>,
    id: usize,
    /// Patched for libmesh: the bytes bound, for the low-priority queue.
    bytes: Option<QueueBytes>,
}

impl Shared {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(SharedInner {
                queue: VecDeque::new(),
                pending_pops: Default::default(),
                held: 0,
                total: None,
                queues: None,
            })),
            capacity: Some(capacity),
            id: 1,
            bytes: None,
        }
    }

    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(SharedInner {
                queue: VecDeque::new(),
                pending_pops: Default::default(),
                held: 0,
                total: None,
                queues: None,
            })),
            capacity: None,
            id: 1,
            bytes: None,
        }
    }

    /// Pop an element from the queue.
    pub(crate) fn poll_pop(self: std::pin::Pin<&mut Self>, cx: &mut Context) -> Poll<RpcOut> {
        let mut guard = self.inner.lock().expect("lock to not be poisoned");
        match guard.queue.pop_front() {
            Some(t) => {
                if let Some(bytes) = &self.bytes {
                    let n = queued_bytes(&t);
                    guard.held = guard.held.saturating_sub(n);
                    bytes.total.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
                }
                Poll::Ready(t)
            }
            None => {
                guard
                    .pending_pops
                    .entry(self.id)
                    .or_insert(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    pub(crate) fn try_push(&mut self, message: RpcOut) -> Result<(), Box<RpcOut>> {
        let mut guard = self.inner.lock().expect("lock to not be poisoned");
        if self
            .capacity
            .is_some_and(|capacity| guard.queue.len() >= capacity)
        {
            return Err(Box::new(message));
        }
        // Patched for libmesh: and by bytes (see `QueueBytes`).
        if let Some(bytes) = &self.bytes {
            let n = queued_bytes(&message);
            if !bytes.room(guard.held, n) {
                return Err(Box::new(message));
            }
            guard.held += n;
            bytes.total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }

        guard.queue.push_back(message);
        // Wake pending registered pops.
        for (_, s) in guard.pending_pops.drain() {
            s.wake();
        }

        Ok(())
    }

    /// Retain only the elements specified by the predicate.
    /// In other words, remove all elements e for which f(&e) returns false. The elements are
    /// visited in unsorted (and unspecified) order. Returns the cleared messages.
    pub(crate) fn retain<F: FnMut(&RpcOut) -> bool>(&mut self, mut f: F) {
        let mut shared = self.inner.lock().expect("lock to not be poisoned");
        // Patched for libmesh: what goes leaves the byte counts.
        let mut gone = 0;
        let counted = self.bytes.is_some();
        shared.queue.retain(|m| {
            let keep = f(m);
            if !keep && counted {
                gone += queued_bytes(m);
            }
            keep
        });
        if let Some(bytes) = &self.bytes {
            shared.held = shared.held.saturating_sub(gone);
            bytes.total.fetch_sub(gone, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Check if the queue is empty.
    pub(crate) fn is_empty(&self) -> bool {
        let guard = self.inner.lock().expect("lock to not be poisoned");
        guard.queue.len() == 0
    }

    /// Returns the length of the queue.
    #[cfg(feature = "metrics")]
    pub(crate) fn len(&self) -> usize {
        let guard = self.inner.lock().expect("lock to not be poisoned");
        guard.queue.len()
    }

    /// Attempts to pop an message from the queue.
    /// returns None if the queue is empty.
    #[cfg(test)]
    pub(crate) fn try_pop(&mut self) -> Option<RpcOut> {
        let mut guard = self.inner.lock().expect("lock to not be poisoned");
        let t = guard.queue.pop_front();
        if let (Some(t), Some(bytes)) = (&t, &self.bytes) {
            let n = queued_bytes(t);
            guard.held = guard.held.saturating_sub(n);
            bytes.total.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        }
        t
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut guard = self.inner.lock().expect("lock to not be poisoned");
        guard.pending_pops.remove(&self.id);
    }
}

impl Drop for SharedInner {
    /// Patched for libmesh: a queue gone (its peer's last holder dropped) gives its
    /// bytes back.
    fn drop(&mut self) {
        if let Some(total) = &self.total {
            total.fetch_sub(self.held, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(queues) = &self.queues {
            queues.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The shared stated by the `NetworkBehaviour`s and the `ConnectionHandler`s.
#[derive(Debug)]
struct SharedInner {
    queue: VecDeque<RpcOut>,
    pending_pops: HashMap<usize, Waker>,
    /// Patched for libmesh: the bytes queued (counted only with a bytes bound), and the
    /// count of all queues they are part of.
    held: usize,
    total: Option<Arc<AtomicUsize>>,
    queues: Option<Arc<AtomicUsize>>,
}
