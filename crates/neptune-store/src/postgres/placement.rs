//! Placement: what accepting a VI reserves (host slots and resources,
//! address space) with its transition, and the releases that undo it.

use neptune_lifecycle::ViState;
use sqlx::PgPool;

use super::vis::{transition_in, vi_conflict};
use crate::batch;
use crate::decode::{self, json_param};
use crate::error::{db, is_unique_violation, write_err};
use crate::records::*;
use crate::{Result, StoreError};

pub(super) async fn transition_with_placement(
    pool: &PgPool,
    id: ViId,
    from: ViState,
    change: &Transition,
    reservation: &Reservation,
) -> Result<ViRecord> {
    let plan = reservation
        .address_plan
        .as_deref()
        .map(|p| json_param("address plan", p))
        .transpose()?;
    let mut tx = pool.begin().await.map_err(db)?;
    let Some(vi) = transition_in(&mut tx, id, from, change).await? else {
        drop(tx);
        return Err(vi_conflict(pool, id, from).await);
    };
    // Rows in one global order, whatever the plan's: two commits sharing
    // covers then lock them in the same order and cannot deadlock.
    let mut rows: Vec<&AddressRow> = reservation.addresses.iter().collect();
    rows.sort_by(|a, b| (&a.pool, &a.prefix).cmp(&(&b.pool, &b.prefix)));
    for row in rows {
        let inserted = match &row.owner {
            Some(owner) => sqlx::query(
                "INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count) \
                 VALUES ($1, $2, 'owned', $3, $4::jsonb, 1)",
            )
            .bind(&row.pool)
            .bind(&row.prefix)
            .bind(id)
            .bind(json_param("address owner", owner)?)
            .execute(&mut *tx)
            .await
            .map(|d| d.rows_affected()),
            None => sqlx::query(
                "INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count) \
                 VALUES ($1, $2, 'covers', NULL, NULL, 1) \
                 ON CONFLICT (pool, prefix) DO UPDATE SET count = addresses.count + 1 \
                 WHERE addresses.kind = 'covers'",
            )
            .bind(&row.pool)
            .bind(&row.prefix)
            .execute(&mut *tx)
            .await
            .map(|d| d.rows_affected()),
        };
        match inserted {
            Ok(1) => {}
            Err(e) if !is_unique_violation(&e) => return Err(db(e)),
            _ => {
                return Err(StoreError::AddressTaken {
                    prefix: row.prefix.clone(),
                })
            }
        }
    }
    if let Some(plan) = plan {
        sqlx::query("UPDATE vis SET address_plan = $1::jsonb WHERE id = $2")
            .bind(plan)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    // Hosts are locked in id order here and in the releases, so an
    // accept and a release sharing hosts cannot deadlock. The database
    // decides whether each has room, so concurrent commits cannot overfill
    // one.
    for used in batch::per_host(reservation.vms.iter().chain(&reservation.moves)) {
        let done = room_change(batch::TAKE_ROOM, &used)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() != 1 {
            let room = sqlx::query(batch::ROOM)
                .bind(used.host)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .map(|row| decode::room(&row))
                .transpose()?
                .unwrap_or_default();
            return Err(StoreError::NoRoom {
                host: used.host,
                node: used.misfit(&room),
            });
        }
    }
    insert_slots(&mut tx, "vms", &reservation.vms).await?;
    insert_slots(&mut tx, "vm_moves", &reservation.moves).await?;
    if let Some(job) = &reservation.job {
        super::jobs::insert_job(&mut tx, job, None).await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(ViRecord {
        address_plan: reservation.address_plan.clone().or(vi.address_plan),
        ..vi
    })
}

/// Inserts the slots `vms` into `table` (`vms` or `vm_moves`), one
/// statement for all.
async fn insert_slots(tx: &mut super::Tx<'_>, table: &'static str, vms: &[VmRecord]) -> Result<()> {
    if vms.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (vi_id, node_id, host_id, vcpus, ram_mib, disk_mib, uplink_mbps) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::bigint[], \
         $6::bigint[], $7::bigint[])"
    ))
    .bind(vms.iter().map(|v| v.vi_id).collect::<Vec<_>>())
    .bind(vms.iter().map(|v| v.node_id.clone()).collect::<Vec<_>>())
    .bind(vms.iter().map(|v| v.host_id).collect::<Vec<_>>())
    .bind(vms.iter().map(|v| v.vcpus).collect::<Vec<_>>())
    .bind(vms.iter().map(|v| v.ram_mib).collect::<Vec<_>>())
    .bind(vms.iter().map(|v| v.disk_mib).collect::<Vec<_>>())
    .bind(vms.iter().map(|v| v.uplink_mbps).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(write_err("VM placement"))?;
    Ok(())
}

pub(super) async fn owned_addresses(pool: &PgPool) -> Result<Vec<OwnedAddress>> {
    let rows = sqlx::query("SELECT pool, prefix, vi_id, owner FROM addresses WHERE kind = 'owned'")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::owned_address).collect()
}

pub(super) async fn owned_addresses_of(pool: &PgPool, vi: ViId) -> Result<Vec<OwnedAddress>> {
    let rows = sqlx::query(
        "SELECT pool, prefix, vi_id, owner FROM addresses WHERE vi_id = $1 AND kind = 'owned'",
    )
    .bind(vi)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::owned_address).collect()
}

