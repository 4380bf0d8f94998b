//! Virtual Infrastructures: their designs (within the design quota), their
//! lifecycle changes and history, and the revisions readers check.

use neptune_lifecycle::ViState;
use sqlx::{PgPool, Row as _};

use super::Tx;
use crate::decode::{
    self, design_bytes, design_size, json_param, JsonRow, EVENT_COLUMNS, JOB_COLUMNS,
    MIGRATION_REQUEST_COLUMNS, VI_COLUMNS, VM_COLUMNS,
};
use crate::error::{self, db, read_err, write_err};
use crate::records::*;
use crate::{Result, StoreError};

pub(super) async fn create_vi(pool: &PgPool, vi: &ViRecord) -> Result<()> {
    let plan = vi
        .address_plan
        .as_deref()
        .map(|p| json_param("address plan", p))
        .transpose()?;
    let mut tx = pool.begin().await.map_err(db)?;
    lock_user(&mut tx, vi.owner_id).await?;
    // One statement: the quota is read and the row written together.
    let inserted = sqlx::query(&format!(
        "INSERT INTO vis ({VI_COLUMNS}, design_bytes) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13 FROM users u \
         WHERE u.id = $2 \
           AND (SELECT COUNT(*) FROM vis WHERE owner_id = $2 AND state <> 'terminated') \
               < u.quota_designs \
           AND {} + $13 <= u.quota_design_mib * 1048576",
        design_bytes("$2", None)
    ))
    .bind(vi.id)
    .bind(vi.owner_id)
    .bind(&vi.name)
    .bind(vi.state.as_str())
    .bind(&vi.design_xml)
    .bind(vi.home_datacenter_id)
    .bind(vi.reject_reason.clone())
    .bind(vi.version)
    .bind(vi.created_at)
    .bind(vi.updated_at)
    .bind(plan)
    .bind(vi.location_id)
    .bind(design_size(&vi.design_xml))
    .execute(&mut *tx)
    .await
    .map_err(write_err("VI"))?;
    if inserted.rows_affected() == 0 {
        drop(tx);
        return Err(design_quota_error(pool, vi.owner_id, None).await);
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

pub(super) async fn vi(pool: &PgPool, id: ViId) -> Result<ViRecord> {
    let row = sqlx::query(&format!("SELECT {VI_COLUMNS} FROM vis WHERE id = $1"))
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(read_err("VI"))?;
    decode::vi(&row)
}

pub(super) async fn vi_stamp(pool: &PgPool, id: ViId) -> Result<ViStamp> {
    // PostgreSQL keeps designs out of line and plans the stamp well alone.
    let row = sqlx::query("SELECT owner_id, revision FROM vis WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(read_err("VI"))?;
    decode::vi_stamp(&row)
}

pub(super) async fn vi_list_stamp(pool: &PgPool, owner: Option<UserId>) -> Result<ViListStamp> {
    const STAMP: &str =
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(revision), 0) AS BIGINT) AS total FROM vis";
    let row = match owner {
        Some(o) => {
            sqlx::query(&format!("{STAMP} WHERE owner_id = $1"))
                .bind(o)
                .fetch_one(pool)
                .await
        }
        None => sqlx::query(STAMP).fetch_one(pool).await,
    }
    .map_err(db)?;
    Ok(ViListStamp {
        count: decode::number(&row, "vis", "n")?,
        revisions: decode::number(&row, "vis", "total")?,
    })
}

pub(super) async fn list_vis(pool: &PgPool, owner: Option<UserId>) -> Result<Vec<ViRecord>> {
    let sql = decode::list_vis_sql(owner.is_some());
    let mut query = sqlx::query(&sql);
    if let Some(o) = owner {
        query = query.bind(o);
    }
    decode::each_row(query.fetch(pool), decode::vi).await
}

pub(super) async fn update_vi_design(
    pool: &PgPool,
    id: ViId,
    version: i64,
    name: &str,
    design_xml: &str,
    now: i64,
) -> Result<ViRecord> {
    let current = vi(pool, id).await?;
    let mut tx = pool.begin().await.map_err(db)?;
    lock_user(&mut tx, current.owner_id).await?;
    let row = sqlx::query(&format!(
        "UPDATE vis SET name = $1, design_xml = $2, design_bytes = $7, version = version + 1, \
         updated_at = $3 \
         WHERE id = $4 AND version = $5 AND state = 'defined' \
           AND {} + $7 \
               <= (SELECT quota_design_mib * 1048576 FROM users WHERE id = $6) \
         RETURNING {VI_COLUMNS}",
        design_bytes("$6", Some("$4"))
    ))
    .bind(name)
    .bind(design_xml)
    .bind(now)
    .bind(id)
    .bind(version)
    .bind(current.owner_id)
    .bind(design_size(design_xml))
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    if let Some(row) = row {
        let vi = decode::vi(&row)?;
        tx.commit().await.map_err(db)?;
        return Ok(vi);
    }
    drop(tx);
    let current = vi(pool, id).await?;
    if current.version == version && current.state == ViState::Defined {
        return Err(design_quota_error(pool, current.owner_id, Some(id)).await);
    }
    Err(error::design_conflict(
        version,
        current.version,
        current.state,
    ))
}

pub(super) async fn transition_vi(
    pool: &PgPool,
    id: ViId,
    from: ViState,
    change: &Transition,
) -> Result<ViRecord> {
    let mut tx = pool.begin().await.map_err(db)?;
    match transition_in(&mut tx, id, from, change).await? {
        Some(vi) => {
            tx.commit().await.map_err(db)?;
            Ok(vi)
        }
        None => {
            drop(tx);
            Err(vi_conflict(pool, id, from).await)
        }
    }
}

pub(super) async fn vi_events(pool: &PgPool, id: ViId) -> Result<Vec<ViEventRecord>> {
    let rows = sqlx::query("SELECT * FROM vi_events WHERE vi_id = $1 ORDER BY seq")
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::vi_event).collect()
}

