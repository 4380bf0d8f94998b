//! The live moves an Agent drives from its host. A move takes seconds to
//! minutes, longer than a request should: `POST /v1/vms/{name}/migrate`
//! starts it on a task of its own and answers at once, and the Manager
//! follows it with `GET /v1/vms/{name}/migration`. Asking again for a move
//! that runs, or that succeeded while the VM is not here, gives that move
//! (the Manager's step may repeat); one that failed, or that succeeded
//! before the VM came back here (a VI moved away and home again), is
//! started anew.
//!
//! An Agent that restarts forgets its moves; the move it was driving was
//! killed with it, and libvirt leaves the VM running here: the Manager,
//! told "not found", starts it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neptune_hypervisor::{Hypervisor, Incoming, MigrationProgress};

use crate::api::{ErrorBody, Migration, MigrationState};

/// How long an ended move is remembered.
const KEEP_ENDED: Duration = Duration::from_secs(3600);

/// The most moves remembered: a host runs tens of VMs, and ended moves
/// are forgotten first.
const MAX_KEPT: usize = 4096;

#[derive(Debug)]
struct Entry {
    status: Migration,
    ended: Option<Instant>,
}

/// The moves of this host's VMs, by VM name, and a signal of every change
/// (a move's progress or its end) for the callers waiting for one.
#[derive(Debug, Default)]
pub(crate) struct Migrations {
    moves: Mutex<HashMap<String, Entry>>,
    changed: tokio::sync::Notify,
}

impl Migrations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.moves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last move of `vm`, if remembered.
    pub(crate) fn get(&self, vm: &str) -> Option<Migration> {
        self.lock().get(vm).map(|e| e.status.clone())
    }

    /// The last move of `vm`; while it runs, not before it changes
    /// (progress or end) or `wait` passes.
    pub(crate) async fn get_changed(&self, vm: &str, wait: Duration) -> Option<Migration> {
        let changed = self.changed.notified();
        tokio::pin!(changed);
        // Registered before the read: a change after it wakes this call.
        changed.as_mut().enable();
        let now = self.get(vm)?;
        if now.state != MigrationState::Running || wait.is_zero() {
            return Some(now);
        }
        let _ = tokio::time::timeout(wait, changed).await;
        self.get(vm)
    }

    /// Starts moving `vm` to `to` unless a move of it runs, or succeeded
    /// and the VM is not `here` (on this host) again; that move's status.
    pub(crate) fn start(
        self: &Arc<Self>,
        hypervisor: Arc<dyn Hypervisor>,
        vm: &str,
        here: bool,
        to: Incoming,
        refusal: fn(neptune_hypervisor::HypervisorError) -> ErrorBody,
    ) -> Migration {
        let mut all = self.lock();
        if let Some(e) = all.get(vm) {
            match e.status.state {
                MigrationState::Running => return e.status.clone(),
                MigrationState::Succeeded if !here => return e.status.clone(),
                MigrationState::Succeeded | MigrationState::Failed => {}
            }
        }
        let now = Instant::now();
        all.retain(|_, e| e.ended.is_none_or(|t| now.duration_since(t) < KEEP_ENDED));
        if all.len() >= MAX_KEPT {
            all.retain(|_, e| e.ended.is_none());
        }
        let status = Migration {
            vm: vm.to_owned(),
            state: MigrationState::Running,
            progress: MigrationProgress::default(),
            report: None,
            error: None,
        };
        all.insert(
            vm.to_owned(),
            Entry {
                status: status.clone(),
                ended: None,
            },
        );
        drop(all);
        let this = Arc::clone(self);
        let name = vm.to_owned();
        tokio::spawn(async move {
            let watcher = Arc::clone(&this);
            let watched = name.clone();
            let progress = move |p: MigrationProgress| {
                if let Some(e) = watcher.lock().get_mut(&watched) {
                    e.status.progress = p;
                }
                watcher.changed.notify_waiters();
            };
            let result = hypervisor.migrate(&name, &to, &progress).await;
            let mut all = this.lock();
            let Some(e) = all.get_mut(&name) else {
                return;
            };
            e.ended = Some(Instant::now());
            match result {
                Ok(report) => {
                    e.status.state = MigrationState::Succeeded;
                    e.status.report = Some(report);
                }
                Err(err) => {
                    tracing::warn!(vm = %name, error = %err, "live move failed");
                    e.status.state = MigrationState::Failed;
                    e.status.error = Some(refusal(err));
                }
            }
            drop(all);
            this.changed.notify_waiters();
        });
        status
    }
}
