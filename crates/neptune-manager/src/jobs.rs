//! Durable jobs: deploy, suspend, resume and terminate a VI, and save a VM
//! as a template, step by step, every step recorded in the store,
//! idempotent and (where it makes sense) undoable.
//!
//! A job's steps are computed once, when it is created, and stored with it,
//! so a Manager that restarts runs exactly the same steps. `cursor` counts
//! the steps done. Running forward, the step at `cursor` is executed and
//! then `cursor` advances (compare-and-set); a crash between the two repeats
//! the step, which is why every step is idempotent. When a step fails, the
//! job turns to rolling back and undoes the finished steps, last first; an
//! undo that fails leaves the job (and its VI) `failed` for an operator.
//! A lease per Manager keeps two Managers sharing a database from running
//! the same job.

use neptune_types::{DatacenterId, HostId, JobId, UserId, ViId};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use neptune_hypervisor::{BatchOp, BatchOut, Hypervisor, HypervisorError, Nic, VmInfo, VmSpec};
use neptune_lifecycle::{Event, ViState};
use neptune_store::{HostRecord, JobRecord, JobState, Store, StoreError, Transition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::images::NewTemplate;
use crate::now_ms;

/// How the Manager reaches a host's hypervisor: through its Agent in
/// production (see [`crate::agents`]).
#[async_trait]
pub trait HostDirectory: Send + Sync + std::fmt::Debug {
    async fn hypervisor(&self, host: &HostRecord) -> anyhow::Result<Arc<dyn Hypervisor>>;
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Copy the template image to the host as the VM's disk.
    PrepareDisk {
        host: HostId,
        vm: String,
        image: String,
        size_mib: u64,
    },
    /// Create the VM with the node's resources and NICs.
    Define {
        host: HostId,
        spec: VmSpec,
        image: String,
    },
    Start {
        host: HostId,
        vm: String,
    },
    /// Stop and undefine the VM.
    Destroy {
        host: HostId,
        vm: String,
    },
    RemoveDisk {
        host: HostId,
        vm: String,
    },
    /// Wait until the VM's guest says it is ready (its seed's ready line
    /// on its console).
    AwaitReady {
        host: HostId,
        vm: String,
    },
    /// Free the VI's VM slots on its hosts.
    ReleaseHosts,
    /// Save the VM's memory to `state` (in the image repository) and take
    /// it off its host. `spec` is the VM as its host runs it, to put it back.
    Save {
        host: HostId,
        spec: VmSpec,
        state: String,
    },
    /// Copy the VM's disk to `dest` in the image repository.
    ExportDisk {
        host: HostId,
        vm: String,
        dest: String,
    },
    /// Remove a disk that has been exported to `export` (undone by copying
    /// it back).
    DropDisk {
        host: HostId,
        vm: String,
        export: String,
        size_mib: u64,
    },
    /// Define and start the VM from a saved state; with `image`, on the
    /// disk copied from it (the step before made it; asking again returns
    /// its path).
    Restore {
        host: HostId,
        spec: VmSpec,
        state: String,
        image: Option<String>,
    },
    /// Nothing to do: the hosts were reserved with the job. Undone by
    /// releasing them.
    HoldHosts,
    /// Delete a file of the image repository; absent is fine.
    DeleteFile {
        path: String,
    },
    /// Make the directory of a suspended VI's states and disks (undone by
    /// deleting it, so a suspend that rolls back leaves no file behind).
    MakeSavedDir {
        dir: String,
    },
    /// Delete a directory of saved states and disks; absent is fine.
    DeleteSaved {
        dir: String,
    },
    /// Register an exported image as a template.
    RegisterTemplate {
        template: NewTemplate,
    },
    /// Free the VI's addresses (its owned prefixes and, through `covers`,
    /// the counts of the prefixes containing them).
    ReleaseAddresses {
        covers: Vec<(String, String)>,
    },
    /// Deliver a Home Address of the VI at the switch of `datacenter`
    /// (nothing to do where no switch is registered).
    Visit {
        datacenter: DatacenterId,
        address: Ipv4Addr,
        key: u32,
    },
    /// Stop delivering it there.
    Unvisit {
        datacenter: DatacenterId,
        address: Ipv4Addr,
        key: u32,
    },
    /// Make the home switch send a Home Address to the switch of `to`:
    /// bound to its Care-of Address, or unbound when `to` is `home`.
    Route {
        address: Ipv4Addr,
        home: DatacenterId,
        to: DatacenterId,
        from: DatacenterId,
        key: u32,
    },
    /// Widen the host's link networks to their segments' peers: the hosts
    /// a migration moves the VMs' neighbours to (extra peers are harmless;
    /// nothing to undo).
    JoinSegments {
        host: HostId,
        networks: Vec<neptune_hypervisor::NetworkJoin>,
    },
    /// Nothing to do: the target slots of a migration were reserved with
    /// the job. Undone by releasing them.
    HoldMoves,
    /// Free the target slots of a migration.
    ReleaseMoves,
    /// Move the running VM live from host `from` to host `to` (as `spec`
    /// there; `back` is how `from` runs it, to move it back), copying its
    /// disk, then remove its disk on `from`.
    ///
    /// `homes`, the VM's Home Addresses (an entry point's), are routed from
    /// their home switch to the datacenter of `to` as soon as the VM runs
    /// there, before the rest of the VI has moved and before the source's
    /// libvirt has finished with it: that is when the correspondents' packets
    /// must go there. The VI's later route steps repeat it; moving back (the
    /// undo) routes them back the same way.
    ///
    /// A VM with Home Addresses moves in a batch of its own, after the VMs
    /// without: its pause is what correspondents see, and moving with the
    /// others it shares the hosts, the link and the switch-over's work with
    /// them (bench/migration: entry points of 4-VM VIs paused up to 341 ms
    /// at a 30 ms limit, those of 1-VM VIs up to 161 ms).
    MoveVm {
        from: HostId,
        to: HostId,
        spec: VmSpec,
        back: VmSpec,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        homes: Vec<HomeRoute>,
    },
    /// The VMs take their target slots and free the ones they left; the
    /// VI is located in `location` (`None`: home).
    CommitMoves {
        location: Option<DatacenterId>,
    },
    /// Record that the VI's VMs run in `to` (`None`: home), after `from`.
    Locate {
        to: Option<DatacenterId>,
        from: Option<DatacenterId>,
    },
}

/// What a moving VM's Home Address needs at its home switch, made ready
/// before the move (see `Jobs::prepare_homes`).
#[derive(Debug)]
enum HomeUpdate {
    Ready(crate::switching::Prepared),
    /// No switch takes it.
    Nothing,
    /// Preparing it failed: it is tried whole when due.
    Unprepared,
}

/// A Home Address that follows its VM when it moves (see
/// [`Step::MoveVm`]): its home datacenter and its VI's tunnel key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeRoute {
    pub address: Ipv4Addr,
    pub home: DatacenterId,
    pub key: u32,
}

impl Step {
    /// The step as an operation of its host's batch, for the steps one
    /// call per host can carry ([`Hypervisor::batch`]).
    fn batch_op(&self) -> Option<(HostId, BatchOp)> {
        let op = match self {
            Step::PrepareDisk {
                vm,
                image,
                size_mib,
                ..
            } => BatchOp::PrepareDisk {
                vm: vm.clone(),
                template_image: image.clone(),
                size_mib: *size_mib,
            },
            Step::Define { spec, image, .. } => BatchOp::DefineOnDisk {
                spec: spec.clone(),
                template_image: image.clone(),
            },
            Step::Start { vm, .. } => BatchOp::Start { vm: vm.clone() },
            Step::AwaitReady { vm, .. } => BatchOp::Info { vm: vm.clone() },
            Step::Destroy { vm, .. } => BatchOp::Destroy { vm: vm.clone() },
            Step::RemoveDisk { vm, .. } => BatchOp::RemoveDisk { vm: vm.clone() },
            _ => return None,
        };
        let host = match self {
            Step::PrepareDisk { host, .. }
            | Step::Define { host, .. }
            | Step::Start { host, .. }
            | Step::AwaitReady { host, .. }
            | Step::Destroy { host, .. }
            | Step::RemoveDisk { host, .. } => *host,
            _ => return None,
        };
        Some((host, op))
    }

