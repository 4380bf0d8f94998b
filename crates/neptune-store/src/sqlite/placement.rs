//! Placement: what accepting a VI reserves (host slots and resources,
//! address space) with its transition, and the releases that undo it.

use neptune_lifecycle::ViState;
use sqlx::SqlitePool;

use super::vis::{transition_in, vi_conflict};
use crate::batch;
use crate::decode::{self, json_param};
use crate::error::{db, is_unique_violation, write_err};
use crate::records::*;
use crate::{Result, StoreError};

pub(super) async fn transition_with_placement(
    pool: &SqlitePool,
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
    for row in &reservation.addresses {
        let Some(owner) = &row.owner else { continue };
        let inserted = sqlx::query(
            "INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count) \
             VALUES ($1, $2, 'owned', $3, $4, 1)",
        )
        .bind(&row.pool)
        .bind(&row.prefix)
        .bind(id.to_string())
        .bind(json_param("address owner", owner)?)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if !is_unique_violation(&e) => return Err(db(e)),
            Err(_) => {
                return Err(StoreError::AddressTaken {
                    prefix: row.prefix.clone(),
                })
            }
        }
    }
    add_covers(&mut tx, &reservation.addresses).await?;
    if let Some(plan) = plan {
        sqlx::query("UPDATE vis SET address_plan = $1 WHERE id = $2")
            .bind(plan)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    // The database decides whether each host has room, so concurrent
    // commits cannot overfill one.
    for used in batch::per_host(reservation.vms.iter().chain(&reservation.moves)) {
        let done = room_change(batch::TAKE_ROOM, &used)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() != 1 {
            let room = sqlx::query(batch::ROOM)
                .bind(used.host.to_string())
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

/// Counts the reservation's covering prefixes, one statement for all: a
/// prefix new to the table is inserted, one covered already counted once
/// more. A prefix some VI owns is taken.
async fn add_covers(tx: &mut super::Tx<'_>, rows: &[AddressRow]) -> Result<()> {
    let covers = batch::counted(
        rows.iter()
            .filter(|r| r.owner.is_none())
            .map(|r| (r.pool.as_str(), r.prefix.as_str())),
    );
    if covers.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(&covers).map_err(|source| StoreError::NotJson {
        what: "covering prefixes",
        source,
    })?;
    let done = sqlx::query(
        "INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count) \
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), 'covers', NULL, NULL, \
         json_extract(value, '$[2]') FROM json_each($1) WHERE true \
         ON CONFLICT (pool, prefix) DO UPDATE SET count = addresses.count + excluded.count \
         WHERE addresses.kind = 'covers'",
    )
    .bind(&json)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    if done.rows_affected() == covers.len() as u64 {
        return Ok(());
    }
    let owned: Option<String> = sqlx::query_scalar(
        "SELECT a.prefix FROM addresses a JOIN json_each($1) c \
         ON a.pool = json_extract(c.value, '$[0]') AND a.prefix = json_extract(c.value, '$[1]') \
         WHERE a.kind = 'owned' LIMIT 1",
    )
    .bind(&json)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    Err(StoreError::AddressTaken {
        prefix: owned.unwrap_or_else(|| covers[0].1.to_owned()),
    })
}

/// Inserts the slots `vms` into `table` (`vms` or `vm_moves`), one
/// statement for all.
async fn insert_slots(tx: &mut super::Tx<'_>, table: &'static str, vms: &[VmRecord]) -> Result<()> {
    if vms.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = vms
        .iter()
        .map(|vm| {
            serde_json::json!([
                vm.vi_id.to_string(),
                vm.node_id,
                vm.host_id.to_string(),
                vm.vcpus,
                vm.ram_mib,
                vm.disk_mib,
                vm.uplink_mbps
            ])
        })
        .collect();
    let json = serde_json::to_string(&rows).map_err(|source| StoreError::NotJson {
        what: "VM slots",
        source,
    })?;
    sqlx::query(&format!(
        "INSERT INTO {table} (vi_id, node_id, host_id, vcpus, ram_mib, disk_mib, uplink_mbps) \
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), \
         json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), \
         json_extract(value, '$[6]') FROM json_each($1)"
    ))
    .bind(json)
    .execute(&mut **tx)
    .await
    .map_err(write_err("VM placement"))?;
    Ok(())
}

pub(super) async fn owned_addresses(pool: &SqlitePool) -> Result<Vec<OwnedAddress>> {
    let rows = sqlx::query("SELECT pool, prefix, vi_id, owner FROM addresses WHERE kind = 'owned'")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::owned_address).collect()
}

pub(super) async fn owned_addresses_of(pool: &SqlitePool, vi: ViId) -> Result<Vec<OwnedAddress>> {
    let rows = sqlx::query(
        "SELECT pool, prefix, vi_id, owner FROM addresses WHERE vi_id = $1 AND kind = 'owned'",
    )
    .bind(vi.to_string())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::owned_address).collect()
}

pub(super) async fn release_addresses(
    pool: &SqlitePool,
    vi: ViId,
    covers: &[(String, String)],
) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    let deleted = sqlx::query("DELETE FROM addresses WHERE vi_id = $1 AND kind = 'owned'")
        .bind(vi.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
    // Only the call that removed the owned rows releases their covers:
    // a repeated release changes nothing.
    if deleted > 0 {
        let counted = batch::counted(covers.iter().map(|(p, x)| (p.as_str(), x.as_str())));
        let json = serde_json::to_string(&counted).map_err(|source| StoreError::NotJson {
            what: "covering prefixes",
            source,
        })?;
        sqlx::query(
            "UPDATE addresses SET count = addresses.count - c.n FROM \
             (SELECT json_extract(value, '$[0]') AS pool, json_extract(value, '$[1]') AS prefix, \
             json_extract(value, '$[2]') AS n FROM json_each($1)) AS c \
             WHERE addresses.pool = c.pool AND addresses.prefix = c.prefix \
             AND addresses.kind = 'covers'",
        )
        .bind(json)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM addresses WHERE kind = 'covers' AND count <= 0")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(deleted)
}

pub(super) async fn vms(pool: &SqlitePool, vi: ViId) -> Result<Vec<VmRecord>> {
    let rows = sqlx::query("SELECT * FROM vms WHERE vi_id = $1 ORDER BY node_id")
        .bind(vi.to_string())
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::vm).collect()
}

pub(super) async fn release_vms(pool: &SqlitePool, vi: ViId) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    let mut released = release_in(&mut tx, vi, "vms").await?;
    released.extend(release_in(&mut tx, vi, "vm_moves").await?);
    give_back(&mut tx, released.iter()).await?;
    tx.commit().await.map_err(db)?;
    Ok(released.len() as u64)
}

