//! Users and their credentials: tokens and SSH keys.

use sqlx::PgPool;

use crate::decode::{self, TOKEN_COLUMNS};
use crate::error::{db, read_err, ssh_key_quota, write_err};
use crate::records::*;
use crate::{Result, StoreError};

pub(super) async fn create_user(pool: &PgPool, u: &UserRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, name, password_hash, role, quota_vms, quota_vcpus, quota_ram_mib, \
         quota_public_addresses, quota_designs, quota_design_mib, quota_private_addresses, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(u.id)
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
    .execute(pool)
    .await
    .map_err(write_err("user"))?;
    Ok(())
}

pub(super) async fn user(pool: &PgPool, id: UserId) -> Result<UserRecord> {
    let row = sqlx::query("SELECT * FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(read_err("user"))?;
    decode::user(&row)
}

pub(super) async fn user_by_name(pool: &PgPool, name: &str) -> Result<UserRecord> {
    let row = sqlx::query("SELECT * FROM users WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(read_err("user"))?;
    decode::user(&row)
}

pub(super) async fn list_users(pool: &PgPool) -> Result<Vec<UserRecord>> {
    let rows = sqlx::query("SELECT * FROM users ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::user).collect()
}

pub(super) async fn count_admins(pool: &PgPool) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin'")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    decode::number(&row, "users", "n")
}

pub(super) async fn insert_token(pool: &PgPool, t: &TokenRecord) -> Result<()> {
    let (scope, host) = match &t.scope {
        TokenScope::User => ("user", None),
        TokenScope::Agent { host } => ("agent", Some(host.as_str())),
    };
    sqlx::query(
        "INSERT INTO tokens (id, hash, user_id, kind, scope, host, name, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(t.id)
    .bind(&t.hash)
    .bind(t.user_id)
    .bind(t.kind.as_str())
    .bind(scope)
    .bind(host)
    .bind(&t.name)
    .bind(t.created_at)
    .bind(t.expires_at)
    .execute(pool)
    .await
    .map_err(write_err("token"))?;
    Ok(())
}

/// The epoch every change to tokens and users advances (`token_cache`).
pub(super) async fn auth_epoch(pool: &PgPool) -> Result<i64> {
    let row = sqlx::query("SELECT epoch FROM auth_epoch WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(read_err("authentication epoch"))?;
    decode::number(&row, "auth_epoch", "epoch")
}

pub(super) async fn user_for_token(
    pool: &PgPool,
    hash: &str,
    now: i64,
) -> Result<(TokenRecord, UserRecord)> {
    let row = sqlx::query(&format!(
        "SELECT u.*, {TOKEN_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) \
           AND u.disabled_at IS NULL"
    ))
    .bind(hash)
    .bind(now)
    .fetch_one(pool)
    .await
    .map_err(read_err("token"))?;
    Ok((decode::token(&row)?, decode::user(&row)?))
}

pub(super) async fn delete_token(pool: &PgPool, hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM tokens WHERE hash = $1")
        .bind(hash)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub(super) async fn list_tokens(pool: &PgPool, user: UserId, now: i64) -> Result<Vec<TokenRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens t \
         WHERE t.user_id = $1 AND (t.expires_at IS NULL OR t.expires_at > $2) \
         ORDER BY t.created_at, t.id"
    ))
    .bind(user)
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::token).collect()
}

pub(super) async fn revoke_token(pool: &PgPool, id: TokenId, user: Option<UserId>) -> Result<()> {
    let done = match user {
        Some(u) => {
            sqlx::query("DELETE FROM tokens WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(u)
                .execute(pool)
                .await
        }
        None => {
            sqlx::query("DELETE FROM tokens WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
        }
    }
    .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "token" });
    }
    Ok(())
}

pub(super) async fn add_ssh_key(pool: &PgPool, key: &SshKeyRecord, max: i64) -> Result<()> {
    // The count and the write in one statement: concurrent adds of one
    // user can nearly never both take the last place (a race under READ
    // COMMITTED lets one more through, which bounds the count all the same).
    let done = sqlx::query(
        "INSERT INTO ssh_keys (id, user_id, name, public_key, fingerprint, created_at) \
         SELECT $1, $2, $3, $4, $5, $6 \
         WHERE (SELECT COUNT(*) FROM ssh_keys WHERE user_id = $2) < $7",
    )
    .bind(key.id)
    .bind(key.user_id)
    .bind(&key.name)
    .bind(&key.public_key)
    .bind(&key.fingerprint)
    .bind(key.created_at)
    .bind(max)
    .execute(pool)
    .await
    .map_err(write_err("SSH key"))?;
    if done.rows_affected() == 0 {
        return Err(ssh_key_quota(max));
    }
    Ok(())
}

pub(super) async fn ssh_keys(pool: &PgPool, user: UserId) -> Result<Vec<SshKeyRecord>> {
    let rows = sqlx::query(
        "SELECT id, user_id, name, public_key, fingerprint, created_at FROM ssh_keys \
         WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(decode::ssh_key).collect()
}

pub(super) async fn delete_ssh_key(pool: &PgPool, user: UserId, id: SshKeyId) -> Result<()> {
    let done = sqlx::query("DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user)
        .execute(pool)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "SSH key" });
    }
    Ok(())
}

pub(super) async fn revoke_tokens_of(
    pool: &PgPool,
    user: UserId,
    except_hash: Option<&str>,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND hash <> $2")
        .bind(user)
        .bind(except_hash.unwrap_or(""))
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

pub(super) async fn delete_expired_tokens(pool: &PgPool, now: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

pub(super) async fn set_password(pool: &PgPool, user: UserId, password_hash: &str) -> Result<()> {
    let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
        .bind(password_hash)
        .bind(user)
        .execute(pool)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound { what: "user" });
    }
    Ok(())
}

pub(super) async fn set_user_disabled(
    pool: &PgPool,
    user: UserId,
    disabled_at: Option<i64>,
) -> Result<UserRecord> {
    let mut tx = pool.begin().await.map_err(db)?;
    let row = sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2 RETURNING *")
        .bind(disabled_at)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound { what: "user" })?;
    if disabled_at.is_some() {
        // A disabled user keeps no way in.
        sqlx::query("DELETE FROM tokens WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    let record = decode::user(&row)?;
    tx.commit().await.map_err(db)?;
    Ok(record)
}

pub(super) async fn set_user_quota(
    pool: &PgPool,
    user: UserId,
    quota: &Quota,
) -> Result<UserRecord> {
    let row = sqlx::query(
        "UPDATE users SET quota_vms = $1, quota_vcpus = $2, quota_ram_mib = $3, \
         quota_public_addresses = $4, quota_designs = $5, quota_design_mib = $6, \
         quota_private_addresses = $7 WHERE id = $8 RETURNING *",
    )
    .bind(quota.vms)
    .bind(quota.vcpus)
    .bind(quota.ram_mib)
    .bind(quota.public_addresses)
    .bind(quota.designs)
    .bind(quota.design_mib)
    .bind(quota.private_addresses)
    .bind(user)
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .ok_or(StoreError::NotFound { what: "user" })?;
    decode::user(&row)
}
