//! A VM's serial console, through its host's Agent: its end to read, and
//! text to type on it. For the VI's owner and administrators.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use neptune_api as api;
use neptune_hypervisor::{Hypervisor, HypervisorError};
use uuid::Uuid;

use super::vis::visible;
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
    id: Uuid,
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
    params(("id" = Uuid, Path), ("node" = String, Path), ConsoleQuery), security(("bearer" = [])),
    responses((status = 200, body = api::ConsoleText), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub(crate) async fn read_console(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, node)): Path<(Uuid, String)>,
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
    params(("id" = Uuid, Path), ("node" = String, Path)), request_body = api::ConsoleInput,
    security(("bearer" = [])),
    responses((status = 204), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn type_on_console(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, node)): Path<(Uuid, String)>,
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
