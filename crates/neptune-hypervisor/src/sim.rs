//! The simulated hypervisor: VMs live in memory, disks and saved states are
//! real (small) files, so the Manager's jobs, the Agents' HTTP API and the
//! leak checks of the tests see the same effects a real host would show.
//!
//! Layout under the root directory given at construction:
//!
//! ```text
//! <root>/disks/<vm>.img   one per prepared disk: JSON {template_image, size_mib}
//! <root>/vms.json         the defined VMs (so an Agent restart keeps them,
//!                         as libvirt keeps persistent domains)
//! <root>/incoming.json    VMs accepted to arrive live, not yet arrived
//! <root>/networks.json    networks joined to their segments (join_segments)
//! ```
//!
//! A host's networks are those of its VMs (defined, or accepted to
//! arrive) and those joined to their segments; a joined network no VM
//! uses goes when a VM leaves the host, as on a libvirt host.
//!
//! A saved state (`save`) is a JSON file at the path the caller chooses; any
//! other `SimHypervisor` that can read that path (another host sharing the
//! directory) can `restore` it.
//!
//! For tests: every operation can be slowed down ([`SimConfig::delays`],
//! [`SimHypervisor::set_delay`]) and made to fail ([`Fault`],
//! [`SimHypervisor::set_faults`]). The delay is served before the fault is
//! checked and before anything changes, and no lock is held meanwhile, so
//! operations on different VMs overlap as on a real host.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    check_joins, check_room, check_spec, validate_vm_name, write_atomically, Capacity, DiskBase,
    Hypervisor, HypervisorError, Incoming, IncomingRequest, MigrationProgress, MigrationReport,
    NetworkJoin, Op, Outgoing, Result, Segment, VmInfo, VmSpec, VmState,
};

/// Makes the next calls of an operation fail with
/// [`HypervisorError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub op: Op,
    /// Only VMs whose name contains this text; every VM when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_pattern: Option<String>,
    /// How many matching calls fail; every one when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
}

impl Fault {
    /// Fails every call of `op`.
    pub fn always(op: Op) -> Self {
        Fault {
            op,
            vm_pattern: None,
            remaining: None,
        }
    }

    /// Fails the next `n` calls of `op`.
    pub fn times(op: Op, n: u32) -> Self {
        Fault {
            op,
            vm_pattern: None,
            remaining: Some(n),
        }
    }

    /// Restricts the fault to VMs whose name contains `pattern`.
    pub fn for_vm(mut self, pattern: impl Into<String>) -> Self {
        self.vm_pattern = Some(pattern.into());
        self
    }

    fn matches(&self, op: Op, vm: &str) -> bool {
        self.op == op
            && self.remaining != Some(0)
            && self.vm_pattern.as_deref().is_none_or(|p| vm.contains(p))
    }
}

/// How a [`SimHypervisor`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Where disks and the VM table live (created if absent).
    pub root: PathBuf,
    pub capacity: Capacity,
    /// Time each operation takes; absent means instant.
    pub delays: HashMap<Op, Duration>,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
    /// Disks and tables in memory only, nothing under `root` (see
    /// [`SimConfig::volatile`]).
    pub volatile: bool,
}

impl SimConfig {
    /// Instant operations, no faults.
    pub fn new(root: impl Into<PathBuf>, capacity: Capacity) -> Self {
        SimConfig {
            root: root.into(),
            capacity,
            delays: HashMap::new(),
            faults: Vec::new(),
            volatile: false,
        }
    }

    /// Keeps the disks and the VM, incoming and network tables in memory
    /// only: nothing is written under `root`, and a new instance starts
    /// empty. For thousands of simulated hosts in one process (the scale
    /// benchmark), whose file writes would otherwise cost more than the
    /// Manager they measure. Saved states and exported disks still go to
    /// the paths their callers name.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// The same delay for every operation.
    pub fn with_uniform_delay(mut self, delay: Duration) -> Self {
        for op in ALL_OPS {
            self.delays.insert(op, delay);
        }
        self
    }
}

/// Every operation, for configuring them all at once.
pub const ALL_OPS: [Op; 11] = [
    Op::PrepareDisk,
    Op::RemoveDisk,
    Op::Define,
    Op::Start,
    Op::Save,
    Op::Restore,
    Op::Destroy,
    Op::ExportDisk,
    Op::Migrate,
    Op::Incoming,
    Op::Join,
];

/// Why a [`SimHypervisor`] could not open its root directory.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot create {}", .path.display())]
    CreateRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a VM table", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What the template field of a disk made for a VM arriving live, to be
/// filled by the move, starts with.
const ARRIVING: &str = "(arriving live";

/// The simulated hosts' name of a template's base: they copy nothing, so
/// the template's path stands for its bytes.
fn sim_base(template_image: &str) -> String {
    format!("sim:{template_image}")
}

/// The content of a simulated disk file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DiskFile {
    template_image: String,
    size_mib: u64,
}

/// The content of a saved-state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedState {
    spec: VmSpec,
    /// Whether the VM ran when it was saved (informative).
    was_running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SimVm {
    spec: VmSpec,
    state: VmState,
    /// What was typed on its console (not persisted).
    #[serde(skip)]
    typed: String,
}

#[derive(Debug, Default)]
struct Inner {
    vms: BTreeMap<String, SimVm>,
    /// Prepared disks: VM name -> size (MiB).
    disks: BTreeMap<String, u64>,
    /// VMs accepted to arrive live, by name: the spec they will run with.
    incoming: BTreeMap<String, VmSpec>,
    /// Networks joined to their segments, by name: the segment with every
    /// peer ever joined (`None`: joined without one).
    joined: BTreeMap<String, Option<Segment>>,
    /// The networks of each `join_segments` call so far (not persisted).
    joins: Vec<Vec<NetworkJoin>>,
    delays: HashMap<Op, Duration>,
    faults: Vec<Fault>,
    /// Calls of each operation so far (not persisted).
    calls: HashMap<Op, u64>,
    /// A volatile instance's disk files, by VM name.
    disk_files: BTreeMap<String, Vec<u8>>,
}

