//! The HTTP handlers of operations on a running VI: suspend, resume and
//! saving a VM as a template, each a durable job of [`crate::app`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use neptune_api as api;
use neptune_types::ViId;

use super::present::{changed_detail, job_out};
use crate::app;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::AppState;

/// Suspends a running VI (its owner or an administrator): every VM's
/// memory is saved and its disk copied to the image repository, then the
/// hosts are freed. Follow the returned VI's job for progress.
#[utoipa::path(post, path = "/api/v1/vis/{id}/suspend", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub(crate) async fn suspend_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::suspend::suspend(&state, &caller, id).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}

/// Resumes a suspended VI (its owner or an administrator): placed again in
/// its home datacenter (on whichever hosts have room now), every VM's disk
/// copied back and its memory restored. Addresses are kept.
#[utoipa::path(post, path = "/api/v1/vis/{id}/resume", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)))]
pub(crate) async fn resume_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::suspend::resume(&state, &caller, id).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}

/// Saves the VM of one node of a running VI as a new template (the VI's
/// owner or an administrator; the template belongs to the caller). The
/// copy is crash-consistent: the VM keeps running. Follow the job.
#[utoipa::path(post, path = "/api/v1/vis/{id}/templates", params(("id" = ViId, Path)),
    request_body = api::SaveTemplate, security(("bearer" = [])),
    responses((status = 202, body = api::Job), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn save_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    Json(req): Json<api::SaveTemplate>,
) -> ApiResult<(StatusCode, Json<api::Job>)> {
    let job = app::templates::save(&state, &caller, id, req).await?;
    Ok((StatusCode::ACCEPTED, Json(job_out(&state, &job)?)))
}
