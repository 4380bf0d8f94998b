//! The Agent's HTTP server: the routes of [`crate::api`] over a
//! [`Hypervisor`], behind bearer-token authentication.
//!
//! [`HypervisorError`]s become [`ErrorBody`]s here, at the edge, and
//! nowhere else.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use neptune_hypervisor::{validate_vm_name, Hypervisor, HypervisorError, VmInfo, VmSpec};
use neptune_types::Secret;
use subtle::ConstantTimeEq as _;

use crate::api::{self, codes, ErrorBody};

/// What the handlers share.
#[derive(Debug, Clone)]
pub(crate) struct ServerState {
    pub(crate) hypervisor: Arc<dyn Hypervisor>,
    pub(crate) name: String,
    pub(crate) datacenter: String,
    pub(crate) token: Arc<Secret>,
    pub(crate) migrations: Arc<crate::migrations::Migrations>,
}

/// The Agent API router over `state`.
pub(crate) fn router(state: ServerState) -> Router {
    let v1 = Router::new()
        .route("/v1/host", get(host))
        .route("/v1/vms", get(list_vms))
        .route("/v1/vms/{name}", get(get_vm).put(define).delete(destroy))
        .route("/v1/vms/{name}/disk", put(prepare_disk).delete(remove_disk))
        .route("/v1/vms/{name}/disk/export", post(export_disk))
        .route("/v1/vms/{name}/start", post(start))
        .route("/v1/vms/{name}/save", post(save))
        .route("/v1/vms/{name}/restore", post(restore))
        .route("/v1/vms/{name}/console", get(console).post(console_input))
        .route("/v1/vms/{name}/outgoing", get(outgoing))
        .route("/v1/incoming", post(accept_incoming))
        .route("/v1/vms/{name}/migrate", post(migrate))
        .route("/v1/vms/{name}/migration", get(migration))
        .route("/v1/vms/{name}/arrival", get(arrival))
        .route("/v1/vms/{name}/arrived", post(arrived))
        .route("/v1/networks/join", post(join_segments))
        .route("/v1/batch", post(batch))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        // Public, as the Manager's own `/api/v1/openapi.json`: the
        // contract says nothing of a host.
        .route(api::OPENAPI_PATH, get(openapi_json))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// A refusal on its way out.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
                details: Vec::new(),
            },
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }
}

impl From<HypervisorError> for ApiError {
    fn from(e: HypervisorError) -> Self {
        use HypervisorError as E;
        let (status, code, detail) = match &e {
            E::NoSuchVm(_) => (StatusCode::NOT_FOUND, codes::NO_SUCH_VM, None),
            E::SpecMismatch { .. } => (StatusCode::CONFLICT, codes::SPEC_MISMATCH, None),
            E::NoRoom(d) => (StatusCode::CONFLICT, codes::NO_ROOM, Some(d.clone())),
            E::NoDisk(_) => (StatusCode::NOT_FOUND, codes::NO_DISK, None),
            E::NoImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::NO_IMAGE, None),
            E::NoSavedState(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::NO_SAVED_STATE,
                None,
            ),
            E::InvalidRequest(d) => (
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                Some(d.clone()),
            ),
            E::Failed { message, .. } => (
                StatusCode::BAD_GATEWAY,
                codes::HYPERVISOR_FAILED,
                Some(message.clone()),
            ),
            E::Unreachable(d) => (
                StatusCode::SERVICE_UNAVAILABLE,
                codes::HYPERVISOR_UNREACHABLE,
                Some(d.clone()),
            ),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "hypervisor operation failed");
        }
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: e.to_string(),
                details: detail.into_iter().collect(),
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        // The codes the Manager and the switch give the same refusals.
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(e.status(), codes::PAYLOAD_TOO_LARGE, e.body_text())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::new(e.status(), codes::UNSUPPORTED_MEDIA_TYPE, e.body_text())
            }
            _ => ApiError::invalid(e.body_text()),
        }
    }
}

