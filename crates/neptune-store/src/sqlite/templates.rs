//! Templates: VM images and their defaults, private or public.

use sqlx::SqlitePool;

use crate::decode::{self, json_param};
use crate::error::{db, read_err, write_err};
use crate::records::*;
use crate::{Result, StoreError};

pub(super) async fn create_template(pool: &SqlitePool, t: &TemplateRecord) -> Result<()> {
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
    .bind(json_param("template software", &t.software)?)
    .bind(t.created_at)
    .execute(pool)
    .await
    .map_err(write_err("template"))?;
    Ok(())
}

pub(super) async fn list_templates(pool: &SqlitePool) -> Result<Vec<TemplateRecord>> {
    let rows = sqlx::query("SELECT * FROM templates ORDER BY name")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter().map(decode::template).collect()
}

pub(super) async fn template_for(
    pool: &SqlitePool,
    owner: UserId,
    name: &str,
) -> Result<TemplateRecord> {
    // The owner's own template of that name first, then the public one.
    let row = sqlx::query(
        "SELECT * FROM templates WHERE name = $1 AND (owner_id = $2 OR visibility = 'public') \
         ORDER BY CASE WHEN owner_id = $2 THEN 0 ELSE 1 END LIMIT 1",
    )
    .bind(name)
    .bind(owner.to_string())
    .fetch_one(pool)
    .await
    .map_err(read_err("template"))?;
    decode::template(&row)
}

pub(super) async fn template(pool: &SqlitePool, id: TemplateId) -> Result<TemplateRecord> {
    let row = sqlx::query("SELECT * FROM templates WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .map_err(read_err("template"))?;
    decode::template(&row)
}

pub(super) async fn set_template_visibility(
    pool: &SqlitePool,
    id: TemplateId,
    visibility: Visibility,
) -> Result<TemplateRecord> {
    let row = sqlx::query("UPDATE templates SET visibility = $1 WHERE id = $2 RETURNING *")
        .bind(visibility.as_str())
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(write_err("public template of that name"))?;
    match row {
        Some(row) => decode::template(&row),
        None => Err(StoreError::NotFound { what: "template" }),
    }
}
