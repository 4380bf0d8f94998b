//! Operations on a running VI: suspend (its VMs saved, their disks moved to
//! the image repository, its hosts freed "for future reallocation"), resume
//! (placed again, possibly on other hosts, with the same addresses), and
//! saving a VM as a new template. Each runs as a durable job.
//!
//! A suspended VI's files live in the image repository, which every host
//! reaches (as template images do):
//!
//! ```text
//! <image_dir>/suspended/<vi>/<vm>.state   saved memory
//! <image_dir>/suspended/<vi>/<vm>.disk    exported disk
//! <image_dir>/saved-templates/<id>.img    a VM saved as a template
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use neptune_api as api;
use neptune_hypervisor::VmSpec;
use neptune_lifecycle::{Event, ViState};
use neptune_store::{Reservation, StoreError, Transition};
use uuid::Uuid;

use super::vis::{detail, plan_error, seed, start_job, visible};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, JobKind, Step};
use crate::plan::place;
use crate::templates::NewTemplate;
use crate::{now_ms, AppState};

/// Where a suspended VI's states and disks are kept.
pub(crate) fn suspended_dir(state: &AppState, vi: Uuid) -> PathBuf {
    state
        .config
        .image_dir
        .join("suspended")
        .join(vi.simple().to_string())
}

fn path_string(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

/// Suspends a running VI (its owner or an administrator): every VM's
/// memory is saved and its disk copied to the image repository, then the
/// hosts are freed. Follow the returned VI's job for progress.
#[utoipa::path(post, path = "/api/v1/vis/{id}/suspend", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub(crate) async fn suspend_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = visible(&state, &caller, id).await?;
    vi.state.next(Event::Suspend)?;
    let vms = state.store.vms(vi.id).await?;
    let hosts = state.store.list_hosts().await?;
    // The specs as the hosts run them (disk paths included), so a failed
    // suspend can put every VM back exactly as it was.
    let mut running: HashMap<String, VmSpec> = HashMap::new();
    let mut asked = std::collections::HashSet::new();
    for v in &vms {
        if !asked.insert(v.host_id) {
            continue;
        }
        let host = hosts
            .iter()
            .find(|h| h.id == v.host_id)
            .ok_or_else(|| ApiError::Conflict(format!("host {} is gone", v.host_id)))?;
        let listed = state.jobs.vms_on(host).await.map_err(|e| {
            ApiError::Conflict(format!(
                "host {} cannot be asked for its VMs now: {e:#}",
                host.name
            ))
        })?;
        running.extend(listed.into_iter().map(|info| (info.name, info.spec)));
    }
    let dir = suspended_dir(&state, vi.id);
    let mut saves = Vec::new();
    let mut exports = Vec::new();
    let mut drops = Vec::new();
    for v in &vms {
        let vm = jobs::vm_name(vi.id, &v.node_id);
        let spec = running.remove(&vm).ok_or_else(|| {
            ApiError::Conflict(format!(
                "VM {vm} (node {}) is not on its host: the VI needs an operator",
                v.node_id
            ))
        })?;
        let export = path_string(dir.join(format!("{vm}.disk")));
        saves.push(Step::Save {
            host: v.host_id,
            state: path_string(dir.join(format!("{vm}.state"))),
            spec: spec.clone(),
        });
        exports.push(Step::ExportDisk {
            host: v.host_id,
            vm: vm.clone(),
            dest: export.clone(),
        });
        drops.push(Step::DropDisk {
            host: v.host_id,
            vm,
            export,
            size_mib: spec.disk_mib,
        });
    }
    let steps: Vec<Step> = [Step::MakeSavedDir {
        dir: path_string(dir.clone()),
    }]
    .into_iter()
    .chain(saves)
    .chain(exports)
    .chain(drops)
    .chain([Step::ReleaseHosts])
    .collect();
    let vi = start_job(&state, &caller, &vi, JobKind::Suspend, &steps).await?;
    Ok(Json(detail(&state, &vi).await?))
}

