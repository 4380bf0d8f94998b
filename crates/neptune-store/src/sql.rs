//! The SQL adapters: one implementation of [`Store`] over sqlx's `Any`
//! driver, with the SQLite and PostgreSQL backends' differences (connection
//! setup, migrations, error codes) kept here.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use neptune_lifecycle::ViState;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row};
use uuid::Uuid;

use crate::records::*;
use crate::{Result, Store, StoreError};

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

/// Which database an [`SqlStore`] speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The SQLite or PostgreSQL adapter.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

/// The migrations of each backend, in order. Applied ones are never edited:
/// a change is a new file.
fn migrator(backend: Backend) -> Migrator {
    let files: [(i64, &'static str, &'static str); 11] = match backend {
        Backend::Sqlite => [
            (
                1,
                "initial",
                include_str!("../migrations/sqlite/0001_initial.sql"),
            ),
            (
                2,
                "placement and jobs",
                include_str!("../migrations/sqlite/0002_placement_jobs.sql"),
            ),
            (
                3,
                "addresses",
                include_str!("../migrations/sqlite/0003_addresses.sql"),
            ),
            (
                4,
                "VI revisions",
                include_str!("../migrations/sqlite/0004_vi_revisions.sql"),
            ),
            (
                5,
                "host uplinks",
                include_str!("../migrations/sqlite/0005_uplinks.sql"),
            ),
            (
                6,
                "design quota",
                include_str!("../migrations/sqlite/0006_design_quota.sql"),
            ),
            (
                7,
                "template owners",
                include_str!("../migrations/sqlite/0007_template_owners.sql"),
            ),
            (
                8,
                "token scopes",
                include_str!("../migrations/sqlite/0008_token_scopes.sql"),
            ),
            (
                9,
                "private address quota",
                include_str!("../migrations/sqlite/0009_private_address_quota.sql"),
            ),
            (
                10,
                "SSH keys",
                include_str!("../migrations/sqlite/0010_ssh_keys.sql"),
            ),
            (
                11,
                "public gateway",
                include_str!("../migrations/sqlite/0011_public_gateway.sql"),
            ),
        ],
        Backend::Postgres => [
            (
                1,
                "initial",
                include_str!("../migrations/postgres/0001_initial.sql"),
            ),
            (
                2,
                "placement and jobs",
                include_str!("../migrations/postgres/0002_placement_jobs.sql"),
            ),
            (
                3,
                "addresses",
                include_str!("../migrations/postgres/0003_addresses.sql"),
            ),
            (
                4,
                "VI revisions",
                include_str!("../migrations/postgres/0004_vi_revisions.sql"),
            ),
            (
                5,
                "host uplinks",
                include_str!("../migrations/postgres/0005_uplinks.sql"),
            ),
            (
                6,
                "design quota",
                include_str!("../migrations/postgres/0006_design_quota.sql"),
            ),
            (
                7,
                "template owners",
                include_str!("../migrations/postgres/0007_template_owners.sql"),
            ),
            (
                8,
                "token scopes",
                include_str!("../migrations/postgres/0008_token_scopes.sql"),
            ),
            (
                9,
                "private address quota",
                include_str!("../migrations/postgres/0009_private_address_quota.sql"),
            ),
            (
                10,
                "SSH keys",
                include_str!("../migrations/postgres/0010_ssh_keys.sql"),
            ),
            (
                11,
                "public gateway",
                include_str!("../migrations/postgres/0011_public_gateway.sql"),
            ),
        ],
    };
    let migrations = files
        .into_iter()
        .map(|(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

impl SqlStore {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// `sqlite://PATH` creates the file if needed; `sqlite::memory:` is a
    /// private in-memory database (one connection). `postgres://...` needs
    /// an existing database.
    pub async fn connect(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let mut opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        let url = match backend {
            Backend::Sqlite => {
                let memory = url.contains(":memory:");
                // SQLite has one writer; a few connections serve concurrent
                // readers and writers queue on the busy timeout.
                opts = opts.max_connections(if memory { 1 } else { 8 }).after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL;")
                            .await?;
                        Ok(())
                    })
                });
                if memory || url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            Backend::Postgres => {
                opts = opts.max_connections(16);
                url.to_owned()
            }
        };
        let pool = opts.connect(&url).await.map_err(StoreError::Database)?;
        if backend == Backend::Sqlite {
            // WAL lets readers proceed while a writer commits; it persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(StoreError::Database)?;
        }
        if backend == Backend::Sqlite {
            restrict_files(url.as_str())?;
        }
        migrator(backend)
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(SqlStore { pool, backend })
    }

    async fn vi_conflict(&self, id: Uuid, from: ViState) -> StoreError {
        match self.vi(id).await {
            Ok(current) => StoreError::Conflict {
                what: "VI",
                expected: format!("state {from}, found {}", current.state),
            },
            Err(e) => e,
        }
    }

    /// Serialises quota checks of one user's writes: PostgreSQL locks the
    /// user's row until the transaction ends. SQLite has one writer, and
    /// each check is one statement with its write.
    async fn lock_user(&self, tx: &mut Tx<'_>, user: Uuid) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(user.to_string())
                .fetch_optional(&mut **tx)
                .await
                .map_err(StoreError::Database)?;
        }
        Ok(())
    }

    /// Why a design of `owner` was refused: which part of the design quota
    /// it would exceed (`except`: the VI being edited, not counted).
    async fn design_quota_error(&self, owner: Uuid, except: Option<Uuid>) -> StoreError {
        let user = match self.user(owner).await {
            Ok(u) => u,
            Err(e) => return e,
        };
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, {} AS bytes FROM vis \
             WHERE owner_id = $1 AND state <> 'terminated' AND id <> $2",
            design_bytes("$1", Some("$2"))
        ))
        .bind(owner.to_string())
        .bind(except.unwrap_or_default().to_string())
        .fetch_one(&self.pool)
        .await;
        let (count, bytes): (i64, i64) = match row {
            Ok(row) => match (get(&row, "n"), get(&row, "bytes")) {
                (Ok(n), Ok(b)) => (n, b),
                (Err(e), _) | (_, Err(e)) => return e,
            },
            Err(e) => return StoreError::Database(e),
        };
        let what = if except.is_none() && count >= user.quota.designs {
            format!(
                "{} holds {count} VIs; the quota is {} (terminate one to make room)",
                user.name, user.quota.designs
            )
        } else {
            format!(
                "{}'s designs take {} MiB, and this one does not fit; the quota is {} MiB",
                user.name,
                (bytes + (1 << 20) - 1) >> 20,
                user.quota.design_mib
            )
        };
        StoreError::QuotaExceeded(what)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Maps a unique-constraint violation to [`StoreError::Duplicate`].
