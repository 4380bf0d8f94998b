//! The Agent API: what travels between the Manager and an Agent.
//!
//! ```text
//! GET    /healthz                      -> Health            (no token)
//! GET    /v1/openapi.json              -> this API's OpenAPI document (no token)
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
//! GET    /v1/vms/{name}/arrival?wait_ms=N -> Arrival (whether the VM runs
//!                                        here; waits up to N ms for it)
//! POST   /v1/vms/{name}/arrived        -> 204 (completes a VM that arrived live)
//! POST   /v1/networks/join JoinSegments -> 204 (widens networks to their segments)
//! ```
//!
//! Every call but `/healthz` and `/v1/openapi.json` carries
//! `Authorization: Bearer <agent token>`.
//! Every call is idempotent, as the [`neptune_hypervisor::Hypervisor`]
//! operations behind it. A refusal is an [`ErrorBody`] whose `code` is one
//! of [`codes`].
//!
//! This crate is the contract only: the types both sides of the wire use
//! and the OpenAPI document ([`openapi()`], checked in as
//! `openapi/agent.json`), so the Manager's side and the document build
//! without the server. The server and the client are in `neptune-agent`,
//! which re-exports this crate as `neptune_agent::api`.

#![warn(missing_docs)]

mod openapi;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use openapi::{openapi, Route, OPENAPI_PATH, ROUTES};

pub use neptune_hypervisor::{
    BatchOp, BatchOut, Capacity, DiskBase, Incoming, IncomingRequest, MigrationProgress,
    MigrationReport, NetworkJoin, Nic, Outgoing, Seed, Segment, VmInfo, VmSpec, VmState,
    MAX_BATCH_OPS,
};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
}

/// `GET /v1/host`: the host this Agent drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    /// The host's name, unique in the Service Switching domain.
    pub name: String,
    /// The datacenter the host belongs to.
    pub datacenter: String,
    /// What the host offers VMs.
    pub capacity: Capacity,
}

/// The most of a console one `GET /v1/vms/{name}/console` returns.
pub const MAX_CONSOLE_BYTES: u64 = 1 << 20;

/// The console bytes returned when the request does not say.
pub const DEFAULT_CONSOLE_BYTES: u64 = 64 << 10;

/// The query of `GET /v1/vms/{name}/migration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationQuery {
    /// While the move runs, answer only once it changes (progress or end)
    /// or this many milliseconds pass (at most [`MAX_MIGRATION_WAIT_MS`]);
    /// absent or 0: at once.
    pub wait_ms: Option<u64>,
}

/// The longest wait `GET /v1/vms/{name}/migration?wait_ms=N` holds.
pub const MAX_MIGRATION_WAIT_MS: u64 = 10_000;

/// The query of `GET /v1/vms/{name}/arrival`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrivalQuery {
    /// While the VM does not run here, answer only once it does or this
    /// many milliseconds pass (at most [`MAX_ARRIVAL_WAIT_MS`]); absent
    /// or 0: at once.
    pub wait_ms: Option<u64>,
}

/// The longest wait `GET /v1/vms/{name}/arrival?wait_ms=N` holds.
pub const MAX_ARRIVAL_WAIT_MS: u64 = 10_000;

/// `GET /v1/vms/{name}/arrival`: whether a VM (one arriving live) runs on
/// this host. The answer comes the moment its guest resumes here, before
/// the source has finished the move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Arrival {
    /// The VM asked about.
    pub vm: String,
    /// Whether it runs here; `false` when it did not within the wait (not
    /// arrived yet, or not coming).
    pub running: bool,
}

/// The query of `GET /v1/vms/{name}/console`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// How many of the last bytes of the console to return.
    pub bytes: Option<u64>,
}

/// The answer to `GET /v1/vms/{name}/console`: the end of the VM's serial
/// console output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Console {
    /// The console's last bytes, invalid UTF-8 replaced.
    pub text: String,
}

/// `POST /v1/vms/{name}/console`: what to type on the VM's serial
/// console (at most [`neptune_hypervisor::MAX_CONSOLE_INPUT`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleInput {
    /// The keys, as text.
    pub input: String,
}

/// `PUT /v1/vms/{name}/disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareDisk {
    /// Path of the template image on the host.
    pub template_image: String,
    /// The disk's size; the template must not be larger.
    pub size_mib: u64,
}

/// The answer to `PUT /v1/vms/{name}/disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Disk {
    /// Path of the VM's disk on the host (goes into [`VmSpec::disk`]).
    pub disk: String,
}

/// `POST /v1/vms/{name}/disk/export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportDisk {
    /// Where the copy goes, in the image repository the hosts share.
    pub dest: String,
}

/// `POST /v1/vms/{name}/save`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveVm {
    /// Where the VM's memory goes, readable by the host that restores it.
    pub state_path: String,
}

