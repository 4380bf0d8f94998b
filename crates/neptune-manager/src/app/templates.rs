//! Templates of the image repository as VIs use them: which template a
//! node is made from (the default-template rule), what software it
//! carries, registering an image as a template, and saving the VM of a
//! running VI as a new one.

use std::path::{Path, PathBuf};

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
    owner: Uuid,
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
    serde_json::from_str(&template.software).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "the stored software list of template {} does not load: {e}",
            template.id
        ))
    })
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
    owner: Uuid,
    req: api::CreateTemplate,
) -> ApiResult<TemplateRecord> {
    valid_name(&req.name)?;
    let path = inside_repository(&state.config.image_dir, &req.image)?;
    let info = crate::images::inspect(&path).await.map_err(|e| match e {
        crate::images::ImageError::Unreadable(_) => ApiError::InvalidRequest(e.to_string()),
        other => ApiError::Internal(other.into()),
    })?;
    let positive = |v: Option<i64>, default: i64, what: &str| match v {
        Some(n) if n <= 0 => Err(ApiError::InvalidRequest(format!("{what} must be positive"))),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let size_mib = info.size_mib();
    let t = TemplateRecord {
        id: Uuid::new_v4(),
        name: req.name,
        owner_id: Some(owner),
        visibility: visibility(req.visibility.unwrap_or(api::Visibility::Public)),
        image_path: path.to_string_lossy().into_owned(),
        format: info.format,
        size_mib,
        os_name: req.os_name,
        vcpus: positive(req.vcpus, 1, "vcpus")?,
        ram_mib: positive(req.ram_mib, 512, "ram_mib")?,
        disk_mib: positive(req.disk_mib, size_mib.max(1), "disk_mib")?,
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

fn path_string(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

/// Saves the VM of one node of a running VI as a new template (the VI's
/// owner or an administrator; the template belongs to the caller). The
/// copy is crash-consistent: the VM keeps running. Returns the job.
pub async fn save(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
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
    let template_id = Uuid::new_v4();
    let image = path_string(
        state
            .config
            .image_dir
            .join("saved-templates")
            .join(format!("{}.img", template_id.simple())),
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
    let job = jobs::new_job(vi.id, JobKind::SaveTemplate, &steps).map_err(ApiError::Internal)?;
    state.store.add_job(&job, ViState::Running).await?;
    state.jobs.spawn(job.id);
    Ok(job)
}
