//! The Hypervisor port: what an Agent asks of the virtualisation layer of
//! its host. Every operation is idempotent (defining a defined VM with the
//! same spec, destroying an absent one, starting a running one all
//! succeed), so a durable job can repeat a step after a crash.
//!
//! Adapters: [`libvirt::LibvirtHypervisor`] (libvirt domains on QEMU/KVM,
//! qcow2 disks, one isolated libvirt network per virtual link) and
//! [`sim::SimHypervisor`] (in memory, with configurable delays and fault
//! injection, for `neptune up`, CI speed and scale tests).

mod batch;
pub mod kvm;
pub mod libvirt;
pub mod sim;

pub use batch::{BatchOp, BatchOut, BATCH_PARALLEL, MAX_BATCH_OPS};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a VM is made of. `name` is unique on the host (the Manager uses
/// `<vi-id>-<node-id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub ram_mib: u64,
    pub disk_mib: u64,
    /// The VM's own disk, as returned by [`Hypervisor::prepare_disk`].
    pub disk: String,
    pub nics: Vec<Nic>,
    /// The guest's configuration, for cloud-init: attached as a read-only
    /// CD-ROM. `None`: the guest boots unconfigured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
}

/// A cloud-init NoCloud seed (the `cidata` volume): the guest's identity,
/// network configuration (version 2) and user data, rendered by the
/// Manager from the VI's design and plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Seed {
    /// The instance's id, also in `meta_data`: a guest whose disk holds
    /// another one configures itself anew (a template saved from a VM of
    /// another VI).
    pub instance_id: String,
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
}

/// What a configured guest prints on its serial console, followed by a
/// space and its instance id, when it is ready (cloud-init's
/// `final_message`).
pub const READY_MARKER: &str = "NEPTUNE-READY";

impl Seed {
    /// The console line that says this instance is ready.
    pub fn ready_line(&self) -> String {
        format!("{READY_MARKER} {}", self.instance_id)
    }
}

/// A virtual NIC: its MAC and the host network (bridge) of its virtual link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nic {
    pub mac: String,
    pub network: String,
    /// When the link has VMs on other hosts: the tunnel that joins its
    /// network to theirs. The same on every NIC of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    /// The link's bandwidth, enforced on the NIC in both directions.
    /// `None`: unlimited (an entry point's public NIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<u64>,
}

/// A virtual link's layer-2 segment across hosts: a VXLAN network
/// (RFC 7348) whose broadcast and unknown frames go to every peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Segment {
    /// The VXLAN network identifier: 24 bits, not 0, unique in the domain.
    pub vni: u32,
    /// The UDP port this host receives the segment on (4789, IANA's).
    pub port: u16,
    /// The tunnel endpoints of the other hosts with VMs on the link.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["192.0.2.7:4789"])))]
    pub peers: Vec<SocketAddr>,
}

/// A network a host is to have, joined to its segment
/// ([`Hypervisor::join_segments`]): a link's network whose VMs run here,
/// widened to reach hosts that joined the link since they started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkJoin {
    /// The network, as the NICs on it name it ([`Nic::network`]).
    pub network: String,
    /// Its segment, with at least the peers it must flood to; `None`: a
    /// network of this host only, made sure of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
}

/// The network of an entry point's interface that is on no virtual link:
/// the datacenter's public network, toward its Edge Service Switch.
pub const PUBLIC_NETWORK: &str = "public";

/// The largest VXLAN network identifier.
pub const MAX_VNI: u32 = 0xff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Defined, not running.
    Stopped,
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmInfo {
    pub name: String,
    pub state: VmState,
    pub spec: VmSpec,
    /// Whether the guest said it is ready (its seed's ready line on its
    /// console, or restored from a state saved ready). A VM without a seed
    /// is ready when it runs.
    #[serde(default)]
    pub ready: bool,
}

