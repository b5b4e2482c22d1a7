//! Handle tables: every object the driver hands out (contexts, streams, events, modules…)
//! is an id in a table, never a pointer the caller could forge, so a stale or foreign handle
//! is an `INVALID_HANDLE` error instead of a wild dereference.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Objects of one kind, keyed by handle value.
pub struct Registry<T> {
    next: AtomicUsize,
    items: Mutex<Option<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    /// A table whose handles start at `base` (distinct per kind, so kinds cannot be mixed up).
    pub const fn new(base: usize) -> Registry<T> {
        Registry {
            next: AtomicUsize::new(base),
            items: Mutex::new(None),
        }
    }

    fn items(&self) -> MutexGuard<'_, Option<HashMap<usize, Arc<T>>>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `item` and returns its handle (never 0, 1 or 2, the special stream values).
    pub fn insert(&self, item: T) -> (usize, Arc<T>) {
        let handle = self.next.fetch_add(16, Ordering::Relaxed);
        let item = Arc::new(item);
        self.items()
            .get_or_insert_with(HashMap::new)
            .insert(handle, item.clone());
        (handle, item)
    }

    /// The object behind `handle`.
    pub fn get(&self, handle: usize) -> Option<Arc<T>> {
        self.items().as_ref()?.get(&handle).cloned()
    }

    /// Removes and returns the object behind `handle`.
    pub fn remove(&self, handle: usize) -> Option<Arc<T>> {
        self.items().as_mut()?.remove(&handle)
    }

    /// Every live object.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.items()
            .as_ref()
            .map(|items| items.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_and_removable() {
        let registry: Registry<u32> = Registry::new(0x1000);
        let (a, _) = registry.insert(1);
        let (b, _) = registry.insert(2);
        assert_ne!(a, b);
        assert!(a > 2 && b > 2);
        assert_eq!(registry.get(b).as_deref(), Some(&2));
        assert_eq!(registry.remove(a).as_deref(), Some(&1));
        assert!(registry.get(a).is_none());
        assert_eq!(registry.all().len(), 1);
    }
}
