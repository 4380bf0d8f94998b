//! Neptune's public REST API (`/api/v1`): the request and response types,
//! shared by the Manager (server), the typed client and the CLI. Their
//! OpenAPI schemas come from the code (utoipa); the Manager assembles the
//! document, checked in as `openapi/neptune.json`.
//!
//! Errors are always [`ErrorBody`]: a stable machine `code` and a human
//! `message`.

#![deny(missing_docs)]

use neptune_lifecycle::ViState;
pub use neptune_types::{DatacenterId, HostId, JobId, SshKeyId, TemplateId, TokenId, UserId, ViId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `unauthenticated`, `forbidden`, `not_found`,
    /// `conflict`, `invalid_topology`, `invalid_request`, `quota_exceeded`,
    /// `too_many_requests`, `method_not_allowed`, `request_timeout`,
    /// `payload_too_large`, `unsupported_media_type`, `internal`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// Problems of a topology document, one per line (`LINE:COL: MESSAGE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users, datacenters, hosts, templates; accepts and rejects VIs.
    Admin,
    /// Designs and requests VIs of their own.
    User,
}

/// `POST /api/v1/auth/login`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's name.
    pub name: String,
    /// The user's password.
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A bearer token: send it as `Authorization: Bearer TOKEN`. Shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// What `GET /api/v1/tokens` lists it by and `DELETE` revokes it by.
    pub id: TokenId,
    /// The bearer token: shown once, kept only as its SHA-256 by the Manager.
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: Option<i64>,
    /// Whose token it is.
    pub user: User,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Whatever its user may do.
    User,
    /// Register and heartbeat one host (`host`) only: an Agent's token.
    Agent,
}

/// A named API token for the CLI, scripts or an Agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    /// A label to recognise the token by (1 to 100 characters).
    pub name: String,
    /// Days until it expires: 1 to 365, default 90.
    pub expires_in_days: Option<u32>,
    /// Default `user`. `agent` is for administrators, with `host`.
    pub scope: Option<TokenScope>,
    /// The host an `agent` token registers: `DATACENTER/HOST`.
    pub host: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// The token's id (to revoke it).
    pub id: TokenId,
    /// The name given to it.
    pub name: String,
    /// `session` (from a login) or `api`.
    pub kind: String,
    /// What it may do.
    pub scope: TokenScope,
    /// For an `agent` token: `DATACENTER/HOST`.
    pub host: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch; none: it does not expire.
    pub expires_at: Option<i64>,
    /// The token this request was made with.
    pub current: bool,
}

/// A new password for the caller; every other token of theirs is revoked.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password it replaces.
    pub current_password: String,
    /// At least 8 characters.
    pub new_password: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePassword").finish_non_exhaustive()
    }
}

/// What one user may hold at once. `vms`, `vcpus`, `ram_mib` and
/// `public_addresses` count the VIs requested and beyond (not `defined`,
/// `rejected` or `terminated` ones); `designs` and `design_mib` count every
/// VI not terminated, designs never requested included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// VMs in the user's VIs that are requested or later (not defined, rejected or terminated).
    pub vms: i64,
    /// vCPUs of those VMs.
    pub vcpus: i64,
    /// MiB of RAM of those VMs.
    pub ram_mib: i64,
    /// Entry points (each takes a public Home Address).
    pub public_addresses: i64,
    /// VIs held at once (default 100).
    #[serde(default = "default_designs")]
    #[schema(default = 100)]
    pub designs: i64,
    /// MiB of stored design text those VIs take together (default 64).
    #[serde(default = "default_design_mib")]
    #[schema(default = 64)]
    pub design_mib: i64,
    /// Addresses of the private pools the VIs requested and beyond take:
    /// their link subnets and address blocks (default 4096).
    #[serde(default = "default_private_addresses")]
    #[schema(default = 4096)]
    pub private_addresses: i64,
}

fn default_private_addresses() -> i64 {
    4096
}

fn default_designs() -> i64 {
    100
}

fn default_design_mib() -> i64 {
    64
}