/// A VI's events, VMs, moves, migration request and jobs (a job that
/// succeeded without its steps: see [`decode::shown_steps`]), each table's
/// rows as a JSON array in one statement, ordered as the reads one by one
/// order them.
pub(super) async fn vi_parts(pool: &PgPool, id: ViId) -> Result<ViParts> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let rows = |table: &str, columns: &str, order: &str| {
            format!(
                "(SELECT json_agg(r{order})::text FROM (SELECT {columns} FROM {table} \
                 WHERE vi_id = $1) r) AS {table}"
            )
        };
        format!(
            "SELECT {}, {}, {}, {}, {}",
            rows("vi_events", EVENT_COLUMNS, " ORDER BY r.seq"),
            rows("vms", VM_COLUMNS, " ORDER BY r.node_id"),
            rows("vm_moves", VM_COLUMNS, " ORDER BY r.node_id"),
            rows("migration_requests", MIGRATION_REQUEST_COLUMNS, ""),
            rows(
                "jobs",
                &JOB_COLUMNS.replace(
                    "steps",
                    &format!("{} AS steps", decode::shown_steps("'[]'::jsonb")),
                ),
                " ORDER BY r.created_at, r.id",
            ),
        )
    });
    let row = sqlx::query(&SQL)
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let rows = |table: &'static str| -> Result<Vec<JsonRow>> {
        JsonRow::all(table, row.try_get(table).map_err(db)?)
    };
    decode::vi_parts(
        &rows("vi_events")?,
        &rows("vms")?,
        &rows("vm_moves")?,
        &rows("migration_requests")?,
        &rows("jobs")?,
    )
}

