//! Agents' heartbeats, written to the store in batches.
//!
//! An Agent repeats its registration as its heartbeat (every 5 s by
//! default). Written one by one, 30 000 hosts would be thousands of write
//! transactions a second, each waiting for the database's one writer
//! (SQLite) or taking its host's row lock (PostgreSQL) between an accept's
//! commits. A registration that repeats what this Manager last stored for
//! the host is instead answered at once and its time kept here; the
//! times are written in one transaction every [`FLUSH_EVERY`]. A new host,
//! a changed one, or one not fully registered for [`REFRESH_AFTER`] is
//! registered in full at once ([`Heartbeats::register`]): the full
//! registrations that arrive while one is being written are written
//! together next, in one transaction (a group commit), so a domain of
//! thousands of hosts coming up at once is not thousands of transactions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neptune_store::{HostRecord, HostState, Store};
use tokio::sync::oneshot;

use crate::error::{ApiError, ApiResult};
use neptune_types::{DatacenterId, HostId};

/// How often kept heartbeats are written. Far below the host silence that
/// marks a host unreachable (15 s by default).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A host is registered in full again after this long, so the store
/// catches up should another Manager have changed it meanwhile.
pub const REFRESH_AFTER: Duration = Duration::from_secs(600);

/// The most full registrations written in one transaction.
pub const MAX_BATCH: usize = 512;

/// What a registration says of a host; equal ones only prove it alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub datacenter_id: DatacenterId,
    pub agent_url: String,
    pub cpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    pub vm_slots: i64,
    pub uplink_mbps: i64,
}

impl Registration {
    pub fn of(host: &HostRecord) -> Registration {
        Registration {
            datacenter_id: host.datacenter_id,
            agent_url: host.agent_url.clone(),
            cpus: host.cpus,
            ram_mib: host.ram_mib,
            disk_mib: host.disk_mib,
            vm_slots: host.vm_slots,
            uplink_mbps: host.uplink_mbps,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Hosts as last fully registered here, by name, and when.
    known: HashMap<String, (HostRecord, Instant)>,
    /// Heartbeats not yet written: host and time (ms).
    pending: HashMap<HostId, i64>,
    /// Full registrations waiting to be written, and who waits for each.
    waiting: Vec<Waiting>,
    /// Whether a writer is writing them.
    writing: bool,
}

type Waiting = (
    HostRecord,
    oneshot::Sender<neptune_store::Result<HostRecord>>,
);

#[derive(Debug, Default)]
pub struct Heartbeats {
    inner: Mutex<Inner>,
    /// Set once [`Heartbeats::flush_forever`] runs: until then every
    /// registration is written at once.
    flushing: AtomicBool,
}

impl Heartbeats {
    /// The host as last registered, if `registration` only repeats it:
    /// its heartbeat at `now` is kept for the next flush.
    pub fn repeat(&self, name: &str, registration: &Registration, now: i64) -> Option<HostRecord> {
        if !self.flushing.load(Ordering::Relaxed) {
            return None;
        }
        let mut inner = self.inner.lock().ok()?;
        let (host, at) = inner.known.get(name)?;
        if Registration::of(host) != *registration || at.elapsed() >= REFRESH_AFTER {
            return None;
        }
        let mut host = host.clone();
        host.state = HostState::Ready;
        host.last_seen = now;
        let seen = inner.pending.entry(host.id).or_insert(now);
        *seen = (*seen).max(now);
        Some(host)
    }

    /// Registers `host` in full: with the registrations that arrive while
    /// another batch is written, in one transaction. The writer runs as a
    /// task of its own, so a caller that goes away (a dropped request)
    /// never strands the others.
    pub async fn register(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        host: HostRecord,
    ) -> ApiResult<HostRecord> {
        let (done, answer) = oneshot::channel();
        let lead = {
            let mut inner = self.inner.lock().map_err(|_| poisoned())?;
            inner.waiting.push((host, done));
            !std::mem::replace(&mut inner.writing, true)
        };
        if lead {
            let beats = self.clone();
            tokio::spawn(async move { beats.write_waiting(store.as_ref()).await });
        }
        Ok(answer.await.map_err(|_| poisoned())??)
    }

    /// Writes waiting registrations, a batch at a time, until none waits.
    async fn write_waiting(&self, store: &dyn Store) {
        loop {
            let batch: Vec<Waiting> = match self.inner.lock() {
                Ok(mut inner) => {
                    if inner.waiting.is_empty() {
                        inner.writing = false;
                        return;
                    }
                    let n = inner.waiting.len().min(MAX_BATCH);
                    inner.waiting.drain(..n).collect()
                }
                Err(_) => return,
            };
            let hosts: Vec<HostRecord> = batch.iter().map(|(h, _)| h.clone()).collect();
            match store.upsert_hosts(&hosts).await {
                Ok(stored) if stored.len() == batch.len() => {
                    for ((_, done), host) in batch.into_iter().zip(stored) {
                        self.registered(&host);
                        let _ = done.send(Ok(host));
                    }
                }
                // One refused registration must not fail the others:
                // each is written alone and gets its own answer.
                _ => {
                    for (host, done) in batch {
                        let stored = store.upsert_host(&host).await;
                        if let Ok(host) = &stored {
                            self.registered(host);
                        }
                        let _ = done.send(stored);
                    }
                }
            }
        }
    }

    /// `host` was registered in full (and its heartbeat written with it).
    pub fn registered(&self, host: &HostRecord) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.pending.remove(&host.id);
            inner
                .known
                .insert(host.name.clone(), (host.clone(), Instant::now()));
        }
    }