    /// The hosts the step works on.
    pub fn hosts(&self) -> Vec<HostId> {
        match self {
            Step::PrepareDisk { host, .. }
            | Step::Define { host, .. }
            | Step::Start { host, .. }
            | Step::Destroy { host, .. }
            | Step::RemoveDisk { host, .. }
            | Step::AwaitReady { host, .. }
            | Step::Save { host, .. }
            | Step::ExportDisk { host, .. }
            | Step::DropDisk { host, .. }
            | Step::Restore { host, .. }
            | Step::JoinSegments { host, .. } => vec![*host],
            Step::MoveVm { from, to, .. } => vec![*from, *to],
            Step::ReleaseHosts
            | Step::ReleaseAddresses { .. }
            | Step::HoldHosts
            | Step::DeleteFile { .. }
            | Step::MakeSavedDir { .. }
            | Step::DeleteSaved { .. }
            | Step::RegisterTemplate { .. }
            | Step::Visit { .. }
            | Step::Unvisit { .. }
            | Step::Route { .. }
            | Step::HoldMoves
            | Step::ReleaseMoves
            | Step::CommitMoves { .. }
            | Step::Locate { .. } => Vec::new(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Step::PrepareDisk { vm, .. } => format!("copy image for {vm}"),
            Step::Define { spec, .. } => format!("define {}", spec.name),
            Step::Start { vm, .. } => format!("start {vm}"),
            Step::AwaitReady { vm, .. } => format!("wait until {vm} is ready"),
            Step::Destroy { vm, .. } => format!("destroy {vm}"),
            Step::RemoveDisk { vm, .. } => format!("remove disk of {vm}"),
            Step::ReleaseHosts => "release hosts".to_owned(),
            Step::Save { spec, .. } => format!("save {}", spec.name),
            Step::ExportDisk { vm, .. } => format!("export disk of {vm}"),
            Step::DropDisk { vm, .. } => format!("remove disk of {vm}"),
            Step::Restore { spec, .. } => format!("restore {}", spec.name),
            Step::HoldHosts => "reserve hosts".to_owned(),
            Step::DeleteFile { path } => format!("delete {path}"),
            Step::MakeSavedDir { .. } => "make the directory of saved states".to_owned(),
            Step::DeleteSaved { .. } => "delete saved states".to_owned(),
            Step::RegisterTemplate { template } => format!("register template {}", template.name),
            Step::ReleaseAddresses { .. } => "release addresses".to_owned(),
            Step::Visit { address, .. } => format!("deliver {address} here"),
            Step::Unvisit { address, .. } => format!("stop delivering {address}"),
            Step::Route { address, .. } => format!("route {address} from its home switch"),
            Step::JoinSegments { networks, .. } => {
                format!("widen {} link networks to the target hosts", networks.len())
            }
            Step::HoldMoves => "reserve target hosts".to_owned(),
            Step::ReleaseMoves => "release target hosts".to_owned(),
            Step::MoveVm { spec, .. } => format!("move {} live", spec.name),
            Step::CommitMoves { .. } => "commit the move".to_owned(),
            Step::Locate { .. } => "record where the VI runs".to_owned(),
        }
    }

    /// What puts the world back as it was before this step.
    pub fn undo(&self) -> Option<Step> {
        match self {
            Step::PrepareDisk { host, vm, .. } => Some(Step::RemoveDisk {
                host: *host,
                vm: vm.clone(),
            }),
            Step::Define { host, spec, .. } => Some(Step::Destroy {
                host: *host,
                vm: spec.name.clone(),
            }),
            Step::Start { host, vm } => Some(Step::Destroy {
                host: *host,
                vm: vm.clone(),
            }),
            Step::Save { host, spec, state } => Some(Step::Restore {
                host: *host,
                spec: spec.clone(),
                state: state.clone(),
                image: None,
            }),
            Step::ExportDisk { dest, .. } => Some(Step::DeleteFile { path: dest.clone() }),
            Step::DropDisk {
                host,
                vm,
                export,
                size_mib,
            } => Some(Step::PrepareDisk {
                host: *host,
                vm: vm.clone(),
                image: export.clone(),
                size_mib: *size_mib,
            }),
            Step::Restore { host, spec, .. } => Some(Step::Destroy {
                host: *host,
                vm: spec.name.clone(),
            }),
            Step::HoldHosts => Some(Step::ReleaseHosts),
            Step::Visit {
                datacenter,
                address,
                key,
            } => Some(Step::Unvisit {
                datacenter: *datacenter,
                address: *address,
                key: *key,
            }),
            Step::Unvisit {
                datacenter,
                address,
                key,
            } => Some(Step::Visit {
                datacenter: *datacenter,
                address: *address,
                key: *key,
            }),
            Step::Route {
                address,
                home,
                to,
                from,
                key,
            } => Some(Step::Route {
                address: *address,
                home: *home,
                to: *from,
                from: *to,
                key: *key,
            }),
            Step::HoldMoves => Some(Step::ReleaseMoves),
            Step::MoveVm {
                from,
                to,
                spec,
                back,
                homes,
            } => Some(Step::MoveVm {
                from: *to,
                to: *from,
                spec: back.clone(),
                back: spec.clone(),
                homes: homes.clone(),
            }),
            Step::Locate { to, from } => Some(Step::Locate {
                to: *from,
                from: *to,
            }),
            Step::MakeSavedDir { dir } => Some(Step::DeleteSaved { dir: dir.clone() }),
            Step::Destroy { .. }
            | Step::AwaitReady { .. }
            | Step::RemoveDisk { .. }
            | Step::ReleaseHosts
            | Step::ReleaseAddresses { .. }
            | Step::DeleteFile { .. }
            | Step::DeleteSaved { .. }
            | Step::RegisterTemplate { .. }
            | Step::ReleaseMoves
            | Step::JoinSegments { .. }
            | Step::CommitMoves { .. } => None,
        }
    }
}

pub use neptune_api::JobKind;

/// The VI state while a job of `kind` runs (none: the job leaves it alone).
pub fn vi_state_during(kind: JobKind) -> Option<ViState> {
    match kind {
        JobKind::Deploy => Some(ViState::Deploying),
        JobKind::Suspend => Some(ViState::Suspending),
        JobKind::Resume => Some(ViState::Resuming),
        JobKind::Terminate => Some(ViState::Terminating),
        JobKind::Migrate => Some(ViState::Migrating),
        JobKind::SaveTemplate => None,
    }
}

/// Whether a failed step is undone or the job fails at once (terminate
/// only moves forward; it is retried by terminating again).
fn rolls_back(kind: JobKind) -> bool {
    !matches!(kind, JobKind::Terminate)
}

/// Whether a job of `kind` may keep its progress in memory between
/// batches ([`PROGRESS_EVERY`]): a crash then repeats the batches done
/// since the last write, so any run of them must be safe to repeat after
/// the ones that followed. A deploy's (make a disk, define, start, wait)
/// and a terminate's (destroy, remove the disk) are; a suspend's is not (a
/// disk is copied, then removed: the copy repeated finds no disk), nor a
/// resume's, a migration's or a template's, which write after every batch.
fn defers_progress(kind: JobKind) -> bool {
    matches!(kind, JobKind::Deploy | JobKind::Terminate)
}

/// A new job record with its steps, ready for [`Store::start_job`].
pub fn new_job(vi: ViId, kind: JobKind, steps: &[Step]) -> anyhow::Result<JobRecord> {
    let now = now_ms();
    Ok(JobRecord {
        id: Uuid::new_v4().into(),
        vi_id: vi,
        kind: kind.as_str().to_owned(),
        state: JobState::Running,
        steps: serde_json::to_string(steps)?,
        cursor: 0,
        total: i64::try_from(steps.len())?,
        error: None,
        owner: None,
        lease_until: 0,
        created_at: now,
        updated_at: now,
    })
}

/// The name of a VM on its host.
pub fn vm_name(vi: ViId, node: &str) -> String {
    let id = vi.uuid().simple().to_string();
    format!("nt-{}-{node}", &id[..12])
}

/// The host network (bridge) of a virtual link.
pub fn link_network(vi: ViId, link: &str) -> String {
    let id = vi.uuid().simple().to_string();
    format!("nt-{}-{link}", &id[..8])
}

/// Runs jobs. One per Manager; cheap to clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    store: Arc<dyn Store>,
    hosts: Arc<dyn HostDirectory>,
    /// This Manager's identity for job leases: stable across restarts, so a
    /// restarted Manager takes its own jobs back at once.
    owner: String,
    lease: Duration,
    /// How long a step waits for an unreachable host before it fails.
    host_wait: Duration,
    /// How long a guest may take to be ready.
    ready_wait: Duration,
    /// The longest progress waits in memory before it is written.
    progress_every: Duration,
    /// Jobs this process is running now.
    running: Arc<std::sync::Mutex<std::collections::HashSet<JobId>>>,
    /// Jobs made here with this Manager's lease in them ([`Jobs::new_job`]),
    /// and when it was taken: their first run need not claim them again.
    leased: Arc<std::sync::Mutex<HashMap<JobId, std::time::Instant>>>,
    /// How far the live moves of the migrations this process runs are,
    /// by job and VM.
    moves: Arc<std::sync::Mutex<HashMap<JobId, BTreeMap<String, neptune_api::VmMove>>>>,
    /// Told of every change of a VI the engine writes.
    changes: Arc<crate::changes::Changes>,
}