/// A user account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The login name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// What the user's VIs may take.
    pub quota: Quota,
    /// A disabled user can neither log in nor use a token.
    #[serde(default)]
    pub disabled: bool,
    /// What the user holds of their quota now: in `GET /api/v1/me` and
    /// `GET /api/v1/users/{id}`, not in lists (it takes reads of every
    /// VI of theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<QuotaUsage>,
}

/// What a user holds of their quota, counted as [`Quota`] counts it: the
/// same figures, and the design text's exact size besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    /// VMs of the VIs requested and beyond.
    pub vms: i64,
    /// vCPUs of those VMs.
    pub vcpus: i64,
    /// MiB of RAM of those VMs.
    pub ram_mib: i64,
    /// Entry points of those VIs (each takes a public Home Address).
    pub public_addresses: i64,
    /// VIs not terminated, designs never requested included.
    pub designs: i64,
    /// MiB of design text those VIs take, rounded up, as the quota
    /// check counts it.
    pub design_mib: i64,
    /// The same design text in bytes.
    pub design_bytes: i64,
    /// Addresses of the private pools the VIs requested and beyond take:
    /// their link subnets and address blocks.
    pub private_addresses: i64,
}

/// `POST /api/v1/users` (administrators).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// The login name, unique.
    pub name: String,
    /// The first password (kept as its argon2id hash).
    pub password: String,
    /// `admin` or `user`.
    pub role: Role,
    /// Defaults apply when absent.
    pub quota: Option<Quota>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A datacenter of the Service Switching domain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Datacenter {
    /// The datacenter's id.
    pub id: DatacenterId,
    /// Its name, unique.
    pub name: String,
    /// The public prefixes its entry points' Home Addresses come from.
    pub home_pools: Vec<String>,
    /// Its router on the public network, if it has one: entry points'
    /// default route.
    pub public_gateway: Option<String>,
    /// How many of its hosts are ready and unreachable (shown to
    /// administrators only; absent for everyone else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostCounts>,
}

/// How many hosts of a datacenter are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostCounts {
    /// Hosts whose Agent reports: placement may use them.
    pub ready: u64,
    /// Hosts whose Agent fell silent: nothing new is placed on them.
    pub unreachable: u64,
}

/// `POST /api/v1/datacenters` (administrators).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatacenter {
    /// Its name, unique.
    pub name: String,
    /// Public prefixes routed to the datacenter's Edge Service Switch,
    /// from which entry points get their Home Addresses.
    #[serde(default)]
    pub home_pools: Vec<String>,
    /// Its router on the public network: an address inside one of
    /// `home_pools` (never given out as a Home Address), to which entry
    /// points route what leaves the VI. None: entry points get no default
    /// route.
    #[serde(default)]
    pub public_gateway: Option<String>,
}

/// Whether a host's Agent is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Its Agent reported within the last 15 s: placement may use it.
    Ready,
    /// Its Agent fell silent: placement skips it.
    Unreachable,
}

/// A physical host, as its Agent registered it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Host {
    /// The host's id.
    pub id: HostId,
    /// The datacenter it is in.
    pub datacenter: String,
    /// Its name, unique in its datacenter.
    pub name: String,
    /// Where the Manager reaches its Agent.
    pub agent_url: String,
    /// CPUs it offers.
    pub cpus: i64,
    /// MiB of RAM it offers.
    pub ram_mib: i64,
    /// MiB of disk it offers.
    pub disk_mib: i64,
    /// VMs it takes at most.
    pub vm_slots: i64,
    /// Mbit/s of the host's uplink; 0 when not registered (unlimited).
    pub uplink_mbps: i64,
    /// Whether its Agent is heard from.
    pub state: HostState,
    /// Milliseconds since the Unix epoch.
    pub last_seen: i64,
    /// What placed VMs take.
    pub used_vcpus: i64,
    /// MiB of RAM reserved by VMs placed on it.
    pub used_ram_mib: i64,
    /// MiB of disk reserved by VMs placed on it.
    pub used_disk_mib: i64,
    /// VMs placed on it.
    pub used_slots: i64,
    /// Mbit/s of the uplink that placed VMs' links to other hosts take.
    pub used_uplink_mbps: i64,
}