fn write_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate { what },
        _ => StoreError::Database(err),
    }
}

fn read_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match err {
        sqlx::Error::RowNotFound => StoreError::NotFound { what },
        other => StoreError::Database(other),
    }
}

fn uuid(row: &AnyRow, col: &str) -> Result<Uuid> {
    let s: String = row.try_get(col).map_err(StoreError::Database)?;
    Uuid::from_str(&s).map_err(|_| StoreError::Corrupt(format!("{col} {s:?} is not a UUID")))
}

fn opt_uuid(row: &AnyRow, col: &str) -> Result<Option<Uuid>> {
    let s: Option<String> = row.try_get(col).map_err(StoreError::Database)?;
    s.map(|s| {
        Uuid::from_str(&s).map_err(|_| StoreError::Corrupt(format!("{col} {s:?} is not a UUID")))
    })
    .transpose()
}

fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(StoreError::Database)
}

fn vi_state(s: &str) -> Result<ViState> {
    ViState::ALL
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown VI state {s:?}")))
}

fn user_row(row: &AnyRow) -> Result<UserRecord> {
    let role: String = get(row, "role")?;
    Ok(UserRecord {
        id: uuid(row, "id")?,
        name: get(row, "name")?,
        password_hash: get(row, "password_hash")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown role {role:?}")))?,
        quota: Quota {
            vms: get(row, "quota_vms")?,
            vcpus: get(row, "quota_vcpus")?,
            ram_mib: get(row, "quota_ram_mib")?,
            public_addresses: get(row, "quota_public_addresses")?,
            designs: get(row, "quota_designs")?,
            design_mib: get(row, "quota_design_mib")?,
            private_addresses: get(row, "quota_private_addresses")?,
        },
        created_at: get(row, "created_at")?,
        disabled_at: get(row, "disabled_at")?,
    })
}

