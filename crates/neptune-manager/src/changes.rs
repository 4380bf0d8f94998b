//! Wake-ups for readers waiting for a VI to change: the long-polls of its
//! detail (`GET /api/v1/vis/{id}?wait_ms=N`).
//!
//! The writers of this Manager (its job engine, the handlers that change a
//! VI) say which VI they changed once the write is committed; a waiter then
//! reads the VI's revision again. A hint is all it is: the store's
//! revision decides whether the VI changed, and a waiter also reads it
//! again every [`RECHECK_EVERY`], which catches what another Manager
//! sharing the database writes.
//!
//! A job's progress ([`Changes::changed`]) comes in bursts: a woken waiter
//! lets the changes of the next [`SETTLE`] come before it reads, so a burst
//! is one answer. A change of the VI's state or of a job's state
//! ([`Changes::changed_state`]) is what a client waits for: it is read at
//! once, and ends a settling already begun.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neptune_types::ViId;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often a waiter reads its VI's revision again without a hint.
pub const RECHECK_EVERY: Duration = Duration::from_millis(200);

/// How long a waiter woken by a job's progress lets further changes come
/// before it reads the VI: a deploy's batches follow one another within
/// milliseconds on fast hosts, and each would otherwise be one more detail
/// built and sent. Progress is shown at most this much later; a change of
/// state is not held back.
pub const SETTLE: Duration = Duration::from_millis(50);

/// The VIs someone waits for, each with what wakes its waiters.
#[derive(Debug, Default)]
pub struct Changes {
    waited: Mutex<HashMap<ViId, Arc<Waited>>>,
}

/// What wakes the waiters of one VI.
#[derive(Debug, Default)]
struct Waited {
    /// Every change.
    any: Notify,
    /// Changes of state, the VI's or its jobs'.
    states: Notify,
    /// How many of those there have been.
    state_changes: AtomicU64,
}

impl Changes {
    /// Wakes whoever waits for `vi` to change (nobody: nothing to do),
    /// after [`SETTLE`]: its job made progress.
    pub fn changed(&self, vi: ViId) {
        if let Some(waited) = self.waited(vi) {
            waited.any.notify_waiters();
        }
    }

    /// Wakes whoever waits for `vi` at once: its state (or its design)
    /// changed, or the state of a job of it did.
    pub fn changed_state(&self, vi: ViId) {
        if let Some(waited) = self.waited(vi) {
            waited.state_changes.fetch_add(1, Ordering::SeqCst);
            waited.states.notify_waiters();
            waited.any.notify_waiters();
        }
    }

    fn waited(&self, vi: ViId) -> Option<Arc<Waited>> {
        self.waited.lock().ok()?.get(&vi).cloned()
    }

    /// What wakes a waiter for `vi`; the entry goes once its last waiter does.
    pub fn watch(self: &Arc<Self>, vi: ViId) -> Watch {
        let waited = match self.waited.lock() {
            Ok(mut waited) => waited.entry(vi).or_default().clone(),
            // A poisoned map only loses the hints: rechecks still see changes.
            Err(_) => Arc::default(),
        };
        Watch {
            changes: self.clone(),
            vi,
            waited,
        }
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.waited.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// A waiter's registration for one VI.
#[derive(Debug)]
pub struct Watch {
    changes: Arc<Changes>,
    vi: ViId,
    waited: Arc<Waited>,
}

impl Watch {
    /// What wakes this waiter at the next change; create it (and enable
    /// it) before reading the revision, so a change made in between still
    /// wakes it.
    pub fn notify(&self) -> &Notify {
        &self.waited.any
    }

    /// How many changes of state there have been while watched: taken
    /// with [`Watch::notify`], and given to [`Watch::settle`].
    pub fn state_changes(&self) -> u64 {
        self.waited.state_changes.load(Ordering::SeqCst)
    }

    /// After a wake-up: lets further progress come for [`SETTLE`] (never
    /// past `deadline`), unless the state changed since `seen` (a count of
    /// [`Watch::state_changes`]) or changes meanwhile.
    pub async fn settle(&self, seen: u64, deadline: Instant) {
        let states = self.waited.states.notified();
        tokio::pin!(states);
        states.as_mut().enable();
        if self.state_changes() != seen {
            return;
        }
        tokio::select! {
            _ = states => {}
            _ = tokio::time::sleep_until((Instant::now() + SETTLE).min(deadline)) => {}
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut waited) = self.changes.waited.lock() {
            // Ours and the map's: no other waiter holds it.
            if Arc::strong_count(&self.waited) <= 2 {
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
        assert_eq!(changes.watched(), 2);
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
        assert_eq!(changes.watched(), 2);
        drop(second);
        assert_eq!(changes.watched(), 1);
        drop(other);
        assert_eq!(changes.watched(), 0);
        // A change nobody waits for is nothing.
        changes.changed(a);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_settles_and_a_change_of_state_does_not() {
        let changes = Arc::new(Changes::default());
        let vi: ViId = uuid::Uuid::new_v4().into();
        let watch = changes.watch(vi);
        let far = Instant::now() + Duration::from_secs(10);

        // Progress alone: the whole settling time.
        let seen = watch.state_changes();
        changes.changed(vi);
        assert_eq!(
            watch.state_changes(),
            seen,
            "progress is no change of state"
        );
        let started = Instant::now();
        watch.settle(seen, far).await;
        assert_eq!(started.elapsed(), SETTLE);

        // Never past the deadline.
        let started = Instant::now();
        watch.settle(seen, started + Duration::from_millis(5)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(5));

        // A change of state before the settling: none at all.
        changes.changed_state(vi);
        assert_eq!(watch.state_changes(), seen + 1);
        let started = Instant::now();
        watch.settle(seen, far).await;
        assert_eq!(started.elapsed(), Duration::ZERO);

        // One during it ends it.
        let seen = watch.state_changes();
        let started = Instant::now();
        let ender = {
            let changes = changes.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                changes.changed_state(vi);
            })
        };
        watch.settle(seen, far).await;
        assert_eq!(started.elapsed(), Duration::from_millis(20));
        ender.await.unwrap();
    }
}
