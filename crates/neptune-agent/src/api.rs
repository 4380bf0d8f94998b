//! The Agent API: what travels between the Manager and an Agent.
//!
//! ```text
//! GET    /healthz                      -> Health            (no token)
//! GET    /v1/host                      -> HostInfo
//! GET    /v1/vms                       -> [VmInfo]
//! GET    /v1/vms/{name}                -> VmInfo
//! PUT    /v1/vms/{name}/disk   PrepareDisk -> Disk
//! DELETE /v1/vms/{name}/disk           -> 204
//! POST   /v1/vms/{name}/disk/export ExportDisk -> 204
//! PUT    /v1/vms/{name}        VmSpec  -> 204   (define)
//! POST   /v1/vms/{name}/start          -> 204
//! POST   /v1/vms/{name}/save   SaveVm  -> 204
//! POST   /v1/vms/{name}/restore RestoreVm -> 204
//! DELETE /v1/vms/{name}                -> 204   (destroy)
//! GET    /v1/vms/{name}/console?bytes=N -> Console (the last N bytes,
//!                                        at most 1 MiB, 64 KiB by default)
//! POST   /v1/vms/{name}/console ConsoleInput -> 204 (types on the console)
//! GET    /v1/vms/{name}/outgoing       -> Outgoing (the VM as it would move live)
//! POST   /v1/incoming  IncomingRequest -> Incoming (prepares for a VM arriving live)
//! POST   /v1/vms/{name}/migrate Incoming -> 202 Migration (starts the move;
//!                                        again while it runs, or after it
//!                                        succeeded: the same move)
//! GET    /v1/vms/{name}/migration      -> Migration (how the last move goes)
//! POST   /v1/vms/{name}/arrived        -> 204 (completes a VM that arrived live)
//! ```
//!
//! Every call but `/healthz` carries `Authorization: Bearer <agent token>`.
//! Every call is idempotent, as the [`neptune_hypervisor::Hypervisor`]
//! operations behind it. A refusal is an [`ErrorBody`] whose `code` is one
//! of [`codes`].

use serde::{Deserialize, Serialize};

pub use neptune_hypervisor::{
    Capacity, Incoming, IncomingRequest, MigrationProgress, MigrationReport, Nic, Outgoing, VmInfo,
    VmSpec, VmState,
};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
}

/// `GET /v1/host`: the host this Agent drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub name: String,
    pub datacenter: String,
    pub capacity: Capacity,
}

/// The most of a console one `GET /v1/vms/{name}/console` returns.
pub const MAX_CONSOLE_BYTES: u64 = 1 << 20;

/// The console bytes returned when the request does not say.
pub const DEFAULT_CONSOLE_BYTES: u64 = 64 << 10;

/// The query of `GET /v1/vms/{name}/console`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// How many of the last bytes of the console to return.
    pub bytes: Option<u64>,
}

/// The answer to `GET /v1/vms/{name}/console`: the end of the VM's serial
/// console output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Console {
    pub text: String,
}

/// `POST /v1/vms/{name}/console`: what to type on the VM's serial
/// console (at most [`neptune_hypervisor::MAX_CONSOLE_INPUT`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleInput {
    pub input: String,
}

/// `PUT /v1/vms/{name}/disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareDisk {
    /// Path of the template image on the host.
    pub template_image: String,
    pub size_mib: u64,
}

/// The answer to `PUT /v1/vms/{name}/disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Path of the VM's disk on the host (goes into [`VmSpec::disk`]).
    pub disk: String,
}

/// `POST /v1/vms/{name}/disk/export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportDisk {
    /// Where the copy goes, in the image repository the hosts share.
    pub dest: String,
}

/// `POST /v1/vms/{name}/save`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveVm {
    pub state_path: String,
}

/// `POST /v1/vms/{name}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreVm {
    pub spec: VmSpec,
    pub state_path: String,
}

/// Where a live move started by `POST /v1/vms/{name}/migrate` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    Running,
    Succeeded,
    /// The VM still runs on this host.
    Failed,
}

/// `GET /v1/vms/{name}/migration`: the last live move of the VM from this
/// host (kept an hour after it ends, while the Agent runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub vm: String,
    pub state: MigrationState,
    pub progress: MigrationProgress,
    /// Once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<MigrationReport>,
    /// Once it failed: why, as any refusal says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A refusal: a stable `code` (one of [`codes`]) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// The hypervisor's own words for refusals that carry some (`no_room`,
    /// `invalid_request`, `hypervisor_failed`), so a client can rebuild the
    /// [`neptune_hypervisor::HypervisorError`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The error codes of [`ErrorBody::code`], with their HTTP statuses.
pub mod codes {
    /// 401: missing or wrong bearer token.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 400: malformed body, bad VM name, path and body disagree.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// 404: no such route, or no live move of the VM is known.
    pub const NOT_FOUND: &str = "not_found";
    /// 404: the VM is not defined on this host.
    pub const NO_SUCH_VM: &str = "no_such_vm";
    /// 409: the VM (or its disk) exists with a different spec.
    pub const SPEC_MISMATCH: &str = "spec_mismatch";
    /// 409: the host's capacity would be exceeded.
    pub const NO_ROOM: &str = "no_room";
    /// 422: the template image does not exist on the host.
    pub const NO_IMAGE: &str = "no_image";
    /// 404: the VM has no disk on this host (export).
    pub const NO_DISK: &str = "no_disk";
    /// 422: the saved state to restore does not exist.
    pub const NO_SAVED_STATE: &str = "no_saved_state";
    /// 502: the hypervisor failed the operation.
    pub const HYPERVISOR_FAILED: &str = "hypervisor_failed";
    /// 503: the hypervisor did not answer.
    pub const HYPERVISOR_UNREACHABLE: &str = "hypervisor_unreachable";
}

/// The body the Agent posts to the Manager's `POST /api/v1/hosts`
/// (registration, repeated as the heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterHost {
    pub datacenter: String,
    pub name: String,
    pub agent_url: String,
    pub cpus: u32,
    pub ram_mib: u64,
    pub disk_mib: u64,
    pub vm_slots: u32,
    /// Mbit/s of the host's uplink; 0: not known.
    #[serde(default)]
    pub uplink_mbps: u64,
}