/// What an Agent reports when it registers its host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterHost {
    /// The datacenter the host is in (it must exist).
    pub datacenter: String,
    /// The host's name, unique in its datacenter.
    pub name: String,
    /// Where the Manager reaches its Agent.
    pub agent_url: String,
    /// CPUs it offers.
    pub cpus: i64,
    /// MiB of RAM it offers.
    pub ram_mib: i64,
    /// MiB of disk it offers.
    pub disk_mib: i64,
    /// VMs it takes at most.
    pub vm_slots: i64,
    /// Mbit/s of the host's uplink to its datacenter's switch; absent or 0:
    /// not known, bandwidth does not limit placement on this host.
    #[serde(default)]
    pub uplink_mbps: i64,
}

/// A piece of software a template's image carries (or a node asks for).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Software {
    /// Its name (a Debian package's, for the templates Neptune builds).
    pub name: String,
    /// Its kind, free text (the paper's `type`).
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Its version, free text.
    #[serde(default)]
    pub version: String,
}

/// A template of the image repository: what VMs are made from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    /// The template's id.
    pub id: TemplateId,
    /// Its name, unique per owner and among public templates.
    pub name: String,
    /// The user who registered or saved it.
    pub owner: String,
    /// Who may deploy from it.
    pub visibility: Visibility,
    /// `qcow2` or `raw`, as qemu-img reads the image.
    pub format: String,
    /// The image's virtual size in MiB.
    pub size_mib: i64,
    /// Free text, such as `Debian 12`.
    pub os_name: String,
    /// vCPUs of a VM made from it, by default.
    pub vcpus: i64,
    /// MiB of RAM of a VM made from it, by default.
    pub ram_mib: i64,
    /// MiB of disk of a VM made from it, by default (at least `size_mib`).
    pub disk_mib: i64,
    /// What its image carries (empty: not known, not checked).
    pub software: Vec<Software>,
}

/// Who may use a template: its owner only, or every user. Users' saved
/// templates are private; only administrators make a template public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Its owner's alone.
    Private,
    /// Every user may deploy from it.
    Public,
}

/// Changes a template's visibility (administrators only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetVisibility {
    /// The new visibility.
    pub visibility: Visibility,
}

/// Registers an image file of the Manager's image repository as a template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// The template's name (1 to 64 letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// A path inside the Manager's image directory.
    pub image: String,
    /// Free text, such as `Debian 12`.
    #[serde(default)]
    pub os_name: String,
    /// Default 1.
    pub vcpus: Option<i64>,
    /// Default 512.
    pub ram_mib: Option<i64>,
    /// Default (and at least): the image's virtual size.
    pub disk_mib: Option<i64>,
    /// What the image carries (nodes' `<software>` must be among it).
    #[serde(default)]
    pub software: Vec<Software>,
    /// Default `public`.
    pub visibility: Option<Visibility>,
}

/// The query of `POST /api/v1/templates/import`, whose body is the image
/// itself (qcow2 or raw, sent with its `Content-Length`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportTemplate {
    /// The template's name: 1 to 64 letters, digits, `-`, `_` or `.`;
    /// unique among the caller's templates.
    pub name: String,
    /// Free text, such as `Debian 12`.
    #[serde(default)]
    pub os_name: Option<String>,
    /// Default 1.
    pub vcpus: Option<i64>,
    /// Default 512.
    pub ram_mib: Option<i64>,
    /// Default (and at least): the image's virtual size.
    pub disk_mib: Option<i64>,
    /// Default `private`; only administrators may import a public one.
    pub visibility: Option<Visibility>,
}

/// Saves a VM of a running VI as a new template (its disk copied into the
/// image repository). The owner of the VI or an administrator.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveTemplate {
    /// The node of the VI whose VM is saved.
    pub node: String,
    /// The new template's name.
    pub name: String,
    /// Defaults to the OS of the template the VM was made from.
    pub os_name: Option<String>,
}