    /// Writes the kept heartbeats; those that fail are kept for the next try.
    pub async fn flush(&self, store: &dyn Store) -> neptune_store::Result<u64> {
        let beats: Vec<(HostId, i64)> = match self.inner.lock() {
            Ok(mut inner) => inner.pending.drain().collect(),
            Err(_) => return Ok(0),
        };
        if beats.is_empty() {
            return Ok(0);
        }
        match store.host_heartbeats(&beats).await {
            Ok(n) => Ok(n),
            Err(e) => {
                if let Ok(mut inner) = self.inner.lock() {
                    for (id, seen) in beats {
                        let kept = inner.pending.entry(id).or_insert(seen);
                        *kept = (*kept).max(seen);
                    }
                }
                Err(e)
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`], for ever.
    pub async fn flush_forever(&self, store: std::sync::Arc<dyn Store>) {
        self.flushing.store(true, Ordering::Relaxed);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tick.tick().await;
            if let Err(err) = self.flush(store.as_ref()).await {
                tracing::warn!(error = %err, "writing heartbeats");
            }
        }
    }
}

/// The registration writer's state was poisoned by a panic, or it
/// dropped an answer.
fn poisoned() -> ApiError {
    ApiError::Internal(anyhow::anyhow!("the host registration writer stopped"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use neptune_store::{DatacenterRecord, HostUsage};
    use uuid::Uuid;

    use super::*;

    fn host(dc: DatacenterId) -> HostRecord {
        HostRecord {
            id: Uuid::new_v4().into(),
            datacenter_id: dc,
            name: "h1".into(),
            agent_url: "http://127.0.0.1:1".into(),
            cpus: 8,
            ram_mib: 8192,
            disk_mib: 1 << 20,
            vm_slots: 4,
            uplink_mbps: 0,
            state: HostState::Ready,
            last_seen: 1000,
            used: HostUsage::default(),
        }
    }

    /// A store in a temporary directory, with one datacenter.
    async fn store_with_datacenter() -> (tempfile::TempDir, Arc<dyn Store>, DatacenterRecord) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            neptune_store::connect(&format!("sqlite://{}", dir.path().join("s.db").display()))
                .await
                .unwrap();
        let dc = DatacenterRecord {
            id: Uuid::new_v4().into(),
            name: "dc".into(),
            created_at: 0,
            home_pools: vec![],
            public_gateway: None,
        };
        store.create_datacenter(&dc).await.unwrap();
        (dir, store, dc)
    }

    /// Registrations that arrive together are written together; one the
    /// database refuses fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_registrations_are_group_committed() {
        let (_dir, store, dc) = store_with_datacenter().await;
        let beats = Arc::new(Heartbeats::default());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let (beats, store) = (beats.clone(), store.clone());
            let mut h = host(dc.id);
            h.name = format!("h{i}");
            // The database refuses a host without CPUs.
            h.cpus = if i == 150 { 0 } else { 8 };
            tasks.spawn(async move { (i, beats.register(store, h).await) });
        }
        let mut stored = 0;
        while let Some(done) = tasks.join_next().await {
            let (i, answer) = done.unwrap();
            match answer {
                Ok(h) => {
                    assert_eq!(h.name, format!("h{i}"));
                    stored += 1;
                }
                Err(_) => assert_eq!(i, 150),
            }
        }
        assert_eq!(stored, 299);
        assert_eq!(store.list_hosts().await.unwrap().len(), 299);
        // Each is known as registered: its next heartbeat is a repeat.
        beats.flushing.store(true, Ordering::Relaxed);
        let again = store.host_by_name("h7").await.unwrap();
        assert!(beats
            .repeat("h7", &Registration::of(&again), 5000)
            .is_some());
        assert!(!beats.inner.lock().unwrap().writing);
    }

    /// Repeats are kept and written in one batch; a changed registration,
    /// an unknown host, or a buffer not yet flushing go to the store.
    #[tokio::test]
    async fn repeated_registrations_are_written_in_batches() {
        let (_dir, store, dc) = store_with_datacenter().await;
        let stored = store.upsert_host(&host(dc.id)).await.unwrap();
        let beats = Heartbeats::default();
        let same = Registration::of(&stored);
        // Not flushing yet: nothing is kept.
        beats.registered(&stored);
        assert!(beats.repeat("h1", &same, 2000).is_none());
        beats.flushing.store(true, Ordering::Relaxed);
        let answered = beats.repeat("h1", &same, 2000).unwrap();
        assert_eq!((answered.id, answered.last_seen), (stored.id, 2000));
        assert!(beats.repeat("h1", &same, 1500).is_some());
        assert!(beats.repeat("h2", &same, 2000).is_none());
        let moved = Registration {
            agent_url: "http://127.0.0.1:2".into(),
            ..same.clone()
        };
        assert!(beats.repeat("h1", &moved, 2000).is_none());
        // Unreachable in the store until the flush writes the latest beat.
        assert_eq!(store.mark_unreachable(1500).await.unwrap(), 1);
        assert_eq!(beats.flush(store.as_ref()).await.unwrap(), 1);
        let now = &store.list_hosts().await.unwrap()[0];
        assert_eq!((now.state, now.last_seen), (HostState::Ready, 2000));
        assert_eq!(beats.flush(store.as_ref()).await.unwrap(), 0);
    }
}
