//! A VI's VMs as their hosts run them now, and a VM's serial console,
//! through its host's Agent: its end to read, and text to type on it. For
//! the VI's owner and administrators.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use neptune_api as api;
use neptune_hypervisor::{Hypervisor, HypervisorError};
use neptune_types::{HostId, ViId};

use crate::app::access::visible;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{jobs, AppState};

/// Console bytes returned when the request does not say.
const DEFAULT_BYTES: u64 = 64 << 10;
/// The most console bytes one request returns.
const MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsoleQuery {
    /// How many of the console's last bytes to return (default 65536, at
    /// most 1048576).
    bytes: Option<u64>,
}

/// The hypervisor of the host that runs `node` of VI `id`, and the VM's name.
async fn vm_of(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    node: &str,
) -> ApiResult<(std::sync::Arc<dyn Hypervisor>, String)> {
    let vi = visible(state, caller, id).await?;
    let vms = state.store.vms(vi.id).await?;
    let placed = vms.iter().find(|v| v.node_id == node).ok_or_else(|| {
        ApiError::Conflict(format!(
            "node {node:?} of the VI runs on no host (the VI is {})",
            vi.state.as_str()
        ))
    })?;
    let hosts = state.store.list_hosts().await?;
    let host = hosts
        .iter()
        .find(|h| h.id == placed.host_id)
        .ok_or_else(|| ApiError::Conflict(format!("the host of node {node:?} is gone")))?;
    let hv =
        state.jobs.hypervisor_for(host).await.map_err(|e| {
            ApiError::Conflict(format!("host {} cannot be reached: {e:#}", host.name))
        })?;
    Ok((hv, jobs::vm_name(vi.id, node)))
}

fn console_error(node: &str, err: HypervisorError) -> ApiError {
    match err {
        HypervisorError::NoSuchVm(_) => {
            ApiError::Conflict(format!("node {node:?} has no VM on its host now"))
        }
        HypervisorError::InvalidRequest(m) => ApiError::InvalidRequest(m),
        other => ApiError::Conflict(format!("the console of node {node:?}: {other}")),
    }
}

/// The end of a VM's serial console (the VI's owner or an administrator).
#[utoipa::path(get, path = "/api/v1/vis/{id}/vms/{node}/console",
    params(("id" = ViId, Path), ("node" = String, Path), ConsoleQuery), security(("bearer" = [])),
    responses((status = 200, body = api::ConsoleText), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub(crate) async fn read_console(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, node)): Path<(ViId, String)>,
    Query(query): Query<ConsoleQuery>,
) -> ApiResult<Json<api::ConsoleText>> {
    let (hv, vm) = vm_of(&state, &caller, id, &node).await?;
    let bytes = query.bytes.unwrap_or(DEFAULT_BYTES).min(MAX_BYTES);
    let text = hv
        .console(&vm, bytes)
        .await
        .map_err(|e| console_error(&node, e))?;
    Ok(Json(api::ConsoleText { text }))
}

/// Types on a VM's serial console (the VI's owner or an administrator);
/// the guest's answer shows in the console.
#[utoipa::path(post, path = "/api/v1/vis/{id}/vms/{node}/console",
    params(("id" = ViId, Path), ("node" = String, Path)), request_body = api::ConsoleInput,
    security(("bearer" = [])),
    responses((status = 204), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn type_on_console(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, node)): Path<(ViId, String)>,
    Json(req): Json<api::ConsoleInput>,
) -> ApiResult<StatusCode> {
    if req.input.len() > neptune_hypervisor::MAX_CONSOLE_INPUT {
        return Err(ApiError::InvalidRequest(format!(
            "{} bytes of console input: at most {} at once",
            req.input.len(),
            neptune_hypervisor::MAX_CONSOLE_INPUT
        )));
    }
    let (hv, vm) = vm_of(&state, &caller, id, &node).await?;
    hv.console_input(&vm, req.input.as_bytes())
        .await
        .map_err(|e| console_error(&node, e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Each VM of the VI as its host's Agent reports it now: `defined`,
/// `booting`, `ready`, `missing` or `unknown` (the VI's owner or an
/// administrator).
#[utoipa::path(get, path = "/api/v1/vis/{id}/vms", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = [api::VmStatus]), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn vm_states(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<Vec<api::VmStatus>>> {
    let vi = visible(&state, &caller, id).await?;
    let vms = state.store.vms(vi.id).await?;
    let hosts = state.store.list_hosts().await?;
    // One listing per host, its hosts asked together.
    let mut asked = Vec::new();
    for host in hosts
        .iter()
        .filter(|h| vms.iter().any(|v| v.host_id == h.id))
    {
        let jobs = state.jobs.clone();
        let host = host.clone();
        asked.push(async move {
            let listed =
                tokio::time::timeout(std::time::Duration::from_secs(10), jobs.vms_on(&host))
                    .await
                    .ok()
                    .and_then(Result::ok);
            (host.id, listed)
        });
    }
    let listings: std::collections::HashMap<HostId, Option<Vec<neptune_hypervisor::VmInfo>>> =
        futures_util::future::join_all(asked)
            .await
            .into_iter()
            .collect();
    let out = vms
        .iter()
        .map(|v| {
            let name = jobs::vm_name(vi.id, &v.node_id);
            let state = match listings.get(&v.host_id) {
                Some(Some(listed)) => match listed.iter().find(|i| i.name == name) {
                    Some(i) if i.ready => "ready",
                    Some(i) if i.state == neptune_hypervisor::VmState::Running => "booting",
                    Some(_) => "defined",
                    None => "missing",
                },
                _ => "unknown",
            };
            api::VmStatus {
                node: v.node_id.clone(),
                host: hosts
                    .iter()
                    .find(|h| h.id == v.host_id)
                    .map_or_else(|| v.host_id.to_string(), |h| h.name.clone()),
                state: state.to_owned(),
            }
        })
        .collect();
    Ok(Json(out))
}