/// What one reconciliation pass (store against Agents) found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReconcileReport {
    /// Hosts whose VMs were compared.
    pub hosts_checked: usize,
    /// Hosts whose Agent did not answer (nothing was decided about them).
    pub hosts_unreachable: Vec<String>,
    /// Stopped VMs of running VIs, started again (`host/vm`).
    pub started: Vec<String>,
    /// VIs turned failed because a VM is gone from its host.
    pub failed: Vec<FailedVi>,
    /// VMs that no VI places on their host, destroyed with their disks (`host/vm`).
    pub reaped: Vec<String>,
    /// What could not be done (`host/vm: error`).
    pub errors: Vec<String>,
    /// Entries of the datacenters' switches put back or corrected to match
    /// the store (visitors and bindings).
    pub switch_entries_applied: usize,
    /// Entries removed from the switches (of VIs gone, or where they no
    /// longer belong).
    pub switch_entries_removed: usize,
    /// Switches that could not be read or written this pass.
    pub switches_unreachable: usize,
}

/// A VI a reconcile pass turned `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailedVi {
    /// The VI's id.
    pub vi: ViId,
    /// Why (the VM and host it is missing from).
    pub reason: String,
}

/// A predefined topology of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogueRequest {
    /// `line`, `ring`, `star`, `tree`, `full-mesh`, `nat-backends`, `three-tier`, `cluster`.
    pub kind: String,
    /// How many VMs (the kind's default when absent).
    pub nodes: Option<usize>,
    /// Mbit/s of every virtual link.
    pub bandwidth: Option<u64>,
    /// The template of every VM (absent: the Manager's default).
    pub template: Option<String>,
}

/// Where a design comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DesignSource {
    /// The paper's XML dialect.
    Xml(String),
    /// The JSON form of the topology.
    Topology(serde_json::Value),
    /// A kind of the catalogue of predefined topologies.
    Catalogue(CatalogueRequest),
}

/// A new VI (or a new design for a defined one), from exactly one source.
/// On the wire it is [`ViDesignFields`]: one of `xml`, `topology` or
/// `catalogue`, beside `name` and `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ViDesignFields", into = "ViDesignFields")]
pub struct ViDesign {
    /// Defaults to the topology's id.
    pub name: Option<String>,
    /// The design itself.
    pub source: DesignSource,
    /// Required when editing: the version the edit is based on.
    pub version: Option<i64>,
}

impl ViDesign {
    /// A design from `source`, named by its topology's id.
    pub fn new(source: DesignSource) -> Self {
        ViDesign {
            name: None,
            source,
            version: None,
        }
    }
}

/// The JSON form of a [`ViDesign`]: exactly one of `xml`, `topology` and
/// `catalogue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = ViDesign)]
#[serde(deny_unknown_fields)]
pub struct ViDesignFields {
    /// Defaults to the topology's id.
    pub name: Option<String>,
    /// The paper's XML dialect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xml: Option<String>,
    /// The JSON form of the topology (read as the Manager reads it, so
    /// that problems are reported with their line and column).
    #[schema(value_type = Option<neptune_topology::Topology>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<serde_json::Value>,
    /// A kind of the catalogue of predefined topologies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<CatalogueRequest>,
    /// Required when editing: the version the edit is based on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

impl TryFrom<ViDesignFields> for ViDesign {
    type Error = String;

    fn try_from(f: ViDesignFields) -> Result<Self, String> {
        let source = match (f.xml, f.topology, f.catalogue) {
            (Some(xml), None, None) => DesignSource::Xml(xml),
            (None, Some(json), None) => DesignSource::Topology(json),
            (None, None, Some(c)) => DesignSource::Catalogue(c),
            _ => {
                return Err(
                    "give exactly one of \"xml\", \"topology\" (JSON) or \"catalogue\"".to_owned(),
                )
            }
        };
        Ok(ViDesign {
            name: f.name,
            source,
            version: f.version,
        })
    }
}

impl From<ViDesign> for ViDesignFields {
    fn from(d: ViDesign) -> Self {
        let mut f = ViDesignFields {
            name: d.name,
            version: d.version,
            ..Default::default()
        };
        match d.source {
            DesignSource::Xml(x) => f.xml = Some(x),
            DesignSource::Topology(t) => f.topology = Some(t),
            DesignSource::Catalogue(c) => f.catalogue = Some(c),
        }
        f
    }
}

impl utoipa::PartialSchema for ViDesign {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        ViDesignFields::schema()
    }
}

