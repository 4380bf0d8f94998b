//! Durable jobs: their steps, progress and leases, and the VI transitions
//! that start and end them.

use neptune_lifecycle::ViState;
use sqlx::SqlitePool;

use super::vis::{transition_in, vi_conflict};
use super::Tx;
use crate::decode::{self, json_param, JOB_COLUMNS};
use crate::error::{db, read_err, write_err};
use crate::records::*;
use crate::{Result, StoreError};

/// Inserts `job`; with `vi_state`, only if its VI is in that state (false
/// when it is not: nothing inserted).
pub(super) async fn insert_job(
    tx: &mut Tx<'_>,
    job: &JobRecord,
    vi_state: Option<ViState>,
) -> Result<bool> {
    let values = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12";
    let sql = match vi_state {
        None => format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({values})"),
        Some(_) => format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) SELECT {values} \
             WHERE EXISTS (SELECT 1 FROM vis WHERE id = $2 AND state = $13)"
        ),
    };
    let mut query = sqlx::query(&sql)
        .bind(job.id.to_string())
        .bind(job.vi_id.to_string())
        .bind(&job.kind)
        .bind(job.state.as_str())
        .bind(json_param("job steps", &job.steps)?)
        .bind(job.cursor)
        .bind(job.total)
        .bind(job.error.clone())
        .bind(job.owner.clone())
        .bind(job.lease_until)
        .bind(job.created_at)
        .bind(job.updated_at);
    if let Some(state) = vi_state {
        query = query.bind(state.as_str());
    }
    let done = query.execute(&mut **tx).await.map_err(write_err("job"))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn start_job(
    pool: &SqlitePool,
    job: &JobRecord,
    from: ViState,
    change: &Transition,
) -> Result<ViRecord> {
    let mut tx = pool.begin().await.map_err(db)?;
    let Some(vi) = transition_in(&mut tx, job.vi_id, from, change).await? else {
        drop(tx);
        return Err(vi_conflict(pool, job.vi_id, from).await);
    };
    insert_job(&mut tx, job, None).await?;
    tx.commit().await.map_err(db)?;
    Ok(vi)
}

pub(super) async fn add_job(pool: &SqlitePool, job: &JobRecord, vi_state: ViState) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    if !insert_job(&mut tx, job, Some(vi_state)).await? {
        drop(tx);
        return Err(vi_conflict(pool, job.vi_id, vi_state).await);
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

pub(super) async fn job(pool: &SqlitePool, id: JobId) -> Result<JobRecord> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .map_err(read_err("job"))?;
    decode::job(&row)
}

pub(super) async fn jobs_of_vi(pool: &SqlitePool, vi: ViId) -> Result<Vec<JobRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE vi_id = $1 ORDER BY created_at, id"
    ))
    .bind(vi.to_string())
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::job).collect()
}

pub(super) async fn unfinished_jobs(pool: &SqlitePool) -> Result<Vec<JobRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('running', 'rolling_back') \
         ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::job).collect()
}

pub(super) async fn claim_job(
    pool: &SqlitePool,
    id: JobId,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE jobs SET owner = $1, lease_until = $2 \
         WHERE id = $3 AND (owner IS NULL OR owner = $1 OR lease_until < $4)",
    )
    .bind(owner)
    .bind(until)
    .bind(id.to_string())
    .bind(now)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn update_job(
    pool: &SqlitePool,
    id: JobId,
    expected: (JobState, i64),
    state: JobState,
    cursor: i64,
    error: Option<&str>,
    now: i64,
) -> Result<JobRecord> {
    let row = sqlx::query(&format!(
        "UPDATE jobs SET state = $1, cursor = $2, error = COALESCE($3, error), updated_at = $4 \
         WHERE id = $5 AND state = $6 AND cursor = $7 RETURNING {JOB_COLUMNS}"
    ))
    .bind(state.as_str())
    .bind(cursor)
    .bind(error)
    .bind(now)
    .bind(id.to_string())
    .bind(expected.0.as_str())
    .bind(expected.1)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    match row {
        Some(row) => decode::job(&row),
        None => Err(StoreError::Conflict {
            what: "job",
            expected: format!("{} at step {}", expected.0.as_str(), expected.1),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn finish_job(
    pool: &SqlitePool,
    id: JobId,
    expected: (JobState, i64),
    state: JobState,
    cursor: i64,
    error: Option<&str>,
    vi_from: ViState,
    change: &Transition,
) -> Result<ViRecord> {
    let mut tx = pool.begin().await.map_err(db)?;
    let row = sqlx::query(
        "UPDATE jobs SET state = $1, cursor = $6, error = COALESCE($2, error), updated_at = $3, \
         owner = NULL WHERE id = $4 AND state = $5 AND cursor = $7 RETURNING id, vi_id",
    )
    .bind(state.as_str())
    .bind(error)
    .bind(change.at)
    .bind(id.to_string())
    .bind(expected.0.as_str())
    .bind(cursor)
    .bind(expected.1)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        return Err(StoreError::Conflict {
            what: "job",
            expected: format!("{} at step {}", expected.0.as_str(), expected.1),
        });
    };
    let vi_id = decode::Stored::new(&row, "jobs", &["id"]).uuid("vi_id")?;
    let Some(vi) = transition_in(&mut tx, vi_id, vi_from, change).await? else {
        drop(tx);
        return Err(vi_conflict(pool, vi_id, vi_from).await);
    };
    tx.commit().await.map_err(db)?;
    Ok(vi)
}