/// The simulated adapter of the [`Hypervisor`] port.
#[derive(Debug)]
pub struct SimHypervisor {
    root: PathBuf,
    capacity: Capacity,
    volatile: bool,
    inner: Mutex<Inner>,
    /// Signals every change of the VM table, for [`Hypervisor::wait_running`].
    changed: tokio::sync::Notify,
}

impl SimHypervisor {
    /// Opens (creating if needed) the root directory and picks up the disks
    /// and VMs a previous instance left there.
    pub fn new(config: SimConfig) -> std::result::Result<Self, SimError> {
        let SimConfig {
            root,
            capacity,
            delays,
            faults,
            volatile,
        } = config;
        if volatile {
            return Ok(SimHypervisor {
                root,
                capacity,
                volatile,
                inner: Mutex::new(Inner {
                    delays,
                    faults,
                    ..Inner::default()
                }),
                changed: tokio::sync::Notify::new(),
            });
        }
        let disks_dir = root.join("disks");
        std::fs::create_dir_all(&disks_dir).map_err(|source| SimError::CreateRoot {
            path: disks_dir.clone(),
            source,
        })?;
        let mut disks = BTreeMap::new();
        let entries = std::fs::read_dir(&disks_dir).map_err(|source| SimError::Read {
            path: disks_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(vm) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".img"))
            else {
                continue;
            };
            // A disk file that cannot be read still takes room: count it
            // as empty rather than refusing to start the host.
            let size = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<DiskFile>(&b).ok())
                .map_or(0, |d| d.size_mib);
            disks.insert(vm.to_owned(), size);
        }
        let table = root.join("vms.json");
        let vms = match std::fs::read(&table) {
            Ok(bytes) => serde_json::from_slice::<Vec<SimVm>>(&bytes)
                .map_err(|source| SimError::Parse {
                    path: table.clone(),
                    source,
                })?
                .into_iter()
                .map(|vm| (vm.spec.name.clone(), vm))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(SimError::Read {
                    path: table,
                    source,
                })
            }
        };
        let pending = root.join("incoming.json");
        let incoming = match std::fs::read(&pending) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| SimError::Parse {
                path: pending.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(SimError::Read {
                    path: pending,
                    source,
                })
            }
        };
        let networks = root.join("networks.json");
        let joined = match std::fs::read(&networks) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| SimError::Parse {
                path: networks.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(SimError::Read {
                    path: networks,
                    source,
                })
            }
        };
        Ok(SimHypervisor {
            root,
            capacity,
            volatile,
            inner: Mutex::new(Inner {
                vms,
                disks,
                incoming,
                joined,
                joins: Vec::new(),
                delays,
                faults,
                calls: HashMap::new(),
                disk_files: BTreeMap::new(),
            }),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the disk of `vm` lives (a volatile instance's: where it would).
    pub fn disk_path(&self, vm: &str) -> PathBuf {
        self.root.join("disks").join(format!("{vm}.img"))
    }

    /// Whether this host holds the disk at `path` (as [`Self::disk_path`]
    /// names it), in memory or as a file.
    pub fn holds_disk(&self, path: &Path) -> bool {
        let Some(vm) = path
            .strip_prefix(self.root.join("disks"))
            .ok()
            .and_then(|p| p.to_str())
            .and_then(|p| p.strip_suffix(".img"))
        else {
            return false;
        };
        self.read_disk(&self.lock(), vm).is_ok()
    }

    /// The disk file of `vm`; called with the lock held.
    fn read_disk(&self, inner: &Inner, vm: &str) -> std::io::Result<Vec<u8>> {
        if self.volatile {
            return inner
                .disk_files
                .get(vm)
                .cloned()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into());
        }
        std::fs::read(self.disk_path(vm))
    }

    /// Writes the disk file of `vm`; called with the lock held.
    fn write_disk(&self, inner: &mut Inner, vm: &str, bytes: Vec<u8>) -> std::io::Result<()> {
        if self.volatile {
            inner.disk_files.insert(vm.to_owned(), bytes);
            return Ok(());
        }
        write_atomically(&self.disk_path(vm), &bytes)
    }

    /// Deletes the disk file of `vm`; called with the lock held.
    fn delete_disk(&self, inner: &mut Inner, vm: &str) -> std::io::Result<()> {
        if self.volatile {
            return match inner.disk_files.remove(vm) {
                Some(_) => Ok(()),
                None => Err(std::io::ErrorKind::NotFound.into()),
            };
        }
        std::fs::remove_file(self.disk_path(vm))
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        self.lock().faults = faults;
    }

    /// Adds one fault to the active ones.
    pub fn add_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// The active faults (with their remaining counts).
    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    /// Sets the time `op` takes (zero: instant).
    pub fn set_delay(&self, op: Op, delay: Duration) {
        let mut inner = self.lock();
        if delay.is_zero() {
            inner.delays.remove(&op);
        } else {
            inner.delays.insert(op, delay);
        }
    }

    /// Replaces every delay.
    pub fn set_delays(&self, delays: HashMap<Op, Duration>) {
        self.lock().delays = delays;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every update is a single insert or remove), so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times `op` was called since this instance was made: a
    /// test tells an operation done once from one done again.
    pub fn calls(&self, op: Op) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// The networks of each [`Hypervisor::join_segments`] call since this
    /// instance was made, in order (refused calls included).
    pub fn joins(&self) -> Vec<Vec<NetworkJoin>> {
        self.lock().joins.clone()
    }

    /// The peers network `network` floods to on this host: those of its
    /// segment on the NICs of the host's VMs (defined or arriving) and
    /// those joined. `None`: the host has no such network.
    pub fn segment_peers(&self, network: &str) -> Option<Vec<SocketAddr>> {
        let inner = self.lock();
        let joined = inner.joined.get(network);
        let nics: Vec<&crate::Nic> = inner
            .vms
            .values()
            .map(|v| &v.spec)
            .chain(inner.incoming.values())
            .flat_map(|s| &s.nics)
            .filter(|n| n.network == network)
            .collect();
        if joined.is_none() && nics.is_empty() {
            return None;
        }
        let mut peers: Vec<SocketAddr> = Vec::new();
        let segments = nics
            .iter()
            .filter_map(|n| n.segment.as_ref())
            .chain(joined.and_then(Option::as_ref));
        for p in segments.flat_map(|s| &s.peers) {
            if !peers.contains(p) {
                peers.push(*p);
            }
        }
        Some(peers)
    }

    /// Forgets the joined networks that no VM of the host uses (defined
    /// or arriving), once a VM left; called with the lock held.
    fn release_joined(&self, op: Op, vm: &str, inner: &mut Inner) -> Result<()> {
        let before = inner.joined.len();
        let Inner {
            joined,
            vms,
            incoming,
            ..
        } = inner;
        joined.retain(|net, _| {
            vms.values()
                .map(|v| &v.spec)
                .chain(incoming.values())
                .any(|s| s.nics.iter().any(|n| &n.network == net))
        });
        if inner.joined.len() == before {
            return Ok(());
        }
        self.persist_networks(op, vm, inner)
    }

    /// Writes the table of joined networks; called with the lock held.
    fn persist_networks(&self, op: Op, vm: &str, inner: &Inner) -> Result<()> {
        if self.volatile {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&inner.joined)
            .map_err(|e| Self::failed(op, vm, "cannot encode the joined networks", &e))?;
        write_atomically(&self.root.join("networks.json"), &bytes)
            .map_err(|e| Self::failed(op, vm, "cannot write the joined networks", &e))
    }

    /// Counts the call, serves the delay of `op`, then fails if a fault
    /// says so.
    async fn enter(&self, op: Op, vm: &str) -> Result<()> {
        let delay = {
            let mut inner = self.lock();
            *inner.calls.entry(op).or_default() += 1;
            inner.delays.get(&op).copied()
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut inner = self.lock();
        let Some(fault) = inner.faults.iter_mut().find(|f| f.matches(op, vm)) else {
            return Ok(());
        };
        if let Some(n) = fault.remaining.as_mut() {
            *n -= 1;
        }
        inner.faults.retain(|f| f.remaining != Some(0));
        Err(HypervisorError::Failed {
            op,
            vm: vm.to_owned(),
            message: "injected fault".into(),
        })
    }

    fn failed(op: Op, vm: &str, what: &str, err: &dyn std::fmt::Display) -> HypervisorError {
        HypervisorError::Failed {
            op,
            vm: vm.to_owned(),
            message: format!("{what}: {err}"),
        }
    }

    /// Writes the VM table; called with the lock held so writes are ordered.
    fn persist(&self, op: Op, vm: &str, inner: &Inner) -> Result<()> {
        if self.volatile {
            self.changed.notify_waiters();
            return Ok(());
        }
        let vms: Vec<&SimVm> = inner.vms.values().collect();
        let bytes = serde_json::to_vec(&vms)
            .map_err(|e| Self::failed(op, vm, "cannot encode the VM table", &e))?;
        let written = write_atomically(&self.root.join("vms.json"), &bytes)
            .map_err(|e| Self::failed(op, vm, "cannot write the VM table", &e));
        // Waiters look again; a failed write is undone by the caller, and
        // they find nothing new.
        self.changed.notify_waiters();
        written
    }

    /// Writes the table of VMs to arrive; called with the lock held.
    fn persist_incoming(&self, op: Op, vm: &str, inner: &Inner) -> Result<()> {
        if self.volatile {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&inner.incoming)
            .map_err(|e| Self::failed(op, vm, "cannot encode the incoming VMs", &e))?;
        write_atomically(&self.root.join("incoming.json"), &bytes)
            .map_err(|e| Self::failed(op, vm, "cannot write the incoming VMs", &e))
    }

    /// Refuses `spec` if it does not fit beside the VMs already defined.
    fn check_room(&self, inner: &Inner, spec: &VmSpec) -> Result<()> {
        check_room(self.capacity, inner.vms.values().map(|v| &v.spec), spec)
    }
}

#[async_trait]
impl Hypervisor for SimHypervisor {
    fn capacity(&self) -> Capacity {
        self.capacity
    }

    async fn prepare_disk(&self, vm: &str, template_image: &str, size_mib: u64) -> Result<String> {
        let op = Op::PrepareDisk;
        validate_vm_name(vm)?;
        self.enter(op, vm).await?;
        let path = self.disk_path(vm);
        let shown = path.display().to_string();
        let wanted = DiskFile {
            template_image: template_image.to_owned(),
            size_mib,
        };
        let mut inner = self.lock();
        match self.read_disk(&inner, vm) {
            Ok(bytes) => {
                return match serde_json::from_slice::<DiskFile>(&bytes) {
                    Ok(existing) if existing == wanted => Ok(shown),
                    _ => Err(HypervisorError::SpecMismatch {
                        name: vm.to_owned(),
                    }),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::failed(op, vm, "cannot read the disk", &e)),
        }
        if !Path::new(template_image).is_file() {
            return Err(HypervisorError::NoImage(template_image.to_owned()));
        }
        let used: u64 = inner
            .disks
            .iter()
            .filter(|(name, _)| name.as_str() != vm)
            .map(|(_, size)| *size)
            .fold(size_mib, u64::saturating_add);
        if used > self.capacity.disk_mib {
            return Err(HypervisorError::NoRoom(format!(
                "{used} MiB of disks would exceed the host's {} MiB",
                self.capacity.disk_mib
            )));
        }
        let bytes = serde_json::to_vec(&wanted)
            .map_err(|e| Self::failed(op, vm, "cannot encode the disk", &e))?;
        self.write_disk(&mut inner, vm, bytes)
            .map_err(|e| Self::failed(op, vm, "cannot write the disk", &e))?;
        inner.disks.insert(vm.to_owned(), size_mib);
        Ok(shown)
    }

    async fn remove_disk(&self, vm: &str) -> Result<()> {
        let op = Op::RemoveDisk;
        validate_vm_name(vm)?;
        self.enter(op, vm).await?;
        let mut inner = self.lock();
        match self.delete_disk(&mut inner, vm) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::failed(op, vm, "cannot delete the disk", &e)),
        }
        inner.disks.remove(vm);
        Ok(())
    }

    async fn define(&self, spec: &VmSpec) -> Result<()> {
        let op = Op::Define;
        check_spec(spec)?;
        self.enter(op, &spec.name).await?;
        let mut inner = self.lock();
        if let Some(existing) = inner.vms.get(&spec.name) {
            return if existing.spec == *spec {
                Ok(())
            } else {
                Err(HypervisorError::SpecMismatch {
                    name: spec.name.clone(),
                })
            };
        }
        self.check_room(&inner, spec)?;
        inner.vms.insert(
            spec.name.clone(),
            SimVm {
                typed: String::new(),
                spec: spec.clone(),
                state: VmState::Stopped,
            },
        );
        if let Err(e) = self.persist(op, &spec.name, &inner) {
            inner.vms.remove(&spec.name);
            return Err(e);
        }
        Ok(())
    }

    async fn start(&self, vm: &str) -> Result<()> {
        let op = Op::Start;
        validate_vm_name(vm)?;
        self.enter(op, vm).await?;
        let mut inner = self.lock();
        let Some(entry) = inner.vms.get_mut(vm) else {
            return Err(HypervisorError::NoSuchVm(vm.to_owned()));
        };
        if entry.state == VmState::Running {
            return Ok(());
        }
        entry.state = VmState::Running;
        if let Err(e) = self.persist(op, vm, &inner) {
            if let Some(entry) = inner.vms.get_mut(vm) {
                entry.state = VmState::Stopped;
            }
            return Err(e);
        }
        Ok(())
    }

    async fn save(&self, vm: &str, state_path: &str) -> Result<()> {
        let op = Op::Save;
        validate_vm_name(vm)?;
        self.enter(op, vm).await?;
        let mut inner = self.lock();
        let Some(entry) = inner.vms.get(vm) else {
            // Already saved (and gone) is fine; never saved is not.
            return if Path::new(state_path).is_file() {
                Ok(())
            } else {
                Err(HypervisorError::NoSuchVm(vm.to_owned()))
            };
        };
        let saved = SavedState {
            spec: entry.spec.clone(),
            was_running: entry.state == VmState::Running,
        };
        let bytes = serde_json::to_vec_pretty(&saved)
            .map_err(|e| Self::failed(op, vm, "cannot encode the state", &e))?;
        write_atomically(Path::new(state_path), &bytes)
            .map_err(|e| Self::failed(op, vm, "cannot write the state", &e))?;
        let removed = inner.vms.remove(vm);
        if let Err(e) = self.persist(op, vm, &inner) {
            if let Some(r) = removed {
                inner.vms.insert(vm.to_owned(), r);
            }
            return Err(e);
        }
        self.release_joined(op, vm, &mut inner)
    }

    async fn restore(&self, spec: &VmSpec, state_path: &str) -> Result<()> {
        let op = Op::Restore;
        check_spec(spec)?;
        let vm = spec.name.as_str();
        self.enter(op, vm).await?;
        let mut inner = self.lock();
        if let Some(existing) = inner.vms.get_mut(vm) {
            if existing.spec != *spec {
                return Err(HypervisorError::SpecMismatch {
                    name: vm.to_owned(),
                });
            }
            if existing.state == VmState::Running {
                return Ok(());
            }
            // Defined but stopped (say, a restore interrupted before the
            // start): start it.
            existing.state = VmState::Running;
            return self.persist(op, vm, &inner);
        }
        let bytes = match std::fs::read(state_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HypervisorError::NoSavedState(state_path.to_owned()))
            }
            Err(e) => return Err(Self::failed(op, vm, "cannot read the state", &e)),
        };
        let saved: SavedState = serde_json::from_slice(&bytes)
            .map_err(|e| Self::failed(op, vm, "the saved state is unreadable", &e))?;
        if saved.spec.name != spec.name {
            return Err(Self::failed(
                op,
                vm,
                "the saved state belongs to another VM",
                &format_args!("{:?}", saved.spec.name),
            ));
        }
        self.check_room(&inner, spec)?;
        inner.vms.insert(
            vm.to_owned(),
            SimVm {
                typed: String::new(),
                spec: spec.clone(),
                state: VmState::Running,
            },
        );
        if let Err(e) = self.persist(op, vm, &inner) {
            inner.vms.remove(vm);
            return Err(e);
        }
        Ok(())
    }

    async fn export_disk(&self, vm: &str, dest: &str) -> Result<()> {
        let op = Op::ExportDisk;
        validate_vm_name(vm)?;
        self.enter(op, vm).await?;
        // The lock keeps a concurrent remove_disk from deleting the disk
        // half-way through the copy.
        let inner = self.lock();
        let bytes = match self.read_disk(&inner, vm) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HypervisorError::NoDisk(vm.to_owned()))
            }
            Err(e) => return Err(Self::failed(op, vm, "cannot read the disk", &e)),
        };
        write_atomically(Path::new(dest), &bytes)
            .map_err(|e| Self::failed(op, vm, "cannot write the copy", &e))
    }

    async fn destroy(&self, vm: &str) -> Result<()> {
        let op = Op::Destroy;
        validate_vm_name(vm)?;
        self.enter(op, vm).await?;
        let mut inner = self.lock();
        let Some(removed) = inner.vms.remove(vm) else {
            // A VM accepted to arrive that never did is forgotten too.
            if inner.incoming.remove(vm).is_some() {
                self.persist_incoming(op, vm, &inner)?;
                return self.release_joined(op, vm, &mut inner);
            }
            return Ok(());
        };
        if let Err(e) = self.persist(op, vm, &inner) {
            inner.vms.insert(vm.to_owned(), removed);
            return Err(e);
        }
        self.release_joined(op, vm, &mut inner)
    }

    async fn list(&self) -> Result<Vec<VmInfo>> {
        Ok(self
            .lock()
            .vms
            .values()
            .map(|v| VmInfo {
                name: v.spec.name.clone(),
                state: v.state,
                spec: v.spec.clone(),
                // A simulated guest is ready as soon as it runs.
                ready: v.state == VmState::Running,
            })
            .collect())
    }

    async fn console(&self, vm: &str, max_bytes: u64) -> Result<String> {
        validate_vm_name(vm)?;
        let inner = self.lock();
        let Some(v) = inner.vms.get(vm) else {
            return Err(HypervisorError::NoSuchVm(vm.to_owned()));
        };
        // What a booted guest would have printed: enough for a reader of
        // the console to find the ready line.
        let mut text = format!("Neptune simulated guest {vm}\n");
        if v.state == VmState::Running {
            if let Some(seed) = &v.spec.seed {
                text.push_str(&seed.ready_line());
                text.push('\n');
            }
        }
        // The simulated terminal echoes what was typed, as a real one does.
        text.push_str(&v.typed);
        let keep = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let mut start = text.len().saturating_sub(keep);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Ok(text[start..].to_owned())
    }

    async fn console_input(&self, vm: &str, input: &[u8]) -> Result<()> {
        validate_vm_name(vm)?;
        crate::check_console_input(vm, input)?;
        let mut inner = self.lock();
        let Some(v) = inner.vms.get_mut(vm) else {
            return Err(HypervisorError::NoSuchVm(vm.to_owned()));
        };
        if v.state != VmState::Running {
            return Err(Self::failed(
                Op::Console,
                vm,
                "the console",
                &"the VM does not run",
            ));
        }
        v.typed.push_str(&String::from_utf8_lossy(input));
        // Bounded as a real console's log is.
        if v.typed.len() > 64 << 10 {
            let mut cut = v.typed.len() - (32 << 10);
            while !v.typed.is_char_boundary(cut) {
                cut += 1;
            }
            v.typed.drain(..cut);
        }
        Ok(())
    }

    async fn outgoing(&self, vm: &str) -> Result<Outgoing> {
        validate_vm_name(vm)?;
        let inner = self.lock();
        let v = inner
            .vms
            .get(vm)
            .filter(|v| v.state == VmState::Running)
            .ok_or_else(|| HypervisorError::NoSuchVm(vm.to_owned()))?;
        let size_mib = inner
            .disks
            .get(vm)
            .copied()
            .ok_or_else(|| HypervisorError::NoDisk(vm.to_owned()))?;
        let base = self
            .read_disk(&inner, vm)
            .ok()
            .and_then(|b| serde_json::from_slice::<DiskFile>(&b).ok())
            .filter(|d| !d.template_image.starts_with(ARRIVING))
            .map(|d| DiskBase {
                base: sim_base(&d.template_image),
                template_image: d.template_image,
            });
        Ok(Outgoing {
            spec: v.spec.clone(),
            disk_bytes: size_mib << 20,
            uuid: format!("sim-{vm}"),
            ready: true,
            base,
        })
    }

    async fn accept_incoming(&self, request: &IncomingRequest) -> Result<Incoming> {
        let op = Op::Incoming;
        let vm = request.spec.name.as_str();
        check_spec(&request.spec)?;
        self.enter(op, vm).await?;
        let path = self.disk_path(vm);
        let spec = VmSpec {
            disk: path.display().to_string(),
            ..request.spec.clone()
        };
        let mut inner = self.lock();
        let answer = Incoming {
            vm: vm.to_owned(),
            connect: format!("sim://{}", self.root.display()),
            stream: None,
            definition: serde_json::to_string(&spec)
                .map_err(|e| Self::failed(op, vm, "cannot encode the spec", &e))?,
            incremental: false,
        };
        let made = self
            .read_disk(&inner, vm)
            .ok()
            .and_then(|b| serde_json::from_slice::<DiskFile>(&b).ok());
        let done = |answer: Incoming| Incoming {
            incremental: made
                .as_ref()
                .is_some_and(|d| !d.template_image.starts_with(ARRIVING)),
            ..answer
        };
        match (inner.incoming.get(vm), inner.vms.get(vm)) {
            (Some(pending), _) if *pending == spec => return Ok(done(answer)),
            (None, Some(arrived)) if arrived.spec == spec => return Ok(done(answer)),
            (None, None) => {}
            _ => {
                return Err(HypervisorError::SpecMismatch {
                    name: vm.to_owned(),
                })
            }
        }
        let others = inner
            .vms
            .values()
            .map(|v| &v.spec)
            .chain(inner.incoming.values());
        check_room(self.capacity, others, &spec)?;
        let size_mib = request.disk_bytes.div_ceil(1 << 20);
        let used: u64 = inner
            .disks
            .iter()
            .filter(|(name, _)| name.as_str() != vm)
            .map(|(_, size)| *size)
            .fold(size_mib, u64::saturating_add);
        if used > self.capacity.disk_mib {
            return Err(HypervisorError::NoRoom(format!(
                "{used} MiB of disks would exceed the host's {} MiB",
                self.capacity.disk_mib
            )));
        }
        // The same base is here when the template is, unchanged by name.
        let base = request
            .base
            .as_ref()
            .filter(|b| b.base == sim_base(&b.template_image))
            .filter(|b| Path::new(&b.template_image).is_file());
        let disk = DiskFile {
            template_image: base.map_or_else(
                || format!("{ARRIVING}: {vm})"),
                |b| b.template_image.clone(),
            ),
            size_mib,
        };
        let bytes = serde_json::to_vec(&disk)
            .map_err(|e| Self::failed(op, vm, "cannot encode the disk", &e))?;
        self.write_disk(&mut inner, vm, bytes)
            .map_err(|e| Self::failed(op, vm, "cannot write the disk", &e))?;
        inner.disks.insert(vm.to_owned(), size_mib);
        inner.incoming.insert(vm.to_owned(), spec);
        if let Err(e) = self.persist_incoming(op, vm, &inner) {
            inner.incoming.remove(vm);
            return Err(e);
        }
        Ok(Incoming {
            incremental: base.is_some(),
            ..answer
        })
    }

    async fn migrate(
        &self,
        vm: &str,
        to: &Incoming,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<MigrationReport> {
        let op = Op::Migrate;
        validate_vm_name(vm)?;
        if to.vm != vm {
            return Err(HypervisorError::InvalidRequest(format!(
                "the destination accepted VM {:?}, not {vm:?}",
                to.vm
            )));
        }
        let bytes = {
            let inner = self.lock();
            let v = inner
                .vms
                .get(vm)
                .filter(|v| v.state == VmState::Running)
                .ok_or_else(|| HypervisorError::NoSuchVm(vm.to_owned()))?;
            // An overlay holds no guest writes here: nothing of the disk
            // is sent when the destination has its base.
            let disk = if to.incremental {
                0
            } else {
                inner.disks.get(vm).copied().unwrap_or(0) << 20
            };
            (v.spec.ram_mib << 20).saturating_add(disk)
        };
        let started = std::time::Instant::now();
        progress(MigrationProgress {
            bytes_done: 0,
            bytes_remaining: bytes,
            switching_over: false,
        });
        // The delay stands for the copy: the VM runs here meanwhile.
        self.enter(op, vm).await?;
        // Copied: the guest pauses for the switch-over and leaves.
        progress(MigrationProgress {
            bytes_done: bytes,
            bytes_remaining: 0,
            switching_over: true,
        });
        let mut inner = self.lock();
        let Some(removed) = inner.vms.remove(vm) else {
            return Err(HypervisorError::NoSuchVm(vm.to_owned()));
        };
        if let Err(e) = self.persist(op, vm, &inner) {
            inner.vms.insert(vm.to_owned(), removed);
            return Err(e);
        }
        self.release_joined(op, vm, &mut inner)?;
        Ok(MigrationReport {
            total_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            downtime_ms: 0,
            bytes,
        })
    }

    async fn wait_running(&self, vm: &str, within: Duration) -> Result<bool> {
        validate_vm_name(vm)?;
        let until = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the look: a change after it wakes this.
            changed.as_mut().enable();
            let runs = self
                .lock()
                .vms
                .get(vm)
                .is_some_and(|v| v.state == VmState::Running);
            if runs {
                return Ok(true);
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return Ok(false);
            }
        }
    }

    async fn finish_incoming(&self, vm: &str) -> Result<()> {
        let op = Op::Incoming;
        validate_vm_name(vm)?;
        let mut inner = self.lock();
        let Some(spec) = inner.incoming.get(vm).cloned() else {
            return match inner.vms.get(vm) {
                Some(v) if v.state == VmState::Running => Ok(()),
                _ => Err(HypervisorError::NoSuchVm(vm.to_owned())),
            };
        };
        inner.vms.insert(
            vm.to_owned(),
            SimVm {
                typed: String::new(),
                spec,
                state: VmState::Running,
            },
        );
        if let Err(e) = self.persist(op, vm, &inner) {
            inner.vms.remove(vm);
            return Err(e);
        }
        inner.incoming.remove(vm);
        self.persist_incoming(op, vm, &inner)
    }

    async fn join_segments(&self, networks: &[NetworkJoin]) -> Result<()> {
        let op = Op::Join;
        self.lock().joins.push(networks.to_vec());
        let names: Vec<&str> = networks.iter().map(|j| j.network.as_str()).collect();
        let names = names.join(",");
        check_joins(networks)?;
        self.enter(op, &names).await?;
        let mut inner = self.lock();
        let mut joined = inner.joined.clone();
        for join in networks {
            let entry = joined.entry(join.network.clone()).or_default();
            let Some(segment) = &join.segment else {
                continue;
            };
            match entry {
                None => *entry = Some(segment.clone()),
                // As a host's VXLAN device: one network, one port.
                Some(s) if (s.vni, s.port) != (segment.vni, segment.port) => {
                    return Err(HypervisorError::Failed {
                        op,
                        vm: join.network.clone(),
                        message: format!(
                            "the network is VXLAN network {} on port {}, not {} on {}",
                            s.vni, s.port, segment.vni, segment.port
                        ),
                    });
                }
                Some(s) => {
                    for p in &segment.peers {
                        if !s.peers.contains(p) {
                            s.peers.push(*p);
                        }
                    }
                }
            }
        }
        if joined == inner.joined {
            return Ok(());
        }
        let before = std::mem::replace(&mut inner.joined, joined);
        if let Err(e) = self.persist_networks(op, &names, &inner) {
            inner.joined = before;
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::Nic;

    const CAP: Capacity = Capacity {
        cpus: 4,
        ram_mib: 4096,
        disk_mib: 10_000,
        vm_slots: 3,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        image: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("debian.qcow2");
        std::fs::write(&image, b"template").unwrap();
        Fixture {
            image: image.display().to_string(),
            dir,
        }
    }

    fn host(f: &Fixture, name: &str) -> SimHypervisor {
        SimHypervisor::new(SimConfig::new(f.dir.path().join(name), CAP)).unwrap()
    }

    fn spec(name: &str, vcpus: u32, ram_mib: u64, disk: &str) -> VmSpec {
        VmSpec {
            seed: None,
            name: name.into(),
            vcpus,
            ram_mib,
            disk_mib: 1024,
            disk: disk.into(),
            nics: vec![Nic {
                bandwidth_mbps: None,
                mac: "52:54:00:00:00:01".into(),
                network: "br-l1".into(),
                segment: None,
            }],
        }
    }

    // The port's contract (idempotency, refusals, capacity, save and
    // restore across hosts, export, console, the live move) is proved
    // against this adapter and libvirt's by tests/conformance.rs; what
    // follows is the simulation's own.

    #[tokio::test]
    async fn a_state_restores_only_its_own_vm() {
        let f = fixture();
        let a = host(&f, "a");
        let state = f.dir.path().join("states/vi1-web.state");
        let state = state.display().to_string();
        let s = spec("vi1-web", 2, 1024, "d");
        a.define(&s).await.unwrap();
        a.start("vi1-web").await.unwrap();
        a.save("vi1-web", &state).await.unwrap();
        let saved: SavedState = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!((saved.spec, saved.was_running), (s, true));
        let other = spec("vi1-db", 1, 1, "d");
        assert!(matches!(
            a.restore(&other, &state).await,
            Err(HypervisorError::Failed {
                op: Op::Restore,
                ..
            })
        ));
        assert!(a.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_wait_for_a_vm_to_run_ends_when_it_runs() {
        let f = fixture();
        let a = Arc::new(host(&f, "a"));
        let quick = Duration::from_millis(20);
        assert!(
            !a.wait_running("vi1-web", quick).await.unwrap(),
            "not defined"
        );
        a.define(&spec("vi1-web", 1, 64, "d")).await.unwrap();
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let runs = a.wait_running("vi1-web", Duration::from_secs(20)).await;
                (runs, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "defined is not running");
        a.start("vi1-web").await.unwrap();
        let (runs, took) = waiter.await.unwrap();
        assert!(runs.unwrap());
        assert!(
            took < Duration::from_secs(10),
            "woken by the start, not at the end of its wait: {took:?}"
        );
        assert!(a.wait_running("vi1-web", Duration::ZERO).await.unwrap());
    }

    #[tokio::test]
    async fn a_move_reports_memory_and_disk_and_a_destination_remembers() {
        let f = fixture();
        let a = host(&f, "a");
        let b = host(&f, "b");
        let disk = a.prepare_disk("vi1-web", &f.image, 1024).await.unwrap();
        let s = spec("vi1-web", 2, 1024, &disk);
        a.define(&s).await.unwrap();
        a.start("vi1-web").await.unwrap();
        let out = a.outgoing("vi1-web").await.unwrap();
        // No base named: the whole disk is copied.
        let request = IncomingRequest {
            spec: out.spec.clone(),
            disk_bytes: out.disk_bytes,
            uuid: out.uuid.clone(),
            ready: out.ready,
            base: None,
        };
        let to = b.accept_incoming(&request).await.unwrap();
        assert!(!to.incremental);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let report = a
            .migrate("vi1-web", &to, &move |p| log.lock().unwrap().push(p))
            .await
            .unwrap();
        assert_eq!(report.bytes, (1024u64 << 20) * 2, "memory and disk");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.first().map(|p| p.bytes_done), Some(0));
        assert_eq!(seen.last().map(|p| p.bytes_remaining), Some(0));
        assert_eq!(
            seen.iter().map(|p| p.switching_over).collect::<Vec<_>>(),
            [false, true],
            "the switch-over is told once the copy is done"
        );
        b.finish_incoming("vi1-web").await.unwrap();
        assert_eq!(
            b.list().await.unwrap()[0].spec.disk,
            b.disk_path("vi1-web").display().to_string()
        );

        // A restarted destination still knows what is to arrive.
        let c = host(&f, "c");
        let spec2 = VmSpec {
            name: "vi1-db".into(),
            ..request.spec.clone()
        };
        let wanted = IncomingRequest {
            spec: spec2,
            ..request.clone()
        };
        c.accept_incoming(&wanted).await.unwrap();
        drop(c);
        let c = host(&f, "c");
        assert_eq!(c.lock().incoming.len(), 1);
        // Undone: destroy and remove_disk leave nothing.
        c.destroy("vi1-db").await.unwrap();
        c.remove_disk("vi1-db").await.unwrap();
        assert!(c.lock().incoming.is_empty() && c.lock().disks.is_empty());
        assert_eq!(
            c.finish_incoming("vi1-db").await,
            Err(HypervisorError::NoSuchVm("vi1-db".into()))
        );
    }

    #[tokio::test]
    async fn only_memory_moves_where_the_template_base_is() {
        let f = fixture();
        let a = host(&f, "a");
        let b = host(&f, "b");
        let disk = a.prepare_disk("vi1-web", &f.image, 1024).await.unwrap();
        a.define(&spec("vi1-web", 2, 512, &disk)).await.unwrap();
        a.start("vi1-web").await.unwrap();
        let out = a.outgoing("vi1-web").await.unwrap();
        assert_eq!(
            out.base.as_ref().map(|b| b.template_image.as_str()),
            Some(f.image.as_str())
        );
        let request = out.incoming_request(out.spec.clone());
        let to = b.accept_incoming(&request).await.unwrap();
        assert!(to.incremental);
        assert_eq!(b.accept_incoming(&request).await.unwrap(), to);
        let report = a.migrate("vi1-web", &to, &|_| {}).await.unwrap();
        assert_eq!(report.bytes, 512 << 20, "the memory alone");
        b.finish_incoming("vi1-web").await.unwrap();
        assert_eq!(b.outgoing("vi1-web").await.unwrap().base, out.base);
    }

    #[tokio::test]
    async fn nothing_is_kept_of_a_move_refused_for_room() {
        let f = fixture();
        let a = host(&f, "a");
        let disk = a.prepare_disk("vi1-web", &f.image, 1024).await.unwrap();
        let s = spec("vi1-web", 2, 1024, &disk);
        a.define(&s).await.unwrap();
        a.start("vi1-web").await.unwrap();
        let out = a.outgoing("vi1-web").await.unwrap();
        let request = out.incoming_request(out.spec.clone());
        let small = SimHypervisor::new(SimConfig::new(
            f.dir.path().join("small"),
            Capacity { cpus: 1, ..CAP },
        ))
        .unwrap();
        assert!(matches!(
            small.accept_incoming(&request).await,
            Err(HypervisorError::NoRoom(_))
        ));
        let inner = small.lock();
        assert!(inner.disks.is_empty() && inner.incoming.is_empty());
    }

    #[tokio::test]
    async fn a_disk_names_its_template_and_an_export_is_a_byte_copy() {
        let f = fixture();
        let a = host(&f, "a");
        let export = f.dir.path().join("repo/saved/vi1-web.disk");
        let export = export.display().to_string();
        let disk = a.prepare_disk("vi1-web", &f.image, 1024).await.unwrap();
        assert!(std::fs::read_to_string(&disk)
            .unwrap()
            .contains("debian.qcow2"));
        a.export_disk("vi1-web", &export).await.unwrap();
        assert_eq!(
            std::fs::read(&export).unwrap(),
            std::fs::read(&disk).unwrap(),
            "the export is a copy of the disk"
        );
        a.set_faults(vec![Fault::times(Op::ExportDisk, 1)]);
        a.prepare_disk("vi1-db", &f.image, 10).await.unwrap();
        assert!(matches!(
            a.export_disk("vi1-db", &export).await,
            Err(HypervisorError::Failed {
                op: Op::ExportDisk,
                ..
            })
        ));
        assert_eq!(
            std::fs::read(&export).unwrap(),
            std::fs::read(&disk).unwrap(),
            "a failed export leaves the last copy"
        );
    }

    #[tokio::test]
    async fn faults_fail_the_next_calls() {
        let f = fixture();
        let h = host(&f, "h1");
        h.set_faults(vec![Fault::times(Op::Define, 2).for_vm("-db")]);
        h.define(&spec("vi1-web", 1, 1, "d")).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(
                h.define(&spec("vi1-db", 1, 1, "d")).await,
                Err(HypervisorError::Failed { op: Op::Define, ref vm, .. }) if vm == "vi1-db"
            ));
        }
        h.define(&spec("vi1-db", 1, 1, "d")).await.unwrap();
        assert!(h.faults().is_empty(), "spent faults are dropped");

        h.add_fault(Fault::always(Op::Start));
        for _ in 0..3 {
            let err = h.start("vi1-web").await.unwrap_err();
            assert!(err.is_retryable());
        }
        assert_eq!(h.list().await.unwrap()[0].state, VmState::Stopped);
        h.set_faults(Vec::new());
        h.start("vi1-web").await.unwrap();
    }

    #[tokio::test]
    async fn delays_are_served_concurrently() {
        let f = fixture();
        let h = Arc::new(
            SimHypervisor::new(
                SimConfig::new(f.dir.path().join("h1"), CAP)
                    .with_uniform_delay(Duration::from_millis(150)),
            )
            .unwrap(),
        );
        let t = Instant::now();
        h.define(&spec("a", 1, 1, "d")).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));

        // Three starts at once take about one delay, not three.
        h.define(&spec("b", 1, 1, "d")).await.unwrap();
        h.define(&spec("c", 1, 1, "d")).await.unwrap();
        let t = Instant::now();
        let tasks: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|vm| {
                let h = h.clone();
                tokio::spawn(async move { h.start(vm).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < Duration::from_millis(400), "{took:?}");

        h.set_delay(Op::Destroy, Duration::ZERO);
        let t = Instant::now();
        h.destroy("a").await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_new_instance_finds_the_disks_and_vms() {
        let f = fixture();
        let h = host(&f, "h1");
        h.prepare_disk("a", &f.image, 6000).await.unwrap();
        h.define(&spec("a", 1, 1, "d")).await.unwrap();
        h.start("a").await.unwrap();
        drop(h);
        let h = host(&f, "h1");
        let vms = h.list().await.unwrap();
        assert_eq!(vms.len(), 1);
        assert_eq!(vms[0].state, VmState::Running);
        assert!(matches!(
            h.prepare_disk("b", &f.image, 5000).await,
            Err(HypervisorError::NoRoom(_))
        ));
    }

    /// The joins are recorded per call, the peers of a network are the
    /// union of every join's, a network keeps its VXLAN identifier and
    /// port, the joined networks survive a restart, and one no VM uses
    /// goes when a VM leaves.
    #[tokio::test]
    async fn joins_are_recorded_and_peers_accumulate() {
        let f = fixture();
        let h = host(&f, "h1");
        let peer = |last: u8| SocketAddr::from(([192, 0, 2, last], 4789));
        let join = |vni: u32, peers: Vec<SocketAddr>| NetworkJoin {
            network: "lan".to_owned(),
            segment: Some(Segment {
                vni,
                port: 4789,
                peers,
            }),
        };
        h.join_segments(&[join(7, vec![peer(1)])]).await.unwrap();
        h.join_segments(&[join(7, vec![peer(2), peer(1)])])
            .await
            .unwrap();
        assert_eq!(h.segment_peers("lan"), Some(vec![peer(1), peer(2)]));
        assert_eq!(h.segment_peers("wan"), None);
        assert_eq!(h.calls(Op::Join), 2);
        assert_eq!(
            h.joins(),
            vec![
                vec![join(7, vec![peer(1)])],
                vec![join(7, vec![peer(2), peer(1)])]
            ]
        );
        let other = h.join_segments(&[join(8, vec![peer(3)])]).await;
        assert!(
            matches!(other, Err(HypervisorError::Failed { op: Op::Join, .. })),
            "{other:?}"
        );
        assert_eq!(h.segment_peers("lan"), Some(vec![peer(1), peer(2)]));
        h.add_fault(Fault::times(Op::Join, 1).for_vm("lan"));
        assert!(h.join_segments(&[join(7, vec![])]).await.is_err());
        drop(h);

        let h = host(&f, "h1");
        assert_eq!(h.segment_peers("lan"), Some(vec![peer(1), peer(2)]));
        assert!(h.joins().is_empty(), "the calls are not persisted");
        let disk = h.prepare_disk("vm", &f.image, 10).await.unwrap();
        let spec = VmSpec {
            seed: None,
            name: "vm".to_owned(),
            vcpus: 1,
            ram_mib: 64,
            disk_mib: 10,
            disk,
            nics: vec![Nic {
                mac: String::new(),
                network: "wan".to_owned(),
                segment: None,
                bandwidth_mbps: None,
            }],
        };
        h.define(&spec).await.unwrap();
        assert_eq!(h.segment_peers("wan"), Some(vec![]));
        h.destroy("vm").await.unwrap();
        assert_eq!(h.segment_peers("lan"), None, "collected when a VM left");
        assert_eq!(h.segment_peers("wan"), None);
        drop(h);
        assert_eq!(host(&f, "h1").segment_peers("lan"), None);
    }
}