/// `POST /v1/vms/{name}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreVm {
    /// The VM as it is to run here (its disk on this host).
    pub spec: VmSpec,
    /// A state written by `POST /v1/vms/{name}/save`.
    pub state_path: String,
}

/// `POST /v1/networks/join`: networks this host is to have, each flooding
/// to at least its segment's peers (see
/// [`neptune_hypervisor::Hypervisor::join_segments`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinSegments {
    /// The networks, each with its segment (peers already on the host are
    /// kept).
    pub networks: Vec<NetworkJoin>,
}

/// `POST /v1/batch`: operations on this host's VMs, run together (at most
/// [`MAX_BATCH_OPS`]; see [`neptune_hypervisor::Hypervisor::batch`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The operations; each is as idempotent as its own route.
    pub ops: Vec<BatchOp>,
}

/// The answer to `POST /v1/batch`: one result per operation, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchAnswer {
    /// The result of each operation, in the order sent.
    pub results: Vec<BatchResult>,
}

/// What one operation of a batch came to: `ok` when it succeeded,
/// `error` (as its own route would have refused) when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    /// What it answers, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<BatchOut>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Where a live move started by `POST /v1/vms/{name}/migrate` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Under way.
    Running,
    /// The VM runs on the destination.
    Succeeded,
    /// The VM still runs on this host.
    Failed,
}

/// `GET /v1/vms/{name}/migration`: the last live move of the VM from this
/// host (kept an hour after it ends, while the Agent runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Migration {
    /// The VM moving.
    pub vm: String,
    /// Where the move is.
    pub state: MigrationState,
    /// How far it is.
    pub progress: MigrationProgress,
    /// Once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<MigrationReport>,
    /// Once it failed: why, as any refusal says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A refusal, the shape every Neptune daemon answers (the Manager, the
/// Agents, the Edge Service Switches): a stable `code`, a `message` for
/// people, and `details` where the refusal has more to say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(from = "ErrorBodyOnTheWire")]
pub struct ErrorBody {
    /// Stable, machine-readable: one of the module `codes` (the table of
    /// every daemon's codes is in `docs/agent.md`).
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// The hypervisor's own words for refusals that carry some (`no_room`,
    /// `invalid_request`, `hypervisor_failed`, `hypervisor_unreachable`),
    /// so a client can rebuild the hypervisor's error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// What an [`ErrorBody`] is read from: Agents before the error shape was
/// shared with the Manager sent one `detail` string instead of `details`,
/// and a Manager must read the Agents it has not upgraded yet.
#[derive(Deserialize)]
struct ErrorBodyOnTheWire {
    code: String,
    message: String,
    #[serde(default)]
    details: Vec<String>,
    #[serde(default)]
    detail: Option<String>,
}

impl From<ErrorBodyOnTheWire> for ErrorBody {
    fn from(w: ErrorBodyOnTheWire) -> Self {
        let mut details = w.details;
        details.extend(w.detail);
        ErrorBody {
            code: w.code,
            message: w.message,
            details,
        }
    }
}

/// The error codes of [`ErrorBody::code`], with their HTTP statuses.
pub mod codes {
    /// 401: missing or wrong bearer token (the Manager's and the switch's
    /// code for the same refusal).
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// What Agents answered for 401 before [`UNAUTHENTICATED`]; clients
    /// still read it from Agents not yet upgraded.
    pub const LEGACY_UNAUTHORIZED: &str = "unauthorized";
    /// 400: malformed body, bad VM name, path and body disagree.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// 404: no such route, or no live move of the VM is known.
    pub const NOT_FOUND: &str = "not_found";
    /// 405: a known path with another method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 404: the VM is not defined on this host.
    pub const NO_SUCH_VM: &str = "no_such_vm";
    /// 409: the VM (or its disk) exists with a different spec.
    pub const SPEC_MISMATCH: &str = "spec_mismatch";
    /// 409: the host's capacity would be exceeded.
    pub const NO_ROOM: &str = "no_room";
    /// 413: the body is larger than the Agent reads (2 MiB).
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// 415: the body is not declared JSON (`Content-Type`).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterHost {
    /// The host's datacenter (must exist in the Manager).
    pub datacenter: String,
    /// The host's name.
    pub name: String,
    /// Where the Manager reaches this Agent.
    pub agent_url: String,
    /// See [`Capacity::cpus`].
    pub cpus: u32,
    /// See [`Capacity::ram_mib`].
    pub ram_mib: u64,
    /// See [`Capacity::disk_mib`].
    pub disk_mib: u64,
    /// See [`Capacity::vm_slots`].
    pub vm_slots: u32,
    /// Mbit/s of the host's uplink; 0: not known.
    #[serde(default)]
    pub uplink_mbps: u64,
}
