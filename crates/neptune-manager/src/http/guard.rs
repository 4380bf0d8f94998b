//! What every request passes through besides its handler: the body size
//! limits, the slots that bound how many designs are read at once, and the
//! one error shape `{code, message}` for the answers the framework itself
//! gives (a malformed body, an unknown route, a wrong method).

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use neptune_api::ErrorBody;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::AppState;

/// Largest request body, but for designs.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// Largest design request body (`POST /vis`, `PUT /vis/{id}`): the XML
/// dialect allows 16 MiB of text, which JSON escaping can at most double.
pub(crate) const MAX_DESIGN_BODY_BYTES: usize = 32 << 20;

/// A refused body whose declared length is at most this is read and
/// discarded after the refusal is sent, so that a client still sending it
/// can read the refusal instead of a reset connection. A larger one is not
/// read: the connection is closed after the refusal.
pub(crate) const DRAIN_BYTES: u64 = 64 << 20;

/// Designs read and parsed at once: each may take its body and a parse
/// several times its size, so their number bounds the Manager's memory.
pub(crate) const DESIGN_SLOTS: usize = 4;

/// Bounds how many design bodies are read at once. Only authenticated
/// callers wait for a slot, and the body deadline (see `server`) bounds
/// how long one is held.
pub(crate) async fn design_slot(
    State(state): State<AppState>,
    caller: Caller,
    mut req: Request,
    next: Next,
) -> ApiResult<Response> {
    // The handler reuses this caller instead of reading the token again.
    req.extensions_mut().insert(caller);
    let _slot = state
        .design_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| crate::error::ApiError::Internal(e.into()))?;
    Ok(next.run(req).await)
}

/// The semaphore behind [`design_slot`].
pub(crate) fn design_slots() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(DESIGN_SLOTS))
}

/// Refuses a body whose declared `Content-Length` is over its route's limit
/// before any handler runs. The framework's limit still bounds bodies sent
/// without a declared length.
pub(crate) async fn declared_length(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = body_limit(req.method(), req.uri().path());
    let Some(declared) = declared.filter(|&d| d > limit as u64) else {
        return next.run(req).await;
    };
    if declared <= DRAIN_BYTES {
        let mut body = req.into_body().into_data_stream();
        // The connection goes on reading while the refusal is written;
        // bounded by the declared length and by the server's body deadline.
        tokio::spawn(async move {
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut body).await {}
        });
    }
    let body = ErrorBody {
        code: "payload_too_large".to_owned(),
        message: format!("the request body is {declared} bytes; at most {limit} are accepted here"),
        details: Vec::new(),
    };
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONNECTION, "close")],
        Json(body),
    )
        .into_response()
}

/// Answers `refusal` to a request whose body (of `declared` bytes) its
/// handler did not read, and closes the connection after it. A body of
/// at most `DRAIN_BYTES` is read and dropped meanwhile, so that a client
/// that sends it whole before reading gets the answer rather than a
/// reset connection.
pub(crate) fn refuse_unread(
    refusal: crate::error::ApiError,
    declared: Option<u64>,
    body: axum::body::Body,
) -> Response {
    if declared.is_some_and(|d| d <= DRAIN_BYTES) {
        let mut body = body.into_data_stream();
        tokio::spawn(async move {
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut body).await {}
        });
    }
    let mut response = refusal.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// The body limit of a route: designs (`POST /api/v1/vis`,
/// `PUT /api/v1/vis/{id}`) have their own, and an image upload
/// (`POST /api/v1/templates/import`) is bounded by its handler, against the
/// configured largest image.
fn body_limit(method: &axum::http::Method, path: &str) -> usize {
    use axum::http::Method;
    if method == Method::POST && path == "/api/v1/templates/import" {
        return usize::MAX;
    }
    let vi = path.strip_prefix("/api/v1/vis");
    let design = match (method, vi) {
        (&Method::POST, Some("")) => true,
        (&Method::PUT, Some(rest)) => rest
            .strip_prefix('/')
            .is_some_and(|id| !id.is_empty() && !id.contains('/')),
        _ => false,
    };
    if design {
        MAX_DESIGN_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// Gives every error answer the API's shape: the framework's own
/// rejections (plain text) become `{code, message}` with the same text.
pub(crate) async fn error_shape(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The framework's texts are short; a longer one is not read whole.
    let text = to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let body = ErrorBody {
        code: code_of(status).to_owned(),
        message,
        details: Vec::new(),
    };
    let mut shaped = (status, Json(body)).into_response();
    // Keep what the framework said beside the body (`Allow`, for one).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    shaped
}

/// The error code of a status the framework answers with.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn plain(status: StatusCode, text: &'static str) -> Response {
        (status, Body::from(text)).into_response()
    }

    #[test]
    fn designs_have_their_own_body_limit() {
        use axum::http::Method;
        assert_eq!(
            body_limit(&Method::POST, "/api/v1/vis"),
            MAX_DESIGN_BODY_BYTES
        );
        assert_eq!(
            body_limit(&Method::PUT, "/api/v1/vis/12"),
            MAX_DESIGN_BODY_BYTES
        );
        assert_eq!(
            body_limit(&Method::POST, "/api/v1/vis/12/accept"),
            MAX_BODY_BYTES
        );
        assert_eq!(body_limit(&Method::PUT, "/api/v1/vis/"), MAX_BODY_BYTES);
        assert_eq!(
            body_limit(&Method::POST, "/api/v1/auth/login"),
            MAX_BODY_BYTES
        );
        assert_eq!(
            body_limit(&Method::POST, "/api/v1/visitors"),
            MAX_BODY_BYTES
        );
    }

    #[tokio::test]
    async fn framework_rejections_get_the_error_shape() {
        let app = axum::Router::new()
            .route(
                "/plain",
                get(|| async { plain(StatusCode::PAYLOAD_TOO_LARGE, "too big") }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(error_shape));
        let call = |uri: &'static str, method: &'static str| {
            let app = app.clone();
            async move {
                let req = Request::builder()
                    .uri(uri)
                    .method(method)
                    .body(Body::empty())
                    .unwrap();
                let res = app.oneshot(req).await.unwrap();
                let status = res.status();
                let allow = res.headers().get(header::ALLOW).cloned();
                let body = to_bytes(res.into_body(), 1 << 16).await.unwrap();
                (status, allow, body)
            }
        };
        let (status, _, body) = call("/plain", "GET").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.code, "payload_too_large");
        assert_eq!(body.message, "too big");

        let (status, _, body) = call("/nowhere", "GET").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (body.code.as_str(), body.message.as_str()),
            ("not_found", "Not Found")
        );

        let (status, allow, body) = call("/ok", "POST").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(allow.is_some(), "the Allow header is kept");
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.code, "method_not_allowed");

        let (status, _, body) = call("/ok", "GET").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"fine"[..]));
    }
}
