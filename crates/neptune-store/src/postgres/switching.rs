//! Service Switching: each datacenter's switch, the generations of Home
//! Address updates, and owners' requests to move a VI.

use sqlx::PgPool;

use crate::decode;
use crate::error::{db, write_err};
use crate::records::*;
use crate::{Result, StoreError};

pub(super) async fn set_switch(pool: &PgPool, s: &SwitchRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO switches (datacenter_id, url, key_file, care_of, port, via, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (datacenter_id) DO UPDATE SET url = $2, key_file = $3, care_of = $4, \
         port = $5, via = $6, updated_at = $7",
    )
    .bind(s.datacenter_id)
    .bind(&s.url)
    .bind(&s.key_file)
    .bind(&s.care_of)
    .bind(&s.port)
    .bind(s.via.clone())
    .bind(s.updated_at)
    .execute(pool)
    .await
    .map_err(write_err("switch"))?;
    Ok(())
}

pub(super) async fn switches(pool: &PgPool) -> Result<Vec<SwitchRecord>> {
    let rows = sqlx::query("SELECT * FROM switches ORDER BY datacenter_id")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::switch).collect()
}

pub(super) async fn delete_switch(pool: &PgPool, datacenter: DatacenterId) -> Result<()> {
    let done = sqlx::query("DELETE FROM switches WHERE datacenter_id = $1")
        .bind(datacenter)
        .execute(pool)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "switch" });
    }
    Ok(())
}

pub(super) async fn next_generation(pool: &PgPool, address: &str, above: i64) -> Result<i64> {
    // One statement: concurrent callers each get their own number.
    sqlx::query_scalar(
        "INSERT INTO address_generations (address, generation) VALUES ($1, CAST($2 AS BIGINT) + 1) \
         ON CONFLICT (address) DO UPDATE SET generation = \
         CASE WHEN address_generations.generation > CAST($2 AS BIGINT) \
         THEN address_generations.generation ELSE CAST($2 AS BIGINT) END + 1 \
         RETURNING generation",
    )
    .bind(address)
    .bind(above.max(0))
    .fetch_one(pool)
    .await
    .map_err(db)
}

pub(super) async fn request_migration(pool: &PgPool, r: &MigrationRequestRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO migration_requests (vi_id, datacenter_id, requested_by, requested_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(r.vi_id)
    .bind(r.datacenter_id)
    .bind(r.requested_by)
    .bind(r.requested_at)
    .execute(pool)
    .await
    .map_err(write_err("migration request"))?;
    Ok(())
}

pub(super) async fn migration_request(
    pool: &PgPool,
    vi: ViId,
) -> Result<Option<MigrationRequestRecord>> {
    let row = sqlx::query("SELECT * FROM migration_requests WHERE vi_id = $1")
        .bind(vi)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    row.as_ref().map(decode::migration_request).transpose()
}

pub(super) async fn migration_requests(pool: &PgPool) -> Result<Vec<MigrationRequestRecord>> {
    let rows = sqlx::query("SELECT * FROM migration_requests ORDER BY requested_at, vi_id")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::migration_request).collect()
}

pub(super) async fn delete_migration_request(pool: &PgPool, vi: ViId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM migration_requests WHERE vi_id = $1")
        .bind(vi)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() > 0)
}
