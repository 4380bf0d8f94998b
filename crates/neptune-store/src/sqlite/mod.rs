//! The SQLite adapter, the embedded default: one file in the data
//! directory, private to its owner.
//!
//! SQLite has one writer at a time: a few connections serve concurrent
//! readers (WAL lets them read while a writer commits) and writers queue on
//! the busy timeout. So a quota check and its write, made in one statement,
//! need no lock. Ids are kept as hyphenated UUID text and JSON documents as
//! text, checked when read. The queries live in one module per resource.

mod inventory;
mod jobs;
mod placement;
mod quiet;
mod switching;
mod templates;
mod users;
mod vis;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use neptune_lifecycle::ViState;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use crate::decode::{check_json, parse_uuid, Cells, Fault};
use crate::records::*;
use crate::token_cache::TokenCache;
use crate::{Backend, Result, Store, StoreError};

/// The schema's migrations, in order, as applied at connect. An applied
/// migration is never edited (its checksum would no longer match the
/// databases it made): a change is a new file.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

/// The SQLite adapter of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Taken by every write: SQLite has one writer at a time, and writers
    /// it makes wait sleep in its busy handler (up to 100 ms a turn), so
    /// under load they are queued here instead, woken the moment the
    /// previous one commits. Reads go on beside them (WAL).
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Tokens verified, kept until a token or user changes.
    tokens: Arc<TokenCache>,
    /// Closes the pool's connections once a burst that grew it is over
    /// (see [`quiet`]); stops with the last clone of the store.
    _shedding: Option<Arc<quiet::Shedding>>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `url` and brings its
    /// schema up to date.
    ///
    /// `sqlite://PATH` is a file, made readable by its owner only;
    /// `sqlite::memory:` a private in-memory database (one connection,
    /// kept open while the store lives). Options in the URL (`?mode=ro`)
    /// are SQLite's; without any, the file is created if missing.
    pub async fn connect(url: &str) -> Result<SqliteStore> {
        let memory = url.contains(":memory:");
        let mut options = SqliteConnectOptions::from_str(url)
            .map_err(crate::error::db)?
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(SqliteSynchronous::Normal);
        if !url.contains('?') {
            options = options.create_if_missing(true);
        }
        if !memory {
            // WAL lets readers proceed while a writer commits; it persists in the file.
            options = options.journal_mode(SqliteJournalMode::Wal);
        }
        let mut pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            // A SQLite connection is a library's state in this process,
            // not a peer that may have gone: a test before each use is one
            // more round trip to its worker thread for every statement
            // (sqlx tests it again when it is given back).
            .test_before_acquire(false)
            .max_connections(if memory { 1 } else { 8 });
        if memory {
            // The database lives only as long as its one connection.
            pool = pool.idle_timeout(None).max_lifetime(None);
        }
        let pool = pool.connect_with(options).await.map_err(crate::error::db)?;
        restrict_files(url)?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        let shedding = (!memory).then(|| Arc::new(quiet::Shedding::start(pool.clone())));
        Ok(SqliteStore {
            pool,
            writing: Arc::default(),
            tokens: Arc::default(),
            _shedding: shedding,
        })
    }

    /// The connection pool, for tools that read the database directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Makes a SQLite database and its WAL and shared-memory files readable
/// by their owner only: they hold every user's designs and token hashes.
/// SQLite gives the WAL files it creates later the database's mode.
fn restrict_files(url: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .filter(|p| !p.is_empty() && !p.contains(":memory:"))
    else {
        return Ok(());
    };
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::Mode { path: file, source })
            }
            _ => {}
        }
    }
    Ok(())
}

impl Cells for SqliteRow {
    fn text(&self, column: &str) -> Result<Option<String>, Fault> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> Result<Option<i64>, Fault> {
        Ok(self.try_get(column)?)
    }

    fn uuid(&self, column: &str) -> Result<Option<Uuid>, Fault> {
        self.text(column)?.map(parse_uuid).transpose()
    }

