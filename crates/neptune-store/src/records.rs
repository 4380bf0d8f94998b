//! Rows as the Manager sees them. Times are milliseconds since the Unix epoch.

use neptune_lifecycle::ViState;
pub use neptune_types::{DatacenterId, HostId, JobId, SshKeyId, TemplateId, TokenId, UserId, ViId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::decode::document;
use crate::Result;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: review plans, manage hosts, datacenters and users.
    Admin,
    /// Design, request and run their own VIs.
    User,
}

impl Role {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    /// The role of a stored name.
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
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Public => "public",
        }
    }

    /// The visibility of a stored name.
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
    /// VMs of requested VIs.
    pub vms: i64,
    /// vCPUs of those VMs.
    pub vcpus: i64,
    /// MiB of RAM of those VMs.
    pub ram_mib: i64,
    /// Home Addresses of their entry points.
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

/// A user of the Manager.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's id.
    pub id: UserId,
    /// The login name, unique.
    pub name: String,
    /// An argon2 PHC string; never leaves the Manager.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
    /// What the user may hold at once.
    pub quota: Quota,
    /// When the user was made.
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

/// How a token was made, and so how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// From a password login; expires.
    Session,
    /// For the CLI and scripts; named, revocable.
    Api,
}

impl TokenKind {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Api => "api",
        }
    }

    /// The kind of a stored name.
    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "session" => Some(TokenKind::Session),
            "api" => Some(TokenKind::Api),
            _ => None,
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenScope {
    /// Whatever its user may do.
    User,
    /// Register and heartbeat one host only.
    Agent {
        /// The host, as `DATACENTER/HOST`.
        host: String,
    },
}

/// A user's SSH public key (OpenSSH's one-line form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRecord {
    /// The key's id.
    pub id: SshKeyId,
    /// Its user.
    pub user_id: UserId,
    /// What its user calls it.
    pub name: String,
    /// The key in OpenSSH's one-line form (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
    /// `SHA256:` and the unpadded base64 of the key's SHA-256, as
    /// `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// When it was added.
    pub created_at: i64,
}

/// A credential. Only the SHA-256 of the token is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// What lists and revocations name it by.
    pub id: TokenId,
    /// The SHA-256 of the token, hex: what a request's token is looked up by.
    pub hash: String,
    /// Whose rights it carries.
    pub user_id: UserId,
    /// How it was made.
    pub kind: TokenKind,
    /// What it may do.
    pub scope: TokenScope,
    /// What its user calls it.
    pub name: String,
    /// When it was made.
    pub created_at: i64,
    /// When it stops working; never, if `None`.
    pub expires_at: Option<i64>,
}

/// A cluster of hosts behind one Edge Service Switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatacenterRecord {
    /// The datacenter's id.
    pub id: DatacenterId,
    /// Its name, unique.
    pub name: String,
    /// When it was made.
    pub created_at: i64,
    /// Public prefixes routed to the datacenter's Edge Service Switch (Home Addresses).
    pub home_pools: Vec<String>,
    /// Its router on the public network (an entry point's default route),
    /// inside one of `home_pools`.
    pub public_gateway: Option<String>,
}

/// Whether a host's Agent is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its Agent heartbeats; placement may use it.
    Ready,
    /// Its Agent fell silent; nothing new is placed on it.
    Unreachable,
}

impl HostState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Unreachable => "unreachable",
        }
    }

    /// The state of a stored name.
    pub fn parse(s: &str) -> Option<HostState> {
        match s {
            "ready" => Some(HostState::Ready),
            "unreachable" => Some(HostState::Unreachable),
            _ => None,
        }
    }
}

/// A physical host, as its Agent registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRecord {
    /// The host's id.
    pub id: HostId,
    /// Its datacenter.
    pub datacenter_id: DatacenterId,
    /// Its name, unique.
    pub name: String,
    /// Where its Agent's API answers.
    pub agent_url: String,
    /// CPUs it gives to VMs.
    pub cpus: i64,
    /// MiB of RAM it gives to VMs.
    pub ram_mib: i64,
    /// MiB of disk it gives to VMs.
    pub disk_mib: i64,
    /// How many VMs it runs at most.
    pub vm_slots: i64,
    /// Mbit/s of the host's uplink to its datacenter's switch; 0 when not
    /// registered (bandwidth then does not limit placement on it).
    pub uplink_mbps: i64,
    /// Whether its Agent is heard from.
    pub state: HostState,
    /// When its Agent was last heard from.
    pub last_seen: i64,
    /// What placed VMs take (kept by the store; ignored on registration).
    pub used: HostUsage,
}