/// Tries of a step before it counts as failed (hosts and networks blink).
const TRIES: u32 = 3;

/// How long a step waits by default for a host whose Agent does not answer
/// (restarting, re-registering at a new address after a Manager restart,
/// or cut off for a while) before the step fails.
pub const HOST_WAIT: Duration = Duration::from_secs(300);

/// How long a guest may take to be ready, by default: a full Debian guest
/// under QEMU's software emulation takes minutes.
pub const READY_WAIT: Duration = Duration::from_secs(600);

/// A guest that did not say it is ready in time, or stopped first: waiting
/// again will not help.
#[derive(Debug, thiserror::Error)]
#[error("{vm} {why}; its console ends with:\n{console}")]
struct NotReady {
    vm: String,
    why: String,
    console: String,
}

/// Whether `err` says the host did not answer, rather than refused: the
/// step may have happened or not, and will be repeated once it answers.
fn unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<HypervisorError>(),
            Some(HypervisorError::Unreachable(_))
        ) || matches!(
            cause.downcast_ref::<crate::switching::SwitchError>(),
            Some(crate::switching::SwitchError::Unreachable { .. })
        )
    })
}

/// Steps of one batch running at once.
const PARALLEL: usize = 16;

/// Whether two steps may run together: the same kind of step, on
/// different VMs, with no order between them. Entry points move apart
/// from the VMs behind them (see [`Step::MoveVm`]).
fn same_phase(a: &Step, b: &Step) -> bool {
    let entry = |s: &Step| matches!(s, Step::MoveVm { homes, .. } if !homes.is_empty());
    std::mem::discriminant(a) == std::mem::discriminant(b)
        && entry(a) == entry(b)
        && !matches!(
            a,
            Step::ReleaseHosts
                | Step::ReleaseAddresses { .. }
                | Step::HoldHosts
                | Step::MakeSavedDir { .. }
                | Step::DeleteSaved { .. }
                | Step::RegisterTemplate { .. }
                | Step::HoldMoves
                | Step::ReleaseMoves
                | Step::CommitMoves { .. }
                | Step::Locate { .. }
        )
}

/// The end (exclusive) of the batch that starts at `from`.
pub(crate) fn batch_end(steps: &[Step], from: usize) -> usize {
    let mut end = from + 1;
    while end < steps.len() && same_phase(&steps[from], &steps[end]) {
        end += 1;
    }
    end
}

/// The start of the batch that ends (exclusive) at `to`.
fn batch_start(steps: &[Step], to: usize) -> usize {
    let mut start = to - 1;
    while start > 0 && same_phase(&steps[to - 1], &steps[start - 1]) {
        start -= 1;
    }
    start
}

/// How long a job stays its Manager's without a renewal: a Manager that
/// dies leaves its jobs to the others this long after its last renewal.
pub const LEASE: Duration = Duration::from_secs(10);

/// How often a running job's lease is renewed: three renewals fit in a
/// lease, so a slow store write or two does not lose it.
const RENEW_EVERY: Duration = Duration::from_secs(3);

/// The longest a running deploy's or terminate's progress waits in memory
/// before it is written (and its VI's readers woken): a job whose batches
/// take milliseconds writes its cursor once or twice, not after every
/// batch, and one whose batches take longer still shows each as it ends.
/// Other jobs write after every batch ([`defers_progress`]).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(PROGRESS_EVERY_MS);

/// [`PROGRESS_EVERY`] in milliseconds (`neptune manager --job-progress-ms`).
pub const PROGRESS_EVERY_MS: u64 = 250;

impl Jobs {
    pub fn new(store: Arc<dyn Store>, hosts: Arc<dyn HostDirectory>, owner: String) -> Self {
        Jobs {
            store,
            hosts,
            owner,
            lease: LEASE,
            host_wait: HOST_WAIT,
            ready_wait: READY_WAIT,
            progress_every: PROGRESS_EVERY,
            running: Arc::default(),
            leased: Arc::default(),
            moves: Arc::default(),
            changes: Arc::default(),
        }
    }

    /// A new job, stored already leased to this Manager: the write that
    /// stores it (with its VI's change) claims it too, and its run here
    /// does not write a claim of its own before its first batch.
    pub fn new_job(&self, vi: ViId, kind: JobKind, steps: &[Step]) -> anyhow::Result<JobRecord> {
        let mut job = new_job(vi, kind, steps)?;
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        job.owner = Some(self.owner.clone());
        job.lease_until = job.created_at.saturating_add(lease_ms);
        if let Ok(mut leased) = self.leased.lock() {
            // Jobs never stored (a commit refused, planned again) leave
            // their entry: it is useless once a quarter of the lease is.
            leased.retain(|_, at| at.elapsed() < self.lease / 4);
            leased.insert(job.id, std::time::Instant::now());
        }
        Ok(job)
    }

    /// Where the engine, and whoever else changes a VI, says so (see
    /// [`crate::changes`]).
    pub fn changes(&self) -> &Arc<crate::changes::Changes> {
        &self.changes
    }

    /// How long a step waits for an unreachable host (default [`HOST_WAIT`]).
    pub fn with_host_wait(mut self, wait: Duration) -> Self {
        self.host_wait = wait;
        self
    }

    /// How long a guest may take to be ready (default [`READY_WAIT`]).
    pub fn with_ready_wait(mut self, wait: Duration) -> Self {
        self.ready_wait = wait;
        self
    }

    /// The longest a running job's progress waits in memory before it is
    /// written (default [`PROGRESS_EVERY`]; zero: after every batch).
    pub fn with_progress_every(mut self, every: Duration) -> Self {
        self.progress_every = every;
        self
    }

    /// The hypervisor of `host`, through its Agent.
    pub async fn hypervisor_for(&self, host: &HostRecord) -> anyhow::Result<Arc<dyn Hypervisor>> {
        self.hosts.hypervisor(host).await
    }

