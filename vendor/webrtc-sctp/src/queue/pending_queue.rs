use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use portable_atomic::{AtomicBool, AtomicUsize};
use tokio::sync::{Mutex, Semaphore};
use util::sync::RwLock;

use crate::chunk::chunk_payload_data::ChunkPayloadData;

// TODO: benchmark performance between multiple Atomic+Mutex vs one Mutex<PendingQueueInternal>

// Some tests push a lot of data before starting to process any data...
#[cfg(test)]
const QUEUE_BYTES_LIMIT: usize = 128 * 1024 * 1024;
/// Maximum size of the pending queue, in bytes.
#[cfg(not(test))]
const QUEUE_BYTES_LIMIT: usize = 128 * 1024;
/// Total user data size, beyond which the packet will be split into chunks. The chunks will be
/// added to the pending queue one by one.
const QUEUE_APPEND_LARGE: usize = (QUEUE_BYTES_LIMIT * 2) / 3;

/// Basic queue for either ordered or unordered chunks.
pub(crate) type PendingBaseQueue = VecDeque<ChunkPayloadData>;

/// A queue for both ordered and unordered chunks.
#[derive(Debug)]
pub(crate) struct PendingQueue {
    // These two fields limit appending bytes to the queue
    // This two step process is necessary because
    // A) We need backpressure which the semaphore applies by limiting the total amount of bytes via the permits
    // B) The chunks of one fragmented message need to be put in direct sequence into the queue which the lock guarantees
    //
    // The semaphore is not inside the lock because the permits need to be returned without needing a lock on the semaphore
    semaphore_lock: Mutex<()>,
    semaphore: Semaphore,

    unordered_queue: RwLock<PendingBaseQueue>,
    ordered_queue: RwLock<PendingBaseQueue>,
    queue_len: AtomicUsize,
    n_bytes: AtomicUsize,
    selected: AtomicBool,
    unordered_is_selected: AtomicBool,
}

impl Default for PendingQueue {
    fn default() -> Self {
        PendingQueue::new()
    }
}

impl PendingQueue {
    pub(crate) fn new() -> Self {
        Self {
            semaphore_lock: Mutex::default(),
            semaphore: Semaphore::new(QUEUE_BYTES_LIMIT),
            unordered_queue: Default::default(),
            ordered_queue: Default::default(),
            queue_len: Default::default(),
            n_bytes: Default::default(),
            selected: Default::default(),
            unordered_is_selected: Default::default(),
        }
    }