impl ApiError {
    /// The body of a refusal, for a failure reported later (a move's).
    fn body_of(e: HypervisorError) -> ErrorBody {
        ApiError::from(e).body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Refuses every request without the right bearer token. The comparison
/// takes the same time wherever the tokens differ; the token is never
/// logged nor echoed.
async fn authenticate(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let ok = given.is_some_and(|g| bool::from(g.ct_eq(state.token.expose().as_bytes())));
    if ok {
        next.run(req).await
    } else {
        tracing::debug!(path = %req.uri().path(), "refused a request without the agent token");
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHENTICATED,
            "a valid agent token is required (Authorization: Bearer <token>)",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        resp
    }
}

/// One debug line per request: method, path, status, time. Never headers
/// (the token travels in one).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "agent request"
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "this path takes another method",
    )
}

async fn healthz() -> Json<api::Health> {
    Json(api::Health {
        status: "ok".into(),
    })
}

/// The Agent API's OpenAPI document: the one checked in as
/// `openapi/agent.json`, built from the same contract.
async fn openapi_json() -> impl IntoResponse {
    Json(api::openapi())
}

async fn host(State(s): State<ServerState>) -> Json<api::HostInfo> {
    Json(api::HostInfo {
        name: s.name.clone(),
        datacenter: s.datacenter.clone(),
        capacity: s.hypervisor.capacity(),
    })
}

async fn list_vms(State(s): State<ServerState>) -> ApiResult<Json<Vec<VmInfo>>> {
    Ok(Json(s.hypervisor.list().await?))
}

/// The `{name}` of a `/v1/vms/{name}...` path, checked to be a VM name.
struct VmName(String);

impl<S: Send + Sync> FromRequestParts<S> for VmName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        validate_vm_name(&name)?;
        Ok(VmName(name))
    }
}

fn same_name(path: &str, spec: &VmSpec) -> ApiResult<()> {
    if spec.name == path {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "the path names VM {path:?} but the spec names {:?}",
            spec.name
        )))
    }
}

async fn get_vm(State(s): State<ServerState>, VmName(name): VmName) -> ApiResult<Json<VmInfo>> {
    s.hypervisor
        .info(&name)
        .await?
        .map(Json)
        .ok_or_else(|| HypervisorError::NoSuchVm(name).into())
}

async fn prepare_disk(
    State(s): State<ServerState>,
    VmName(name): VmName,
    body: Result<Json<api::PrepareDisk>, JsonRejection>,
) -> ApiResult<Json<api::Disk>> {
    let Json(req) = body?;
    let disk = s
        .hypervisor
        .prepare_disk(&name, &req.template_image, req.size_mib)
        .await?;
    Ok(Json(api::Disk { disk }))
}