/// How many hosts of a datacenter are in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostCount {
    /// The datacenter.
    pub datacenter_id: DatacenterId,
    /// The state counted.
    pub state: HostState,
    /// How many of its hosts are in it.
    pub hosts: i64,
}

/// Resources of a host taken by placed VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HostUsage {
    /// vCPUs taken.
    pub vcpus: i64,
    /// MiB of RAM taken.
    pub ram_mib: i64,
    /// MiB of disk taken.
    pub disk_mib: i64,
    /// VM slots taken.
    pub slots: i64,
    /// Mbit/s of the uplink taken.
    pub uplink_mbps: i64,
}

impl std::ops::AddAssign for HostUsage {
    fn add_assign(&mut self, other: HostUsage) {
        self.vcpus += other.vcpus;
        self.ram_mib += other.ram_mib;
        self.disk_mib += other.disk_mib;
        self.slots += other.slots;
        self.uplink_mbps += other.uplink_mbps;
    }
}

/// A VM of a VI placed on a host: the slot and resources it holds there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Its VI.
    pub vi_id: ViId,
    /// Its virtual node's id in the VI's design.
    pub node_id: String,
    /// The host it is placed on.
    pub host_id: HostId,
    /// vCPUs it takes there.
    pub vcpus: i64,
    /// MiB of RAM it takes there.
    pub ram_mib: i64,
    /// MiB of disk it takes there.
    pub disk_mib: i64,
    /// Mbit/s of the VM's virtual links to VMs on other hosts: its share of
    /// its host's uplink.
    pub uplink_mbps: i64,
}

impl VmRecord {
    /// What the VM takes of its host: its resources and one slot.
    pub fn usage(&self) -> HostUsage {
        HostUsage {
            vcpus: self.vcpus,
            ram_mib: self.ram_mib,
            disk_mib: self.disk_mib,
            slots: 1,
            uplink_mbps: self.uplink_mbps,
        }
    }
}

/// Where a durable job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Steps run forward.
    Running,
    /// A step failed; finished steps are being undone, last first.
    RollingBack,
    /// Every step is done.
    Succeeded,
    /// Every finished step was undone.
    RolledBack,
    /// An undo failed too: an operator must look.
    Failed,
}

impl JobState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::RollingBack => "rolling_back",
            JobState::Succeeded => "succeeded",
            JobState::RolledBack => "rolled_back",
            JobState::Failed => "failed",
        }
    }

    /// The state of a stored name.
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

    /// Whether the job is over (nothing more will run).
    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Running | JobState::RollingBack)
    }
}

/// A durable job: its steps (JSON, interpreted by the Manager) and how far
/// it got. `cursor` counts the steps done; rolling back, it counts the
/// steps still to undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// The VI it works on.
    pub vi_id: ViId,
    /// What it does (`deploy`, `suspend`, ...), as the Manager names it.
    pub kind: String,
    /// Where it is.
    pub state: JobState,
    /// Its steps, a JSON document (the same value comes back, not
    /// necessarily the same text).
    pub steps: String,
    /// Steps done (rolling back: steps still to undo).
    pub cursor: i64,
    /// How many steps there are.
    pub total: i64,
    /// Why it failed, once it has.
    pub error: Option<String>,
    /// The Manager instance running it, while its lease lasts.
    pub owner: Option<String>,
    /// When its owner's lease runs out.
    pub lease_until: i64,
    /// When it was made.
    pub created_at: i64,
    /// When it last moved.
    pub updated_at: i64,
}

