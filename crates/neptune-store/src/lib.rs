//! The Manager's Store port and its adapters.
//!
//! [`Store`] is what the Manager needs from a database. Two adapters
//! implement it, each over its own sqlx driver:
//!
//! - [`SqliteStore`], the embedded default: a file in the data directory
//!   (WAL, foreign keys on, a busy timeout so writers queue instead of
//!   failing); ids and JSON documents are text;
//! - [`PostgresStore`], for scale: several Managers share one database;
//!   ids are native `uuid` and JSON documents `jsonb`.
//!
//! Each adapter is split by resource (users and credentials, inventory,
//! templates, VIs, placement, jobs), keeps its migrations in
//! `migrations/sqlite` or `migrations/postgres` (embedded at build time,
//! applied at connect), and shares with the other what is not SQL: how rows
//! become records (`decode`: a damaged row is an error naming it, never a
//! default) and how database errors become [`StoreError`]s.
//! Uniqueness that matters is enforced by the database (unique names, one
//! token hash), and lifecycle changes are compare-and-set on the state, so
//! two concurrent requests cannot both win. `tests/conformance.rs` runs one
//! suite against both.

#![warn(missing_docs)]

mod batch;
mod decode;
mod error;
pub mod postgres;
mod records;
pub mod sqlite;
mod token_cache;

use std::sync::Arc;

use async_trait::async_trait;
use neptune_lifecycle::ViState;

pub use error::{Result, StoreError};
pub use postgres::PostgresStore;
pub use records::*;
pub use sqlite::SqliteStore;

/// Which database a [`Store`] speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`SqliteStore`].
    Sqlite,
    /// [`PostgresStore`].
    Postgres,
}