impl ToSchema for ViDesign {
    fn name() -> std::borrow::Cow<'static, str> {
        ViDesignFields::name()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        ViDesignFields::schemas(schemas);
    }
}

/// Totals of a VI's design.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ViSummary {
    /// VMs.
    pub nodes: usize,
    /// Virtual links.
    pub links: usize,
    /// Entry points (each takes a public Home Address).
    pub entry_points: usize,
    /// vCPUs over all VMs.
    pub vcpus: u64,
    /// MiB of RAM over all VMs.
    pub ram_mib: u64,
    /// MiB of disk over all VMs.
    pub disk_mib: u64,
    /// Mbit/s, summed over virtual links.
    pub bandwidth_mbps: u64,
}

/// A Virtual Infrastructure, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Vi {
    /// The VI's id.
    pub id: ViId,
    /// Its name.
    pub name: String,
    /// Its owner's user name.
    pub owner: String,
    /// Where it is in its lifecycle: `defined`, `requested`, `accepted`, `deploying`, `running`, `suspending`, `suspended`, `resuming`, `migrating`, `terminating`, `terminated`, `rejected` or `failed`.
    #[schema(value_type = String)]
    pub state: ViState,
    /// Totals of its design.
    pub summary: ViSummary,
    /// The datacenter whose pools its Home Addresses come from, once accepted.
    pub home_datacenter: Option<String>,
    /// The datacenter its VMs run in (or last ran in, suspended), once
    /// accepted: its home, or another after a migration.
    pub location: Option<String>,
    /// Why it was rejected, when it was.
    pub reject_reason: Option<String>,
    /// Changes at every change of the VI (an edit names the version it is based on).
    pub version: i64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// A VI with its design (JSON form; the OS password is never included).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ViDetail {
    /// The VI, its fields at the top level.
    #[serde(flatten)]
    pub vi: Vi,
    /// The design in its JSON form (OS passwords shown only as
    /// `password_set`).
    #[schema(value_type = neptune_topology::Topology)]
    pub topology: Box<serde_json::value::RawValue>,
    /// Its history, oldest first.
    pub events: Vec<ViEvent>,
    /// Where each VM runs (once accepted).
    pub vms: Vec<PlannedVm>,
    /// Its addresses (once accepted).
    pub addresses: Option<AddressPlan>,
    /// Jobs that carried out changes, oldest first.
    pub jobs: Vec<Job>,
    /// Its Home Addresses tunnelled from the home switch, while it runs
    /// away from home.
    pub bindings: Vec<Binding>,
    /// Its owner's request to move it, waiting for an administrator.
    pub migration_request: Option<MigrationRequest>,
}

/// A change of a VI's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ViEvent {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// The state it left.
    #[schema(value_type = String)]
    pub from: ViState,
    /// The state it entered.
    #[schema(value_type = String)]
    pub to: ViState,
    /// Who: a user's name, or `neptune` for a job.
    pub actor: String,
    /// Why, when said (a rejection's reason, a failure's cause).
    pub reason: Option<String>,
}

/// `POST /api/v1/vis/{id}/reject`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// 1 to 1000 characters, shown to the owner.
    pub reason: String,
}

/// `POST /api/v1/vis/{id}/accept` (every field optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The home datacenter (by name); defaults to the first one.
    pub datacenter: Option<String>,
    /// A manual placement: node id -> host name, for every node. Validated
    /// like an automatic one; absent, Neptune places the VI itself.
    pub placement: Option<std::collections::BTreeMap<String, String>>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// The Manager's version.
    pub version: String,
}

/// One VM of a placement plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlannedVm {
    /// The node of the design.
    pub node: String,
    /// The host it is placed on.
    pub host: String,
    /// vCPUs reserved on the host.
    pub vcpus: i64,
    /// MiB of RAM reserved on the host.
    pub ram_mib: i64,
    /// MiB of disk reserved on the host.
    pub disk_mib: i64,
    /// While the VI migrates: the host reserved for the VM in the target
    /// datacenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
}