/// A VM as it would leave its host live ([`Hypervisor::outgoing`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Outgoing {
    /// The spec as the source host runs it.
    pub spec: VmSpec,
    /// The virtual size of its disk in bytes: the destination makes its
    /// disk this size, and the move copies the content.
    pub disk_bytes: u64,
    /// The hypervisor's identifier of the VM, which it keeps on the
    /// destination (libvirt's domain UUID).
    pub uuid: String,
    /// Whether the guest is ready: it stays so on the destination, where
    /// it does not boot again.
    pub ready: bool,
    /// The template base its disk is an overlay of, if it is one: a
    /// destination holding the same base copies only the overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DiskBase>,
}

impl Outgoing {
    /// What a destination is asked to prepare for this VM, to run it
    /// there as `spec` (its NICs on the destination's segments).
    pub fn incoming_request(&self, spec: VmSpec) -> IncomingRequest {
        IncomingRequest {
            spec,
            disk_bytes: self.disk_bytes,
            uuid: self.uuid.clone(),
            ready: self.ready,
            base: self.base.clone(),
        }
    }
}

/// The template image a VM's disk is an overlay of, and which copy of it:
/// hosts copy a template into a base named for its content, so two hosts
/// with the same base name hold the same bytes under the overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskBase {
    /// The template's image, as deploys name it to every host.
    pub template_image: String,
    /// The base's content name on the source host (the libvirt adapter's
    /// `<sha256>.<format>`).
    pub base: String,
}

/// What a destination host is asked to prepare for a VM arriving live
/// ([`Hypervisor::accept_incoming`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncomingRequest {
    /// The spec as the destination is to run it: its NICs on the
    /// destination's segments. Its `disk` is the destination's own choice.
    pub spec: VmSpec,
    /// See [`Outgoing::disk_bytes`].
    pub disk_bytes: u64,
    /// See [`Outgoing::uuid`].
    pub uuid: String,
    /// See [`Outgoing::ready`].
    pub ready: bool,
    /// See [`Outgoing::base`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DiskBase>,
}

/// What the source host needs to send a VM to the destination that
/// accepted it ([`Hypervisor::migrate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Incoming {
    pub vm: String,
    /// The destination hypervisor's connection, which the source drives
    /// the move through (a libvirt URI such as `qemu+tls://host/system`).
    pub connect: String,
    /// Where the memory and disk streams go (a libvirt migration URI such
    /// as `tcp://192.0.2.7`); `None`: the hypervisor's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The VM's definition on the destination (libvirt's domain XML).
    pub definition: String,
    /// Whether the destination's disk is an overlay of the request's base,
    /// so the move copies only the source's overlay (libvirt's
    /// `--copy-storage-inc`); else a blank disk the whole disk is copied
    /// into (`--copy-storage-all`).
    #[serde(default)]
    pub incremental: bool,
}

/// How far a live move is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationProgress {
    /// Memory and disk bytes sent so far.
    pub bytes_done: u64,
    /// Bytes still to send (changes as the guest writes).
    pub bytes_remaining: u64,
    /// The guest is paused here for the switch-over: it runs next on the
    /// destination, within the move's downtime. Where a VM's traffic goes
    /// may follow it now, so that it is there when the guest resumes.
    #[serde(default)]
    pub switching_over: bool,
}

/// How a live move went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationReport {
    /// From the start of the move to the VM running on the destination.
    pub total_ms: u64,
    /// How long the guest was paused for the switch-over.
    pub downtime_ms: u64,
    /// Memory and disk bytes sent.
    pub bytes: u64,
}

/// The host's capacity, as the Agent registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capacity {
    pub cpus: u32,
    pub ram_mib: u64,
    pub disk_mib: u64,
    pub vm_slots: u32,
}

