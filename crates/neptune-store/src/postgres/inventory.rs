//! Datacenters and their hosts.

use sqlx::PgPool;

use crate::decode;
use crate::error::{db, read_err, write_err};
use crate::records::*;
use crate::Result;

pub(super) async fn create_datacenter(pool: &PgPool, dc: &DatacenterRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO datacenters (id, name, created_at, home_pools, public_gateway) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(dc.id)
    .bind(&dc.name)
    .bind(dc.created_at)
    .bind(dc.home_pools.join(","))
    .bind(dc.public_gateway.clone())
    .execute(pool)
    .await
    .map_err(write_err("datacenter"))?;
    Ok(())
}

pub(super) async fn list_datacenters(pool: &PgPool) -> Result<Vec<DatacenterRecord>> {
    let rows = sqlx::query("SELECT * FROM datacenters ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::datacenter).collect()
}

pub(super) async fn datacenter_by_name(pool: &PgPool, name: &str) -> Result<DatacenterRecord> {
    let row = sqlx::query("SELECT * FROM datacenters WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(read_err("datacenter"))?;
    decode::datacenter(&row)
}

pub(super) async fn upsert_host(pool: &PgPool, h: &HostRecord) -> Result<HostRecord> {
    upsert_one(pool, h).await
}

async fn upsert_one<'e>(
    ex: impl sqlx::Executor<'e, Database = sqlx::Postgres>,
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
    .bind(h.id)
    .bind(h.datacenter_id)
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

pub(super) async fn upsert_hosts(pool: &PgPool, hosts: &[HostRecord]) -> Result<Vec<HostRecord>> {
    let mut tx = pool.begin().await.map_err(db)?;
    // Rows are taken in id order, as every transaction that changes hosts
    // takes them: a known host by the id it has, a new one by its own.
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let known: std::collections::HashMap<String, HostId> =
        sqlx::query("SELECT id, name FROM hosts WHERE name = ANY($1)")
            .bind(&names)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                let id: uuid::Uuid = sqlx::Row::try_get(row, "id").map_err(db)?;
                let name: String = sqlx::Row::try_get(row, "name").map_err(db)?;
                Ok((name, HostId::from(id)))
            })
            .collect::<Result<_>>()?;
    // A name given twice is one row, created by its first registration:
    // both sort by that row's id, and keep their order (the sort is
    // stable), so the later one is written last, as on SQLite.
    let mut first: std::collections::HashMap<&str, HostId> = std::collections::HashMap::new();
    for h in hosts {
        first.entry(h.name.as_str()).or_insert(h.id);
    }
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    order.sort_by_key(|&i| {
        let name = hosts[i].name.as_str();
        known.get(name).copied().unwrap_or(first[name])
    });
    let mut stored: Vec<Option<HostRecord>> = vec![None; hosts.len()];
    for i in order {
        stored[i] = Some(upsert_one(&mut *tx, &hosts[i]).await?);
    }
    tx.commit().await.map_err(db)?;
    Ok(stored.into_iter().flatten().collect())
}

pub(super) async fn list_hosts(pool: &PgPool) -> Result<Vec<HostRecord>> {
    let rows = sqlx::query("SELECT * FROM hosts ORDER BY name").fetch(pool);
    decode::each_row(rows, decode::host).await
}

pub(super) async fn host_by_name(pool: &PgPool, name: &str) -> Result<HostRecord> {
    let row = sqlx::query("SELECT * FROM hosts WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(read_err("host"))?;
    decode::host(&row)
}

/// Three statements for the whole batch, not one per host (a thousand
/// hosts a second in a domain of 30 000 with 30 s heartbeats): the hosts
/// are locked first in id order, the order every transaction that writes
/// several hosts locks them in, so that no two wait on each other; the
/// state is set only where it changes.
pub(super) async fn host_heartbeats(pool: &PgPool, beats: &[(HostId, i64)]) -> Result<u64> {
    let (ids, seen): (Vec<HostId>, Vec<i64>) = beats.iter().copied().unzip();
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("SELECT id FROM hosts WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    let known = sqlx::query(
        "UPDATE hosts SET last_seen = GREATEST(hosts.last_seen, b.seen) FROM \
         (SELECT id, MAX(seen) AS seen FROM unnest($1::uuid[], $2::bigint[]) AS t (id, seen) \
          GROUP BY id) AS b \
         WHERE hosts.id = b.id",
    )
    .bind(&ids)
    .bind(&seen)
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    sqlx::query("UPDATE hosts SET state = 'ready' WHERE state <> 'ready' AND id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(known)
}

pub(super) async fn host_counts(pool: &PgPool) -> Result<Vec<HostCount>> {
    let rows = sqlx::query(
        "SELECT datacenter_id, state, COUNT(*) AS hosts FROM hosts \
         GROUP BY datacenter_id, state ORDER BY datacenter_id, state",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::host_count).collect()
}

pub(super) async fn mark_unreachable(pool: &PgPool, before: i64) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE hosts SET state = 'unreachable' WHERE state = 'ready' AND last_seen < $1",
    )
    .bind(before)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

pub(super) async fn hosts_in(pool: &PgPool, datacenter: DatacenterId) -> Result<Vec<HostRecord>> {
    let rows = sqlx::query("SELECT * FROM hosts WHERE datacenter_id = $1 ORDER BY name")
        .bind(datacenter)
        .fetch(pool);
    decode::each_row(rows, decode::host).await
}

pub(super) async fn roomiest_hosts(
    pool: &PgPool,
    datacenter: DatacenterId,
    limit: i64,
) -> Result<Vec<HostRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM hosts WHERE datacenter_id = $1 AND state = 'ready' \
         AND used_slots < vm_slots \
         ORDER BY cpus - used_vcpus DESC, ram_mib - used_ram_mib DESC, name LIMIT $2",
    )
    .bind(datacenter)
    .bind(limit.max(0))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::host).collect()
}

pub(super) async fn hosts_by_id(pool: &PgPool, ids: &[HostId]) -> Result<Vec<HostRecord>> {
    let rows = sqlx::query("SELECT * FROM hosts WHERE id = ANY($1) ORDER BY name")
        .bind(ids)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::host).collect()
}
