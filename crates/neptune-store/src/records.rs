//! Rows as the Manager sees them. Times are milliseconds since the Unix epoch.

use neptune_lifecycle::ViState;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// Who may use a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Visibility {
    /// Its owner only.
    Private,
    /// Every user (made so by an administrator).
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Public => "public",
        }
    }

    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "private" => Some(Visibility::Private),
            "public" => Some(Visibility::Public),
            _ => None,
        }
    }
}

/// What one user may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub vms: i64,
    pub vcpus: i64,
    pub ram_mib: i64,
    pub public_addresses: i64,
    /// VIs held at once in any state but terminated: designs count from
    /// the moment they are stored, not only once requested.
    pub designs: i64,
    /// MiB of design text those VIs take together.
    pub design_mib: i64,
    /// Addresses of the private pools the requested VIs take (their link
    /// subnets and address blocks).
    pub private_addresses: i64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            vms: 64,
            vcpus: 128,
            ram_mib: 256 * 1024,
            public_addresses: 16,
            designs: 100,
            design_mib: 64,
            private_addresses: 4096,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub name: String,
    /// An argon2 PHC string; never leaves the Manager.
    pub password_hash: String,
    pub role: Role,
    pub quota: Quota,
    pub created_at: i64,
    /// When an administrator disabled the user: no login, no token.
    pub disabled_at: Option<i64>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// From a password login; expires.
    Session,
    /// For the CLI and scripts; named, revocable.
    Api,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Api => "api",
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenScope {
    /// Whatever its user may do.
    User,
    /// Register and heartbeat one host only: `DATACENTER/HOST`.
    Agent { host: String },
}

/// A user's SSH public key (OpenSSH's one-line form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub public_key: String,
    /// `SHA256:` and the unpadded base64 of the key's SHA-256, as
    /// `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub created_at: i64,
}

/// A credential. Only the SHA-256 of the token is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// What lists and revocations name it by.
    pub id: Uuid,
    pub hash: String,
    pub user_id: Uuid,
    pub kind: TokenKind,
    pub scope: TokenScope,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatacenterRecord {
    pub id: Uuid,
    pub name: String,
    pub created_at: i64,
    /// Public prefixes routed to the datacenter's Edge Service Switch (Home Addresses).
    pub home_pools: Vec<String>,
    /// Its router on the public network (an entry point's default route),
    /// inside one of `home_pools`.
    pub public_gateway: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Ready,
    Unreachable,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRecord {
    pub id: Uuid,
    pub datacenter_id: Uuid,
    pub name: String,
    pub agent_url: String,
    pub cpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    pub vm_slots: i64,
    /// Mbit/s of the host's uplink to its datacenter's switch; 0 when not
    /// registered (bandwidth then does not limit placement on it).
    pub uplink_mbps: i64,
    pub state: HostState,
    pub last_seen: i64,
    /// What placed VMs take (kept by the store; ignored on registration).
    pub used: HostUsage,
}

/// Resources of a host taken by placed VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HostUsage {
    pub vcpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    pub slots: i64,
    pub uplink_mbps: i64,
}

/// A VM of a VI placed on a host: the slot and resources it holds there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub vi_id: Uuid,
    pub node_id: String,
    pub host_id: Uuid,
    pub vcpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    /// Mbit/s of the VM's virtual links to VMs on other hosts: its share of
    /// its host's uplink.
    pub uplink_mbps: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Steps run forward.
    Running,
    /// A step failed; finished steps are being undone, last first.
    RollingBack,
    Succeeded,
    /// Every finished step was undone.
    RolledBack,
    /// An undo failed too: an operator must look.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::RollingBack => "rolling_back",
            JobState::Succeeded => "succeeded",
            JobState::RolledBack => "rolled_back",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Running,
            JobState::RollingBack,
            JobState::Succeeded,
            JobState::RolledBack,
            JobState::Failed,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Running | JobState::RollingBack)
    }
}

/// A durable job: its steps (JSON, interpreted by the Manager) and how far
/// it got. `cursor` counts the steps done; rolling back, it counts the
/// steps still to undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: Uuid,
    pub vi_id: Uuid,
    pub kind: String,
    pub state: JobState,
    pub steps: String,
    pub cursor: i64,
    pub total: i64,
    pub error: Option<String>,
    /// The Manager instance running it, while its lease lasts.
    pub owner: Option<String>,
    pub lease_until: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateRecord {
    pub id: Uuid,
    /// Unique per owner, and among public templates.
    pub name: String,
    pub owner_id: Option<Uuid>,
    pub visibility: Visibility,
    pub image_path: String,
    /// The image format qemu-img reported (`qcow2`, `raw`).
    pub format: String,
    /// The image's virtual size.
    pub size_mib: i64,
    pub os_name: String,
    pub vcpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    /// JSON array of software entries.
    pub software: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViRecord {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub state: ViState,
    /// The design in the XML dialect: the exact, password-carrying form.
    pub design_xml: String,
    pub home_datacenter_id: Option<Uuid>,
    pub reject_reason: Option<String>,
    /// Bumped by every change; edits are compare-and-set on it.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The address plan committed at acceptance (JSON).
    pub address_plan: Option<String>,
}

/// What a reader checks before reusing a view of a VI.
///
/// The database grows `revision` with every write of the VI row, its
/// history, its jobs and its placement (triggers, so every write path and
/// every Manager sharing the database counts). It never goes back, so a
/// view built from reads made after seeing revision `r` shows everything
/// written up to `r`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViStamp {
    pub owner_id: Uuid,
    pub revision: i64,
}

/// What a reader checks before reusing a list of VIs: how many there are
/// and their revisions' total. VIs are never deleted and revisions never go
/// back, so any write of a listed VI, or a new VI, changes the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViListStamp {
    pub count: i64,
    pub revisions: i64,
}

/// A lifecycle change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub to: ViState,
    pub actor: Uuid,
    pub at: i64,
    /// Set on reject, cleared otherwise.
    pub reject_reason: Option<String>,
    /// The home datacenter chosen at accept (kept otherwise).
    pub home_datacenter_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViEventRecord {
    pub vi_id: Uuid,
    pub at: i64,
    pub from_state: ViState,
    pub to_state: ViState,
    pub actor: Uuid,
    pub reason: Option<String>,
}

/// What accepting (or resuming) a VI reserves, committed with the transition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    pub vms: Vec<VmRecord>,
    /// Rows of the address table: `owner` set for an owned prefix (JSON of
    /// its owner), `None` for a covering prefix.
    pub addresses: Vec<AddressRow>,
    pub address_plan: Option<String>,
    /// The job that carries the change out, created in the same commit (a
    /// resume reserves hosts and starts its job at once, so a crash cannot
    /// leave a resuming VI without a job).
    pub job: Option<JobRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRow {
    pub pool: String,
    pub prefix: String,
    pub owner: Option<String>,
}

/// An owned address row, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedAddress {
    pub pool: String,
    pub prefix: String,
    pub vi_id: Option<Uuid>,
    pub owner: String,
}