/// The operations, for delays and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    PrepareDisk,
    RemoveDisk,
    Define,
    Start,
    Save,
    Restore,
    Destroy,
    ExportDisk,
    Console,
    /// Sending a VM live to another host (and asking what it would send).
    Migrate,
    /// Receiving a VM live from another host.
    Incoming,
    /// Joining networks to their segments ([`Hypervisor::join_segments`]).
    Join,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HypervisorError {
    #[error("VM {0:?} is not defined on this host")]
    NoSuchVm(String),
    #[error("VM {name:?} is already defined with a different spec")]
    SpecMismatch { name: String },
    #[error("VM {0:?} has no disk on this host")]
    NoDisk(String),
    #[error("saved state {0:?} does not exist")]
    NoSavedState(String),
    #[error("template image {0:?} does not exist")]
    NoImage(String),
    #[error("the host has no room: {0}")]
    NoRoom(String),
    /// An injected fault (simulated adapter) or a hypervisor failure.
    #[error("{op:?} of {vm:?} failed: {message}")]
    Failed { op: Op, vm: String, message: String },
    /// The request itself is malformed (a VM name that is not a safe file
    /// name, a zero-sized VM): repeating it will not help.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The hypervisor (or the Agent in front of it) did not answer: the
    /// operation may or may not have happened. Every operation is
    /// idempotent, so repeating it is safe.
    #[error("the hypervisor is unreachable: {0}")]
    Unreachable(String),
}

impl HypervisorError {
    /// Whether repeating the same call may succeed without anything else
    /// changing first (an unreachable hypervisor, a failed operation).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Failed { .. })
    }
}

/// Refuses a segment no adapter can carry: a VNI out of 1 to [`MAX_VNI`],
/// port 0.
fn check_segment(network: &str, segment: &Segment) -> Result<()> {
    if segment.vni == 0 || segment.vni > MAX_VNI || segment.port == 0 {
        return Err(HypervisorError::InvalidRequest(format!(
            "network {network:?}: VXLAN network {} on port {} (the identifier is 1 to {MAX_VNI}, the port not 0)",
            segment.vni, segment.port
        )));
    }
    Ok(())
}

/// Refuses joins no adapter can make: a network name that is empty,
/// starts with `-` (a tool would read an option) or holds a `/` or a
/// control character (it names files on the host), a bad segment, one
/// network twice with different segments.
pub(crate) fn check_joins(networks: &[NetworkJoin]) -> Result<()> {
    for (i, join) in networks.iter().enumerate() {
        let name = &join.network;
        if name.is_empty()
            || name.starts_with('-')
            || name.chars().any(|c| c == '/' || c.is_control())
        {
            return Err(HypervisorError::InvalidRequest(format!(
                "{name:?} is not a network name (not empty, not starting with '-', no '/' nor control characters)"
            )));
        }
        if let Some(s) = &join.segment {
            check_segment(&join.network, s)?;
        }
        if networks[..i]
            .iter()
            .any(|o| o.network == join.network && o.segment != join.segment)
        {
            return Err(HypervisorError::InvalidRequest(format!(
                "network {:?} is joined twice with different segments",
                join.network
            )));
        }
    }
    Ok(())
}

/// Checks that `name` can name a VM: 1 to 128 ASCII letters, digits, `-`,
/// `_` or `.`, not starting with `.` (it becomes a file name on the host).
pub fn validate_vm_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(HypervisorError::InvalidRequest(format!(
            "{name:?} is not a VM name (1 to 128 letters, digits, '-', '_' or '.', not starting with '.')"
        )))
    }
}

pub type Result<T> = std::result::Result<T, HypervisorError>;

