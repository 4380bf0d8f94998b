//! The HTTP handlers of Virtual Infrastructures: design, request, approval,
//! deploy, release, terminate. Each reads its input, calls the use case of
//! [`crate::app`] and answers with the VI's detail.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use neptune_api as api;
use neptune_lifecycle::Event;
use neptune_types::ViId;
use std::time::Duration;

use crate::views::cache::Body;

use super::present::{changed_detail, datacenter_names, detail, user_names, vi_out};
use crate::app::{self, access};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Creates a VI (state `defined`) from XML, JSON or a catalogue kind.
#[utoipa::path(post, path = "/api/v1/vis", request_body = api::ViDesign, security(("bearer" = [])),
    responses((status = 201, body = api::ViDetail), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn create_vi(
    State(state): State<AppState>,
    caller: Caller,
    Json(design): Json<api::ViDesign>,
) -> ApiResult<(StatusCode, Json<api::ViDetail>)> {
    let vi = app::design::create(&state, &caller, &design).await?;
    Ok((
        StatusCode::CREATED,
        Json(changed_detail(&state, &vi).await?),
    ))
}

/// The caller's VIs (administrators: all VIs).
///
/// The answer carries an `ETag`; sent back in `If-None-Match`, it gets
/// `304 Not Modified` while the list is unchanged.
#[utoipa::path(get, path = "/api/v1/vis",
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of a list already held")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<api::Vi>,
            headers(("ETag" = String, description = "Changes whenever the list does"))),
        (status = 304, description = "The list named by If-None-Match is current",
            headers(("ETag" = String))),
        (status = 401, body = api::ErrorBody)))]
pub(crate) async fn list_vis(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let owner = access::listed_owner(&caller);
    // Read before the list, as for a VI's detail (see `cache`).
    let stamp = state.store.vi_list_stamp(owner).await?;
    if let Some(body) = state.views.lists.get(owner, stamp) {
        return Ok(body.respond(&headers));
    }
    let vis = state.store.list_vis(owner).await?;
    let users = user_names(&state, vis.iter().map(|v| v.owner_id)).await?;
    let dcs = datacenter_names(
        &state,
        vis.iter()
            .flat_map(|v| v.home_datacenter_id.into_iter().chain(v.location_id)),
    )
    .await?;
    let list = vis
        .iter()
        .map(|v| vi_out(&state.views, v, &users, &dcs))
        .collect::<ApiResult<Vec<_>>>()?;
    let json = serde_json::to_vec(&list).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(state
        .views
        .lists
        .put(owner, stamp, json.into())
        .respond(&headers))
}

/// The longest `wait_ms` of a VI's detail.
pub(crate) const MAX_WAIT_MS: u64 = 30_000;

/// How long a read of a VI's detail may wait for it to change.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub(crate) struct WaitQuery {
    /// With `If-None-Match` naming the detail as it is: wait up to this
    /// many milliseconds (at most 30000) for it to change, and answer 304
    /// if it has not. Without `If-None-Match`, or naming another detail,
    /// the answer is at once.
    wait_ms: Option<u64>,
}

/// One VI with its design and history.
///
/// The answer carries an `ETag`; sent back in `If-None-Match`, it gets
/// `304 Not Modified` while the VI is unchanged. With `wait_ms` as well,
/// the answer waits for the VI to change (a long-poll): the new detail as
/// soon as it does, or 304 once `wait_ms` has passed.
#[utoipa::path(get, path = "/api/v1/vis/{id}",
    params(("id" = ViId, Path),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a detail already held"),
        WaitQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = api::ViDetail,
            headers(("ETag" = String, description = "Changes whenever the detail does"))),
        (status = 304, description = "The detail named by If-None-Match is current (after `wait_ms`, if given)",
            headers(("ETag" = String))),
        (status = 404, body = api::ErrorBody),
        (status = 422, body = api::ErrorBody)))]
pub(crate) async fn show_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    Query(wait): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let wait = match wait.wait_ms {
        Some(ms) if ms > MAX_WAIT_MS => {
            return Err(ApiError::InvalidRequest(format!(
                "wait_ms is at most {MAX_WAIT_MS} (got {ms})"
            )))
        }
        Some(ms) => Duration::from_millis(ms),
        None => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Registered before the first read, so a change made meanwhile wakes it.
    let watch = (!wait.is_zero()).then(|| state.jobs.changes().watch(id));
    let mut seen = None;
    loop {
        let woken = watch.as_ref().map(|w| w.notify().notified());
        tokio::pin!(woken);
        if let Some(woken) = woken.as_mut().as_pin_mut() {
            woken.enable();
        }
        let states = watch.as_ref().map(|w| w.state_changes());
        // The stamp is read before anything the detail shows, so a body
        // built now reflects at least this revision (see `cache`).
        let stamp = state.store.vi_stamp(id).await?;
        if !access::may_see(&caller, stamp.owner_id) {
            return Err(ApiError::NotFound("VI"));
        }
        let now = tokio::time::Instant::now();
        // A wake-up or a recheck that finds the revision seen changes
        // nothing: the wait goes on without building the detail again.
        if seen != Some(stamp.revision) || now >= deadline {
            let body = detail_at(&state, id, stamp.revision).await?;
            if !body.is_held(&headers) || now >= deadline {
                return Ok(body.respond(&headers));
            }
            seen = Some(stamp.revision);
        }
        let recheck = now + crate::changes::RECHECK_EVERY;
        tokio::select! {
            _ = async { if let Some(w) = woken.as_mut().as_pin_mut() { w.await } } => {
                // A job's batches come in quick succession: what changes
                // within the settling time is answered at once, with one
                // detail built instead of one for each change. A change
                // of state is answered without it.
                if let (Some(watch), Some(seen)) = (&watch, states) {
                    watch.settle(seen, deadline).await;
                }
            }
            _ = tokio::time::sleep_until(recheck.min(deadline)) => {}
        }
    }
}