pub(super) async fn release_addresses(
    pool: &PgPool,
    vi: ViId,
    covers: &[(String, String)],
) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    let deleted = sqlx::query("DELETE FROM addresses WHERE vi_id = $1 AND kind = 'owned'")
        .bind(vi)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
    // Only the call that removed the owned rows releases their covers:
    // a repeated release changes nothing.
    if deleted > 0 {
        // Covers in one global order (see `transition_with_placement`), and
        // each deleted by its key once no VI needs it: a delete of every
        // unneeded cover would lock rows other releases hold.
        let mut sorted: Vec<&(String, String)> = covers.iter().collect();
        sorted.sort();
        for (pool, prefix) in sorted {
            let left: Option<i64> = sqlx::query_scalar(
                "UPDATE addresses SET count = count - 1 \
                 WHERE pool = $1 AND prefix = $2 AND kind = 'covers' RETURNING count",
            )
            .bind(pool)
            .bind(prefix)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if left.is_some_and(|n| n <= 0) {
                sqlx::query(
                    "DELETE FROM addresses WHERE pool = $1 AND prefix = $2 AND kind = 'covers' AND count <= 0",
                )
                .bind(pool)
                .bind(prefix)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(deleted)
}

pub(super) async fn vms(pool: &PgPool, vi: ViId) -> Result<Vec<VmRecord>> {
    let rows = sqlx::query("SELECT * FROM vms WHERE vi_id = $1 ORDER BY node_id")
        .bind(vi)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::vm).collect()
}

pub(super) async fn release_vms(pool: &PgPool, vi: ViId) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    let mut released = release_in(&mut tx, vi, "vms").await?;
    released.extend(release_in(&mut tx, vi, "vm_moves").await?);
    give_back(&mut tx, released.iter()).await?;
    tx.commit().await.map_err(db)?;
    Ok(released.len() as u64)
}

pub(super) async fn release_vm_moves(pool: &PgPool, vi: ViId) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    let released = release_in(&mut tx, vi, "vm_moves").await?;
    give_back(&mut tx, released.iter()).await?;
    tx.commit().await.map_err(db)?;
    Ok(released.len() as u64)
}

pub(super) async fn vm_moves(pool: &PgPool, vi: ViId) -> Result<Vec<VmRecord>> {
    let rows = sqlx::query("SELECT * FROM vm_moves WHERE vi_id = $1 ORDER BY node_id")
        .bind(vi)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(|r| decode::vm_of(r, "vm_moves")).collect()
}

pub(super) async fn commit_vm_moves(
    pool: &PgPool,
    vi: ViId,
    location: Option<DatacenterId>,
) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    let moves = release_in(&mut tx, vi, "vm_moves").await?;
    // The slots the VMs leave: their rows take the moves' hosts and
    // resources (reserved when the migration started).
    let mut left = Vec::new();
    for mv in &moves {
        let row = sqlx::query("SELECT * FROM vms WHERE vi_id = $1 AND node_id = $2")
            .bind(vi)
            .bind(&mv.node_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let updated = sqlx::query(
            "UPDATE vms SET host_id = $1, vcpus = $2, ram_mib = $3, disk_mib = $4, \
             uplink_mbps = $5 WHERE vi_id = $6 AND node_id = $7",
        )
        .bind(mv.host_id)
        .bind(mv.vcpus)
        .bind(mv.ram_mib)
        .bind(mv.disk_mib)
        .bind(mv.uplink_mbps)
        .bind(vi)
        .bind(&mv.node_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        match row {
            Some(row) if updated.rows_affected() == 1 => left.push(decode::vm(&row)?),
            // A move of a VM that holds no slot (its VI's slots were
            // released meanwhile): the move's slot is given back instead.
            _ => left.push(mv.clone()),
        }
    }
    give_back(&mut tx, left.iter()).await?;
    sqlx::query("UPDATE vis SET location_id = $1 WHERE id = $2")
        .bind(location)
        .bind(vi)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(moves.len() as u64)
}

pub(super) async fn set_vi_location(
    pool: &PgPool,
    vi: ViId,
    location: Option<DatacenterId>,
) -> Result<()> {
    let done = sqlx::query("UPDATE vis SET location_id = $1 WHERE id = $2")
        .bind(location)
        .bind(vi)
        .execute(pool)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "VI" });
    }
    Ok(())
}

/// Deletes the VI's rows of `table` (`vms` or `vm_moves`): exactly the
/// slots this call releases.
async fn release_in(
    tx: &mut super::Tx<'_>,
    vi: ViId,
    table: &'static str,
) -> Result<Vec<VmRecord>> {
    let rows = sqlx::query(&format!("DELETE FROM {table} WHERE vi_id = $1 RETURNING *"))
        .bind(vi)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
    rows.iter().map(|r| decode::vm_of(r, table)).collect()
}

/// `sql` ([`batch::TAKE_ROOM`] or [`batch::GIVE_ROOM`]) bound to what
/// `used` takes of its host.
fn room_change<'q>(
    sql: &'q str,
    used: &batch::HostUse<'_>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(used.vcpus)
        .bind(used.ram_mib)
        .bind(used.disk_mib)
        .bind(used.host)
        .bind(used.uplink_mbps)
        .bind(used.slots)
}

/// Gives the resources of `slots` back to their hosts, one statement per
/// host, locked in id order as in `transition_with_placement`.
async fn give_back(tx: &mut super::Tx<'_>, slots: impl Iterator<Item = &VmRecord>) -> Result<()> {
    for used in batch::per_host(slots) {
        room_change(batch::GIVE_ROOM, &used)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}