/// Resumes a suspended VI (its owner or an administrator): placed again in
/// its home datacenter (on whichever hosts have room now), every VM's disk
/// copied back and its memory restored. Addresses are kept.
#[utoipa::path(post, path = "/api/v1/vis/{id}/resume", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub(crate) async fn resume_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = visible(&state, &caller, id).await?;
    let to = vi.state.next(Event::Resume)?;
    let dc_id = vi
        .home_datacenter_id
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("suspended VI {} has no home", vi.id)))?;
    let dc = state
        .store
        .list_datacenters()
        .await?
        .into_iter()
        .find(|d| d.id == dc_id)
        .ok_or(ApiError::NotFound("datacenter"))?;
    let topo = super::vis::design_of(&vi)?;
    let addresses = crate::plan::committed(&vi).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "suspended VI {} has no address plan",
            vi.id
        ))
    })?;
    let dir = suspended_dir(&state, vi.id);
    let keys = super::vis::owner_keys(&state, vi.owner_id).await?;
    let _planning = state.planning.lock().await;
    let mut attempt = 0;
    let (resuming, job) = loop {
        attempt += 1;
        let hosts = state.store.list_hosts().await?;
        let plan = place(vi.id, &topo, &dc, &hosts, None, seed(vi.id)).map_err(plan_error)?;
        super::vis::require_admissible(&plan)?;
        let wiring = super::vis::wiring(&state, &topo, &addresses, &plan.records, &hosts).await?;
        let mut copies = Vec::new();
        let mut restores = Vec::new();
        let mut readies = Vec::new();
        for node in &topo.nodes {
            let placed = plan
                .records
                .iter()
                .find(|r| r.node_id == node.id.as_str())
                .ok_or_else(|| {
                    ApiError::Internal(anyhow::anyhow!("node {} is not placed", node.id))
                })?;
            let vm = jobs::vm_name(vi.id, node.id.as_str());
            let disk = path_string(dir.join(format!("{vm}.disk")));
            copies.push(Step::PrepareDisk {
                host: placed.host_id,
                vm: vm.clone(),
                image: disk.clone(),
                size_mib: node.disk.0,
            });
            restores.push(Step::Restore {
                host: placed.host_id,
                spec: jobs::vm_spec(
                    vi.id,
                    &topo,
                    node,
                    placed.host_id,
                    &wiring,
                    jobs::GuestConfig {
                        addresses: &addresses,
                        ssh_keys: &keys,
                        public_gateway: super::vis::gateway_of(&dc)?,
                    },
                ),
                state: path_string(dir.join(format!("{vm}.state"))),
                image: Some(disk),
            });
            readies.push(Step::AwaitReady {
                host: placed.host_id,
                vm,
            });
        }
        let steps: Vec<Step> = [Step::HoldHosts]
            .into_iter()
            .chain(copies)
            .chain(restores)
            .chain(readies)
            .chain([Step::DeleteSaved {
                dir: path_string(dir.clone()),
            }])
            .collect();
        let job = jobs::new_job(vi.id, JobKind::Resume, &steps).map_err(ApiError::Internal)?;
        let change = Transition {
            to,
            actor: caller.user.id,
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: None,
        };
        let reservation = Reservation {
            vms: plan.records,
            job: Some(job.clone()),
            ..Default::default()
        };
        match state
            .store
            .transition_with_placement(vi.id, vi.state, &change, &reservation)
            .await
        {
            Ok(resuming) => break (resuming, job),
            // Another Manager took the room meanwhile: plan again.
            Err(StoreError::NoRoom { .. }) if attempt < 5 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    state.jobs.spawn(job.id);
    Ok(Json(detail(&state, &resuming).await?))
}

/// Saves the VM of one node of a running VI as a new template (the VI's
/// owner or an administrator; the template belongs to the caller). The
/// copy is crash-consistent: the VM keeps running. Follow the job.
#[utoipa::path(post, path = "/api/v1/vis/{id}/templates", params(("id" = Uuid, Path)),
    request_body = api::SaveTemplate, security(("bearer" = [])),
    responses((status = 202, body = api::Job), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn save_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(req): Json<api::SaveTemplate>,
) -> ApiResult<(StatusCode, Json<api::Job>)> {
    let vi = visible(&state, &caller, id).await?;
    neptune_types::NodeId::new(req.name.as_str()).map_err(|_| {
        ApiError::InvalidRequest(
            "a template name is 1 to 64 letters, digits, '-', '_' or '.'".into(),
        )
    })?;
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
    let topo = super::vis::design_of(&vi)?;
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
    let source = if node.software.template.is_empty() {
        state.config.default_template.as_str()
    } else {
        node.software.template.as_str()
    };
    let os_name = match req.os_name {
        Some(os) => os,
        None => match state.store.template_for(vi.owner_id, source).await {
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
    Ok((
        StatusCode::ACCEPTED,
        Json(super::jobs::job_out(&state.views, &job)),
    ))
}