/// What accepting a VI would do: computed from the design and the current
/// inventory; computing it changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    /// The datacenter planned in.
    pub datacenter: String,
    /// Where each VM goes.
    pub vms: Vec<PlannedVm>,
    /// Mbit/s of virtual links whose ends land on different hosts.
    pub cut_mbps: u64,
    /// Every physical link within its capacity.
    pub admissible: bool,
    /// `cut_mbps` is proven the least possible (VIs of up to 24 VMs are
    /// searched exactly): among admissible placements, or among all when
    /// none is admissible.
    pub optimal: bool,
    /// No placement cuts less (equal to `cut_mbps` when optimal); absent
    /// for VIs of more than 500 VMs and for an administrator's manual map.
    pub lower_bound_mbps: Option<u64>,
    /// `(cut_mbps - lower_bound_mbps) / cut_mbps`: how far the cut may be
    /// from the least possible (0 when optimal).
    pub gap: Option<f64>,
    /// The subnets and addresses the VI would get.
    pub addresses: AddressPlan,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Put an accepted VI on its hosts.
    Deploy,
    /// Save a running VI's VMs and free its hosts.
    Suspend,
    /// Place a suspended VI again and restore its VMs.
    Resume,
    /// Take a VI off its hosts and free everything it holds.
    Terminate,
    /// Save a VM as a new template (the VI's state is left alone).
    SaveTemplate,
    /// Move a running VI live to another datacenter.
    Migrate,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 6] = [
        JobKind::Deploy,
        JobKind::Suspend,
        JobKind::Resume,
        JobKind::Terminate,
        JobKind::SaveTemplate,
        JobKind::Migrate,
    ];

    /// The wire name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Deploy => "deploy",
            JobKind::Suspend => "suspend",
            JobKind::Resume => "resume",
            JobKind::Terminate => "terminate",
            JobKind::SaveTemplate => "save_template",
            JobKind::Migrate => "migrate",
        }
    }

    /// The kind of a wire name.
    pub fn parse(name: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Doing its steps.
    Running,
    /// A step failed: undoing the steps done, last first.
    RollingBack,
    /// Every step done.
    Succeeded,
    /// A step failed and every step done was undone.
    RolledBack,
    /// A step failed and could not be undone (or the job only moves
    /// forward): the VI needs an operator or a retry.
    Failed,
}

impl JobState {
    /// The wire name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::RollingBack => "rolling_back",
            JobState::Succeeded => "succeeded",
            JobState::RolledBack => "rolled_back",
            JobState::Failed => "failed",
        }
    }

    /// Whether the job has ended (it changes no more).
    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Running | JobState::RollingBack)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A durable job and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The VI it works on.
    pub vi: ViId,
    /// What it does.
    pub kind: JobKind,
    /// Where it is.
    pub state: JobState,
    /// Steps done (rolling back: steps still to undo).
    pub step: i64,
    /// Steps in all.
    pub total: i64,
    /// The step running now (or undone now).
    pub step_name: String,
    /// `step` of `total`, in percent.
    pub percent: u8,
    /// Why it failed or rolled back: the step and its cause.
    pub error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
    /// A migration's live moves, VM by VM, as the Manager running the job
    /// sees them (absent on another Manager, and once the job ended).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<VmMove>,
}

/// How far one VM's live move is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmMove {
    /// The VM's name on its hosts.
    pub vm: String,
    /// The host it leaves.
    pub from: String,
    /// The host it goes to.
    pub to: String,
    /// Memory and disk bytes sent so far.
    pub bytes_done: u64,
    /// Bytes still to send (changes as the guest writes).
    pub bytes_remaining: u64,
    /// Whether it runs on `to` now.
    pub done: bool,
    /// From the start of the move to the VM running on `to`.
    pub total_ms: Option<u64>,
    /// How long the guest was paused for the switch-over.
    pub downtime_ms: Option<u64>,
}

/// `POST /api/v1/vis/{id}/migrate`: move a running or suspended VI to
/// another datacenter (administrators: at once; its owner: a request an
/// administrator grants or refuses).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The datacenter to move to, by name.
    pub to: String,
    /// A manual placement in that datacenter (administrators): node id ->
    /// host name, for every node.
    pub placement: Option<std::collections::BTreeMap<String, String>>,
}

