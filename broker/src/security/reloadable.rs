//! A value that SIGHUP replaces while connections read it: [`Reloadable`] holds the current
//! version, and each reader keeps a [`ReloadableCopy`] so that the hot path (an ACL check on every
//! PUBLISH and delivery) costs one atomic load, with the shared lock taken only after a reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

/// A file reloaded on SIGHUP.
pub(super) struct Reloadable<T> {
    /// Bumped after every replacement.
    version: AtomicU64,
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Arc<Reloadable<T>> {
        Arc::new(Reloadable { version: AtomicU64::new(0), current: RwLock::new(Arc::new(value)) })
    }

    /// The current version of the file (takes the lock briefly: for occasional readers).
    pub fn current(&self) -> Arc<T> {
        self.current.read().clone()
    }

    /// Installs `value` and returns the version it replaced.
    pub fn replace(&self, value: T) -> Arc<T> {
        let old = std::mem::replace(&mut *self.current.write(), Arc::new(value));
        self.version.fetch_add(1, Ordering::Release);
        old
    }
}

/// One reader's copy of a [`Reloadable`], refreshed when the file was reloaded. The mutex is the
/// reader's own (the clients of one user on one listener share it, `security/authz.rs`), held
/// only to compare a version and clone an `Arc`; the file's shared lock is not taken.
pub(super) struct ReloadableCopy<T> {
    source: Arc<Reloadable<T>>,
    copy: Mutex<(u64, Arc<T>)>,
}

impl<T> ReloadableCopy<T> {
    pub fn new(source: Arc<Reloadable<T>>) -> ReloadableCopy<T> {
        let version = source.version.load(Ordering::Acquire);
        let copy = Mutex::new((version, source.current()));
        ReloadableCopy { source, copy }
    }

    /// The current version of the file: an atomic load, and the shared lock only after a reload.
    pub fn get(&self) -> Arc<T> {
        let version = self.source.version.load(Ordering::Acquire);
        let mut copy = self.copy.lock();
        if copy.0 != version {
            *copy = (version, self.source.current());
        }
        copy.1.clone()
    }
}