/// A VM image and its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateRecord {
    /// The template's id.
    pub id: TemplateId,
    /// Unique per owner, and among public templates.
    pub name: String,
    /// Who saved it; `None` for templates the Manager was given.
    pub owner_id: Option<UserId>,
    /// Who may use it.
    pub visibility: Visibility,
    /// Where its image lies.
    pub image_path: String,
    /// The image format qemu-img reported (`qcow2`, `raw`).
    pub format: String,
    /// The image's virtual size.
    pub size_mib: i64,
    /// The operating system it runs.
    pub os_name: String,
    /// Default vCPUs of a VM made from it.
    pub vcpus: i64,
    /// Default MiB of RAM.
    pub ram_mib: i64,
    /// Default MiB of disk.
    pub disk_mib: i64,
    /// JSON array of software entries (the same value comes back, not
    /// necessarily the same text).
    pub software: String,
    /// When it was made.
    pub created_at: i64,
}

/// A Virtual Infrastructure: its design and where it is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViRecord {
    /// The VI's id.
    pub id: ViId,
    /// Its user.
    pub owner_id: UserId,
    /// What its user calls it.
    pub name: String,
    /// Where it is in its life.
    pub state: ViState,
    /// The design in the XML dialect: the exact, password-carrying form.
    pub design_xml: String,
    /// The datacenter whose switch holds its Home Addresses (chosen at accept).
    pub home_datacenter_id: Option<DatacenterId>,
    /// Why an administrator rejected it, while it stays rejected.
    pub reject_reason: Option<String>,
    /// Bumped by every change; edits are compare-and-set on it.
    pub version: i64,
    /// When it was made.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
    /// The address plan committed at acceptance (JSON; the same value
    /// comes back, not necessarily the same text).
    pub address_plan: Option<String>,
    /// The datacenter its VMs run in, or last ran in while suspended;
    /// `None`: its home datacenter.
    pub location_id: Option<DatacenterId>,
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
    /// The VI's user.
    pub owner_id: UserId,
    /// The VI's revision.
    pub revision: i64,
}

/// What a reader checks before reusing a list of VIs: how many there are
/// and their revisions' total. VIs are never deleted and revisions never go
/// back, so any write of a listed VI, or a new VI, changes the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViListStamp {
    /// How many VIs.
    pub count: i64,
    /// The total of their revisions.
    pub revisions: i64,
}

/// A lifecycle change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state the VI moves to.
    pub to: ViState,
    /// Who moves it (a user, or the Manager's own id for its jobs).
    pub actor: UserId,
    /// When.
    pub at: i64,
    /// Set on reject, cleared otherwise.
    pub reject_reason: Option<String>,
    /// The home datacenter chosen at accept (kept otherwise).
    pub home_datacenter_id: Option<DatacenterId>,
    /// What the VI takes of its owner's quota from this change on,
    /// recorded with it (a request, an acceptance); kept when `None`.
    pub usage: Option<ViUsage>,
}

/// One recorded lifecycle change of a VI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViEventRecord {
    /// The VI.
    pub vi_id: ViId,
    /// When it changed.
    pub at: i64,
    /// The state it left.
    pub from_state: ViState,
    /// The state it entered.
    pub to_state: ViState,
    /// Who changed it.
    pub actor: UserId,
    /// Why, for a rejection.
    pub reason: Option<String>,
}

/// What accepting (or resuming) a VI reserves, committed with the transition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Every VM's host slot and resources.
    pub vms: Vec<VmRecord>,
    /// Rows of the address table: `owner` set for an owned prefix (JSON of
    /// its owner), `None` for a covering prefix.
    pub addresses: Vec<AddressRow>,
    /// The address plan to keep with the VI (JSON), if it changes.
    pub address_plan: Option<String>,
    /// Slots reserved on the hosts a migrating VI's VMs go to, beside the
    /// ones they hold ([`Store::vm_moves`]).
    ///
    /// [`Store::vm_moves`]: crate::Store::vm_moves
    pub moves: Vec<VmRecord>,
    /// The job that carries the change out, created in the same commit (a
    /// resume reserves hosts and starts its job at once, so a crash cannot
    /// leave a resuming VI without a job).
    pub job: Option<JobRecord>,
}

/// A row of the address table to write (see [`Reservation::addresses`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRow {
    /// The pool the prefix is planned from.
    pub pool: String,
    /// The prefix (`10.1.2.0/24`, `203.0.113.7/32`).
    pub prefix: String,
    /// Its owner (JSON) for an owned prefix; `None` for a covering one.
    pub owner: Option<String>,
}