fn token_row(row: &AnyRow) -> Result<TokenRecord> {
    let kind: String = get(row, "kind")?;
    let scope: String = get(row, "scope")?;
    let host: Option<String> = get(row, "host")?;
    Ok(TokenRecord {
        id: uuid(row, "token_id")?,
        hash: get(row, "hash")?,
        user_id: uuid(row, "user_id")?,
        kind: if kind == "api" {
            TokenKind::Api
        } else {
            TokenKind::Session
        },
        scope: match (scope.as_str(), host) {
            ("user", _) => TokenScope::User,
            ("agent", Some(host)) => TokenScope::Agent { host },
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "token scope {scope:?} without its host"
                )))
            }
        },
        name: get(row, "token_name")?,
        created_at: get(row, "token_created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

fn datacenter_row(row: &AnyRow) -> Result<DatacenterRecord> {
    Ok(DatacenterRecord {
        id: uuid(row, "id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
        home_pools: {
            let pools: String = get(row, "home_pools")?;
            pools
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        },
        public_gateway: get(row, "public_gateway")?,
    })
}

fn host_row(row: &AnyRow) -> Result<HostRecord> {
    let state: String = get(row, "state")?;
    Ok(HostRecord {
        id: uuid(row, "id")?,
        datacenter_id: uuid(row, "datacenter_id")?,
        name: get(row, "name")?,
        agent_url: get(row, "agent_url")?,
        cpus: get(row, "cpus")?,
        ram_mib: get(row, "ram_mib")?,
        disk_mib: get(row, "disk_mib")?,
        vm_slots: get(row, "vm_slots")?,
        uplink_mbps: get(row, "uplink_mbps")?,
        state: if state == "ready" {
            HostState::Ready
        } else {
            HostState::Unreachable
        },
        last_seen: get(row, "last_seen")?,
        used: HostUsage {
            vcpus: get(row, "used_vcpus")?,
            ram_mib: get(row, "used_ram_mib")?,
            disk_mib: get(row, "used_disk_mib")?,
            slots: get(row, "used_slots")?,
            uplink_mbps: get(row, "used_uplink_mbps")?,
        },
    })
}

fn template_row(row: &AnyRow) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        id: uuid(row, "id")?,
        name: get(row, "name")?,
        owner_id: opt_uuid(row, "owner_id")?,
        visibility: {
            let v: String = get(row, "visibility")?;
            Visibility::parse(&v)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown template visibility {v:?}")))?
        },
        image_path: get(row, "image_path")?,
        format: get(row, "format")?,
        size_mib: get(row, "size_mib")?,
        os_name: get(row, "os_name")?,
        vcpus: get(row, "vcpus")?,
        ram_mib: get(row, "ram_mib")?,
        disk_mib: get(row, "disk_mib")?,
        software: get(row, "software")?,
        created_at: get(row, "created_at")?,
    })
}

fn vi_row(row: &AnyRow) -> Result<ViRecord> {
    let state: String = get(row, "state")?;
    Ok(ViRecord {
        id: uuid(row, "id")?,
        owner_id: uuid(row, "owner_id")?,
        name: get(row, "name")?,
        state: vi_state(&state)?,
        design_xml: get(row, "design_xml")?,
        home_datacenter_id: opt_uuid(row, "home_datacenter_id")?,
        reject_reason: get(row, "reject_reason")?,
        version: get(row, "version")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        address_plan: get(row, "address_plan")?,
    })
}

fn vm_row(row: &AnyRow) -> Result<VmRecord> {
    Ok(VmRecord {
        vi_id: uuid(row, "vi_id")?,
        node_id: get(row, "node_id")?,
        host_id: uuid(row, "host_id")?,
        vcpus: get(row, "vcpus")?,
        ram_mib: get(row, "ram_mib")?,
        disk_mib: get(row, "disk_mib")?,
        uplink_mbps: get(row, "uplink_mbps")?,
    })
}

