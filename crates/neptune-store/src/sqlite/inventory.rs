//! Datacenters and their hosts.

use sqlx::SqlitePool;

use crate::decode;
use crate::error::{db, read_err, write_err};
use crate::records::*;
use crate::{Result, StoreError};

pub(super) async fn create_datacenter(pool: &SqlitePool, dc: &DatacenterRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO datacenters (id, name, created_at, home_pools, public_gateway) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(dc.id.to_string())
    .bind(&dc.name)
    .bind(dc.created_at)
    .bind(dc.home_pools.join(","))
    .bind(dc.public_gateway.clone())
    .execute(pool)
    .await
    .map_err(write_err("datacenter"))?;
    Ok(())
}

pub(super) async fn list_datacenters(pool: &SqlitePool) -> Result<Vec<DatacenterRecord>> {
    let rows = sqlx::query("SELECT * FROM datacenters ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::datacenter).collect()
}

pub(super) async fn datacenter_by_name(pool: &SqlitePool, name: &str) -> Result<DatacenterRecord> {
    let row = sqlx::query("SELECT * FROM datacenters WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(read_err("datacenter"))?;
    decode::datacenter(&row)
}

pub(super) async fn upsert_host(pool: &SqlitePool, h: &HostRecord) -> Result<HostRecord> {
    upsert_one(pool, h).await
}

async fn upsert_one<'e>(
    ex: impl sqlx::Executor<'e, Database = sqlx::Sqlite>,
    h: &HostRecord,
) -> Result<HostRecord> {
    let row = sqlx::query(
        "INSERT INTO hosts (id, datacenter_id, name, agent_url, cpus, ram_mib, disk_mib, vm_slots, state, last_seen, uplink_mbps) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (name) DO UPDATE SET datacenter_id = excluded.datacenter_id, agent_url = excluded.agent_url, \
         cpus = excluded.cpus, ram_mib = excluded.ram_mib, disk_mib = excluded.disk_mib, \
         vm_slots = excluded.vm_slots, state = excluded.state, last_seen = excluded.last_seen, \
         uplink_mbps = excluded.uplink_mbps \
         RETURNING *",
    )
    .bind(h.id.to_string())
    .bind(h.datacenter_id.to_string())
    .bind(&h.name)
    .bind(&h.agent_url)
    .bind(h.cpus)
    .bind(h.ram_mib)
    .bind(h.disk_mib)
    .bind(h.vm_slots)
    .bind(h.state.as_str())
    .bind(h.last_seen)
    .bind(h.uplink_mbps)
    .fetch_one(ex)
    .await
    .map_err(write_err("host"))?;
    decode::host(&row)
}

pub(super) async fn upsert_hosts(
    pool: &SqlitePool,
    hosts: &[HostRecord],
) -> Result<Vec<HostRecord>> {
    // SQLite has one writer: the order rows are taken in cannot deadlock.
    let mut tx = pool.begin().await.map_err(db)?;
    let mut stored = Vec::with_capacity(hosts.len());
    for h in hosts {
        stored.push(upsert_one(&mut *tx, h).await?);
    }
    tx.commit().await.map_err(db)?;
    Ok(stored)
}

pub(super) async fn list_hosts(pool: &SqlitePool) -> Result<Vec<HostRecord>> {
    let rows = sqlx::query("SELECT * FROM hosts ORDER BY name").fetch(pool);
    decode::each_row(rows, decode::host).await
}

pub(super) async fn host_by_name(pool: &SqlitePool, name: &str) -> Result<HostRecord> {
    let row = sqlx::query("SELECT * FROM hosts WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(read_err("host"))?;
    decode::host(&row)
}

/// One statement for the whole batch (a thousand hosts a second in a
/// domain of 30 000 with 30 s heartbeats): on SQLite every statement is a
/// hand-over to the connection's thread and back, and the batch holds the
/// database's one writer meanwhile. Hosts are not row-locked here, so
/// their order does not matter.
///
/// The state is set apart, and only where it changes: a statement that
/// sets a column rewrites every index that names it (`hosts_roomiest`
/// names the state), even to the same value, and nearly every heartbeat
/// finds its host ready.
pub(super) async fn host_heartbeats(pool: &SqlitePool, beats: &[(HostId, i64)]) -> Result<u64> {
    let rows: Vec<(String, i64)> = beats
        .iter()
        .map(|(id, seen)| (id.to_string(), *seen))
        .collect();
    let json = serde_json::to_string(&rows).map_err(|source| StoreError::NotJson {
        what: "heartbeats",
        source,
    })?;
    let mut tx = pool.begin().await.map_err(db)?;
    let done = sqlx::query(
        "UPDATE hosts SET last_seen = MAX(hosts.last_seen, b.seen) FROM \
         (SELECT json_extract(value, '$[0]') AS id, MAX(json_extract(value, '$[1]')) AS seen \
          FROM json_each($1) GROUP BY 1) AS b \
         WHERE hosts.id = b.id",
    )
    .bind(&json)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query(
        "UPDATE hosts SET state = 'ready' WHERE state <> 'ready' \
         AND id IN (SELECT json_extract(value, '$[0]') FROM json_each($1))",
    )
    .bind(&json)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(done.rows_affected())
}

pub(super) async fn host_counts(pool: &SqlitePool) -> Result<Vec<HostCount>> {
    let rows = sqlx::query(
        "SELECT datacenter_id, state, COUNT(*) AS hosts FROM hosts \
         GROUP BY datacenter_id, state ORDER BY datacenter_id, state",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::host_count).collect()
}

pub(super) async fn mark_unreachable(pool: &SqlitePool, before: i64) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE hosts SET state = 'unreachable' WHERE state = 'ready' AND last_seen < $1",
    )
    .bind(before)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

pub(super) async fn hosts_in(
    pool: &SqlitePool,
    datacenter: DatacenterId,
) -> Result<Vec<HostRecord>> {
    let rows = sqlx::query("SELECT * FROM hosts WHERE datacenter_id = $1 ORDER BY name")
        .bind(datacenter.to_string())
        .fetch(pool);
    decode::each_row(rows, decode::host).await
}

pub(super) async fn roomiest_hosts(
    pool: &SqlitePool,
    datacenter: DatacenterId,
    limit: i64,
) -> Result<Vec<HostRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM hosts WHERE datacenter_id = $1 AND state = 'ready' \
         AND used_slots < vm_slots \
         ORDER BY cpus - used_vcpus DESC, ram_mib - used_ram_mib DESC, name LIMIT $2",
    )
    .bind(datacenter.to_string())
    .bind(limit.max(0))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::host).collect()
}

pub(super) async fn hosts_by_id(pool: &SqlitePool, ids: &[HostId]) -> Result<Vec<HostRecord>> {
    // One parameter whatever the number of ids: a JSON array of them
    // (hyphenated UUIDs need no escaping).
    let ids: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    let ids = format!("[{}]", ids.join(","));
    let rows = sqlx::query(
        "SELECT * FROM hosts WHERE id IN (SELECT value FROM json_each($1)) ORDER BY name",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::host).collect()
}
