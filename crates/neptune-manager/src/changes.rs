//! Wake-ups for readers waiting for a VI to change: the long-polls of its
//! detail (`GET /api/v1/vis/{id}?wait_ms=N`).
//!
//! The writers of this Manager (its job engine, the handlers that change a
//! VI) say which VI they changed once the write is committed; a waiter then
//! reads the VI's revision again at once. A hint is all it is: the store's
//! revision decides whether the VI changed, and a waiter also reads it
//! again every [`RECHECK_EVERY`], which catches what another Manager
//! sharing the database writes. A woken waiter lets the changes of the
//! next [`SETTLE`] come before it reads, so a burst of changes is one
//! answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neptune_types::ViId;
use tokio::sync::Notify;

/// How often a waiter reads its VI's revision again without a hint.
pub const RECHECK_EVERY: Duration = Duration::from_millis(200);

/// How long a waiter woken by a change lets further changes come before
/// it reads the VI: a deploy's batches follow one another within
/// milliseconds on fast hosts, and each would otherwise be one more detail
/// built and sent. Progress is shown at most this much later.
pub const SETTLE: Duration = Duration::from_millis(50);

/// The VIs someone waits for, each with what wakes its waiters.
#[derive(Debug, Default)]
pub struct Changes {
    waited: Mutex<HashMap<ViId, Arc<Notify>>>,
}

impl Changes {
    /// Wakes whoever waits for `vi` to change (nobody: nothing to do).
    pub fn changed(&self, vi: ViId) {
        if let Ok(waited) = self.waited.lock() {
            if let Some(notify) = waited.get(&vi) {
                notify.notify_waiters();
            }
        }
    }

    /// What wakes a waiter for `vi`; the entry goes once its last waiter does.
    pub fn watch(self: &Arc<Self>, vi: ViId) -> Watch {
        let notify = match self.waited.lock() {
            Ok(mut waited) => waited.entry(vi).or_default().clone(),
            // A poisoned map only loses the hints: rechecks still see changes.
            Err(_) => Arc::default(),
        };
        Watch {
            changes: self.clone(),
            vi,
            notify,
        }
    }

    #[cfg(test)]
    fn waited(&self) -> usize {
        self.waited.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// A waiter's registration for one VI.
#[derive(Debug)]
pub struct Watch {
    changes: Arc<Changes>,
    vi: ViId,
    notify: Arc<Notify>,
}

impl Watch {
    /// What wakes this waiter at the next change; create it (and enable
    /// it) before reading the revision, so a change made in between still
    /// wakes it.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut waited) = self.changes.waited.lock() {
            // Ours and the map's: no other waiter holds it.
            if Arc::strong_count(&self.notify) <= 2 {
                waited.remove(&self.vi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_waiters_of_its_vi_only() {
        let changes = Arc::new(Changes::default());
        let (a, b): (ViId, ViId) = (uuid::Uuid::new_v4().into(), uuid::Uuid::new_v4().into());
        let first = changes.watch(a);
        let second = changes.watch(a);
        let other = changes.watch(b);
        assert_eq!(changes.waited(), 2);
        {
            let woken = first.notify().notified();
            let also = second.notify().notified();
            let not = other.notify().notified();
            tokio::pin!(woken, also, not);
            woken.as_mut().enable();
            also.as_mut().enable();
            not.as_mut().enable();
            changes.changed(a);
            tokio::time::timeout(Duration::from_secs(1), woken)
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(1), also)
                .await
                .unwrap();
            assert!(tokio::time::timeout(Duration::from_millis(50), not)
                .await
                .is_err());
        }
        // Entries go with their last waiter.
        drop(first);
        assert_eq!(changes.waited(), 2);
        drop(second);
        assert_eq!(changes.waited(), 1);
        drop(other);
        assert_eq!(changes.waited(), 0);
        // A change nobody waits for is nothing.
        changes.changed(a);
    }
}