/// The VI's detail as sent, read after its `revision` was: the one kept
/// at that revision, or else built again.
async fn detail_at(state: &AppState, id: ViId, revision: i64) -> ApiResult<Body> {
    if let Some(body) = state.views.details.get(id, revision) {
        return Ok(body);
    }
    let vi = state.store.vi(id).await?;
    let json =
        serde_json::to_vec(&detail(state, &vi).await?).map_err(|e| ApiError::Internal(e.into()))?;
    // A terminated VI's detail is read rarely: kept, the bodies of a
    // domain's terminated VIs would hold memory a shrinking domain should
    // give back.
    if vi.state == neptune_lifecycle::ViState::Terminated {
        return Ok(state.views.details.pass(id, json.into()));
    }
    Ok(state.views.details.put(id, revision, json.into()))
}

/// Replaces the design of a defined VI (the owner's; `version` must match).
#[utoipa::path(put, path = "/api/v1/vis/{id}", params(("id" = ViId, Path)), request_body = api::ViDesign,
    security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn edit_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    Json(design): Json<api::ViDesign>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::design::edit(&state, &caller, id, &design).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}

async fn owner_event(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    event: Event,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::approval::owner_event(state, caller, id, event).await?;
    Ok(Json(changed_detail(state, &vi).await?))
}

/// Asks for the VI to be allocated (the owner; checks the quota).
#[utoipa::path(post, path = "/api/v1/vis/{id}/request", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn request_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    owner_event(&state, &caller, id, Event::Request).await
}

/// Takes a pending request back (the owner), to edit the design.
#[utoipa::path(post, path = "/api/v1/vis/{id}/withdraw", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn withdraw_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    owner_event(&state, &caller, id, Event::Withdraw).await
}

/// Takes a rejected design back to `defined` (the owner), to edit it.
#[utoipa::path(post, path = "/api/v1/vis/{id}/revise", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn revise_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    owner_event(&state, &caller, id, Event::Revise).await
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanQuery {
    /// The home datacenter to plan for (default: the first one).
    datacenter: Option<String>,
}

/// What accepting the VI would do now: the placement of every VM (nothing
/// is changed). For administrators and the VI's owner.
#[utoipa::path(get, path = "/api/v1/vis/{id}/plan", params(("id" = ViId, Path), PlanQuery), security(("bearer" = [])),
    responses((status = 200, body = api::Plan), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn plan_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    Query(query): Query<PlanQuery>,
) -> ApiResult<Json<api::Plan>> {
    let plan = app::approval::preview(&state, &caller, id, query.datacenter.as_deref()).await?;
    Ok(Json(plan))
}

/// Accepts a requested VI (administrators only): places it (automatically,
/// or as the request's manual map says), reserves its hosts and starts
/// deploying it. Follow the returned VI's job for progress.
#[utoipa::path(post, path = "/api/v1/vis/{id}/accept", params(("id" = ViId, Path)), request_body = api::AcceptRequest,
    security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)))]
pub(crate) async fn accept_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    body: Option<Json<api::AcceptRequest>>,
) -> ApiResult<Json<api::ViDetail>> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let vi = app::approval::accept(&state, &caller, id, req).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}

/// Deploys an accepted VI again on the hosts and addresses it holds, after
/// a deploy that rolled back (administrators only). Follow the job.
#[utoipa::path(post, path = "/api/v1/vis/{id}/deploy", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn deploy_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::deploy::deploy_again(&state, &caller, id).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}

/// Gives an accepted VI's hosts and addresses back and returns it to
/// `requested`, to be planned and accepted anew (administrators only):
/// the way forward from a deploy that rolled back when its hosts are gone.
#[utoipa::path(post, path = "/api/v1/vis/{id}/release", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn release_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::approval::release(&state, &caller, id).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}

/// Rejects a requested VI with a reason (administrators only).
#[utoipa::path(post, path = "/api/v1/vis/{id}/reject", params(("id" = ViId, Path)), request_body = api::RejectRequest,
    security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn reject_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
    Json(req): Json<api::RejectRequest>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::approval::reject(&state, &caller, id, &req.reason).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}

/// Terminates a VI (its owner or an administrator). A VI with VMs on
/// hosts is terminated by a job (follow it); one without ends at once.
#[utoipa::path(post, path = "/api/v1/vis/{id}/terminate", params(("id" = ViId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::ViDetail), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)))]
pub(crate) async fn terminate_vi(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<api::ViDetail>> {
    let vi = app::terminate::terminate(&state, &caller, id).await?;
    Ok(Json(changed_detail(&state, &vi).await?))
}
