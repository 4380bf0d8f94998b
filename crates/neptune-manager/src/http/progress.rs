//! The HTTP handlers of job progress: by polling and as a server-sent
//! event stream.

use neptune_types::{JobId, ViId};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use neptune_api as api;

use super::present::job_out;
use crate::app::access;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::AppState;

/// A job's progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = JobId, Path)), security(("bearer" = [])),
    responses((status = 200, body = api::Job), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn show_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<JobId>,
) -> ApiResult<Json<api::Job>> {
    let job = access::visible_job(&state, &caller, id).await?;
    Ok(Json(job_out(&state, &job)?))
}

/// A job's progress as server-sent events: one `progress` event (a Job) per
/// change, the stream ends after the job does.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", params(("id" = JobId, Path)), security(("bearer" = [])),
    responses((status = 200, description = "text/event-stream of `progress` events, each a Job"),
        (status = 404, body = api::ErrorBody)))]
pub(crate) async fn job_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<JobId>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let first = access::visible_job(&state, &caller, id).await?;
    // Polling the store keeps this right when another Manager runs the job.
    let stream = stream::unfold(
        (state, Some(first), None::<api::Job>, false),
        move |(state, next, last, done)| async move {
            if done {
                return None;
            }
            let mut record = next;
            loop {
                let job = match record.take() {
                    Some(j) => j,
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        match state.store.job(id).await {
                            Ok(j) => j,
                            Err(_) => return None,
                        }
                    }
                };
                let view = match job_out(&state, &job) {
                    Ok(view) => view,
                    Err(err) => {
                        tracing::error!(job = %id, error = %format!("{:#}", anyhow::Error::from(err)), "job progress cannot be shown");
                        return None;
                    }
                };
                if last.as_ref() != Some(&view) {
                    let finished = job.state.is_finished();
                    let event = SseEvent::default()
                        .event("progress")
                        .json_data(&view)
                        .unwrap_or_default();
                    return Some((Ok(event), (state, None, Some(view), finished)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A VI's jobs, oldest first.
#[utoipa::path(get, path = "/api/v1/vis/{id}/jobs", params(("id" = JobId, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<api::Job>), (status = 404, body = api::ErrorBody)))]
pub(crate) async fn vi_jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ViId>,
) -> ApiResult<Json<Vec<api::Job>>> {
    access::visible(&state, &caller, id).await?;
    Ok(Json(
        state
            .store
            .jobs_of_vi(id)
            .await?
            .iter()
            .map(|j| job_out(&state, j))
            .collect::<ApiResult<_>>()?,
    ))
}