    /// Appends a chunk to the back of the pending queue.
    /// Patched for libmesh: `gone` is the stream's `Stream::gone`, looked at under the
    /// queue's lock: a chunk of a stream the association no longer has is dropped (its
    /// room given back), so that nothing written after `remove_stream` goes out.
    pub(crate) async fn push(&self, c: ChunkPayloadData, gone: Option<&AtomicBool>) {
        let user_data_len = c.user_data.len();

        {
            let _sem_lock = self.semaphore_lock.lock().await;
            let permits = self.semaphore.acquire_many(user_data_len as u32).await;
            // unwrap ok because we never close the semaphore unless we have dropped self
            permits.unwrap().forget();

            let mut queue = if c.unordered {
                self.unordered_queue.write()
            } else {
                self.ordered_queue.write()
            };
            if is_gone(gone) {
                self.semaphore.add_permits(user_data_len);
                return;
            }
            queue.push_back(c);
            self.n_bytes.fetch_add(user_data_len, Ordering::SeqCst);
            self.queue_len.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Appends chunks to the back of the pending queue (patched for libmesh: `gone` as
    /// in [`Self::push`]).
    ///
    /// # Panics
    ///
    /// If it's a mix of unordered and ordered chunks.
    pub(crate) async fn append(&self, chunks: Vec<ChunkPayloadData>, gone: Option<&AtomicBool>) {
        if chunks.is_empty() {
            return;
        }

        let total_user_data_len = chunks.iter().fold(0, |acc, c| acc + c.user_data.len());

        if total_user_data_len >= QUEUE_APPEND_LARGE {
            self.append_large(chunks, gone).await
        } else {
            let _sem_lock = self.semaphore_lock.lock().await;
            let permits = self
                .semaphore
                .acquire_many(total_user_data_len as u32)
                .await;
            // unwrap ok because we never close the semaphore unless we have dropped self
            permits.unwrap().forget();
            self.append_unlimited(chunks, total_user_data_len, gone);
        }
    }

    // If this is a very large message we append chunks one by one to allow progress while we are appending
    async fn append_large(&self, chunks: Vec<ChunkPayloadData>, gone: Option<&AtomicBool>) {
        // lock this for the whole duration
        let _sem_lock = self.semaphore_lock.lock().await;

        for chunk in chunks.into_iter() {
            let user_data_len = chunk.user_data.len();
            // Patched for libmesh: a stream gone mid-message takes no more room and
            // queues no more of it; if the part already queued was sent (the queue's
            // choice of this message still set, with nothing left of it), the choice
            // ends, since no continuation will come. This is the only producer while it
            // holds `semaphore_lock`.
            if is_gone(gone) {
                self.drop_rest_of_message(chunk.unordered);
                break;
            }
            let permits = self.semaphore.acquire_many(user_data_len as u32).await;
            // unwrap ok because we never close the semaphore unless we have dropped self
            permits.unwrap().forget();

            let mut queue = if chunk.unordered {
                self.unordered_queue.write()
            } else {
                self.ordered_queue.write()
            };
            if is_gone(gone) {
                self.semaphore.add_permits(user_data_len);
                drop(queue);
                self.drop_rest_of_message(chunk.unordered);
                break;
            }
            queue.push_back(chunk);
            self.n_bytes.fetch_add(user_data_len, Ordering::SeqCst);
            self.queue_len.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Patched for libmesh: the queue's choice of a message of a gone stream ends when
    /// nothing of it is left queued (`append_large`).
    fn drop_rest_of_message(&self, unordered: bool) {
        let queue = if unordered {
            self.unordered_queue.write()
        } else {
            self.ordered_queue.write()
        };
        if self.selected.load(Ordering::SeqCst)
            && self.unordered_is_selected.load(Ordering::SeqCst) == unordered
            && queue.is_empty()
        {
            self.selected.store(false, Ordering::SeqCst);
        }
    }

    /// Assumes that A) enough permits have been acquired and forget from the semaphore and that the semaphore_lock is held
    fn append_unlimited(
        &self,
        chunks: Vec<ChunkPayloadData>,
        total_user_data_len: usize,
        gone: Option<&AtomicBool>,
    ) {
        let chunks_len = chunks.len();
        let unordered = chunks
            .first()
            .expect("chunks to not be empty because of the above check")
            .unordered;
        {
            let mut queue = if unordered {
                self.unordered_queue.write()
            } else {
                self.ordered_queue.write()
            };
            assert!(
                chunks.iter().all(|c| c.unordered == unordered),
                "expected all chunks to be ordered alike"
            );
            if is_gone(gone) {
                self.semaphore.add_permits(total_user_data_len);
                return;
            }
            queue.extend(chunks);
            self.n_bytes
                .fetch_add(total_user_data_len, Ordering::SeqCst);
            self.queue_len.fetch_add(chunks_len, Ordering::SeqCst);
        }
    }

    pub(crate) fn peek(&self) -> Option<ChunkPayloadData> {
        if self.selected.load(Ordering::SeqCst) {
            if self.unordered_is_selected.load(Ordering::SeqCst) {
                let unordered_queue = self.unordered_queue.read();
                return unordered_queue.front().cloned();
            } else {
                let ordered_queue = self.ordered_queue.read();
                return ordered_queue.front().cloned();
            }
        }

        let c = {
            let unordered_queue = self.unordered_queue.read();
            unordered_queue.front().cloned()
        };

        if c.is_some() {
            return c;
        }

        let ordered_queue = self.ordered_queue.read();
        ordered_queue.front().cloned()
    }

    pub(crate) fn pop(
        &self,
        beginning_fragment: bool,
        unordered: bool,
    ) -> Option<ChunkPayloadData> {
        let popped = if self.selected.load(Ordering::SeqCst) {
            let popped = if self.unordered_is_selected.load(Ordering::SeqCst) {
                let mut unordered_queue = self.unordered_queue.write();
                unordered_queue.pop_front()
            } else {
                let mut ordered_queue = self.ordered_queue.write();
                ordered_queue.pop_front()
            };
            if let Some(p) = &popped {
                if p.ending_fragment {
                    self.selected.store(false, Ordering::SeqCst);
                }
            }
            popped
        } else {
            if !beginning_fragment {
                return None;
            }
            if unordered {
                let popped = {
                    let mut unordered_queue = self.unordered_queue.write();
                    unordered_queue.pop_front()
                };
                if let Some(p) = &popped {
                    if !p.ending_fragment {
                        self.selected.store(true, Ordering::SeqCst);
                        self.unordered_is_selected.store(true, Ordering::SeqCst);
                    }
                }
                popped
            } else {
                let popped = {
                    let mut ordered_queue = self.ordered_queue.write();
                    ordered_queue.pop_front()
                };
                if let Some(p) = &popped {
                    if !p.ending_fragment {
                        self.selected.store(true, Ordering::SeqCst);
                        self.unordered_is_selected.store(false, Ordering::SeqCst);
                    }
                }
                popped
            }
        };

        if let Some(p) = &popped {
            let user_data_len = p.user_data.len();
            self.n_bytes.fetch_sub(user_data_len, Ordering::SeqCst);
            self.queue_len.fetch_sub(1, Ordering::SeqCst);
            self.semaphore.add_permits(user_data_len);
        }

        popped
    }

    /// Patched for libmesh: drops every chunk queued for `stream_identifier` (data and
    /// reset marks), for a stream that is no longer registered: the peer has reset it,
    /// and this side's reset goes out with the answer. Upstream sent them after the
    /// reset, as data of a stream that no longer was (see
    /// `AssociationInternal::reset_streams_if_any`). A fragmented message of the stream
    /// under way loses its rest, and the queue's choice of it ends.
    pub(crate) fn remove_stream(&self, stream_identifier: u16) {
        let mut removed_bytes = 0;
        let mut removed = 0;
        for (queue, unordered) in [(&self.ordered_queue, false), (&self.unordered_queue, true)] {
            let mut queue = queue.write();
            if self.selected.load(Ordering::SeqCst)
                && self.unordered_is_selected.load(Ordering::SeqCst) == unordered
                && queue
                    .front()
                    .is_some_and(|c| c.stream_identifier == stream_identifier)
            {
                self.selected.store(false, Ordering::SeqCst);
            }
            queue.retain(|c| {
                let keep = c.stream_identifier != stream_identifier;
                if !keep {
                    removed_bytes += c.user_data.len();
                    removed += 1;
                }
                keep
            });
        }
        if removed > 0 {
            self.n_bytes.fetch_sub(removed_bytes, Ordering::SeqCst);
            self.queue_len.fetch_sub(removed, Ordering::SeqCst);
            self.semaphore.add_permits(removed_bytes);
        }
    }

    pub(crate) fn get_num_bytes(&self) -> usize {
        self.n_bytes.load(Ordering::SeqCst)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue_len.load(Ordering::SeqCst)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Patched for libmesh: whether a stream's `gone` flag is set.
fn is_gone(gone: Option<&AtomicBool>) -> bool {
    gone.is_some_and(|g| g.load(Ordering::SeqCst))
}