/// What moving a VI to another datacenter would do: computed from the
/// current inventory; computing it changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MigrationPlan {
    /// Where its VMs run now.
    pub from: String,
    /// The placement in the target datacenter: the target hosts and the cut.
    pub plan: Plan,
    /// Mbit/s of virtual links between VMs that are in different
    /// datacenters while the VI is split (every link with a VM on each
    /// side, at worst): what the inter-datacenter network must carry.
    pub split_mbps: u64,
    /// MiB the move copies at most: every VM's RAM and disk.
    pub copy_mib: u64,
    /// The Home Addresses that will be tunnelled from the home switch to
    /// the target's (none when the VI goes home).
    pub bound_addresses: Vec<String>,
}

/// An owner's request to move a VI, waiting for an administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MigrationRequest {
    /// The VI.
    pub vi: ViId,
    /// The datacenter it is to go to.
    pub to: String,
    /// Who asked.
    pub requested_by: String,
    /// Milliseconds since the Unix epoch.
    pub requested_at: i64,
}

/// A Home Address tunnelled from its home switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Binding {
    /// The Home Address.
    pub address: String,
    /// The datacenter it is tunnelled to.
    pub datacenter: String,
    /// That datacenter's switch's Care-of Address (absent when it has no
    /// switch registered).
    pub care_of: Option<String>,
}

/// `PUT /api/v1/datacenters/{name}/switch` (administrators): the
/// datacenter's Edge Service Switch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterSwitch {
    /// Its control API: `http://IP:PORT`.
    pub url: String,
    /// The file holding the key it shares with the Manager (hex, as the
    /// switch reads it), on the Manager's host. The key itself is never
    /// sent nor stored; the file is read at each call.
    pub key_file: String,
    /// Its Care-of Address (IPv4): what the switch answers as `care_of`.
    pub care_of: String,
    /// Its interface toward the datacenter's public network, where it
    /// delivers to the VIs' entry points.
    pub port: String,
    /// The next hop toward entry points on `port`, if they are not on
    /// its link.
    #[serde(default)]
    pub via: Option<String>,
}

/// A datacenter's Edge Service Switch, as registered and as it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Switch {
    /// Its datacenter.
    pub datacenter: String,
    /// See [`RegisterSwitch`].
    pub url: String,
    /// See [`RegisterSwitch`].
    pub key_file: String,
    /// See [`RegisterSwitch`].
    pub care_of: String,
    /// See [`RegisterSwitch`].
    pub port: String,
    /// See [`RegisterSwitch`].
    pub via: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
    /// Whether it answered the Manager's signed state request just now.
    pub reachable: bool,
    /// Its Mobility Binding Table's size and visitors, when it answered.
    pub bindings: Option<u64>,
    /// How many addresses it delivers here, when it answered.
    pub visitors: Option<u64>,
}

/// A virtual link's subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkAddresses {
    /// The virtual link.
    pub link: String,
    /// Its private subnet (CIDR).
    pub subnet: String,
    /// The address of its gateway node's interface, when it has one (the NAT/firewall node).
    pub gateway: Option<String>,
}

/// An interface's address (with its prefix length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InterfaceAddress {
    /// The node.
    pub node: String,
    /// Its interface.
    pub interface: String,
    /// The link it is on.
    pub link: String,
    /// Its address with the prefix length (`10.0.0.2/29`).
    pub address: String,
}

/// An entry point's public Home Address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HomeAddress {
    /// The entry point's node.
    pub node: String,
    /// Its interface.
    pub interface: String,
    /// The public Home Address, kept for the VI's whole life.
    pub address: String,
    /// The datacenter whose pool it comes from (its home).
    pub datacenter: String,
}

/// A VI's address plan: a subnet per virtual link, an address per
/// interface, a Home Address per entry point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddressPlan {
    /// The block of the private pool the VI's links live in.
    pub block: Option<String>,
    /// A subnet per virtual link.
    pub links: Vec<LinkAddresses>,
    /// An address per interface on a link.
    pub interfaces: Vec<InterfaceAddress>,
    /// A Home Address per entry point.
    pub home_addresses: Vec<HomeAddress>,
}