    fn json(&self, column: &str) -> Result<Option<String>, Fault> {
        self.text(column)?.map(check_json).transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_user(&self, user: &UserRecord) -> Result<()> {
        let _writing = self.writing.lock().await;
        users::create_user(&self.pool, user).await
    }

    async fn user(&self, id: UserId) -> Result<UserRecord> {
        users::user(&self.pool, id).await
    }

    async fn user_by_name(&self, name: &str) -> Result<UserRecord> {
        users::user_by_name(&self.pool, name).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        users::list_users(&self.pool).await
    }

    async fn count_admins(&self) -> Result<i64> {
        users::count_admins(&self.pool).await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let _writing = self.writing.lock().await;
        users::insert_token(&self.pool, token).await
    }

    async fn user_for_token(&self, hash: &str, now: i64) -> Result<(TokenRecord, UserRecord)> {
        self.tokens
            .verify(
                hash,
                now,
                || users::auth_epoch(&self.pool),
                || users::user_for_token(&self.pool, hash, now),
            )
            .await
    }

    async fn delete_token(&self, hash: &str) -> Result<()> {
        let _writing = self.writing.lock().await;
        let done = users::delete_token(&self.pool, hash).await;
        self.tokens.forget();
        done
    }

    async fn list_tokens(&self, user: UserId, now: i64) -> Result<Vec<TokenRecord>> {
        users::list_tokens(&self.pool, user, now).await
    }

    async fn revoke_token(&self, id: TokenId, user: Option<UserId>) -> Result<()> {
        let _writing = self.writing.lock().await;
        let done = users::revoke_token(&self.pool, id, user).await;
        self.tokens.forget();
        done
    }

    async fn add_ssh_key(&self, key: &SshKeyRecord, max: i64) -> Result<()> {
        let _writing = self.writing.lock().await;
        users::add_ssh_key(&self.pool, key, max).await
    }

    async fn ssh_keys(&self, user: UserId) -> Result<Vec<SshKeyRecord>> {
        users::ssh_keys(&self.pool, user).await
    }

    async fn delete_ssh_key(&self, user: UserId, id: SshKeyId) -> Result<()> {
        let _writing = self.writing.lock().await;
        users::delete_ssh_key(&self.pool, user, id).await
    }

    async fn revoke_tokens_of(&self, user: UserId, except_hash: Option<&str>) -> Result<u64> {
        let _writing = self.writing.lock().await;
        let done = users::revoke_tokens_of(&self.pool, user, except_hash).await;
        self.tokens.forget();
        done
    }

    async fn delete_expired_tokens(&self, now: i64) -> Result<u64> {
        let _writing = self.writing.lock().await;
        // Expired tokens are refused from memory already: nothing to forget.
        users::delete_expired_tokens(&self.pool, now).await
    }

    async fn set_password(&self, user: UserId, password_hash: &str) -> Result<()> {
        let _writing = self.writing.lock().await;
        let done = users::set_password(&self.pool, user, password_hash).await;
        self.tokens.forget();
        done
    }

    async fn set_user_disabled(
        &self,
        user: UserId,
        disabled_at: Option<i64>,
    ) -> Result<UserRecord> {
        let _writing = self.writing.lock().await;
        let done = users::set_user_disabled(&self.pool, user, disabled_at).await;
        self.tokens.forget();
        done
    }

    async fn set_user_quota(&self, user: UserId, quota: &Quota) -> Result<UserRecord> {
        let _writing = self.writing.lock().await;
        let done = users::set_user_quota(&self.pool, user, quota).await;
        self.tokens.forget();
        done
    }

    async fn create_datacenter(&self, dc: &DatacenterRecord) -> Result<()> {
        let _writing = self.writing.lock().await;
        inventory::create_datacenter(&self.pool, dc).await
    }

    async fn list_datacenters(&self) -> Result<Vec<DatacenterRecord>> {
        inventory::list_datacenters(&self.pool).await
    }

    async fn datacenter_by_name(&self, name: &str) -> Result<DatacenterRecord> {
        inventory::datacenter_by_name(&self.pool, name).await
    }

    async fn upsert_host(&self, host: &HostRecord) -> Result<HostRecord> {
        let _writing = self.writing.lock().await;
        inventory::upsert_host(&self.pool, host).await
    }

    async fn upsert_hosts(&self, hosts: &[HostRecord]) -> Result<Vec<HostRecord>> {
        let _writing = self.writing.lock().await;
        inventory::upsert_hosts(&self.pool, hosts).await
    }

    async fn list_hosts(&self) -> Result<Vec<HostRecord>> {
        inventory::list_hosts(&self.pool).await
    }

    async fn host_by_name(&self, name: &str) -> Result<HostRecord> {
        inventory::host_by_name(&self.pool, name).await
    }

    async fn hosts_in(&self, datacenter: DatacenterId) -> Result<Vec<HostRecord>> {
        inventory::hosts_in(&self.pool, datacenter).await
    }

    async fn roomiest_hosts(
        &self,
        datacenter: DatacenterId,
        limit: i64,
    ) -> Result<Vec<HostRecord>> {
        inventory::roomiest_hosts(&self.pool, datacenter, limit).await
    }

    async fn hosts_by_id(&self, ids: &[HostId]) -> Result<Vec<HostRecord>> {
        inventory::hosts_by_id(&self.pool, ids).await
    }

    async fn host_heartbeats(&self, beats: &[(HostId, i64)]) -> Result<u64> {
        let _writing = self.writing.lock().await;
        inventory::host_heartbeats(&self.pool, beats).await
    }

    async fn host_counts(&self) -> Result<Vec<HostCount>> {
        inventory::host_counts(&self.pool).await
    }

    async fn mark_unreachable(&self, before: i64) -> Result<u64> {
        let _writing = self.writing.lock().await;
        inventory::mark_unreachable(&self.pool, before).await
    }

    async fn create_template(&self, t: &TemplateRecord) -> Result<()> {
        let _writing = self.writing.lock().await;
        templates::create_template(&self.pool, t).await
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        templates::list_templates(&self.pool).await
    }

    async fn template_for(&self, owner: UserId, name: &str) -> Result<TemplateRecord> {
        templates::template_for(&self.pool, owner, name).await
    }

    async fn template(&self, id: TemplateId) -> Result<TemplateRecord> {
        templates::template(&self.pool, id).await
    }

    async fn set_template_visibility(
        &self,
        id: TemplateId,
        visibility: Visibility,
    ) -> Result<TemplateRecord> {
        let _writing = self.writing.lock().await;
        templates::set_template_visibility(&self.pool, id, visibility).await
    }

    async fn create_vi(&self, vi: &ViRecord) -> Result<()> {
        let _writing = self.writing.lock().await;
        vis::create_vi(&self.pool, vi).await
    }

    async fn vi(&self, id: ViId) -> Result<ViRecord> {
        vis::vi(&self.pool, id).await
    }

    async fn vi_stamp(&self, id: ViId) -> Result<ViStamp> {
        vis::vi_stamp(&self.pool, id).await
    }

    async fn list_vis(&self, owner: Option<UserId>) -> Result<Vec<ViRecord>> {
        vis::list_vis(&self.pool, owner).await
    }

    async fn vi_list_stamp(&self, owner: Option<UserId>) -> Result<ViListStamp> {
        vis::vi_list_stamp(&self.pool, owner).await
    }

    async fn update_vi_design(
        &self,
        id: ViId,
        version: i64,
        name: &str,
        design_xml: &str,
        now: i64,
    ) -> Result<ViRecord> {
        let _writing = self.writing.lock().await;
        vis::update_vi_design(&self.pool, id, version, name, design_xml, now).await
    }

    async fn transition_vi(
        &self,
        id: ViId,
        from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        let _writing = self.writing.lock().await;
        vis::transition_vi(&self.pool, id, from, change).await
    }

    async fn quota_usage(&self, owner: UserId, except: ViId) -> Result<(ViUsage, Vec<ViId>)> {
        vis::quota_usage(&self.pool, owner, except).await
    }

    async fn design_holdings(&self, owner: UserId) -> Result<DesignHoldings> {
        vis::design_holdings(&self.pool, owner, None).await
    }

    async fn set_vi_usage(&self, vi: ViId, usage: &ViUsage) -> Result<()> {
        let _writing = self.writing.lock().await;
        vis::set_vi_usage(&self.pool, vi, usage).await
    }

    async fn vi_events(&self, id: ViId) -> Result<Vec<ViEventRecord>> {
        vis::vi_events(&self.pool, id).await
    }

    async fn vi_parts(&self, id: ViId) -> Result<ViParts> {
        vis::vi_parts(&self.pool, id).await
    }

    async fn transition_with_placement(
        &self,
        id: ViId,
        from: ViState,
        change: &Transition,
        reservation: &Reservation,
    ) -> Result<ViRecord> {
        let _writing = self.writing.lock().await;
        placement::transition_with_placement(&self.pool, id, from, change, reservation).await
    }

    async fn owned_addresses(&self) -> Result<Vec<OwnedAddress>> {
        placement::owned_addresses(&self.pool).await
    }

    async fn owned_addresses_of(&self, vi: ViId) -> Result<Vec<OwnedAddress>> {
        placement::owned_addresses_of(&self.pool, vi).await
    }

    async fn release_addresses(&self, vi: ViId, covers: &[(String, String)]) -> Result<u64> {
        let _writing = self.writing.lock().await;
        placement::release_addresses(&self.pool, vi, covers).await
    }

    async fn vms(&self, vi: ViId) -> Result<Vec<VmRecord>> {
        placement::vms(&self.pool, vi).await
    }

    async fn release_vms(&self, vi: ViId) -> Result<u64> {
        let _writing = self.writing.lock().await;
        placement::release_vms(&self.pool, vi).await
    }

    async fn vm_moves(&self, vi: ViId) -> Result<Vec<VmRecord>> {
        placement::vm_moves(&self.pool, vi).await
    }

    async fn release_vm_moves(&self, vi: ViId) -> Result<u64> {
        let _writing = self.writing.lock().await;
        placement::release_vm_moves(&self.pool, vi).await
    }

    async fn commit_vm_moves(&self, vi: ViId, location: Option<DatacenterId>) -> Result<u64> {
        let _writing = self.writing.lock().await;
        placement::commit_vm_moves(&self.pool, vi, location).await
    }

    async fn set_vi_location(&self, vi: ViId, location: Option<DatacenterId>) -> Result<()> {
        let _writing = self.writing.lock().await;
        placement::set_vi_location(&self.pool, vi, location).await
    }

    async fn set_switch(&self, switch: &SwitchRecord) -> Result<()> {
        let _writing = self.writing.lock().await;
        switching::set_switch(&self.pool, switch).await
    }

    async fn switches(&self) -> Result<Vec<SwitchRecord>> {
        switching::switches(&self.pool).await
    }

    async fn delete_switch(&self, datacenter: DatacenterId) -> Result<()> {
        let _writing = self.writing.lock().await;
        switching::delete_switch(&self.pool, datacenter).await
    }

    async fn next_generation(&self, address: &str, above: i64) -> Result<i64> {
        let _writing = self.writing.lock().await;
        switching::next_generation(&self.pool, address, above).await
    }

    async fn request_migration(&self, request: &MigrationRequestRecord) -> Result<()> {
        let _writing = self.writing.lock().await;
        switching::request_migration(&self.pool, request).await
    }

    async fn migration_request(&self, vi: ViId) -> Result<Option<MigrationRequestRecord>> {
        switching::migration_request(&self.pool, vi).await
    }

    async fn migration_requests(&self) -> Result<Vec<MigrationRequestRecord>> {
        switching::migration_requests(&self.pool).await
    }

    async fn delete_migration_request(&self, vi: ViId) -> Result<bool> {
        let _writing = self.writing.lock().await;
        switching::delete_migration_request(&self.pool, vi).await
    }

    async fn start_job(
        &self,
        job: &JobRecord,
        from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        let _writing = self.writing.lock().await;
        jobs::start_job(&self.pool, job, from, change).await
    }

    async fn add_job(&self, job: &JobRecord, vi_state: ViState) -> Result<()> {
        let _writing = self.writing.lock().await;
        jobs::add_job(&self.pool, job, vi_state).await
    }

    async fn job(&self, id: JobId) -> Result<JobRecord> {
        jobs::job(&self.pool, id).await
    }

    async fn jobs_of_vi(&self, vi: ViId) -> Result<Vec<JobRecord>> {
        jobs::jobs_of_vi(&self.pool, vi).await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        jobs::unfinished_jobs(&self.pool).await
    }

    async fn claim_job(&self, id: JobId, owner: &str, now: i64, until: i64) -> Result<bool> {
        let _writing = self.writing.lock().await;
        jobs::claim_job(&self.pool, id, owner, now, until).await
    }

    async fn update_job(
        &self,
        id: JobId,
        expected: (JobState, i64),
        state: JobState,
        cursor: i64,
        error: Option<&str>,
        now: i64,
    ) -> Result<JobRecord> {
        let _writing = self.writing.lock().await;
        jobs::update_job(&self.pool, id, expected, state, cursor, error, now).await
    }

    async fn finish_job(
        &self,
        id: JobId,
        expected: (JobState, i64),
        state: JobState,
        cursor: i64,
        error: Option<&str>,
        vi_from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        let _writing = self.writing.lock().await;
        jobs::finish_job(
            &self.pool, id, expected, state, cursor, error, vi_from, change,
        )
        .await
    }
}