async fn remove_disk(State(s): State<ServerState>, VmName(name): VmName) -> ApiResult<StatusCode> {
    s.hypervisor.remove_disk(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn export_disk(
    State(s): State<ServerState>,
    VmName(name): VmName,
    body: Result<Json<api::ExportDisk>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    s.hypervisor.export_disk(&name, &req.dest).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn define(
    State(s): State<ServerState>,
    VmName(name): VmName,
    body: Result<Json<VmSpec>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(spec) = body?;
    same_name(&name, &spec)?;
    s.hypervisor.define(&spec).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start(State(s): State<ServerState>, VmName(name): VmName) -> ApiResult<StatusCode> {
    s.hypervisor.start(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn save(
    State(s): State<ServerState>,
    VmName(name): VmName,
    body: Result<Json<api::SaveVm>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    s.hypervisor.save(&name, &req.state_path).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restore(
    State(s): State<ServerState>,
    VmName(name): VmName,
    body: Result<Json<api::RestoreVm>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    same_name(&name, &req.spec)?;
    s.hypervisor.restore(&req.spec, &req.state_path).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn console(
    State(s): State<ServerState>,
    VmName(name): VmName,
    query: Result<
        axum::extract::Query<api::ConsoleQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> ApiResult<Json<api::Console>> {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let bytes = q
        .bytes
        .unwrap_or(api::DEFAULT_CONSOLE_BYTES)
        .min(api::MAX_CONSOLE_BYTES);
    let text = s.hypervisor.console(&name, bytes).await?;
    Ok(Json(api::Console { text }))
}

async fn console_input(
    State(s): State<ServerState>,
    VmName(name): VmName,
    body: Result<Json<api::ConsoleInput>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    s.hypervisor
        .console_input(&name, req.input.as_bytes())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn destroy(State(s): State<ServerState>, VmName(name): VmName) -> ApiResult<StatusCode> {
    s.hypervisor.destroy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn outgoing(
    State(s): State<ServerState>,
    VmName(name): VmName,
) -> ApiResult<Json<api::Outgoing>> {
    Ok(Json(s.hypervisor.outgoing(&name).await?))
}

async fn accept_incoming(
    State(s): State<ServerState>,
    body: Result<Json<api::IncomingRequest>, JsonRejection>,
) -> ApiResult<Json<api::Incoming>> {
    let Json(req) = body?;
    validate_vm_name(&req.spec.name)?;
    Ok(Json(s.hypervisor.accept_incoming(&req).await?))
}

async fn migrate(
    State(s): State<ServerState>,
    VmName(name): VmName,
    body: Result<Json<api::Incoming>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<api::Migration>)> {
    let Json(to) = body?;
    if to.vm != name {
        return Err(ApiError::invalid(format!(
            "the path names VM {name:?} but the destination accepted {:?}",
            to.vm
        )));
    }
    // A move that succeeded before is this move only if the VM left.
    let here = s.hypervisor.info(&name).await?.is_some();
    let status = s
        .migrations
        .start(s.hypervisor.clone(), &name, here, to, ApiError::body_of);
    Ok((StatusCode::ACCEPTED, Json(status)))
}

async fn migration(
    State(s): State<ServerState>,
    VmName(name): VmName,
    query: Result<
        axum::extract::Query<api::MigrationQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> ApiResult<Json<api::Migration>> {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let wait =
        std::time::Duration::from_millis(q.wait_ms.unwrap_or(0).min(api::MAX_MIGRATION_WAIT_MS));
    s.migrations
        .get_changed(&name, wait)
        .await
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                codes::NOT_FOUND,
                format!("no live move of VM {name:?} is known here"),
            )
        })
}

async fn arrival(
    State(s): State<ServerState>,
    VmName(name): VmName,
    query: Result<
        axum::extract::Query<api::ArrivalQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> ApiResult<Json<api::Arrival>> {
    let axum::extract::Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let wait =
        std::time::Duration::from_millis(q.wait_ms.unwrap_or(0).min(api::MAX_ARRIVAL_WAIT_MS));
    let running = s.hypervisor.wait_running(&name, wait).await?;
    Ok(Json(api::Arrival { vm: name, running }))
}

async fn join_segments(
    State(s): State<ServerState>,
    body: Result<Json<api::JoinSegments>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    s.hypervisor.join_segments(&req.networks).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn batch(
    State(s): State<ServerState>,
    body: Result<Json<api::Batch>, JsonRejection>,
) -> ApiResult<Json<api::BatchAnswer>> {
    let Json(req) = body?;
    if req.ops.len() > api::MAX_BATCH_OPS {
        return Err(ApiError::invalid(format!(
            "{} operations in one batch: at most {}",
            req.ops.len(),
            api::MAX_BATCH_OPS
        )));
    }
    // Every name is checked before anything runs, as each route checks its own.
    for op in &req.ops {
        validate_vm_name(op.vm())?;
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(
        neptune_hypervisor::BATCH_PARALLEL,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, op) in req.ops.into_iter().enumerate() {
        let hv = s.hypervisor.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, op.run(hv.as_ref()).await)
        });
    }
    let mut results: Vec<Option<api::BatchResult>> = Vec::new();
    results.resize_with(tasks.len(), || None);
    while let Some(done) = tasks.join_next().await {
        let (i, outcome) = done.map_err(|e| {
            ApiError::from(HypervisorError::Failed {
                op: neptune_hypervisor::Op::Define,
                vm: String::new(),
                message: format!("a batch operation's task failed: {e}"),
            })
        })?;
        results[i] = Some(match outcome {
            Ok(out) => api::BatchResult {
                ok: Some(out),
                error: None,
            },
            Err(e) => api::BatchResult {
                ok: None,
                error: Some(ApiError::body_of(e)),
            },
        });
    }
    Ok(Json(api::BatchAnswer {
        results: results.into_iter().flatten().collect(),
    }))
}

async fn arrived(State(s): State<ServerState>, VmName(name): VmName) -> ApiResult<StatusCode> {
    s.hypervisor.finish_incoming(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
