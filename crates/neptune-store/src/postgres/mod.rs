//! The PostgreSQL adapter, for scale: several Managers share one database.
//!
//! Ids are native `uuid` columns and JSON documents `jsonb` (checked by the
//! database on every write; read back as the same value in compact text).
//! Transactions run under READ COMMITTED, so a quota check that must see
//! every concurrent write of one user locks that user's row first. The
//! queries live in one module per resource.

mod inventory;
mod jobs;
mod placement;
mod switching;
mod templates;
mod users;
mod vis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use neptune_lifecycle::ViState;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::decode::{Cells, Fault};
use crate::records::*;
use crate::token_cache::TokenCache;
use crate::{Backend, Result, Store, StoreError};

/// The schema's migrations, in order, as applied at connect. An applied
/// migration is never edited (its checksum would no longer match the
/// databases it made): a change is a new file.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// The PostgreSQL adapter of [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Tokens verified, kept until a token or user changes.
    tokens: Arc<TokenCache>,
}

impl PostgresStore {
    /// Connects to the existing database at `url` (`postgres://...`) and
    /// brings its schema up to date; Managers sharing it may do so at once
    /// (the migrator takes an advisory lock).
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .max_connections(16)
            .connect(url)
            .await
            .map_err(crate::error::db)?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(PostgresStore {
            pool,
            tokens: Arc::default(),
        })
    }

    /// The connection pool, for tools that read the database directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Cells for PgRow {
    fn text(&self, column: &str) -> Result<Option<String>, Fault> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> Result<Option<i64>, Fault> {
        Ok(self.try_get(column)?)
    }

    fn uuid(&self, column: &str) -> Result<Option<Uuid>, Fault> {
        Ok(self.try_get(column)?)
    }

    fn json(&self, column: &str) -> Result<Option<String>, Fault> {
        // jsonb comes back as PostgreSQL prints it (spaces after colons
        // and commas); compact text reads as what was written.
        let value: Option<serde_json::Value> = self.try_get(column)?;
        Ok(value.map(|v| v.to_string()))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_user(&self, user: &UserRecord) -> Result<()> {
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
        let done = users::delete_token(&self.pool, hash).await;
        self.tokens.forget();
        done
    }

    async fn list_tokens(&self, user: UserId, now: i64) -> Result<Vec<TokenRecord>> {
        users::list_tokens(&self.pool, user, now).await
    }

    async fn revoke_token(&self, id: TokenId, user: Option<UserId>) -> Result<()> {
        let done = users::revoke_token(&self.pool, id, user).await;
        self.tokens.forget();
        done
    }

    async fn add_ssh_key(&self, key: &SshKeyRecord, max: i64) -> Result<()> {
        users::add_ssh_key(&self.pool, key, max).await
    }

    async fn ssh_keys(&self, user: UserId) -> Result<Vec<SshKeyRecord>> {
        users::ssh_keys(&self.pool, user).await
    }

    async fn delete_ssh_key(&self, user: UserId, id: SshKeyId) -> Result<()> {
        users::delete_ssh_key(&self.pool, user, id).await
    }

    async fn revoke_tokens_of(&self, user: UserId, except_hash: Option<&str>) -> Result<u64> {
        let done = users::revoke_tokens_of(&self.pool, user, except_hash).await;
        self.tokens.forget();
        done
    }

    async fn delete_expired_tokens(&self, now: i64) -> Result<u64> {
        // Expired tokens are refused from memory already: nothing to forget.
        users::delete_expired_tokens(&self.pool, now).await
    }

    async fn set_password(&self, user: UserId, password_hash: &str) -> Result<()> {
        let done = users::set_password(&self.pool, user, password_hash).await;
        self.tokens.forget();
        done
    }

    async fn set_user_disabled(
        &self,
        user: UserId,
        disabled_at: Option<i64>,
    ) -> Result<UserRecord> {
        let done = users::set_user_disabled(&self.pool, user, disabled_at).await;
        self.tokens.forget();
        done
    }

    async fn set_user_quota(&self, user: UserId, quota: &Quota) -> Result<UserRecord> {
        let done = users::set_user_quota(&self.pool, user, quota).await;
        self.tokens.forget();
        done
    }

    async fn create_datacenter(&self, dc: &DatacenterRecord) -> Result<()> {
        inventory::create_datacenter(&self.pool, dc).await
    }

    async fn list_datacenters(&self) -> Result<Vec<DatacenterRecord>> {
        inventory::list_datacenters(&self.pool).await
    }

    async fn datacenter_by_name(&self, name: &str) -> Result<DatacenterRecord> {
        inventory::datacenter_by_name(&self.pool, name).await
    }

    async fn upsert_host(&self, host: &HostRecord) -> Result<HostRecord> {
        inventory::upsert_host(&self.pool, host).await
    }

    async fn upsert_hosts(&self, hosts: &[HostRecord]) -> Result<Vec<HostRecord>> {
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
        inventory::host_heartbeats(&self.pool, beats).await
    }

    async fn host_counts(&self) -> Result<Vec<HostCount>> {
        inventory::host_counts(&self.pool).await
    }

    async fn mark_unreachable(&self, before: i64) -> Result<u64> {
        inventory::mark_unreachable(&self.pool, before).await
    }

    async fn create_template(&self, t: &TemplateRecord) -> Result<()> {
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
        templates::set_template_visibility(&self.pool, id, visibility).await
    }

    async fn create_vi(&self, vi: &ViRecord) -> Result<()> {
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
        vis::update_vi_design(&self.pool, id, version, name, design_xml, now).await
    }

    async fn transition_vi(
        &self,
        id: ViId,
        from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        vis::transition_vi(&self.pool, id, from, change).await
    }

    async fn quota_usage(&self, owner: UserId, except: ViId) -> Result<(ViUsage, Vec<ViId>)> {
        vis::quota_usage(&self.pool, owner, except).await
    }

    async fn design_holdings(&self, owner: UserId) -> Result<DesignHoldings> {
        vis::design_holdings(&self.pool, owner, None).await
    }

    async fn set_vi_usage(&self, vi: ViId, usage: &ViUsage) -> Result<()> {
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
        placement::transition_with_placement(&self.pool, id, from, change, reservation).await
    }

    async fn owned_addresses(&self) -> Result<Vec<OwnedAddress>> {
        placement::owned_addresses(&self.pool).await
    }

    async fn owned_addresses_of(&self, vi: ViId) -> Result<Vec<OwnedAddress>> {
        placement::owned_addresses_of(&self.pool, vi).await
    }

    async fn release_addresses(&self, vi: ViId, covers: &[(String, String)]) -> Result<u64> {
        placement::release_addresses(&self.pool, vi, covers).await
    }

    async fn vms(&self, vi: ViId) -> Result<Vec<VmRecord>> {
        placement::vms(&self.pool, vi).await
    }

    async fn release_vms(&self, vi: ViId) -> Result<u64> {
        placement::release_vms(&self.pool, vi).await
    }

    async fn vm_moves(&self, vi: ViId) -> Result<Vec<VmRecord>> {
        placement::vm_moves(&self.pool, vi).await
    }

    async fn release_vm_moves(&self, vi: ViId) -> Result<u64> {
        placement::release_vm_moves(&self.pool, vi).await
    }

    async fn commit_vm_moves(&self, vi: ViId, location: Option<DatacenterId>) -> Result<u64> {
        placement::commit_vm_moves(&self.pool, vi, location).await
    }

    async fn set_vi_location(&self, vi: ViId, location: Option<DatacenterId>) -> Result<()> {
        placement::set_vi_location(&self.pool, vi, location).await
    }

    async fn set_switch(&self, switch: &SwitchRecord) -> Result<()> {
        switching::set_switch(&self.pool, switch).await
    }

    async fn switches(&self) -> Result<Vec<SwitchRecord>> {
        switching::switches(&self.pool).await
    }

    async fn delete_switch(&self, datacenter: DatacenterId) -> Result<()> {
        switching::delete_switch(&self.pool, datacenter).await
    }

    async fn next_generation(&self, address: &str, above: i64) -> Result<i64> {
        switching::next_generation(&self.pool, address, above).await
    }

    async fn request_migration(&self, request: &MigrationRequestRecord) -> Result<()> {
        switching::request_migration(&self.pool, request).await
    }

    async fn migration_request(&self, vi: ViId) -> Result<Option<MigrationRequestRecord>> {
        switching::migration_request(&self.pool, vi).await
    }

    async fn migration_requests(&self) -> Result<Vec<MigrationRequestRecord>> {
        switching::migration_requests(&self.pool).await
    }

    async fn delete_migration_request(&self, vi: ViId) -> Result<bool> {
        switching::delete_migration_request(&self.pool, vi).await
    }

    async fn start_job(
        &self,
        job: &JobRecord,
        from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        jobs::start_job(&self.pool, job, from, change).await
    }

    async fn add_job(&self, job: &JobRecord, vi_state: ViState) -> Result<()> {
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
        jobs::finish_job(
            &self.pool, id, expected, state, cursor, error, vi_from, change,
        )
        .await
    }
}