/// How much of an address pool is in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolUsage {
    /// The pool's prefix.
    pub pool: String,
    /// `private`, or `home` for a datacenter's Home Address pool.
    pub kind: String,
    /// The datacenter of a Home Address pool; none for a private pool.
    pub datacenter: Option<String>,
    /// Addresses in the pool.
    pub total: u64,
    /// Addresses taken.
    pub used: u64,
    /// Addresses free.
    pub free: u64,
    /// The largest free block (CIDR), if any.
    pub largest_free: Option<String>,
    /// How many pieces the free space is cut into.
    pub free_blocks: usize,
}

/// `GET /api/v1/vis/{id}/vms/{node}/console`: the end of the VM's serial
/// console output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleText {
    /// The end of the console's output (invalid UTF-8 replaced).
    pub text: String,
}

/// `POST /api/v1/vis/{id}/vms/{node}/console`: text to type on the VM's
/// serial console (at most 4096 bytes; a line ends with `\n`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleInput {
    /// What to type (at most 4096 bytes; `\n` is Enter).
    pub input: String,
}

/// One of the caller's SSH public keys: every guest of their VIs deployed
/// from now on accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    /// The key's id (to remove it).
    pub id: SshKeyId,
    /// The key's comment, or the name given.
    pub name: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// OpenSSH's one-line form: `TYPE BASE64 [COMMENT]`.
    pub public_key: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// `POST /api/v1/me/ssh-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSshKey {
    /// OpenSSH's one-line form, as in `~/.ssh/id_ed25519.pub`.
    pub public_key: String,
    /// At most 100 characters; default: the key's comment, else its
    /// fingerprint.
    #[serde(default)]
    pub name: Option<String>,
}

/// `GET /api/v1/vis/{id}/vms`: each VM as its host's Agent reports it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmStatus {
    /// The node of the design.
    pub node: String,
    /// The host it is on.
    pub host: String,
    /// `defined` (on its host, not running), `booting` (running, its guest
    /// not yet ready), `ready` (its guest said so), `missing` (not on its
    /// host) or `unknown` (its host does not answer).
    pub state: String,
}

/// A web console session (`/api/v1/auth/session`): the session token itself
/// travels only in an `HttpOnly` cookie, never in a body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsoleSession {
    /// Send it back as `X-CSRF-Token` on every request that changes
    /// something (`POST`, `PUT`, `PATCH`, `DELETE`).
    pub csrf_token: String,
    /// Milliseconds since the Unix epoch.
    pub expires_at: Option<i64>,
    /// Whose session it is.
    pub user: User,
}

#[cfg(test)]
mod job_tests {
    use super::*;

    #[test]
    fn job_kinds_and_states_keep_their_wire_names() {
        for kind in JobKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::from_str::<JobKind>(&json).unwrap(), kind);
        }
        assert_eq!(JobKind::parse("migrate-ish"), None);
        assert_eq!(
            serde_json::to_string(&JobState::RolledBack).unwrap(),
            "\"rolled_back\""
        );
        assert!(JobState::Failed.is_finished() && !JobState::RollingBack.is_finished());
    }
}

#[cfg(test)]
mod design_tests {
    use super::*;

    #[test]
    fn a_design_has_exactly_one_source() {
        let d: ViDesign = serde_json::from_str(r#"{"name": "n", "xml": "<x/>"}"#).unwrap();
        assert_eq!(d.source, DesignSource::Xml("<x/>".into()));
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"name": "n", "xml": "<x/>"}),
            "the same JSON back"
        );
        for two in [
            r#"{"xml": "<x/>", "catalogue": {"kind": "line"}}"#,
            r#"{"name": "none"}"#,
        ] {
            let err = serde_json::from_str::<ViDesign>(two).unwrap_err();
            assert!(err.to_string().contains("exactly one"), "{err}");
        }
        assert!(serde_json::from_str::<ViDesign>(r#"{"xml": "x", "extra": 1}"#).is_err());
    }
}