/// What the Manager keeps. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which database this is.
    fn backend(&self) -> Backend;
    /// Closes every connection, waiting for those in use: a SQLite file is
    /// then checkpointed and whole.
    async fn close(&self);

    // Users and credentials.
    /// Stores a new user ([`StoreError::Duplicate`] if the name is taken).
    async fn create_user(&self, user: &UserRecord) -> Result<()>;
    /// The user of an id.
    async fn user(&self, id: UserId) -> Result<UserRecord>;
    /// The user of a login name.
    async fn user_by_name(&self, name: &str) -> Result<UserRecord>;
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// How many administrators there are.
    async fn count_admins(&self) -> Result<i64>;
    /// Stores a new token ([`StoreError::Duplicate`] if its hash is known).
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    /// The user a token hash belongs to, if the token exists and has not expired at `now`.
    async fn user_for_token(&self, hash: &str, now: i64) -> Result<(TokenRecord, UserRecord)>;
    /// Forgets a token by its hash (a logout); no error if it is gone already.
    async fn delete_token(&self, hash: &str) -> Result<()>;
    /// A user's tokens that have not expired, oldest first.
    async fn list_tokens(&self, user: UserId, now: i64) -> Result<Vec<TokenRecord>>;
    /// Revokes a token by id; with `user`, only one of theirs.
    async fn revoke_token(&self, id: TokenId, user: Option<UserId>) -> Result<()>;
    /// Keeps an SSH key of its user, unless they have `max` already
    /// ([`StoreError::QuotaExceeded`]) or this one ([`StoreError::Duplicate`]).
    async fn add_ssh_key(&self, key: &SshKeyRecord, max: i64) -> Result<()>;
    /// A user's SSH keys, oldest first.
    async fn ssh_keys(&self, user: UserId) -> Result<Vec<SshKeyRecord>>;
    /// Forgets an SSH key of `user`.
    async fn delete_ssh_key(&self, user: UserId, id: SshKeyId) -> Result<()>;
    /// Revokes every token of `user` but the one whose hash is `except_hash`.
    async fn revoke_tokens_of(&self, user: UserId, except_hash: Option<&str>) -> Result<u64>;
    /// Forgets every token expired at `now`; returns how many.
    async fn delete_expired_tokens(&self, now: i64) -> Result<u64>;
    /// Replaces a user's password hash.
    async fn set_password(&self, user: UserId, password_hash: &str) -> Result<()>;
    /// Disables (`Some(when)`; every token of the user is revoked with it)
    /// or enables (`None`) a user.
    async fn set_user_disabled(&self, user: UserId, disabled_at: Option<i64>)
        -> Result<UserRecord>;

    /// Replaces a user's quota. What they hold already stays, even above it;
    /// only new requests are held to it.
    async fn set_user_quota(&self, user: UserId, quota: &Quota) -> Result<UserRecord>;

    // Datacenters and hosts.
    /// Stores a new datacenter ([`StoreError::Duplicate`] if the name is taken).
    async fn create_datacenter(&self, dc: &DatacenterRecord) -> Result<()>;
    /// Every datacenter, by name.
    async fn list_datacenters(&self) -> Result<Vec<DatacenterRecord>>;
    /// The datacenter of a name.
    async fn datacenter_by_name(&self, name: &str) -> Result<DatacenterRecord>;
    /// Registers a host, or updates its capacities and Agent URL if it is known by name.
    async fn upsert_host(&self, host: &HostRecord) -> Result<HostRecord>;
    /// Registers hosts as [`Store::upsert_host`] does, in one transaction
    /// (all or none), answering in their order. Rows are taken in id
    /// order, the order every transaction that changes hosts takes them in.
    async fn upsert_hosts(&self, hosts: &[HostRecord]) -> Result<Vec<HostRecord>>;
    /// Every host, by name, with what placed VMs take of it.
    async fn list_hosts(&self) -> Result<Vec<HostRecord>>;
    /// The host of a name (names are unique across datacenters).
    async fn host_by_name(&self, name: &str) -> Result<HostRecord>;
    /// The hosts of one datacenter, by name (what placing a VI there reads).
    async fn hosts_in(&self, datacenter: DatacenterId) -> Result<Vec<HostRecord>>;
    /// At most `limit` ready hosts of one datacenter with a VM slot free,
    /// those with the most vCPUs free first, then RAM (what an automatic
    /// placement shortlists; reads only what it returns, whatever the
    /// datacenter's size).
    async fn roomiest_hosts(&self, datacenter: DatacenterId, limit: i64)
        -> Result<Vec<HostRecord>>;
    /// The hosts of these ids that exist, by name (what a job's steps use).
    async fn hosts_by_id(&self, ids: &[HostId]) -> Result<Vec<HostRecord>>;
    /// Records, in one transaction, that each host's Agent was heard from
    /// at its time (a later time stays): the host is ready. Returns how
    /// many of the hosts exist. Hosts are written in id order, the order
    /// every transaction that changes hosts takes them in.
    async fn host_heartbeats(&self, beats: &[(HostId, i64)]) -> Result<u64>;
    /// Marks hosts not heard from since `before` as unreachable; returns how many.
    async fn mark_unreachable(&self, before: i64) -> Result<u64>;
    /// How many hosts each datacenter has in each state (states without
    /// a host are left out), in one read.
    async fn host_counts(&self) -> Result<Vec<HostCount>>;

    // Templates.
    /// Stores a new template ([`StoreError::Duplicate`] if its owner has one
    /// of that name, or it is public and a public one has).
    async fn create_template(&self, t: &TemplateRecord) -> Result<()>;
    /// Every template, by name.
    async fn list_templates(&self) -> Result<Vec<TemplateRecord>>;
    /// The template `name` as `owner` sees it: their own of that name, or
    /// else the public one.
    async fn template_for(&self, owner: UserId, name: &str) -> Result<TemplateRecord>;
    /// The template of an id.
    async fn template(&self, id: TemplateId) -> Result<TemplateRecord>;
    /// Makes a template private or public; a public template's name must be
    /// unique among public templates ([`StoreError::Duplicate`]).
    async fn set_template_visibility(
        &self,
        id: TemplateId,
        visibility: Visibility,
    ) -> Result<TemplateRecord>;

    // Virtual Infrastructures.
    /// Stores a new VI within its owner's design quota ([`Quota::designs`],
    /// [`Quota::design_mib`]), checked with the write: concurrent creates
    /// never take a user past it ([`StoreError::QuotaExceeded`]).
    async fn create_vi(&self, vi: &ViRecord) -> Result<()>;
    /// The VI of an id.
    async fn vi(&self, id: ViId) -> Result<ViRecord>;
    /// The VI's owner and revision, in one indexed read: enough to
    /// authorise a read and to tell whether a view of the VI built at an
    /// earlier revision is still current.
    async fn vi_stamp(&self, id: ViId) -> Result<ViStamp>;
    /// All VIs, or those of one owner.
    async fn list_vis(&self, owner: Option<UserId>) -> Result<Vec<ViRecord>>;
    /// How many VIs [`Store::list_vis`] would list and their revisions'
    /// total, from an index: enough to tell whether a list built earlier
    /// is still current.
    async fn vi_list_stamp(&self, owner: Option<UserId>) -> Result<ViListStamp>;
    /// Replaces the design of a VI that is still `defined` and at `version`,
    /// within its owner's [`Quota::design_mib`].
    async fn update_vi_design(
        &self,
        id: ViId,
        version: i64,
        name: &str,
        design_xml: &str,
        now: i64,
    ) -> Result<ViRecord>;
    /// Moves a VI from `from` to `change.to`, only if it is still in `from`
    /// (compare-and-set), and records the event.
    async fn transition_vi(&self, id: ViId, from: ViState, change: &Transition)
        -> Result<ViRecord>;
    /// What the VIs of `owner` that count against the quota (requested and
    /// beyond: not defined, rejected or terminated) take together, but for
    /// `except`, as each recorded it ([`Store::set_vi_usage`]); and the ids
    /// of those that recorded nothing yet.
    async fn quota_usage(&self, owner: UserId, except: ViId) -> Result<(ViUsage, Vec<ViId>)>;
    /// What the VIs of `owner` take of the design quota ([`Quota::designs`],
    /// [`Quota::design_mib`]), counted as [`Store::create_vi`] counts it.
    async fn design_holdings(&self, owner: UserId) -> Result<DesignHoldings>;
    /// Records what a VI takes of its owner's quota.
    async fn set_vi_usage(&self, vi: ViId, usage: &ViUsage) -> Result<()>;
    /// A VI's lifecycle changes, oldest first.
    async fn vi_events(&self, id: ViId) -> Result<Vec<ViEventRecord>>;
    /// What a VI's detail shows besides its row: what [`Store::vi_events`],
    /// [`Store::vms`], [`Store::vm_moves`], [`Store::migration_request`]
    /// and [`Store::jobs_of_vi`] read, in one statement, but for the steps
    /// of jobs that succeeded (see [`ViParts::jobs`]). A detail is built
    /// about four times per VI deployed, and on SQLite each statement is a
    /// hand-over to a connection's thread and back.
    async fn vi_parts(&self, id: ViId) -> Result<ViParts>;

    // Placement reservations.
    /// In one transaction: moves the VI from `from` (compare-and-set) and
    /// reserves every VM's slot and resources on its host. A host without
    /// room (or not ready) fails the whole commit with [`StoreError::NoRoom`].
    async fn transition_with_placement(
        &self,
        id: ViId,
        from: ViState,
        change: &Transition,
        reservation: &Reservation,
    ) -> Result<ViRecord>;
    /// Every owned address row (to rebuild the planner's snapshot).
    async fn owned_addresses(&self) -> Result<Vec<OwnedAddress>>;
    /// The owned address rows of one VI (what it releases).
    async fn owned_addresses_of(&self, vi: ViId) -> Result<Vec<OwnedAddress>>;
    /// Deletes the VI's owned address rows and, if it removed any,
    /// decrements `covers` (pool, prefix) rows. Idempotent.
    async fn release_addresses(&self, vi: ViId, covers: &[(String, String)]) -> Result<u64>;
    /// A VI's placed VMs, by node id.
    async fn vms(&self, vi: ViId) -> Result<Vec<VmRecord>>;
    /// Frees every VM slot of the VI, moves included; returns how many.
    /// Idempotent.
    async fn release_vms(&self, vi: ViId) -> Result<u64>;
    /// The slots a migrating VI's VMs hold on their target hosts, by node
    /// id ([`Reservation::moves`]).
    async fn vm_moves(&self, vi: ViId) -> Result<Vec<VmRecord>>;
    /// Frees the slots of the VI's moves (a migration undone), leaving
    /// its VMs' slots; returns how many. Idempotent.
    async fn release_vm_moves(&self, vi: ViId) -> Result<u64>;
    /// In one transaction: every VM with a move takes its target slot and
    /// frees the one it held, and the VI is located in `location`. Returns
    /// how many VMs moved. Idempotent (a second call only locates).
    async fn commit_vm_moves(&self, vi: ViId, location: Option<DatacenterId>) -> Result<u64>;
    /// Records the datacenter a VI's VMs run in (`None`: its home).
    async fn set_vi_location(&self, vi: ViId, location: Option<DatacenterId>) -> Result<()>;

    // Service Switching.
    /// Registers a datacenter's switch, or replaces its registration.
    async fn set_switch(&self, switch: &SwitchRecord) -> Result<()>;
    /// Every registered switch.
    async fn switches(&self) -> Result<Vec<SwitchRecord>>;
    /// Forgets a datacenter's switch ([`StoreError::NotFound`] if none).
    async fn delete_switch(&self, datacenter: DatacenterId) -> Result<()>;
    /// The next generation of an update of `address` on any switch: one
    /// more than every generation given before for it and than `above`
    /// (what a switch reported as current), from 1. Durable once returned.
    async fn next_generation(&self, address: &str, above: i64) -> Result<i64>;
    /// Stores an owner's migration request ([`StoreError::Duplicate`] if
    /// the VI has one waiting).
    async fn request_migration(&self, request: &MigrationRequestRecord) -> Result<()>;
    /// The request waiting for a VI, if any.
    async fn migration_request(&self, vi: ViId) -> Result<Option<MigrationRequestRecord>>;
    /// Every waiting request, oldest first.
    async fn migration_requests(&self) -> Result<Vec<MigrationRequestRecord>>;
    /// Ends a VI's waiting request (granted or refused); whether there was one.
    async fn delete_migration_request(&self, vi: ViId) -> Result<bool>;

    // Durable jobs.
    /// In one transaction: moves the VI from `from` and creates the job that carries the change out.
    async fn start_job(
        &self,
        job: &JobRecord,
        from: ViState,
        change: &Transition,
    ) -> Result<ViRecord>;
    /// Creates a job that leaves its VI's state alone (saving a VM as a
    /// template), only if the VI is in `vi_state`.
    async fn add_job(&self, job: &JobRecord, vi_state: ViState) -> Result<()>;
    /// The job of an id.
    async fn job(&self, id: JobId) -> Result<JobRecord>;
    /// A VI's jobs, oldest first.
    async fn jobs_of_vi(&self, vi: ViId) -> Result<Vec<JobRecord>>;
    /// Jobs running or rolling back, oldest first.
    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>>;
    /// Takes (or renews) the job's lease for `owner` until `until`, unless
    /// another owner holds an unexpired lease at `now`.
    async fn claim_job(&self, id: JobId, owner: &str, now: i64, until: i64) -> Result<bool>;
    /// Records progress: compare-and-set on (state, cursor).
    async fn update_job(
        &self,
        id: JobId,
        expected: (JobState, i64),
        state: JobState,
        cursor: i64,
        error: Option<&str>,
        now: i64,
    ) -> Result<JobRecord>;
    /// In one transaction: ends the job in `state` at `cursor` and moves its
    /// VI from `from`; compare-and-set on the job's (state, cursor).
    #[allow(clippy::too_many_arguments)]
    async fn finish_job(
        &self,
        id: JobId,
        expected: (JobState, i64),
        state: JobState,
        cursor: i64,
        error: Option<&str>,
        vi_from: ViState,
        change: &Transition,
    ) -> Result<ViRecord>;
}

/// Connects to `url` (`sqlite:PATH`, `sqlite://PATH` or `postgres://...`)
/// with the adapter its scheme names, and migrates the schema.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}