/// Refuses a spec no adapter can run: a bad name, no vCPU or no RAM.
pub(crate) fn check_spec(spec: &VmSpec) -> Result<()> {
    validate_vm_name(&spec.name)?;
    if spec.vcpus == 0 || spec.ram_mib == 0 {
        return Err(HypervisorError::InvalidRequest(format!(
            "VM {:?} needs at least one vCPU and some RAM",
            spec.name
        )));
    }
    for nic in &spec.nics {
        if let Some(s) = &nic.segment {
            check_segment(&nic.network, s)?;
        }
        if spec
            .nics
            .iter()
            .any(|o| o.network == nic.network && o.segment != nic.segment)
        {
            return Err(HypervisorError::InvalidRequest(format!(
                "the NICs of VM {:?} on network {:?} differ in its segment",
                spec.name, nic.network
            )));
        }
    }
    Ok(())
}

/// Refuses `spec` if it does not fit in `capacity` beside the VMs of
/// `others` (a slot, vCPUs and RAM each).
pub(crate) fn check_room<'a>(
    capacity: Capacity,
    others: impl Iterator<Item = &'a VmSpec>,
    spec: &VmSpec,
) -> Result<()> {
    let (mut slots, mut vcpus, mut ram) = (1u64, u64::from(spec.vcpus), spec.ram_mib);
    for o in others {
        slots += 1;
        vcpus += u64::from(o.vcpus);
        ram = ram.saturating_add(o.ram_mib);
    }
    if slots > u64::from(capacity.vm_slots) {
        return Err(HypervisorError::NoRoom(format!(
            "all {} VM slots are taken",
            capacity.vm_slots
        )));
    }
    if vcpus > u64::from(capacity.cpus) {
        return Err(HypervisorError::NoRoom(format!(
            "{vcpus} vCPUs would exceed the host's {}",
            capacity.cpus
        )));
    }
    if ram > capacity.ram_mib {
        return Err(HypervisorError::NoRoom(format!(
            "{ram} MiB of RAM would exceed the host's {} MiB",
            capacity.ram_mib
        )));
    }
    Ok(())
}

