//! Test seams of the durable store: make commits fail, or run a hook (which may block)
//! before each commit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use mesh_advert::StoreError;

type Hook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
pub(crate) struct Seams {
    fail: AtomicBool,
    hook: Mutex<Option<Hook>>,
}

impl Seams {
    pub(crate) fn before_commit(&self) -> Result<(), StoreError> {
        if let Some(hook) = super::lock(&self.hook).as_ref() {
            hook();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Storage("injected commit failure".into()));
        }
        Ok(())
    }
}

impl super::DurableStore {
    /// Makes every commit fail (or not).
    pub(crate) fn fail_commits(&self, fail: bool) {
        self.seams.fail.store(fail, Ordering::SeqCst);
    }

    /// Runs `hook` before every commit, with the writer's turn held and no memory lock.
    pub(crate) fn before_commit(&self, hook: impl Fn() + Send + Sync + 'static) {
        *super::lock(&self.seams.hook) = Some(Box::new(hook));
    }
}
