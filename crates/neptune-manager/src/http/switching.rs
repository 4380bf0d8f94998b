//! The HTTP handlers of Service Switching: each datacenter's switch, and
//! moving a VI to another datacenter (at once, or as a request an
//! administrator grants or refuses).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use neptune_api as api;
use neptune_types::ViId;

use super::present::{changed_detail, datacenter_names, user_names};
use crate::app;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::AppState;

/// Registers (or replaces) a datacenter's Edge Service Switch
/// (administrators). The Manager checks it first: the key file holds a key
/// the switch accepts (a signed `GET /v1/state`), the switch has this
/// care-of address, and every Home Address pool of the datacenter is among
/// its home prefixes. Its table is then brought in line with the store.
#[utoipa::path(put, path = "/api/v1/datacenters/{name}/switch", params(("name" = String, Path)),
    request_body = api::RegisterSwitch, security(("bearer" = [])),
    responses((status = 200, body = api::Switch), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 422, body = api::ErrorBody)))]
pub(crate) async fn register_switch(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<api::RegisterSwitch>,
) -> ApiResult<Json<api::Switch>> {
    Ok(Json(
        app::switches::register(&state, &caller, &name, req).await?,
    ))
}

/// Forgets a datacenter's switch (administrators); its table is left as
/// it is.
#[utoipa::path(delete, path = "/api/v1/datacenters/{name}/switch", params(("name" = String, Path)),
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn remove_switch(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app::switches::remove(&state, &caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every registered switch, each asked for its state now (administrators).
#[utoipa::path(get, path = "/api/v1/switches", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::Switch>), (status = 403, body = api::ErrorBody)))]
pub(crate) async fn list_switches(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::Switch>>> {
    Ok(Json(app::switches::list(&state, &caller).await?))
}

/// Moves a running VI live to another datacenter, or resumes a suspended
/// one there (administrators: at once; follow the returned VI's job). Its
/// owner asks instead: the request waits for an administrator, shown as
/// the VI's `migration_request`, and the VI is answered unchanged (202).
#[utoipa::path(post, path = "/api/v1/vis/{id}/migrate", params(("id" = ViId, Path)),
    request_body = api::MigrateRequest, security(("bearer" = [])),
    responses((status = 200, description = "Moving (administrators)", body = api::ViDetail),
        (status = 202, description = "Requested (the owner)", body = api::ViDetail),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn migrate_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    Json(req): Json<api::MigrateRequest>,
) -> ApiResult<(StatusCode, Json<api::ViDetail>)> {
    let vi = app::migrate::migrate(&state, &caller, id, req).await?;
    let status = if caller.is_admin() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(changed_detail(&state, &vi).await?)))
}

/// Ends a VI's waiting migration request: its owner takes it back, or an
/// administrator refuses it.
#[utoipa::path(delete, path = "/api/v1/vis/{id}/migrate", params(("id" = ViId, Path)),
    security(("bearer" = [])),
    responses((status = 204), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn cancel_migration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<StatusCode> {
    app::migrate::cancel_request(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of a migration plan.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct MigrationPlanQuery {
    /// The datacenter to move to.
    to: String,
}

/// What moving the VI to another datacenter would do now: the target
/// hosts, the cut, what the move copies and what the inter-datacenter
/// network carries while the VI is split. Nothing is changed. For
/// administrators and the VI's owner.
#[utoipa::path(get, path = "/api/v1/vis/{id}/migrate/plan", params(("id" = ViId, Path), MigrationPlanQuery),
    security(("bearer" = [])),
    responses((status = 200, body = api::MigrationPlan), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub(crate) async fn migration_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    Query(query): Query<MigrationPlanQuery>,
) -> ApiResult<Json<api::MigrationPlan>> {
    let (plan, _) = app::migrate::preview(&state, &caller, id, &query.to).await?;
    Ok(Json(plan))
}

/// Every migration request waiting for an administrator, oldest first
/// (administrators).
#[utoipa::path(get, path = "/api/v1/migration-requests", security(("bearer" = [])),
    responses((status = 200, body = Vec<api::MigrationRequest>), (status = 403, body = api::ErrorBody)))]
pub(crate) async fn migration_requests(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::MigrationRequest>>> {
    let requests = app::migrate::requests(&state, &caller).await?;
    let users = user_names(&state, requests.iter().map(|r| r.requested_by)).await?;
    let dcs = datacenter_names(&state, requests.iter().map(|r| r.datacenter_id)).await?;
    Ok(Json(
        requests
            .into_iter()
            .map(|r| api::MigrationRequest {
                vi: r.vi_id,
                to: dcs.get(&r.datacenter_id).cloned().unwrap_or_default(),
                requested_by: users.get(&r.requested_by).cloned().unwrap_or_default(),
                requested_at: r.requested_at,
            })
            .collect(),
    ))
}