    /// The VMs `host` runs, as its Agent reports them.
    pub async fn vms_on(&self, host: &HostRecord) -> anyhow::Result<Vec<VmInfo>> {
        Ok(self.hypervisor_for(host).await?.list().await?)
    }

    /// How far the live moves of job `id` are, VM by VM, as this process
    /// sees them (empty unless it runs a migration).
    pub fn moves_of(&self, id: JobId) -> Vec<neptune_api::VmMove> {
        self.moves
            .lock()
            .map(|m| {
                m.get(&id)
                    .map(|v| v.values().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    fn record_move(&self, job: JobId, progress: neptune_api::VmMove) {
        if let Ok(mut moves) = self.moves.lock() {
            moves
                .entry(job)
                .or_default()
                .insert(progress.vm.clone(), progress);
        }
    }

    /// Runs the job in the background, unless this process already runs
    /// it; whether it started it.
    pub fn spawn(&self, id: JobId) -> bool {
        match self.running.lock() {
            Ok(mut running) => {
                if !running.insert(id) {
                    return false;
                }
            }
            Err(_) => return false,
        }
        let jobs = self.clone();
        tokio::spawn(async move {
            if let Err(err) = jobs.run(id).await {
                tracing::error!(job = %id, error = format!("{err:#}"), "job stopped");
            }
            if let Ok(mut running) = jobs.running.lock() {
                running.remove(&id);
            }
            if let Ok(mut moves) = jobs.moves.lock() {
                moves.remove(&id);
            }
        });
        true
    }

    /// Picks up every unfinished job (after a restart): each finishes or
    /// rolls back. Jobs leased by another live Manager are left to it.
    pub async fn resume_unfinished(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        let jobs = self.store.unfinished_jobs().await?;
        let mut resumed = 0;
        let ours = |j: &JobRecord| {
            j.owner.as_deref() == Some(self.owner.as_str())
                || j.owner.is_none()
                || j.lease_until < now
        };
        for job in jobs.iter().filter(|j| ours(j)) {
            // Said once per job taken up, not at every look for orphans.
            if self.spawn(job.id) {
                tracing::info!(job = %job.id, kind = job.kind, step = job.cursor, "resuming job");
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// Keeps looking for unfinished jobs whose Manager died (their lease
    /// ran out) and takes them over. Runs until its task is dropped.
    pub async fn supervise(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(err) = self.resume_unfinished().await {
                tracing::warn!(error = format!("{err:#}"), "looking for orphaned jobs");
            }
        }
    }

    /// Runs a job to its end. Returns early if another Manager holds it.
    pub async fn run(&self, id: JobId) -> anyhow::Result<()> {
        // The lease is taken again before a batch only once it is a
        // quarter spent (batches renew it while they run): a lease that
        // has not run out is this Manager's alone, and every progress
        // write is a compare-and-set besides. The job as this Manager last
        // wrote it is kept between batches rather than read again.
        let mut claimed: Option<std::time::Instant> = self
            .leased
            .lock()
            .ok()
            .and_then(|mut leased| leased.remove(&id));
        let mut kept: Option<(JobRecord, JobKind, Vec<Step>)> = None;
        // The cursor as stored, which every write compares against, and
        // when progress was last written: the kept job may be ahead of it
        // by the batches of the last [`PROGRESS_EVERY`].
        let mut stored = 0;
        let mut written = std::time::Instant::now();
        let mut hosts = KnownHosts::default();
        loop {
            if claimed.is_none_or(|at| at.elapsed() >= self.lease / 4) {
                let now = now_ms();
                let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
                if !self
                    .store
                    .claim_job(id, &self.owner, now, now + lease_ms)
                    .await?
                {
                    tracing::info!(job = %id, "another Manager runs this job");
                    return Ok(());
                }
                claimed = Some(std::time::Instant::now());
            }
            let (job, kind, steps) = match kept.take() {
                Some(k) => k,
                None => {
                    let job = self.store.job(id).await?;
                    let kind = JobKind::parse(&job.kind)
                        .ok_or_else(|| anyhow::anyhow!("unknown job kind {:?}", job.kind))?;
                    let steps: Vec<Step> = job.decode_steps()?;
                    if job.state == JobState::Running && job.cursor == 0 {
                        self.enter(&job, kind).await?;
                    }
                    stored = job.cursor;
                    (job, kind, steps)
                }
            };
            let cursor = usize::try_from(job.cursor)?;
            match job.state {
                JobState::Running if cursor >= steps.len() => {
                    return self
                        .finish(
                            &job,
                            stored,
                            kind,
                            JobState::Succeeded,
                            Event::Succeeded,
                            None,
                        )
                        .await;
                }
                JobState::Running => {
                    // Steps of one kind in a row (all copies, all defines,
                    // all starts) run together; the cursor moves past the
                    // whole batch once all of it is done.
                    let end = batch_end(&steps, cursor);
                    let failures = self
                        .keeping_lease(
                            id,
                            self.execute_all(id, job.vi_id, &mut hosts, &steps[cursor..end]),
                        )
                        .await?;
                    let batch = i64::try_from(end - cursor)?;
                    match failures.first() {
                        None if end >= steps.len()
                            || (defers_progress(kind)
                                && written.elapsed() < self.progress_every) =>
                        {
                            // Progress kept in memory: written with the
                            // next batch past PROGRESS_EVERY, or with the
                            // job's end. A crash meanwhile repeats these
                            // steps (they are idempotent).
                            let mut next = job;
                            next.cursor += batch;
                            kept = Some((next, kind, steps));
                        }
                        None => {
                            let next = self
                                .store
                                .update_job(
                                    id,
                                    (JobState::Running, stored),
                                    JobState::Running,
                                    job.cursor + batch,
                                    None,
                                    now_ms(),
                                )
                                .await?;
                            stored = next.cursor;
                            written = std::time::Instant::now();
                            self.changes.changed(next.vi_id);
                            kept = Some((next, kind, steps));
                        }
                        Some((i, err)) => {
                            let message = format!(
                                "step {} ({}) failed: {err:#}",
                                cursor + i + 1,
                                steps[cursor + i].name()
                            );
                            tracing::warn!(job = %id, "{message}");
                            if rolls_back(kind) {
                                // Part of the batch may have happened: undo
                                // all of it (undoing what never happened is
                                // harmless: every undo is idempotent).
                                self.store
                                    .update_job(
                                        id,
                                        (JobState::Running, stored),
                                        JobState::RollingBack,
                                        job.cursor + batch,
                                        Some(&message),
                                        now_ms(),
                                    )
                                    .await?;
                                self.changes.changed_state(job.vi_id);
                            } else {
                                return self.fail(&job, stored, kind, &message).await;
                            }
                        }
                    }
                }
                JobState::RollingBack if cursor == 0 => {
                    return self
                        .finish(
                            &job,
                            stored,
                            kind,
                            JobState::RolledBack,
                            Event::RolledBack,
                            None,
                        )
                        .await;
                }
                JobState::RollingBack => {
                    let start = batch_start(&steps, cursor);
                    let undos: Vec<Step> = steps[start..cursor]
                        .iter()
                        .rev()
                        .filter_map(Step::undo)
                        .collect();
                    let failures = self
                        .keeping_lease(id, self.execute_all(id, job.vi_id, &mut hosts, &undos))
                        .await?;
                    match failures.first() {
                        None => {
                            let next = self
                                .store
                                .update_job(
                                    id,
                                    (JobState::RollingBack, stored),
                                    JobState::RollingBack,
                                    i64::try_from(start)?,
                                    None,
                                    now_ms(),
                                )
                                .await?;
                            stored = next.cursor;
                            self.changes.changed(next.vi_id);
                            kept = Some((next, kind, steps));
                        }
                        Some((i, err)) => {
                            let message = format!("undo ({}) failed: {err:#}", undos[*i].name());
                            return self.fail(&job, stored, kind, &message).await;
                        }
                    }
                }
                JobState::Succeeded | JobState::RolledBack | JobState::Failed => return Ok(()),
            }
        }
    }

    /// Runs `work` (a batch of job `id`), renewing the job's lease every
    /// [`RENEW_EVERY`] meanwhile: a batch may take minutes (copies, guests
    /// booting), and another Manager must not take a job that is alive.
    /// Should another Manager hold it all the same, the batch is dropped
    /// (its steps are idempotent: the other Manager runs them again).
    async fn keeping_lease<T>(
        &self,
        id: JobId,
        work: impl std::future::Future<Output = T>,
    ) -> anyhow::Result<T> {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the lease was just taken.
        tick.tick().await;
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = tick.tick() => {
                    let now = now_ms();
                    let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
                    if !self.store.claim_job(id, &self.owner, now, now + lease_ms).await? {
                        anyhow::bail!("another Manager took the job over");
                    }
                }
            }
        }
    }

    /// A deploy job is stored with its VI's acceptance, which leaves the
    /// VI `accepted`; the Manager that accepted moves it to `deploying`
    /// next. Should that Manager have died in between, the one that runs
    /// the job moves it.
    async fn enter(&self, job: &JobRecord, kind: JobKind) -> anyhow::Result<()> {
        if kind != JobKind::Deploy {
            return Ok(());
        }
        let vi = self.store.vi(job.vi_id).await?;
        if vi.state != ViState::Accepted {
            return Ok(());
        }
        let change = Transition {
            to: vi.state.next(Event::Deploy)?,
            actor: UserId::nil(),
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: None,
            usage: None,
        };
        match self.store.transition_vi(vi.id, vi.state, &change).await {
            Ok(_) => {
                self.changes.changed_state(vi.id);
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends `job` as failed, for `message` (see [`Jobs::finish`]).
    async fn fail(
        &self,
        job: &JobRecord,
        stored: i64,
        kind: JobKind,
        message: &str,
    ) -> anyhow::Result<()> {
        self.finish(
            job,
            stored,
            kind,
            JobState::Failed,
            Event::Fail,
            Some(message),
        )
        .await
    }

    /// Ends `job` (as kept: its cursor may be ahead of `stored`, the one
    /// in the store) and, for the jobs that own it, moves its VI.
    async fn finish(
        &self,
        job: &JobRecord,
        stored: i64,
        kind: JobKind,
        state: JobState,
        event: Event,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let Some(from) = vi_state_during(kind) else {
            // The VI's state is not the job's: end the job alone.
            return match self
                .store
                .update_job(
                    job.id,
                    (job.state, stored),
                    state,
                    job.cursor,
                    error,
                    now_ms(),
                )
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {
                    self.changes.changed_state(job.vi_id);
                    tracing::info!(job = %job.id, kind = kind.as_str(), state = state.as_str(), "job finished");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
        };
        let to = from.next(event)?;
        let change = Transition {
            to,
            actor: UserId::nil(),
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: None,
            usage: None,
        };
        match self
            .store
            .finish_job(
                job.id,
                (job.state, stored),
                state,
                job.cursor,
                error,
                from,
                &change,
            )
            .await
        {
            Ok(_) => {
                self.changes.changed_state(job.vi_id);
                tracing::info!(job = %job.id, kind = kind.as_str(), state = state.as_str(), "job finished");
                Ok(())
            }
            // Someone else finished it meanwhile.
            Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn hypervisor(
        &self,
        hosts: &[HostRecord],
        host: HostId,
    ) -> anyhow::Result<Arc<dyn Hypervisor>> {
        let record = hosts
            .iter()
            .find(|h| h.id == host)
            .ok_or_else(|| anyhow::anyhow!("host {host} is gone"))?;
        self.hosts.hypervisor(record).await
    }

    /// Runs `steps` concurrently (at most [`PARALLEL`] at a time); returns
    /// the failures by index, in order.
    ///
    /// Steps a host's batch can carry (disks, defines, starts, readiness,
    /// destroys) go first in one call per host ([`Hypervisor::batch`]: one
    /// request to an Agent instead of one per VM). What a batch did not
    /// do (a failure, a guest not ready yet, a host that did not answer)
    /// then runs one step at a time, with the retries and waits of
    /// [`Jobs::execute`].
    async fn execute_all(
        &self,
        job: JobId,
        vi: ViId,
        known: &mut KnownHosts,
        steps: &[Step],
    ) -> Vec<(usize, anyhow::Error)> {
        let mut ids: Vec<HostId> = steps.iter().flat_map(Step::hosts).collect();
        ids.sort_unstable();
        ids.dedup();
        let hosts = match known.of(self.store.as_ref(), &ids).await {
            Ok(h) => h,
            Err(e) => return vec![(0, e.into())],
        };
        let done = self.execute_batched(&hosts, steps).await;
        let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, step) in steps.iter().cloned().enumerate() {
            if done.get(i).copied().unwrap_or(false) {
                continue;
            }
            let jobs = self.clone();
            let permits = permits.clone();
            let hosts = hosts.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (i, jobs.execute(job, &hosts, vi, &step).await)
            });
        }
        let mut failures = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(e))) => failures.push((i, e)),
                Err(e) => failures.push((0, anyhow::anyhow!("a step's task failed: {e}"))),
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        failures
    }

    /// Runs the steps of `steps` that a host's batch carries, one batch
    /// per host with two or more of them; answers which steps are done.
    async fn execute_batched(&self, hosts: &Arc<Vec<HostRecord>>, steps: &[Step]) -> Vec<bool> {
        let mut done = vec![false; steps.len()];
        let mut by_host: HashMap<HostId, Vec<(usize, BatchOp)>> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            if let Some((host, op)) = step.batch_op() {
                by_host.entry(host).or_default().push((i, op));
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (host, ops) in by_host {
            if ops.len() < 2 {
                continue;
            }
            let jobs = self.clone();
            let hosts = hosts.clone();
            tasks.spawn(async move {
                let Ok(hv) = jobs.hypervisor(&hosts, host).await else {
                    return Vec::new();
                };
                let (index, ops): (Vec<usize>, Vec<BatchOp>) = ops.into_iter().unzip();
                let results = hv.batch(&ops).await;
                index
                    .into_iter()
                    .zip(results)
                    .filter(|(_, r)| match r {
                        // A guest is ready only when it says so; one not
                        // yet ready is waited for on its own.
                        Ok(BatchOut::Info(info)) => info.as_ref().is_some_and(|v| v.ready),
                        Ok(_) => true,
                        Err(_) => false,
                    })
                    .map(|(i, _)| i)
                    .collect::<Vec<usize>>()
            });
        }
        while let Some(finished) = tasks.join_next().await {
            for i in finished.unwrap_or_default() {
                done[i] = true;
            }
        }
        done
    }

    /// Runs one step: a refusal is tried [`TRIES`] times; a host that does
    /// not answer is waited for (up to `host_wait`, its record read again
    /// each time, as a restarted Agent registers at a new address), the
    /// job's lease kept meanwhile.
    async fn execute(
        &self,
        job: JobId,
        hosts: &[HostRecord],
        vi: ViId,
        step: &Step,
    ) -> anyhow::Result<()> {
        let mut fresh: Option<Vec<HostRecord>> = None;
        let mut refusals = 0;
        let mut waits = 0u32;
        let started = std::time::Instant::now();
        loop {
            let current = fresh.as_deref().unwrap_or(hosts);
            let err = match self.execute_once(job, current, vi, step).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if unreachable(&err) && started.elapsed() < self.host_wait {
                if waits == 0 {
                    tracing::info!(job = %job, step = step.name(), error = format!("{err:#}"),
                        "the host does not answer; waiting for it");
                }
                waits += 1;
                let pause = Duration::from_millis(250 * u64::from(waits.min(20)));
                tokio::time::sleep(pause.min(self.host_wait.saturating_sub(started.elapsed())))
                    .await;
                // Keep the job ours while it waits, and see where the host is now.
                let now = now_ms();
                let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
                if !self
                    .store
                    .claim_job(job, &self.owner, now, now + lease_ms)
                    .await?
                {
                    anyhow::bail!("another Manager took the job over");
                }
                fresh = Some(self.store.hosts_by_id(&step.hosts()).await?);
                continue;
            }
            refusals += 1;
            if refusals >= TRIES || err.downcast_ref::<NotReady>().is_some() {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(refusals))).await;
        }
    }

    /// Polls the host until `vm`'s guest is ready; fails with what its
    /// console says when it stops first or is not ready in time.
    async fn await_ready(&self, hv: &dyn Hypervisor, vm: &str) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            let why = match hv.info(vm).await? {
                Some(v) if v.ready => return Ok(()),
                Some(v) if v.state == neptune_hypervisor::VmState::Running => {
                    if started.elapsed() < self.ready_wait {
                        // One VM asked of its host (one domain read): cheap
                        // enough to notice a ready guest within a quarter
                        // of a second.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                    format!(
                        "was not ready after {} s",
                        self.ready_wait.as_secs_f64().round()
                    )
                }
                Some(_) => "stopped before it was ready".to_owned(),
                None => "is gone from its host".to_owned(),
            };
            let console = hv.console(vm, 2048).await.unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(10).collect();
            return Err(NotReady {
                vm: vm.to_owned(),
                why,
                console: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            }
            .into());
        }
    }

    async fn execute_once(
        &self,
        job: JobId,
        hosts: &[HostRecord],
        vi: ViId,
        step: &Step,
    ) -> anyhow::Result<()> {
        match step {
            Step::PrepareDisk {
                host,
                vm,
                image,
                size_mib,
            } => {
                self.hypervisor(hosts, *host)
                    .await?
                    .prepare_disk(vm, image, *size_mib)
                    .await?;
            }
            Step::Define { host, spec, image } => {
                let hv = self.hypervisor(hosts, *host).await?;
                // The disk step ran before; asking again returns its path.
                let disk = hv.prepare_disk(&spec.name, image, spec.disk_mib).await?;
                hv.define(&VmSpec {
                    disk,
                    ..spec.clone()
                })
                .await?;
            }
            Step::Start { host, vm } => self.hypervisor(hosts, *host).await?.start(vm).await?,
            Step::AwaitReady { host, vm } => {
                let hv = self.hypervisor(hosts, *host).await?;
                self.await_ready(hv.as_ref(), vm).await?
            }
            Step::Destroy { host, vm } => self.hypervisor(hosts, *host).await?.destroy(vm).await?,
            Step::RemoveDisk { host, vm } => {
                self.hypervisor(hosts, *host).await?.remove_disk(vm).await?
            }
            Step::ReleaseHosts => {
                self.store.release_vms(vi).await?;
            }
            Step::ReleaseAddresses { covers } => {
                self.store.release_addresses(vi, covers).await?;
            }
            Step::Save { host, spec, state } => {
                self.hypervisor(hosts, *host)
                    .await?
                    .save(&spec.name, state)
                    .await?
            }
            Step::ExportDisk { host, vm, dest } => {
                if let Some(dir) = std::path::Path::new(dest).parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                self.hypervisor(hosts, *host)
                    .await?
                    .export_disk(vm, dest)
                    .await?
            }
            Step::DropDisk { host, vm, .. } => {
                self.hypervisor(hosts, *host).await?.remove_disk(vm).await?
            }
            Step::Restore {
                host,
                spec,
                state,
                image,
            } => {
                let hv = self.hypervisor(hosts, *host).await?;
                let spec = match image {
                    Some(image) => VmSpec {
                        disk: hv.prepare_disk(&spec.name, image, spec.disk_mib).await?,
                        ..spec.clone()
                    },
                    None => spec.clone(),
                };
                hv.restore(&spec, state).await?
            }
            Step::HoldHosts => {}
            Step::MakeSavedDir { dir } => tokio::fs::create_dir_all(dir).await?,
            Step::DeleteFile { path } => match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            },
            // The last step of a resume or a terminate: failing it would undo
            // a finished resume for the sake of a few files, so a failure is
            // logged for an operator instead.
            Step::DeleteSaved { dir } => match tokio::fs::remove_dir_all(dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(%vi, dir, error = %e, "saved states left behind");
                }
                _ => {}
            },
            Step::RegisterTemplate { template } => {
                crate::images::register(self.store.as_ref(), template).await?;
            }
            Step::Visit {
                datacenter,
                address,
                key,
            } => {
                let change = crate::switching::Change::Visit {
                    vi: vi.to_string(),
                    key: *key,
                };
                self.switch(*datacenter, *address, &change).await?;
            }
            Step::Unvisit {
                datacenter,
                address,
                ..
            } => {
                let change = crate::switching::Change::Unvisit;
                self.switch(*datacenter, *address, &change).await?;
            }
            Step::Route {
                address,
                home,
                to,
                key,
                ..
            } => self.route(vi, *address, *home, *to, *key).await?,
            Step::JoinSegments { host, networks } => {
                self.hypervisor(hosts, *host)
                    .await?
                    .join_segments(networks)
                    .await?
            }
            Step::HoldMoves => {}
            Step::ReleaseMoves => {
                self.store.release_vm_moves(vi).await?;
            }
            Step::MoveVm {
                from,
                to,
                spec,
                homes,
                ..
            } => {
                self.move_vm(job, vi, hosts, (*from, *to), spec, homes)
                    .await?
            }
            Step::CommitMoves { location } => {
                self.store.commit_vm_moves(vi, *location).await?;
            }
            Step::Locate { to, .. } => self.store.set_vi_location(vi, *to).await?,
        }
        Ok(())
    }

    /// Makes the home switch of `address` (the switch of `home`) send it to
    /// the switch of datacenter `to`: bound to its Care-of Address, or
    /// unbound when `to` is `home`.
    async fn route(
        &self,
        vi: ViId,
        address: Ipv4Addr,
        home: DatacenterId,
        to: DatacenterId,
        key: u32,
    ) -> anyhow::Result<()> {
        if let Some(ready) = self.routing(vi, address, home, to, key).await? {
            crate::switching::send(self.store.as_ref(), &ready).await?;
        }
        Ok(())
    }

    /// The update of `address`'s home switch that routes it to datacenter
    /// `to`, ready to send; `None` when no switch is registered to take it
    /// or to tunnel to.
    async fn routing(
        &self,
        vi: ViId,
        address: Ipv4Addr,
        home: DatacenterId,
        to: DatacenterId,
        key: u32,
    ) -> anyhow::Result<Option<crate::switching::Prepared>> {
        let switches = self.store.switches().await?;
        let change = if to == home {
            crate::switching::Change::Unbind
        } else {
            let Some(foreign) = switches.iter().find(|s| s.datacenter_id == to) else {
                // No switch where it goes: nothing can tunnel there.
                tracing::warn!(%vi, %address, datacenter = %to,
                    "no switch is registered where the VI goes: its Home Address is not routed there");
                return Ok(None);
            };
            crate::switching::Change::Bind {
                care_of: foreign.care_of.parse()?,
                vi: vi.to_string(),
                key,
            }
        };
        let Some(switch) = switches.iter().find(|s| s.datacenter_id == home) else {
            tracing::debug!(datacenter = %home, %address, "no switch registered; nothing to tell");
            return Ok(None);
        };
        Ok(Some(
            crate::switching::prepare(self.store.as_ref(), switch, address, change).await?,
        ))
    }

    /// Routes a moving VM's Home Addresses to datacenter `to` (see
    /// [`Step::MoveVm`]). A switch that does not answer is left to the
    /// VI's route steps, which wait for it.
    async fn route_homes(&self, vi: ViId, homes: &[HomeRoute], to: Option<DatacenterId>) {
        let ready = self.prepare_homes(vi, homes, to).await;
        self.send_homes(vi, &ready).await;
    }

    /// [`Self::route_homes`] made ready ahead of its time, so that the
    /// moment it is due costs the switch's call alone: each Home
    /// Address's update, or the address alone when its update could not
    /// be prepared (it is tried whole when sent).
    async fn prepare_homes(
        &self,
        vi: ViId,
        homes: &[HomeRoute],
        to: Option<DatacenterId>,
    ) -> Vec<(HomeRoute, DatacenterId, HomeUpdate)> {
        let Some(to) = to else { return Vec::new() };
        let mut ready = Vec::with_capacity(homes.len());
        for h in homes {
            let update = match self.routing(vi, h.address, h.home, to, h.key).await {
                Ok(Some(update)) => HomeUpdate::Ready(update),
                Ok(None) => HomeUpdate::Nothing,
                Err(e) => {
                    tracing::debug!(%vi, address = %h.address, error = %e,
                        "the Home Address's update is prepared when it is due");
                    HomeUpdate::Unprepared
                }
            };
            ready.push((h.clone(), to, update));
        }
        ready
    }

    /// Sends what [`Self::prepare_homes`] made ready.
    async fn send_homes(&self, vi: ViId, ready: &[(HomeRoute, DatacenterId, HomeUpdate)]) {
        for (h, to, update) in ready {
            let sent = match update {
                HomeUpdate::Ready(update) => crate::switching::send(self.store.as_ref(), update)
                    .await
                    .map_err(anyhow::Error::from),
                HomeUpdate::Nothing => Ok(()),
                HomeUpdate::Unprepared => self.route(vi, h.address, h.home, *to, h.key).await,
            };
            if let Err(e) = sent {
                tracing::warn!(%vi, address = %h.address, error = %e,
                    "the Home Address could not follow its VM at once; the route step will");
            }
        }
    }

    /// Sends `change` of `address` to the switch of `datacenter`, if one
    /// is registered.
    async fn switch(
        &self,
        datacenter: DatacenterId,
        address: Ipv4Addr,
        change: &crate::switching::Change,
    ) -> anyhow::Result<()> {
        let switches = self.store.switches().await?;
        match switches.iter().find(|s| s.datacenter_id == datacenter) {
            Some(switch) => {
                crate::switching::apply(self.store.as_ref(), switch, address, change).await?
            }
            None => tracing::debug!(%datacenter, %address, "no switch registered; nothing to tell"),
        }
        Ok(())
    }

    /// Moves one VM live and routes its Home Addresses to where it runs
    /// (see [`Step::MoveVm`]). Asked again, it finds
    /// where the VM is: still on `from` (a move in progress is joined,
    /// one that failed starts again), or already on `to` (only the end is
    /// done again).
    async fn move_vm(
        &self,
        job: JobId,
        vi: ViId,
        hosts: &[HostRecord],
        (from, to): (HostId, HostId),
        spec: &VmSpec,
        homes: &[HomeRoute],
    ) -> anyhow::Result<()> {
        let vm = spec.name.as_str();
        let target = hosts.iter().find(|h| h.id == to).map(|h| h.datacenter_id);
        let mut routed = false;
        let src = self.hypervisor(hosts, from).await?;
        let dst = self.hypervisor(hosts, to).await?;
        let host_name = |id: HostId| {
            hosts
                .iter()
                .find(|h| h.id == id)
                .map_or_else(|| id.to_string(), |h| h.name.clone())
        };
        let mut state = neptune_api::VmMove {
            vm: vm.to_owned(),
            from: host_name(from),
            to: host_name(to),
            ..Default::default()
        };
        if src.info(vm).await?.is_some() {
            let out = src.outgoing(vm).await?;
            let incoming = dst
                .accept_incoming(&out.incoming_request(VmSpec {
                    disk: String::new(),
                    ..spec.clone()
                }))
                .await?;
            self.record_move(job, state.clone());
            let jobs = self.clone();
            let seen = state.clone();
            let progress = move |p: neptune_hypervisor::MigrationProgress| {
                jobs.record_move(
                    job,
                    neptune_api::VmMove {
                        bytes_done: p.bytes_done,
                        bytes_remaining: p.bytes_remaining,
                        ..seen.clone()
                    },
                );
            };
            // Made ready now, so that the resume costs the switch's call
            // alone (a read of the switches and a durable generation
            // otherwise come first).
            let homes_ready = self.prepare_homes(vi, homes, target).await;
            let moving = src.migrate(vm, &incoming, &progress);
            tokio::pin!(moving);
            // Its Home Addresses follow the VM the moment its guest resumes
            // on `to`, seconds before the source is done with it: the
            // destination's Agent answers its long-poll then.
            //
            // Not earlier, at the source's switch-over pause (its progress
            // says when), though that would spare the packets sent during
            // the pause: bound then, the packets waited for the guest at
            // its paused destination, and in 4 of 12 runs of bench/migration
            // a correspondent's connection broke, 3 with the guest's kernel
            // panicked just after its move (slab corruption in the network
            // stack); no run binding at resume did (see its README).
            let resumed = async {
                if homes.is_empty() {
                    return std::future::pending().await;
                }
                loop {
                    match dst.wait_running(vm, ARRIVAL_WAIT).await {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(_) => tokio::time::sleep(ARRIVAL_RETRY).await,
                    }
                }
            };
            let moved = tokio::select! {
                moved = &mut moving => moved,
                () = resumed => {
                    self.send_homes(vi, &homes_ready).await;
                    routed = true;
                    moving.await
                }
            };
            match moved {
                Ok(report) => {
                    tracing::info!(%job, vm, total_ms = report.total_ms, downtime_ms = report.downtime_ms,
                        bytes = report.bytes, "VM moved live");
                    state.bytes_done = report.bytes;
                    state.total_ms = Some(report.total_ms);
                    state.downtime_ms = Some(report.downtime_ms);
                }
                // Gone meanwhile: an earlier try moved it.
                Err(HypervisorError::NoSuchVm(_)) => {}
                Err(e) => {
                    // Routed when the guest ran there, then the move failed
                    // (libvirt's finish): the addresses go back with the
                    // guest if it still runs where it was.
                    if routed
                        && matches!(src.info(vm).await, Ok(Some(v)) if v.state == neptune_hypervisor::VmState::Running)
                    {
                        let source = hosts.iter().find(|h| h.id == from).map(|h| h.datacenter_id);
                        self.route_homes(vi, homes, source).await;
                    }
                    return Err(e.into());
                }
            }
        }
        if !routed {
            self.route_homes(vi, homes, target).await;
        }
        // Arrived (or arriving: a simulated host takes it in here): the
        // destination completes it; if it never came, it is nowhere.
        match dst.finish_incoming(vm).await {
            Ok(()) => {}
            Err(HypervisorError::NoSuchVm(_)) => anyhow::bail!(
                "VM {vm} is on neither host {} nor host {}",
                state.from,
                state.to
            ),
            Err(e) => return Err(e.into()),
        }
        src.remove_disk(vm).await?;
        state.done = true;
        self.record_move(job, state);
        Ok(())
    }
}

/// How long one question to the destination's Agent waits for a moving
/// VM to run there; the answer comes the moment it does.
const ARRIVAL_WAIT: Duration = Duration::from_secs(5);

/// How long a move waits before asking a destination that did not answer
/// again.
const ARRIVAL_RETRY: Duration = Duration::from_millis(200);

/// What configures a VI's guests besides its design: its address plan,
/// its owner's SSH keys, its home datacenter's public gateway.
#[derive(Debug, Clone, Copy)]
pub struct GuestConfig<'a> {
    pub addresses: &'a neptune_ipam::Plan,
    pub ssh_keys: &'a [String],
    pub public_gateway: Option<std::net::Ipv4Addr>,
}