fn job_row(row: &AnyRow) -> Result<JobRecord> {
    let state: String = get(row, "state")?;
    Ok(JobRecord {
        id: uuid(row, "id")?,
        vi_id: uuid(row, "vi_id")?,
        kind: get(row, "kind")?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job state {state:?}")))?,
        steps: get(row, "steps")?,
        cursor: get(row, "cursor")?,
        total: get(row, "total")?,
        error: get(row, "error")?,
        owner: get(row, "owner")?,
        lease_until: get(row, "lease_until")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

const JOB_COLUMNS: &str =
    "id, vi_id, kind, state, steps, cursor, total, error, owner, lease_until, created_at, updated_at";

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Inserts `job`; with `vi_state`, only if its VI is in that state (false
/// when it is not: nothing inserted).
async fn insert_job(tx: &mut Tx<'_>, job: &JobRecord, vi_state: Option<ViState>) -> Result<bool> {
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
        .bind(&job.steps)
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

/// The VI compare-and-set and its event, inside a transaction.
async fn transition_in(
    tx: &mut Tx<'_>,
    id: Uuid,
    from: ViState,
    change: &Transition,
) -> Result<Option<ViRecord>> {
    let row = sqlx::query(&format!(
        "UPDATE vis SET state = $1, reject_reason = $2, \
         home_datacenter_id = COALESCE($3, home_datacenter_id), version = version + 1, updated_at = $4, \
         address_plan = CASE WHEN $1 IN ('defined', 'requested') THEN NULL ELSE address_plan END \
         WHERE id = $5 AND state = $6 RETURNING {VI_COLUMNS}"
    ))
    .bind(change.to.as_str())
    .bind(change.reject_reason.clone())
    .bind(change.home_datacenter_id.map(|u| u.to_string()))
    .bind(change.at)
    .bind(id.to_string())
    .bind(from.as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(StoreError::Database)?;
    let Some(row) = row else { return Ok(None) };
    sqlx::query(
        "INSERT INTO vi_events (vi_id, at, from_state, to_state, actor, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.to_string())
    .bind(change.at)
    .bind(from.as_str())
    .bind(change.to.as_str())
    .bind(change.actor.to_string())
    .bind(change.reject_reason.clone())
    .execute(&mut **tx)
    .await
    .map_err(StoreError::Database)?;
    vi_row(&row).map(Some)
}

/// Bytes of design text that the owner bound at `owner` holds in VIs not
/// terminated, besides the VI bound at `except` if any.
fn design_bytes(owner: &str, except: Option<&str>) -> String {
    let except = except.map_or(String::new(), |e| format!(" AND id <> {e}"));
    format!(
        "(SELECT CAST(COALESCE(SUM(LENGTH(design_xml)), 0) AS BIGINT) FROM vis \
         WHERE owner_id = {owner} AND state <> 'terminated'{except})"
    )
}

/// A token's columns, named apart from a user's that a join also reads.
const TOKEN_COLUMNS: &str = "t.id AS token_id, t.hash, t.user_id, t.kind, t.scope, t.host, \
     t.name AS token_name, t.created_at AS token_created_at, t.expires_at";

const VI_COLUMNS: &str =
    "id, owner_id, name, state, design_xml, home_datacenter_id, reject_reason, \
     version, created_at, updated_at, address_plan";

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn create_user(&self, u: &UserRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, name, password_hash, role, quota_vms, quota_vcpus, quota_ram_mib, \
             quota_public_addresses, quota_designs, quota_design_mib, quota_private_addresses, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(u.id.to_string())
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.role.as_str())
        .bind(u.quota.vms)
        .bind(u.quota.vcpus)
        .bind(u.quota.ram_mib)
        .bind(u.quota.public_addresses)
        .bind(u.quota.designs)
        .bind(u.quota.design_mib)
        .bind(u.quota.private_addresses)
        .bind(u.created_at)
        .execute(&self.pool)
        .await
        .map_err(write_err("user"))?;
        Ok(())
    }

    async fn user(&self, id: Uuid) -> Result<UserRecord> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(read_err("user"))?;
        user_row(&row)
    }

    async fn user_by_name(&self, name: &str) -> Result<UserRecord> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(read_err("user"))?;
        user_row(&row)
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        rows.iter().map(user_row).collect()
    }

    async fn count_admins(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin'")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        get(&row, "n")
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        let (scope, host) = match &t.scope {
            TokenScope::User => ("user", None),
            TokenScope::Agent { host } => ("agent", Some(host.as_str())),
        };
        sqlx::query(
            "INSERT INTO tokens (id, hash, user_id, kind, scope, host, name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(t.id.to_string())
        .bind(&t.hash)
        .bind(t.user_id.to_string())
        .bind(t.kind.as_str())
        .bind(scope)
        .bind(host)
        .bind(&t.name)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await
        .map_err(write_err("token"))?;
        Ok(())
    }

    async fn user_for_token(&self, hash: &str, now: i64) -> Result<(TokenRecord, UserRecord)> {
        let row = sqlx::query(&format!(
            "SELECT u.*, {TOKEN_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) \
               AND u.disabled_at IS NULL"
        ))
        .bind(hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(read_err("token"))?;
        Ok((token_row(&row)?, user_row(&row)?))
    }

    async fn delete_token(&self, hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM tokens WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        Ok(())
    }

    async fn list_tokens(&self, user: Uuid, now: i64) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t \
             WHERE t.user_id = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) \
             ORDER BY t.created_at, t.id"
        ))
        .bind(user.to_string())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, id: Uuid, user: Option<Uuid>) -> Result<()> {
        let done = match user {
            Some(u) => {
                sqlx::query("DELETE FROM tokens WHERE id = $1 AND user_id = $2")
                    .bind(id.to_string())
                    .bind(u.to_string())
                    .execute(&self.pool)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM tokens WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
            }
        }
        .map_err(StoreError::Database)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "token" });
        }
        Ok(())
    }

    async fn add_ssh_key(&self, key: &SshKeyRecord, max: i64) -> Result<()> {
        // The count and the write in one statement: concurrent adds of one
        // user cannot both take the last place (PostgreSQL: nearly; a race
        // lets one more through, which bounds the count all the same).
        let done = sqlx::query(
            "INSERT INTO ssh_keys (id, user_id, name, public_key, fingerprint, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE (SELECT COUNT(*) FROM ssh_keys WHERE user_id = $2) < $7",
        )
        .bind(key.id.to_string())
        .bind(key.user_id.to_string())
        .bind(&key.name)
        .bind(&key.public_key)
        .bind(&key.fingerprint)
        .bind(key.created_at)
        .bind(max)
        .execute(&self.pool)
        .await
        .map_err(write_err("SSH key"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::QuotaExceeded(format!(
                "a user keeps at most {max} SSH keys"
            )));
        }
        Ok(())
    }

    async fn ssh_keys(&self, user: Uuid) -> Result<Vec<SshKeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, user_id, name, public_key, fingerprint, created_at FROM ssh_keys \
             WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        rows.iter()
            .map(|r| {
                Ok(SshKeyRecord {
                    id: uuid(r, "id")?,
                    user_id: uuid(r, "user_id")?,
                    name: get(r, "name")?,
                    public_key: get(r, "public_key")?,
                    fingerprint: get(r, "fingerprint")?,
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn delete_ssh_key(&self, user: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2")
            .bind(id.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "SSH key" });
        }
        Ok(())
    }

    async fn revoke_tokens_of(&self, user: Uuid, except_hash: Option<&str>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND hash <> $2")
            .bind(user.to_string())
            .bind(except_hash.unwrap_or(""))
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_tokens(&self, now: i64) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(StoreError::Database)?;
        Ok(done.rows_affected())
    }

    async fn set_password(&self, user: Uuid, password_hash: &str) -> Result<()> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user.to_string())
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "user" });
        }
        Ok(())
    }

    async fn set_user_disabled(&self, user: Uuid, disabled_at: Option<i64>) -> Result<UserRecord> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        let row = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2 RETURNING *")
            .bind(disabled_at)
            .bind(user.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::Database)?
            .ok_or(StoreError::NotFound { what: "user" })?;
        if disabled_at.is_some() {
            // A disabled user keeps no way in.
            sqlx::query("DELETE FROM tokens WHERE user_id = $1")
                .bind(user.to_string())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
        }
        let record = user_row(&row)?;
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(record)
    }

    async fn create_datacenter(&self, dc: &DatacenterRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO datacenters (id, name, created_at, home_pools, public_gateway) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(dc.id.to_string())
        .bind(&dc.name)
        .bind(dc.created_at)
        .bind(dc.home_pools.join(","))
        .bind(dc.public_gateway.clone())
        .execute(&self.pool)
        .await
        .map_err(write_err("datacenter"))?;
        Ok(())
    }

    async fn list_datacenters(&self) -> Result<Vec<DatacenterRecord>> {
        let rows = sqlx::query("SELECT * FROM datacenters ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        rows.iter().map(datacenter_row).collect()
    }

    async fn datacenter_by_name(&self, name: &str) -> Result<DatacenterRecord> {
        let row = sqlx::query("SELECT * FROM datacenters WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(read_err("datacenter"))?;
        datacenter_row(&row)
    }

    async fn upsert_host(&self, h: &HostRecord) -> Result<HostRecord> {
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
        .fetch_one(&self.pool)
        .await
        .map_err(write_err("host"))?;
        host_row(&row)
    }

    async fn list_hosts(&self) -> Result<Vec<HostRecord>> {
        let rows = sqlx::query("SELECT * FROM hosts ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        rows.iter().map(host_row).collect()
    }

    async fn host_heartbeat(&self, id: Uuid, now: i64) -> Result<()> {
        let done = sqlx::query("UPDATE hosts SET last_seen = $1, state = 'ready' WHERE id = $2")
            .bind(now)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "host" });
        }
        Ok(())
    }

    async fn mark_unreachable(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE hosts SET state = 'unreachable' WHERE state = 'ready' AND last_seen < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        Ok(done.rows_affected())
    }

    async fn create_template(&self, t: &TemplateRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO templates (id, name, owner_id, visibility, image_path, format, size_mib, os_name, \
             vcpus, ram_mib, disk_mib, software, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(t.id.to_string())
        .bind(&t.name)
        .bind(t.owner_id.map(|u| u.to_string()))
        .bind(t.visibility.as_str())
        .bind(&t.image_path)
        .bind(&t.format)
        .bind(t.size_mib)
        .bind(&t.os_name)
        .bind(t.vcpus)
        .bind(t.ram_mib)
        .bind(t.disk_mib)
        .bind(&t.software)
        .bind(t.created_at)
        .execute(&self.pool)
        .await
        .map_err(write_err("template"))?;
        Ok(())
    }

    async fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query("SELECT * FROM templates ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        rows.iter().map(template_row).collect()
    }

    async fn template_for(&self, owner: Uuid, name: &str) -> Result<TemplateRecord> {
        // The owner's own template of that name first, then the public one.
        let row = sqlx::query(
            "SELECT * FROM templates WHERE name = $1 AND (owner_id = $2 OR visibility = 'public') \
             ORDER BY CASE WHEN owner_id = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(name)
        .bind(owner.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(read_err("template"))?;
        template_row(&row)
    }

    async fn template(&self, id: Uuid) -> Result<TemplateRecord> {
        let row = sqlx::query("SELECT * FROM templates WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(read_err("template"))?;
        template_row(&row)
    }

    async fn set_template_visibility(
        &self,
        id: Uuid,
        visibility: Visibility,
    ) -> Result<TemplateRecord> {
        let row = sqlx::query("UPDATE templates SET visibility = $1 WHERE id = $2 RETURNING *")
            .bind(visibility.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(write_err("public template of that name"))?;
        match row {
            Some(row) => template_row(&row),
            None => Err(StoreError::NotFound { what: "template" }),
        }
    }

    async fn create_vi(&self, vi: &ViRecord) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        self.lock_user(&mut tx, vi.owner_id).await?;
        // One statement: the quota is read and the row written together.
        let inserted = sqlx::query(&format!(
            "INSERT INTO vis ({VI_COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM users u \
             WHERE u.id = $2 \
               AND (SELECT COUNT(*) FROM vis WHERE owner_id = $2 AND state <> 'terminated') \
                   < u.quota_designs \
               AND {} + LENGTH($5) <= u.quota_design_mib * 1048576",
            design_bytes("$2", None)
        ))
        .bind(vi.id.to_string())
        .bind(vi.owner_id.to_string())
        .bind(&vi.name)
        .bind(vi.state.as_str())
        .bind(&vi.design_xml)
        .bind(vi.home_datacenter_id.map(|u| u.to_string()))
        .bind(vi.reject_reason.clone())
        .bind(vi.version)
        .bind(vi.created_at)
        .bind(vi.updated_at)
        .bind(vi.address_plan.clone())
        .execute(&mut *tx)
        .await
        .map_err(write_err("VI"))?;
        if inserted.rows_affected() == 0 {
            drop(tx);
            return Err(self.design_quota_error(vi.owner_id, None).await);
        }
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(())
    }

    async fn vi(&self, id: Uuid) -> Result<ViRecord> {
        let row = sqlx::query(&format!("SELECT {VI_COLUMNS} FROM vis WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(read_err("VI"))?;
        vi_row(&row)
    }

    async fn vi_stamp(&self, id: Uuid) -> Result<ViStamp> {
        // SQLite would take the primary key and then read the whole row,
        // design included, to reach the revision; the stamp index has both
        // columns. PostgreSQL keeps designs out of line and plans well alone.
        let query = match self.backend {
            Backend::Sqlite => {
                "SELECT owner_id, revision FROM vis INDEXED BY vis_stamp WHERE id = $1"
            }
            Backend::Postgres => "SELECT owner_id, revision FROM vis WHERE id = $1",
        };
        let row = sqlx::query(query)
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(read_err("VI"))?;
        Ok(ViStamp {
            owner_id: uuid(&row, "owner_id")?,
            revision: get(&row, "revision")?,
        })
    }

    async fn vi_list_stamp(&self, owner: Option<Uuid>) -> Result<ViListStamp> {
        const STAMP: &str =
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(revision), 0) AS BIGINT) AS total FROM vis";
        let row = match owner {
            Some(o) => {
                sqlx::query(&format!("{STAMP} WHERE owner_id = $1"))
                    .bind(o.to_string())
                    .fetch_one(&self.pool)
                    .await
            }
            None => sqlx::query(STAMP).fetch_one(&self.pool).await,
        }
        .map_err(StoreError::Database)?;
        Ok(ViListStamp {
            count: get(&row, "n")?,
            revisions: get(&row, "total")?,
        })
    }

    async fn list_vis(&self, owner: Option<Uuid>) -> Result<Vec<ViRecord>> {
        let rows = match owner {
            Some(o) => {
                sqlx::query(&format!(
                    "SELECT {VI_COLUMNS} FROM vis WHERE owner_id = $1 ORDER BY created_at, id"
                ))
                .bind(o.to_string())
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {VI_COLUMNS} FROM vis ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(StoreError::Database)?;
        rows.iter().map(vi_row).collect()
    }

    async fn update_vi_design(
        &self,
        id: Uuid,
        version: i64,
        name: &str,
        design_xml: &str,
        now: i64,
    ) -> Result<ViRecord> {
        let current = self.vi(id).await?;
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        self.lock_user(&mut tx, current.owner_id).await?;
        let row = sqlx::query(&format!(
            "UPDATE vis SET name = $1, design_xml = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND version = $5 AND state = 'defined' \
               AND {} + LENGTH($2) \
                   <= (SELECT quota_design_mib * 1048576 FROM users WHERE id = $6) \
             RETURNING {VI_COLUMNS}",
            design_bytes("$6", Some("$4"))
        ))
        .bind(name)
        .bind(design_xml)
        .bind(now)
        .bind(id.to_string())
        .bind(version)
        .bind(current.owner_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
        if let Some(row) = row {
            let vi = vi_row(&row)?;
            tx.commit().await.map_err(StoreError::Database)?;
            return Ok(vi);
        }
        drop(tx);
        let current = self.vi(id).await?;
        if current.version == version && current.state == ViState::Defined {
            return Err(self.design_quota_error(current.owner_id, Some(id)).await);
        }
        Err(StoreError::Conflict {
            what: "VI",
            expected: format!(
                "version {version} in state defined, found version {} in state {}",
                current.version, current.state
            ),
        })
    }

    async fn transition_vi(
        &self,
        id: Uuid,
        from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        match transition_in(&mut tx, id, from, change).await? {
            Some(vi) => {
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(vi)
            }
            None => {
                drop(tx);
                Err(self.vi_conflict(id, from).await)
            }
        }
    }

    async fn vi_events(&self, id: Uuid) -> Result<Vec<ViEventRecord>> {
        let rows = sqlx::query("SELECT * FROM vi_events WHERE vi_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        rows.iter()
            .map(|row| {
                let from: String = get(row, "from_state")?;
                let to: String = get(row, "to_state")?;
                Ok(ViEventRecord {
                    vi_id: uuid(row, "vi_id")?,
                    at: get(row, "at")?,
                    from_state: vi_state(&from)?,
                    to_state: vi_state(&to)?,
                    actor: uuid(row, "actor")?,
                    reason: get(row, "reason")?,
                })
            })
            .collect()
    }

    async fn transition_with_placement(
        &self,
        id: Uuid,
        from: ViState,
        change: &Transition,
        reservation: &Reservation,
    ) -> Result<ViRecord> {
        let vms = &reservation.vms;
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        let Some(vi) = transition_in(&mut tx, id, from, change).await? else {
            drop(tx);
            return Err(self.vi_conflict(id, from).await);
        };
        for row in &reservation.addresses {
            let inserted = match &row.owner {
                Some(owner) => sqlx::query(
                    "INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count) \
                     VALUES ($1, $2, 'owned', $3, $4, 1)",
                )
                .bind(&row.pool)
                .bind(&row.prefix)
                .bind(id.to_string())
                .bind(owner)
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
                Ok(_) => {
                    return Err(StoreError::AddressTaken {
                        prefix: row.prefix.clone(),
                    })
                }
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    return Err(StoreError::AddressTaken {
                        prefix: row.prefix.clone(),
                    })
                }
                Err(e) => return Err(StoreError::Database(e)),
            }
        }
        if let Some(plan) = &reservation.address_plan {
            sqlx::query("UPDATE vis SET address_plan = $1 WHERE id = $2")
                .bind(plan)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
        }
        // Hosts are locked in id order here and in release_vms, so an
        // accept and a release sharing hosts cannot deadlock.
        let mut ordered: Vec<&VmRecord> = vms.iter().collect();
        ordered.sort_by_key(|vm| vm.host_id);
        for vm in ordered {
            // Conditional on room: the database decides, so concurrent
            // commits cannot overfill a host.
            let done = sqlx::query(
                "UPDATE hosts SET used_vcpus = used_vcpus + $1, used_ram_mib = used_ram_mib + $2, \
                 used_disk_mib = used_disk_mib + $3, used_slots = used_slots + 1, \
                 used_uplink_mbps = used_uplink_mbps + $5 \
                 WHERE id = $4 AND state = 'ready' AND used_vcpus + $1 <= cpus \
                 AND used_ram_mib + $2 <= ram_mib AND used_disk_mib + $3 <= disk_mib \
                 AND used_slots + 1 <= vm_slots \
                 AND (uplink_mbps = 0 OR used_uplink_mbps + $5 <= uplink_mbps)",
            )
            .bind(vm.vcpus)
            .bind(vm.ram_mib)
            .bind(vm.disk_mib)
            .bind(vm.host_id.to_string())
            .bind(vm.uplink_mbps)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NoRoom {
                    host: vm.host_id,
                    node: vm.node_id.clone(),
                });
            }
            sqlx::query(
                "INSERT INTO vms (vi_id, node_id, host_id, vcpus, ram_mib, disk_mib, uplink_mbps) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(vm.vi_id.to_string())
            .bind(&vm.node_id)
            .bind(vm.host_id.to_string())
            .bind(vm.vcpus)
            .bind(vm.ram_mib)
            .bind(vm.disk_mib)
            .bind(vm.uplink_mbps)
            .execute(&mut *tx)
            .await
            .map_err(write_err("VM placement"))?;
        }
        if let Some(job) = &reservation.job {
            insert_job(&mut tx, job, None).await?;
        }
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(ViRecord {
            address_plan: reservation.address_plan.clone().or(vi.address_plan),
            ..vi
        })
    }

    async fn owned_addresses(&self) -> Result<Vec<OwnedAddress>> {
        let rows =
            sqlx::query("SELECT pool, prefix, vi_id, owner FROM addresses WHERE kind = 'owned'")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)?;
        rows.iter()
            .map(|r| {
                Ok(OwnedAddress {
                    pool: get(r, "pool")?,
                    prefix: get(r, "prefix")?,
                    vi_id: opt_uuid(r, "vi_id")?,
                    owner: get::<Option<String>>(r, "owner")?.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn release_addresses(&self, vi: Uuid, covers: &[(String, String)]) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        let deleted = sqlx::query("DELETE FROM addresses WHERE vi_id = $1 AND kind = 'owned'")
            .bind(vi.to_string())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?
            .rows_affected();
        // Only the call that removed the owned rows releases their covers:
        // a repeated release changes nothing.
        if deleted > 0 {
            for (pool, prefix) in covers {
                sqlx::query(
                    "UPDATE addresses SET count = count - 1 WHERE pool = $1 AND prefix = $2 AND kind = 'covers'",
                )
                .bind(pool)
                .bind(prefix)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
            }
            sqlx::query("DELETE FROM addresses WHERE kind = 'covers' AND count <= 0")
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
        }
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(deleted)
    }

    async fn vms(&self, vi: Uuid) -> Result<Vec<VmRecord>> {
        let rows = sqlx::query("SELECT * FROM vms WHERE vi_id = $1 ORDER BY node_id")
            .bind(vi.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        rows.iter().map(vm_row).collect()
    }

    async fn release_vms(&self, vi: Uuid) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        // Delete first: the rows deleted are exactly the ones this call releases.
        let rows = sqlx::query("DELETE FROM vms WHERE vi_id = $1 RETURNING *")
            .bind(vi.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
        let mut released = rows.iter().map(vm_row).collect::<Result<Vec<_>>>()?;
        // Host rows are locked in id order, as in transition_with_placement.
        released.sort_by_key(|vm| vm.host_id);
        for vm in &released {
            sqlx::query(
                "UPDATE hosts SET used_vcpus = used_vcpus - $1, used_ram_mib = used_ram_mib - $2, \
                 used_disk_mib = used_disk_mib - $3, used_slots = used_slots - 1, \
                 used_uplink_mbps = used_uplink_mbps - $5 WHERE id = $4",
            )
            .bind(vm.vcpus)
            .bind(vm.ram_mib)
            .bind(vm.disk_mib)
            .bind(vm.host_id.to_string())
            .bind(vm.uplink_mbps)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
        }
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(rows.len() as u64)
    }

    async fn start_job(
        &self,
        job: &JobRecord,
        from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        let Some(vi) = transition_in(&mut tx, job.vi_id, from, change).await? else {
            drop(tx);
            return Err(self.vi_conflict(job.vi_id, from).await);
        };
        insert_job(&mut tx, job, None).await?;
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(vi)
    }

    async fn add_job(&self, job: &JobRecord, vi_state: ViState) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        if !insert_job(&mut tx, job, Some(vi_state)).await? {
            drop(tx);
            return Err(self.vi_conflict(job.vi_id, vi_state).await);
        }
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(())
    }

    async fn job(&self, id: Uuid) -> Result<JobRecord> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(read_err("job"))?;
        job_row(&row)
    }

    async fn jobs_of_vi(&self, vi: Uuid) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE vi_id = $1 ORDER BY created_at, id"
        ))
        .bind(vi.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        rows.iter().map(job_row).collect()
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('running', 'rolling_back') \
             ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        rows.iter().map(job_row).collect()
    }

    async fn claim_job(&self, id: Uuid, owner: &str, now: i64, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET owner = $1, lease_until = $2 \
             WHERE id = $3 AND (owner IS NULL OR owner = $1 OR lease_until < $4)",
        )
        .bind(owner)
        .bind(until)
        .bind(id.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_job(
        &self,
        id: Uuid,
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
        .bind(error.map(str::to_owned))
        .bind(now)
        .bind(id.to_string())
        .bind(expected.0.as_str())
        .bind(expected.1)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        match row {
            Some(row) => job_row(&row),
            None => Err(StoreError::Conflict {
                what: "job",
                expected: format!("{} at step {}", expected.0.as_str(), expected.1),
            }),
        }
    }

    async fn finish_job(
        &self,
        id: Uuid,
        expected: JobState,
        state: JobState,
        error: Option<&str>,
        vi_from: ViState,
        change: &Transition,
    ) -> Result<ViRecord> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        let row = sqlx::query(
            "UPDATE jobs SET state = $1, error = COALESCE($2, error), updated_at = $3, owner = NULL \
             WHERE id = $4 AND state = $5 RETURNING vi_id",
        )
        .bind(state.as_str())
        .bind(error.map(str::to_owned))
        .bind(change.at)
        .bind(id.to_string())
        .bind(expected.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
        let Some(row) = row else {
            return Err(StoreError::Conflict {
                what: "job",
                expected: expected.as_str().to_owned(),
            });
        };
        let vi_id = uuid(&row, "vi_id")?;
        let Some(vi) = transition_in(&mut tx, vi_id, vi_from, change).await? else {
            drop(tx);
            return Err(self.vi_conflict(vi_id, vi_from).await);
        };
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(vi)
    }
}