/// The VI compare-and-set and its event, inside a transaction: `None` if
/// the VI is not in `from` (nothing written).
pub(super) async fn transition_in(
    tx: &mut Tx<'_>,
    id: ViId,
    from: ViState,
    change: &Transition,
) -> Result<Option<ViRecord>> {
    let row = sqlx::query(&format!(
        "UPDATE vis SET state = $1, reject_reason = $2, \
         home_datacenter_id = COALESCE($3, home_datacenter_id), version = version + 1, updated_at = $4, \
         address_plan = CASE WHEN $1 IN ('defined', 'requested') THEN NULL ELSE address_plan END, \
         usage_vms = COALESCE($7, usage_vms), usage_vcpus = COALESCE($8, usage_vcpus), \
         usage_ram_mib = COALESCE($9, usage_ram_mib), \
         usage_public_addresses = COALESCE($10, usage_public_addresses), \
         usage_private_addresses = COALESCE($11, usage_private_addresses) \
         WHERE id = $5 AND state = $6 RETURNING {VI_COLUMNS}"
    ))
    .bind(change.to.as_str())
    .bind(change.reject_reason.clone())
    .bind(change.home_datacenter_id)
    .bind(change.at)
    .bind(id)
    .bind(from.as_str())
    .bind(change.usage.map(|u| u.vms))
    .bind(change.usage.map(|u| u.vcpus))
    .bind(change.usage.map(|u| u.ram_mib))
    .bind(change.usage.map(|u| u.public_addresses))
    .bind(change.usage.map(|u| u.private_addresses))
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    let Some(row) = row else { return Ok(None) };
    sqlx::query(
        "INSERT INTO vi_events (vi_id, at, from_state, to_state, actor, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(change.at)
    .bind(from.as_str())
    .bind(change.to.as_str())
    .bind(change.actor)
    .bind(change.reject_reason.clone())
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    decode::vi(&row).map(Some)
}

/// Serialises quota checks of one user's writes: the user's row stays
/// locked until the transaction ends, so two designs checked at once
/// cannot both take the last of the quota.
async fn lock_user(tx: &mut Tx<'_>, user: UserId) -> Result<()> {
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(user)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Why a compare-and-set from `from` lost (read after the transaction).
pub(super) async fn vi_conflict(pool: &PgPool, id: ViId, from: ViState) -> StoreError {
    match vi(pool, id).await {
        Ok(current) => error::vi_conflict(from, current.state),
        Err(e) => e,
    }
}

/// Why a design of `owner` was refused: which part of the design quota
/// it would exceed (`except`: the VI being edited, not counted).
async fn design_quota_error(pool: &PgPool, owner: UserId, except: Option<ViId>) -> StoreError {
    let user = match super::users::user(pool, owner).await {
        Ok(u) => u,
        Err(e) => return e,
    };
    match design_holdings(pool, owner, except).await {
        Ok(held) => error::design_quota(&user, held.designs, held.bytes, except.is_some()),
        Err(e) => e,
    }
}

/// What the VIs of `owner` but `except` take of the design quota.
pub(super) async fn design_holdings(
    pool: &PgPool,
    owner: UserId,
    except: Option<ViId>,
) -> Result<DesignHoldings> {
    let row = sqlx::query(&format!(
        "SELECT COUNT(*) AS n, {} AS bytes FROM vis \
         WHERE owner_id = $1 AND state <> 'terminated' AND id <> $2",
        design_bytes("$1", Some("$2"))
    ))
    .bind(owner)
    .bind(except.map(ViId::uuid).unwrap_or_default())
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(DesignHoldings {
        designs: decode::number(&row, "vis", "n")?,
        bytes: decode::number(&row, "vis", "bytes")?,
    })
}

/// The states in which a VI counts against its owner's quota, as SQL.
const COUNTED: &str = "state NOT IN ('defined', 'rejected', 'terminated')";

pub(super) async fn quota_usage(
    pool: &PgPool,
    owner: UserId,
    except: ViId,
) -> Result<(ViUsage, Vec<ViId>)> {
    let sum = |c: &str| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)");
    let row = sqlx::query(&format!(
        "SELECT {}, {}, {}, {}, {} FROM vis \
         WHERE owner_id = $1 AND id <> $2 AND {COUNTED} AND usage_vms IS NOT NULL",
        sum("usage_vms"),
        sum("usage_vcpus"),
        sum("usage_ram_mib"),
        sum("usage_public_addresses"),
        sum("usage_private_addresses"),
    ))
    .bind(owner)
    .bind(except)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let get = |i: usize| -> Result<i64> { sqlx::Row::try_get::<i64, _>(&row, i).map_err(db) };
    let usage = ViUsage {
        vms: get(0)?,
        vcpus: get(1)?,
        ram_mib: get(2)?,
        public_addresses: get(3)?,
        private_addresses: get(4)?,
    };
    let missing = sqlx::query(&format!(
        "SELECT id FROM vis WHERE owner_id = $1 AND id <> $2 AND {COUNTED} AND usage_vms IS NULL"
    ))
    .bind(owner)
    .bind(except)
    .fetch_all(pool)
    .await
    .map_err(db)?
    .iter()
    .map(decode::vi_id)
    .collect::<Result<Vec<ViId>>>()?;
    Ok((usage, missing))
}

pub(super) async fn set_vi_usage(pool: &PgPool, vi: ViId, usage: &ViUsage) -> Result<()> {
    let done = sqlx::query(
        "UPDATE vis SET usage_vms = $1, usage_vcpus = $2, usage_ram_mib = $3, \
         usage_public_addresses = $4, usage_private_addresses = $5 WHERE id = $6",
    )
    .bind(usage.vms)
    .bind(usage.vcpus)
    .bind(usage.ram_mib)
    .bind(usage.public_addresses)
    .bind(usage.private_addresses)
    .bind(vi)
    .execute(pool)
    .await
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "VI" });
    }
    Ok(())
}