/// The VM of a node on host `host`, as a job defines or restores it (its
/// disk path comes from the host when the step runs), configured from the
/// VI's address plan, its guest accepting the owner's SSH keys, an entry
/// point routed through its datacenter's public gateway (`guests`).
pub fn vm_spec(
    vi: ViId,
    topo: &neptune_topology::Topology,
    node: &neptune_topology::VirtualNode,
    host: HostId,
    wiring: &crate::wiring::Wiring,
    guests: GuestConfig<'_>,
) -> VmSpec {
    let addresses = guests.addresses;
    VmSpec {
        seed: Some(crate::seed::render(
            vi,
            node,
            addresses,
            guests.ssh_keys,
            guests.public_gateway,
        )),
        name: vm_name(vi, node.id.as_str()),
        vcpus: node.vcpus(),
        ram_mib: node.ram.0,
        disk_mib: node.disk.0,
        disk: String::new(),
        nics: nics(vi, topo, node, host, wiring, addresses),
    }
}

/// The NICs of a node on host `host`: one per interface, on its link's
/// network (or the public network for an entry point that is on no link),
/// with the link's segment when the link spans hosts, its MAC as
/// [`crate::seed::mac_of`] says.
pub fn nics(
    vi: ViId,
    topo: &neptune_topology::Topology,
    node: &neptune_topology::VirtualNode,
    host: HostId,
    wiring: &crate::wiring::Wiring,
    addresses: &neptune_ipam::Plan,
) -> Vec<Nic> {
    node.interfaces
        .iter()
        .map(|iface| {
            let link = topo.links.iter().find(|l| {
                l.endpoints
                    .iter()
                    .any(|e| e.node == node.id && e.interface == iface.name)
            });
            Nic {
                mac: crate::seed::mac_text(crate::seed::mac_of(vi, addresses, node, iface)),
                network: match link {
                    Some(l) => link_network(vi, l.id.as_str()),
                    None => neptune_hypervisor::PUBLIC_NETWORK.to_owned(),
                },
                segment: link.and_then(|l| wiring.segment(l.id.as_str(), host)),
                bandwidth_mbps: link.map(|l| l.bandwidth.0),
            }
        })
        .collect()
}