/// Writes a temporary file beside `path` and renames it over `path`,
/// creating the parent directory if needed. A reader (or a restarted
/// process) sees the old content or the new, never a mix. There is no
/// fsync: this is a simulation, surviving a process crash is enough, and
/// a sync per operation would make 100 VMs take seconds.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The port. Implementations are shared across tasks.
#[async_trait]
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    fn capacity(&self) -> Capacity;

    /// Makes the VM's disk from a template image (a copy or an overlay) and
    /// returns its path. Idempotent.
    async fn prepare_disk(&self, vm: &str, template_image: &str, size_mib: u64) -> Result<String>;
    /// Deletes the VM's disk; absent is fine.
    async fn remove_disk(&self, vm: &str) -> Result<()>;
    /// Defines the VM (stopped). Idempotent for the same spec.
    async fn define(&self, spec: &VmSpec) -> Result<()>;
    /// Starts a defined VM; running is fine.
    async fn start(&self, vm: &str) -> Result<()>;
    /// Saves the VM's memory to `state_path` and removes it from the host
    /// (the paper's suspend: the host is freed "for future reallocation").
    /// A VM already saved there and gone is fine.
    async fn save(&self, vm: &str, state_path: &str) -> Result<()>;
    /// Defines and starts a VM from a state saved by [`Hypervisor::save`]
    /// (possibly on another host). Running is fine.
    async fn restore(&self, spec: &VmSpec, state_path: &str) -> Result<()>;
    /// Copies the VM's disk to `dest` (in the image repository), replacing
    /// what is there: for a suspended VI to move to other hosts, and to save
    /// a VM as a new template. The copy appears at `dest` whole or not at
    /// all. A running VM gives a crash-consistent copy.
    async fn export_disk(&self, vm: &str, dest: &str) -> Result<()>;
    /// Stops and undefines the VM (its disk stays); absent is fine.
    async fn destroy(&self, vm: &str) -> Result<()>;
    async fn list(&self) -> Result<Vec<VmInfo>>;
    /// One VM, as [`Hypervisor::list`] would show it; `None` when it is
    /// not on this host. Adapters answer it without listing every VM.
    async fn info(&self, vm: &str) -> Result<Option<VmInfo>> {
        Ok(self.list().await?.into_iter().find(|v| v.name == vm))
    }
    /// The last `max_bytes` of the VM's serial console output (as text,
    /// invalid UTF-8 replaced).
    async fn console(&self, vm: &str, max_bytes: u64) -> Result<String>;
    /// Types `input` on the VM's serial console (at most
    /// [`MAX_CONSOLE_INPUT`] bytes); the guest's answer shows in
    /// [`Hypervisor::console`]. The VM must run.
    async fn console_input(&self, vm: &str, input: &[u8]) -> Result<()>;

    /// The running VM `vm` as it would leave this host live.
    async fn outgoing(&self, vm: &str) -> Result<Outgoing>;
    /// Prepares this host to receive a VM live: room for it, a blank disk
    /// of its size (the move fills it), its seed and networks. The VM is
    /// not defined here until it arrives. Idempotent.
    async fn accept_incoming(&self, request: &IncomingRequest) -> Result<Incoming>;
    /// Moves the running VM `vm` live to the host that answered `to`,
    /// copying its disk, and returns once it runs there; `progress` hears
    /// how far it is. What the VM used here (its definition, files and
    /// networks; not its disk, see [`Hypervisor::remove_disk`]) is freed.
    /// If the move fails, the VM keeps running here. A VM no longer here
    /// (an earlier call moved it) is [`HypervisorError::NoSuchVm`].
    async fn migrate(
        &self,
        vm: &str,
        to: &Incoming,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<MigrationReport>;
    /// Waits until the VM `vm` runs on this host, at most `within`, and
    /// says whether it does: for a VM arriving live, the moment its guest
    /// resumes here (the rest of the move, on the source, takes longer).
    /// A VM running here already answers at once; one not (yet) defined
    /// here is waited for.
    async fn wait_running(&self, vm: &str, within: Duration) -> Result<bool>;
    /// Completes a VM that arrived live: its NICs shaped, its readiness
    /// kept. Idempotent; a VM that did not arrive is
    /// [`HypervisorError::NoSuchVm`].
    async fn finish_incoming(&self, vm: &str) -> Result<()>;

    /// Makes sure each of `networks` exists on this host and floods to at
    /// least its segment's peers (peers already there are kept): a link
    /// whose VMs are on hosts that joined it since they started (a VI moving
    /// between datacenters) reaches them. Idempotent; a network with no
    /// segment is only made sure of.
    ///
    /// A joined network goes as a VM's networks go, with the last VM on it
    /// that leaves the host; one that no VM uses when it is joined goes
    /// when the next VM leaves.
    async fn join_segments(&self, networks: &[NetworkJoin]) -> Result<()>;

    /// Runs `ops` (at most [`MAX_BATCH_OPS`]), each as its own call would,
    /// and answers each, in order: one failing does not stop the others.
    /// A local hypervisor runs [`BATCH_PARALLEL`] of them at a time; a
    /// remote one's adapter sends them in one request.
    async fn batch(&self, ops: &[BatchOp]) -> Vec<Result<BatchOut>> {
        use futures_util::StreamExt as _;
        let runs: Vec<_> = ops.iter().map(|op| op.run(self)).collect();
        futures_util::stream::iter(runs)
            .buffered(BATCH_PARALLEL)
            .collect()
            .await
    }
}

/// The most bytes one [`Hypervisor::console_input`] types.
pub const MAX_CONSOLE_INPUT: usize = 4096;

/// Refuses console input beyond [`MAX_CONSOLE_INPUT`].
pub(crate) fn check_console_input(vm: &str, input: &[u8]) -> Result<()> {
    if input.len() > MAX_CONSOLE_INPUT {
        return Err(HypervisorError::InvalidRequest(format!(
            "{} bytes of console input for VM {vm:?}: at most {MAX_CONSOLE_INPUT} at once",
            input.len()
        )));
    }
    Ok(())
}