pub(super) async fn release_vm_moves(pool: &SqlitePool, vi: ViId) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db)?;
    let released = release_in(&mut tx, vi, "vm_moves").await?;
    give_back(&mut tx, released.iter()).await?;
    tx.commit().await.map_err(db)?;
    Ok(released.len() as u64)
}

pub(super) async fn vm_moves(pool: &SqlitePool, vi: ViId) -> Result<Vec<VmRecord>> {
    let rows = sqlx::query("SELECT * FROM vm_moves WHERE vi_id = $1 ORDER BY node_id")
        .bind(vi.to_string())
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(|r| decode::vm_of(r, "vm_moves")).collect()
}

pub(super) async fn commit_vm_moves(
    pool: &SqlitePool,
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
            .bind(vi.to_string())
            .bind(&mv.node_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let updated = sqlx::query(
            "UPDATE vms SET host_id = $1, vcpus = $2, ram_mib = $3, disk_mib = $4, \
             uplink_mbps = $5 WHERE vi_id = $6 AND node_id = $7",
        )
        .bind(mv.host_id.to_string())
        .bind(mv.vcpus)
        .bind(mv.ram_mib)
        .bind(mv.disk_mib)
        .bind(mv.uplink_mbps)
        .bind(vi.to_string())
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
        .bind(location.map(|u| u.to_string()))
        .bind(vi.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(moves.len() as u64)
}

pub(super) async fn set_vi_location(
    pool: &SqlitePool,
    vi: ViId,
    location: Option<DatacenterId>,
) -> Result<()> {
    let done = sqlx::query("UPDATE vis SET location_id = $1 WHERE id = $2")
        .bind(location.map(|u| u.to_string()))
        .bind(vi.to_string())
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
        .bind(vi.to_string())
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
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    sqlx::query(sql)
        .bind(used.vcpus)
        .bind(used.ram_mib)
        .bind(used.disk_mib)
        .bind(used.host.to_string())
        .bind(used.uplink_mbps)
        .bind(used.slots)
}

/// Gives the resources of `slots` back to their hosts, one statement per host.
async fn give_back(tx: &mut super::Tx<'_>, slots: impl Iterator<Item = &VmRecord>) -> Result<()> {
    for used in batch::per_host(slots) {
        room_change(batch::GIVE_ROOM, &used)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}