/// How long a job keeps the host records it read for its batches: a
/// deploy on fast hosts runs all its batches on one read, a slow one reads
/// again, and a host that moved meanwhile (a restarted Agent registers at
/// a new address) is read again by the step that finds it gone anyway.
const HOSTS_FRESH: Duration = Duration::from_secs(5);

/// The hosts a job's batches run on, read for the first batch that needs
/// them and kept for [`HOSTS_FRESH`]: only they, since a domain may have
/// tens of thousands, and not once per batch, since a deploy is four to
/// six batches on the same hosts.
#[derive(Default)]
struct KnownHosts {
    read_at: Option<std::time::Instant>,
    hosts: HashMap<HostId, HostRecord>,
}

impl KnownHosts {
    /// The records of `ids` (sorted, unique) that exist.
    async fn of(
        &mut self,
        store: &dyn Store,
        ids: &[HostId],
    ) -> Result<Arc<Vec<HostRecord>>, StoreError> {
        if self.read_at.is_some_and(|at| at.elapsed() >= HOSTS_FRESH) {
            *self = KnownHosts::default();
        }
        let missing: Vec<HostId> = ids
            .iter()
            .filter(|id| !self.hosts.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            let read = store.hosts_by_id(&missing).await?;
            self.read_at.get_or_insert_with(std::time::Instant::now);
            self.hosts.extend(read.into_iter().map(|h| (h.id, h)));
        }
        Ok(Arc::new(
            ids.iter()
                .filter_map(|id| self.hosts.get(id).cloned())
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoHosts;

    #[async_trait]
    impl HostDirectory for NoHosts {
        async fn hypervisor(&self, host: &HostRecord) -> anyhow::Result<Arc<dyn Hypervisor>> {
            anyhow::bail!("no host {} here", host.name)
        }
    }

    /// Only the jobs whose batches may all be run again after a crash
    /// keep their progress in memory.
    #[test]
    fn only_deploys_and_terminates_defer_their_progress() {
        for kind in [JobKind::Deploy, JobKind::Terminate] {
            assert!(defers_progress(kind), "{kind:?}");
        }
        for kind in [
            JobKind::Suspend,
            JobKind::Resume,
            JobKind::Migrate,
            JobKind::SaveTemplate,
        ] {
            assert!(!defers_progress(kind), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_job_made_here_is_stored_with_this_managers_lease() {
        let store = neptune_store::connect("sqlite::memory:").await.unwrap();
        let jobs = Jobs::new(store, Arc::new(NoHosts), "manager-a".into());
        let vi: ViId = Uuid::new_v4().into();
        let job = jobs.new_job(vi, JobKind::Deploy, &[]).unwrap();
        assert_eq!(job.owner.as_deref(), Some("manager-a"));
        assert_eq!(
            job.lease_until - job.created_at,
            i64::try_from(LEASE.as_millis()).unwrap()
        );
        // Its first run here takes that lease as its claim.
        assert!(jobs.leased.lock().unwrap().contains_key(&job.id));
        // A plain job (made for another Manager to pick up) has none.
        let free = new_job(vi, JobKind::Deploy, &[]).unwrap();
        assert_eq!((free.owner, free.lease_until), (None, 0));
    }

    /// A job's batches share one read of their hosts while it is fresh;
    /// a host new to the job is read when a batch needs it, and a stale
    /// read is made again.
    #[tokio::test]
    async fn a_jobs_batches_share_a_fresh_read_of_their_hosts() {
        let store = neptune_store::connect("sqlite::memory:").await.unwrap();
        let dc = neptune_store::DatacenterRecord {
            id: Uuid::new_v4().into(),
            name: "dc".into(),
            created_at: 1,
            home_pools: vec![],
            public_gateway: None,
        };
        store.create_datacenter(&dc).await.unwrap();
        let host = |name: &str, url: &str| HostRecord {
            id: Uuid::new_v4().into(),
            datacenter_id: dc.id,
            name: name.into(),
            agent_url: url.into(),
            cpus: 4,
            ram_mib: 4096,
            disk_mib: 10_000,
            vm_slots: 4,
            uplink_mbps: 0,
            state: neptune_store::HostState::Ready,
            last_seen: 1,
            used: neptune_store::HostUsage::default(),
        };
        let a = store.upsert_host(&host("a", "http://a:1")).await.unwrap();
        let b = store.upsert_host(&host("b", "http://b:1")).await.unwrap();
        let mut known = KnownHosts::default();
        let urls = |hosts: &[HostRecord]| {
            hosts
                .iter()
                .map(|h| h.agent_url.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            urls(&known.of(store.as_ref(), &[a.id]).await.unwrap()),
            ["http://a:1"]
        );

        // Both Agents restart at new addresses: the kept read of `a` is
        // used, `b`, new to the job, is read as it is now.
        store
            .upsert_host(&HostRecord {
                agent_url: "http://a:2".into(),
                ..a.clone()
            })
            .await
            .unwrap();
        store
            .upsert_host(&HostRecord {
                agent_url: "http://b:2".into(),
                ..b.clone()
            })
            .await
            .unwrap();
        let mut ids = [a.id, b.id];
        ids.sort_unstable();
        let mut both = urls(&known.of(store.as_ref(), &ids).await.unwrap());
        both.sort();
        assert_eq!(both, ["http://a:1", "http://b:2"]);

        // Once stale, everything is read again.
        known.read_at = known.read_at.map(|at| at - HOSTS_FRESH);
        let mut both = urls(&known.of(store.as_ref(), &ids).await.unwrap());
        both.sort();
        assert_eq!(both, ["http://a:2", "http://b:2"]);
        // A host that does not exist is left out.
        let gone: HostId = Uuid::new_v4().into();
        assert!(known.of(store.as_ref(), &[gone]).await.unwrap().is_empty());
    }
}