/// An owned address row, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedAddress {
    /// The pool it is planned from.
    pub pool: String,
    /// The prefix.
    pub prefix: String,
    /// The VI holding it.
    pub vi_id: Option<ViId>,
    /// Its owner inside the VI (JSON; the same value comes back, not
    /// necessarily the same text).
    pub owner: String,
}

impl JobRecord {
    /// Its steps as the Manager's type; steps that do not fit it are a
    /// damaged row ([`crate::StoreError::Corrupt`] naming the job), never
    /// an empty list.
    pub fn decode_steps<T: DeserializeOwned>(&self) -> Result<T> {
        document("jobs", "steps", || format!("id {}", self.id), &self.steps)
    }
}

impl TemplateRecord {
    /// Its software entries as the caller's type (see [`JobRecord::decode_steps`]).
    pub fn decode_software<T: DeserializeOwned>(&self) -> Result<T> {
        document(
            "templates",
            "software",
            || format!("id {}", self.id),
            &self.software,
        )
    }
}

impl ViRecord {
    /// Its committed address plan, if any, as the caller's type (see
    /// [`JobRecord::decode_steps`]).
    pub fn decode_address_plan<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.address_plan
            .as_deref()
            .map(|plan| document("vis", "address_plan", || format!("id {}", self.id), plan))
            .transpose()
    }
}

impl OwnedAddress {
    /// Its owner as the caller's type (see [`JobRecord::decode_steps`]).
    pub fn decode_owner<T: DeserializeOwned>(&self) -> Result<T> {
        document(
            "addresses",
            "owner",
            || format!("pool {:?}, prefix {:?}", self.pool, self.prefix),
            &self.owner,
        )
    }
}

/// A datacenter's Edge Service Switch, as the Manager reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchRecord {
    /// Its datacenter (one switch each).
    pub datacenter_id: DatacenterId,
    /// Its control API (`http://IP:PORT`).
    pub url: String,
    /// The file holding the key it shares with the Manager, on the
    /// Manager's host: the key itself is never stored.
    pub key_file: String,
    /// Its Care-of Address: where other switches tunnel to.
    pub care_of: String,
    /// Its interface toward the datacenter's public network, where it
    /// delivers to visitors.
    pub port: String,
    /// The next hop toward visitors on `port`, if they are not on its link.
    pub via: Option<String>,
    /// When it was last registered.
    pub updated_at: i64,
}

/// What a VI's detail shows besides its row, read together
/// ([`crate::Store::vi_parts`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ViParts {
    /// Its lifecycle changes, oldest first.
    pub events: Vec<ViEventRecord>,
    /// Its placed VMs, by node id.
    pub vms: Vec<VmRecord>,
    /// The slots its moving VMs hold on their target hosts, by node id.
    pub moves: Vec<VmRecord>,
    /// Its waiting migration request.
    pub migration_request: Option<MigrationRequestRecord>,
    /// Its jobs, oldest first. A job that has succeeded past its last step
    /// comes with no steps (`steps` is `[]`): nothing shown of it needs
    /// them, and a deploy's are tens of KiB.
    pub jobs: Vec<JobRecord>,
}

/// An owner's request to move a VI to another datacenter, waiting for an
/// administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRequestRecord {
    /// The VI.
    pub vi_id: ViId,
    /// Where it is to go.
    pub datacenter_id: DatacenterId,
    /// Who asked.
    pub requested_by: UserId,
    /// When.
    pub requested_at: i64,
}

/// What a user's designs take of the design quota: the VIs not
/// terminated, and their design text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DesignHoldings {
    /// VIs in any state but terminated.
    pub designs: i64,
    /// Bytes of their design text together.
    pub bytes: i64,
}

/// What a VI takes of its owner's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViUsage {
    /// Its VMs.
    pub vms: i64,
    /// Their vCPUs.
    pub vcpus: i64,
    /// Their MiB of RAM.
    pub ram_mib: i64,
    /// Its entry points' Home Addresses.
    pub public_addresses: i64,
    /// Addresses of the private pools it takes.
    pub private_addresses: i64,
}
