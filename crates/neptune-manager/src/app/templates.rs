//! Templates of the image repository as VIs use them: which template a
//! node is made from (the default-template rule), what software it
//! carries, registering an image as a template, and saving the VM of a
//! running VI as a new one.

use neptune_types::UserId;
use neptune_types::{TemplateId, ViId};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::AsyncWriteExt as _;

use neptune_api as api;
use neptune_lifecycle::ViState;
use neptune_store::{JobRecord, StoreError, TemplateRecord, Visibility};
use neptune_topology::VirtualNode;
use uuid::Uuid;

use super::access::visible;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::images::NewTemplate;
use crate::jobs::{self, JobKind, Step};
use crate::{now_ms, AppState};

/// The name of the template `node` is made from: the one its design
/// names, or the Manager's default (the catalogue's designs name none).
pub fn name_of<'a>(state: &'a AppState, node: &'a VirtualNode) -> &'a str {
    if node.software.template.is_empty() {
        state.config.default_template.as_str()
    } else {
        node.software.template.as_str()
    }
}

/// The template `node` of a VI of `owner` is made from: the owner's own of
/// that name, or else a public one.
pub async fn of_node(
    state: &AppState,
    owner: UserId,
    node: &VirtualNode,
) -> ApiResult<TemplateRecord> {
    let name = name_of(state, node);
    match state.store.template_for(owner, name).await {
        Ok(t) => Ok(t),
        Err(StoreError::NotFound { .. }) => Err(ApiError::Conflict(format!(
            "node {} uses template {name:?}, which is neither the VI owner's nor public",
            node.id
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The software a template's image carries, as registered.
pub fn software_of(template: &TemplateRecord) -> ApiResult<Vec<api::Software>> {
    Ok(template.decode_software()?)
}

/// Refuses a node whose `<software>` entries its template does not carry:
/// guests install nothing at boot (they may have no way out), so what a
/// node needs must be in its image. A template registered without its
/// software list (an image of unknown content) is not checked.
pub fn require_software(node: &VirtualNode, template: &TemplateRecord) -> ApiResult<()> {
    let provided = software_of(template)?;
    if provided.is_empty() {
        return Ok(());
    }
    for wanted in &node.software.software {
        if !provided.iter().any(|p| p.name == wanted.name) {
            return Err(ApiError::Conflict(format!(
                "node {} asks for software {:?}, which template {:?} does not carry (its image has {} packages; a node's software must be in its template)",
                node.id,
                wanted.name,
                template.name,
                provided.len()
            )));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> ApiResult<()> {
    neptune_types::NodeId::new(name).map(|_| ()).map_err(|_| {
        ApiError::InvalidRequest(
            "a template name is 1 to 64 letters, digits, '-', '_' or '.'".into(),
        )
    })
}

/// The store's form of a template's visibility.
pub fn visibility(v: api::Visibility) -> Visibility {
    match v {
        api::Visibility::Private => Visibility::Private,
        api::Visibility::Public => Visibility::Public,
    }
}

/// Registers an image of the repository as a template owned by `owner`;
/// `qemu-img` reads its format and size.
pub async fn register(
    state: &AppState,
    owner: UserId,
    req: api::CreateTemplate,
) -> ApiResult<TemplateRecord> {
    valid_name(&req.name)?;
    let path = inside_repository(&state.config.image_dir, &req.image)?;
    let info = crate::images::inspect(&path).await.map_err(|e| match e {
        crate::images::ImageError::Unreadable(_) => ApiError::InvalidRequest(e.to_string()),
        other => ApiError::Internal(other.into()),
    })?;
    let size_mib = info.size_mib();
    let t = TemplateRecord {
        id: Uuid::new_v4().into(),
        name: req.name,
        owner_id: Some(owner),
        visibility: visibility(req.visibility.unwrap_or(api::Visibility::Public)),
        image_path: path.to_string_lossy().into_owned(),
        format: info.format,
        size_mib,
        os_name: req.os_name,
        vcpus: resource(req.vcpus, 1, "vcpus")?,
        ram_mib: resource(req.ram_mib, 512, "ram_mib")?,
        disk_mib: resource(req.disk_mib, size_mib.max(1), "disk_mib")?,
        software: serde_json::to_string(&req.software).map_err(|e| ApiError::Internal(e.into()))?,
        created_at: now_ms(),
    };
    if t.disk_mib < t.size_mib {
        return Err(ApiError::InvalidRequest(format!(
            "disk_mib {} is smaller than the image's virtual size ({} MiB)",
            t.disk_mib, t.size_mib
        )));
    }
    state.store.create_template(&t).await?;
    Ok(t)
}

/// Resolves `image` inside the repository; refuses anything that escapes it.
fn inside_repository(repo: &Path, image: &str) -> ApiResult<PathBuf> {
    let candidate = repo.join(image);
    let resolved = candidate.canonicalize().map_err(|_| {
        ApiError::InvalidRequest(format!("image {image:?} not found in the image repository"))
    })?;
    let root = repo
        .canonicalize()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("image repository: {e}")))?;
    if !resolved.starts_with(&root) || !resolved.is_file() {
        return Err(ApiError::InvalidRequest(format!(
            "image {image:?} is not a file inside the image repository"
        )));
    }
    Ok(resolved)
}

/// A template's vCPUs, RAM or disk as asked, or `default`; refused when
/// not positive.
fn resource(asked: Option<i64>, default: i64, what: &str) -> ApiResult<i64> {
    match asked {
        Some(n) if n <= 0 => Err(ApiError::InvalidRequest(format!("{what} must be positive"))),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// Saves the VM of one node of a running VI as a new template (the VI's
/// owner or an administrator; the template belongs to the caller). The
/// copy is crash-consistent: the VM keeps running. Returns the job.
pub async fn save(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    req: api::SaveTemplate,
) -> ApiResult<JobRecord> {
    let vi = visible(state, caller, id).await?;
    valid_name(&req.name)?;
    if vi.state != ViState::Running {
        return Err(ApiError::Conflict(format!(
            "only a running VI's VMs can be saved as templates; this one is {}",
            vi.state
        )));
    }
    // Names are the caller's own: theirs may shadow a public template.
    match state.store.template_for(caller.user.id, &req.name).await {
        Ok(t) if t.owner_id == Some(caller.user.id) => {
            return Err(ApiError::Conflict(format!(
                "template {:?} already exists",
                req.name
            )))
        }
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let topo = super::design::design_of(&vi)?;
    let node = topo
        .nodes
        .iter()
        .find(|n| n.id.as_str() == req.node)
        .ok_or_else(|| ApiError::InvalidRequest(format!("the VI has no node {:?}", req.node)))?;
    let placed = state
        .store
        .vms(vi.id)
        .await?
        .into_iter()
        .find(|v| v.node_id == req.node)
        .ok_or_else(|| ApiError::Conflict(format!("node {:?} is not placed", req.node)))?;
    let os_name = match req.os_name {
        Some(os) => os,
        None => match state
            .store
            .template_for(vi.owner_id, name_of(state, node))
            .await
        {
            Ok(t) => t.os_name,
            Err(StoreError::NotFound { .. }) => String::new(),
            Err(e) => return Err(e.into()),
        },
    };
    let template_id = TemplateId::from(Uuid::new_v4());
    let image = super::suspend::path_string(
        state
            .config
            .image_dir
            .join("saved-templates")
            .join(format!("{}.img", template_id.uuid().simple())),
    );
    let software: Vec<api::Software> = node
        .software
        .software
        .iter()
        .map(|p| api::Software {
            name: p.name.clone(),
            kind: p.kind.clone(),
            version: p.version.clone(),
        })
        .collect();
    let template = NewTemplate {
        id: template_id,
        name: req.name,
        owner_id: caller.user.id,
        image_path: image.clone(),
        os_name,
        vcpus: i64::from(node.vcpus()),
        ram_mib: i64::try_from(node.ram.0).unwrap_or(i64::MAX),
        disk_mib: i64::try_from(node.disk.0).unwrap_or(i64::MAX),
        software: serde_json::to_string(&software).map_err(|e| ApiError::Internal(e.into()))?,
    };
    let steps = [
        Step::ExportDisk {
            host: placed.host_id,
            vm: jobs::vm_name(vi.id, &req.node),
            dest: image,
        },
        Step::RegisterTemplate { template },
    ];
    let job = state
        .jobs
        .new_job(vi.id, JobKind::SaveTemplate, &steps)
        .map_err(ApiError::Internal)?;
    state.store.add_job(&job, ViState::Running).await?;
    state.jobs.spawn(job.id);
    Ok(job)
}

/// Images uploaded at once: each writes a file of up to
/// [`crate::Config::max_image_bytes`] and runs `qemu-img` over it.
pub const UPLOADS: usize = 2;

/// The most templates a user owns (imported or saved from VMs).
pub const MAX_TEMPLATES_PER_USER: usize = 64;

/// The slowest an upload may arrive (bytes per second) before it is given
/// up: its body deadline is a minute plus its size at this rate.
pub const MIN_UPLOAD_RATE: u64 = 1 << 20;

/// How long an upload of `bytes` may take to arrive.
pub fn upload_time(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / MIN_UPLOAD_RATE)
}

/// Checks an import before its body is read: the name, who may make it
/// public, the caller's room for one more template, the declared size.
pub async fn check_import(
    state: &AppState,
    caller: &Caller,
    req: &api::ImportTemplate,
    declared: Option<u64>,
) -> ApiResult<u64> {
    valid_name(&req.name)?;
    // Checked before the body is read (and again, with the image's size,
    // after).
    for (what, asked) in [
        ("vcpus", req.vcpus),
        ("ram_mib", req.ram_mib),
        ("disk_mib", req.disk_mib),
    ] {
        resource(asked, 1, what)?;
    }
    if req.visibility == Some(api::Visibility::Public) {
        caller.require_admin()?;
    }
    let bytes = declared.ok_or_else(|| {
        ApiError::InvalidRequest(
            "an image upload declares its size: send it with a Content-Length".to_owned(),
        )
    })?;
    let max = state.config.max_image_bytes;
    if bytes > max {
        return Err(ApiError::TooLarge(format!(
            "the image is {bytes} bytes; at most {max} are accepted"
        )));
    }
    if bytes == 0 {
        return Err(ApiError::InvalidRequest("the image is empty".to_owned()));
    }
    let owned: Vec<TemplateRecord> = state
        .store
        .list_templates()
        .await?
        .into_iter()
        .filter(|t| t.owner_id == Some(caller.user.id))
        .collect();
    if owned.iter().any(|t| t.name == req.name) {
        return Err(ApiError::Conflict(format!(
            "template {:?} already exists",
            req.name
        )));
    }
    if owned.len() >= MAX_TEMPLATES_PER_USER {
        return Err(ApiError::QuotaExceeded(format!(
            "{} owns {} templates, the most a user may",
            caller.user.name,
            owned.len()
        )));
    }
    Ok(bytes)
}

/// One of the [`UPLOADS`] an import holds while it runs.
pub fn upload_slot(state: &AppState) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
    state.uploads.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{UPLOADS} images are being uploaded; try again when one is done"
        ))
    })
}

/// Imports an uploaded image as a template of the caller's: `body`, of
/// `bytes` bytes as declared, is written to the image repository, then
/// `qemu-img` must find a qcow2 or raw image that names no other file (no
/// backing file, no external data file: it would read the Manager's host)
/// and, for qcow2, no corruption. Anything refused is deleted. The caller
/// has checked the request ([`check_import`]) and holds a slot
/// ([`upload_slot`]).
pub async fn import<E>(
    state: &AppState,
    caller: &Caller,
    req: api::ImportTemplate,
    bytes: u64,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
) -> ApiResult<TemplateRecord>
where
    E: std::fmt::Display,
{
    let id = TemplateId::from(Uuid::new_v4());
    let uploads = state.config.image_dir.join("uploads");
    let part = uploads.join(format!("{}.part", id.uuid().simple()));
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::Internal(anyhow::anyhow!("{what} {}: {e}", part.display()))
    };
    tokio::fs::create_dir_all(&uploads)
        .await
        .map_err(|e| internal("cannot make the folder of", &e))?;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
        .await
        .map_err(|e| internal("cannot create", &e))?;
    // The part file goes whatever happens below, but once renamed.
    let cleanup = PartFile(Some(part.clone()));
    let mut received: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::InvalidRequest(format!(
                "the upload broke off after {received} of {bytes} bytes: {e}"
            ))
        })?;
        received = received.saturating_add(chunk.len() as u64);
        if received > bytes {
            return Err(ApiError::InvalidRequest(format!(
                "the upload is longer than the {bytes} bytes it declared"
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("cannot write", &e))?;
    }
    if received != bytes {
        return Err(ApiError::InvalidRequest(format!(
            "the upload ended after {received} of the {bytes} bytes it declared"
        )));
    }
    file.sync_all()
        .await
        .map_err(|e| internal("cannot write", &e))?;
    drop(file);
    let info = crate::images::inspect(&part).await.map_err(|e| match e {
        crate::images::ImageError::Unreadable(why) => {
            ApiError::InvalidRequest(format!("the upload is not an image qemu-img reads: {why}"))
        }
        other => ApiError::Internal(other.into()),
    })?;
    check_image(&info)?;
    if info.format == "qcow2" {
        crate::images::check(&part).await.map_err(|e| match e {
            crate::images::ImageError::Unreadable(why) => {
                ApiError::InvalidRequest(format!("the qcow2 image is damaged: {why}"))
            }
            other => ApiError::Internal(other.into()),
        })?;
    }
    let imported = state.config.image_dir.join("imported");
    tokio::fs::create_dir_all(&imported)
        .await
        .map_err(|e| internal("cannot make the folder beside", &e))?;
    let image = imported.join(format!("{}.{}", id.uuid().simple(), info.format));
    let size_mib = info.size_mib();
    let t = TemplateRecord {
        id,
        name: req.name,
        owner_id: Some(caller.user.id),
        visibility: visibility(req.visibility.unwrap_or(api::Visibility::Private)),
        image_path: image.to_string_lossy().into_owned(),
        format: info.format.clone(),
        size_mib,
        os_name: req.os_name.unwrap_or_default(),
        vcpus: resource(req.vcpus, 1, "vcpus")?,
        ram_mib: resource(req.ram_mib, 512, "ram_mib")?,
        disk_mib: resource(req.disk_mib, size_mib.max(1), "disk_mib")?,
        // What an image of unknown content carries is not known: nodes
        // made from it are not checked for their software.
        software: "[]".to_owned(),
        created_at: now_ms(),
    };
    if t.disk_mib < t.size_mib {
        return Err(ApiError::InvalidRequest(format!(
            "disk_mib {} is smaller than the image's virtual size ({} MiB)",
            t.disk_mib, t.size_mib
        )));
    }
    tokio::fs::rename(&part, &image)
        .await
        .map_err(|e| internal("cannot move", &e))?;
    cleanup.keep();
    if let Err(e) = state.store.create_template(&t).await {
        let _ = tokio::fs::remove_file(&image).await;
        return Err(e.into());
    }
    Ok(t)
}

/// Refuses an image Neptune does not run from: another format than qcow2
/// or raw, or one that names another file.
fn check_image(info: &crate::images::ImageInfo) -> ApiResult<()> {
    if !matches!(info.format.as_str(), "qcow2" | "raw") {
        return Err(ApiError::InvalidRequest(format!(
            "the image is {}; Neptune imports qcow2 and raw images",
            info.format
        )));
    }
    if let Some(backing) = &info.backing_filename {
        return Err(ApiError::InvalidRequest(format!(
            "the image has a backing file ({backing:?}): import a standalone image (qemu-img convert -O qcow2 makes one)"
        )));
    }
    if let Some(data) = info.data_file() {
        return Err(ApiError::InvalidRequest(format!(
            "the image keeps its data in another file ({data:?}): import a standalone image"
        )));
    }
    if info.virtual_size == 0 {
        return Err(ApiError::InvalidRequest(
            "the image's virtual size is 0".to_owned(),
        ));
    }
    Ok(())
}

/// Deletes an upload's part file when dropped, unless kept.
struct PartFile(Option<PathBuf>);

impl PartFile {
    /// The file was moved into place: nothing to delete.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
