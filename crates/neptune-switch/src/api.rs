//! The control API (HTTP JSON). Every call is authenticated (see [`crate::auth`]).
//!
//! | method | path | body | effect |
//! | --- | --- | --- | --- |
//! | GET | `/v1/health` | | `{"status":"ok"}` |
//! | GET | `/v1/state` | | home prefixes, peers, table, data plane counters |
//! | PUT | `/v1/bindings/{home}` | [`MobilityBinding`] | bind a Home Address to a Care-of Address |
//! | DELETE | `/v1/bindings/{home}?generation=N` | | end a binding |
//! | PUT | `/v1/visitors/{addr}` | [`Visitor`] | deliver an address hosted here |
//! | DELETE | `/v1/visitors/{addr}?generation=N` | | stop delivering it |
//!
//! PUT and DELETE are idempotent: a repeat answers `200` with
//! `"outcome":"unchanged"`. An older generation answers `409`; an address
//! outside the home prefixes or a care-of address that is not a peer `422`;
//! a missing, stale, replayed or wrong signature `401` (also a timestamp not
//! after the switch's start: see [`crate::auth::ReplayMark`]). Every error
//! answers an [`ErrorBody`], `{"code", "message"}`, as every Neptune API
//! does; the codes are [`codes`].
//!
//! Every accepted update is applied to the data plane, then persisted
//! (atomically), then answered; if it cannot be persisted the data plane is
//! rolled back and the call fails, so an answered update is always on disk.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{self, Verifier};
use crate::config::SwitchConfig;
use crate::dataplane::{DataPlane, DataPlaneStats};
use crate::prefix::Ipv4Prefix;
use crate::state::{MobilityBinding, Outcome, Policy, Refusal, SwitchTable, Visitor};

/// The switch as the API sees it.
#[derive(Debug)]
pub struct App {
    config: SwitchConfig,
    inner: Mutex<Inner>,
    plane: Arc<dyn DataPlane>,
}

#[derive(Debug)]
struct Inner {
    table: SwitchTable,
    verifier: Verifier,
}

/// `GET /v1/state`.
#[derive(Debug, Serialize)]
pub struct StateView<'a> {
    /// Switch name.
    pub name: &'a str,
    /// Its Care-of Address.
    pub care_of: Ipv4Addr,
    /// Home prefixes.
    pub home_prefixes: &'a [Ipv4Prefix],
    /// Peers.
    pub peers: &'a [Ipv4Addr],
    /// The table.
    pub table: &'a SwitchTable,
    /// Data plane counters.
    pub data_plane: DataPlaneStats,
}

/// Largest request body accepted (the framework's default, made explicit
/// so that the refusal can say it).
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// The body of every error the control API answers: the shape of every
/// Neptune API, a stable machine `code` (one of [`codes`]) and a `message`
/// for people, which may change between versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One of [`codes`].
    pub code: String,
    /// For people.
    pub message: String,
}

/// The error codes of [`ErrorBody::code`], with their HTTP statuses. Where
/// the Manager's API has a code for the same meaning, the switch uses it.
pub mod codes {
    /// 400: the body is not the JSON described, an address is not IPv4, a
    /// DELETE has no `?generation=N`.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// 401: missing, malformed, stale, replayed or wrongly signed.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// 404: no such path.
    pub const NOT_FOUND: &str = "not_found";
    /// 405: a known path with another method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 408: the body did not arrive in time (answered by `neptune-http`).
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    /// 409: a generation older than the address's current one, or the same
    /// generation with different content.
    pub const STALE_GENERATION: &str = "stale_generation";
    /// 413: the body is larger than [`super::MAX_BODY_BYTES`].
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// 422: well formed, but refused by this switch's configuration or a
    /// field's range (outside the home prefixes, not a peer, `vi`, `key`,
    /// `port`).
    pub const REFUSED: &str = "refused";
    /// 429: correctly signed, but the replay window already holds the most
    /// nonces it remembers; sign again later.
    pub const TOO_MANY_REQUESTS: &str = "too_many_requests";
    /// 500: the table or the replay mark could not be written (nothing changed).
    pub const INTERNAL: &str = "internal";
    /// 503: persisted, but the data plane could not apply it yet; retried.
    pub const DATA_PLANE_PENDING: &str = "data_plane_pending";
}

/// An API error, converted to HTTP here and only here.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    Method,
    #[error("persisting the table failed; nothing changed")]
    Persist(#[source] std::io::Error),
    #[error("persisted, but the data plane is not yet applied (retrying): {0}")]
    Apply(String),
    #[error("internal state poisoned")]
    Poisoned,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Auth(auth::AuthError::Unrecorded) => {
                (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL)
            }
            ApiError::Auth(auth::AuthError::Busy) => {
                (StatusCode::TOO_MANY_REQUESTS, codes::TOO_MANY_REQUESTS)
            }
            ApiError::Auth(_) => (StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED),
            ApiError::Refused(
                Refusal::StaleGeneration { .. } | Refusal::GenerationReused { .. },
            ) => (StatusCode::CONFLICT, codes::STALE_GENERATION),
            ApiError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::REFUSED),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE),
            ApiError::NotFound => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            ApiError::Method => (StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED),
            ApiError::Persist(_) | ApiError::Poisoned => {
                (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL)
            }
            ApiError::Apply(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::DATA_PLANE_PENDING),
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.status_and_code().1.to_owned(),
            message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(error = %self, cause = ?std::error::Error::source(&self).map(ToString::to_string), "request failed");
        }
        (status, Json(self.body())).into_response()
    }
}

impl App {
    /// Assembles the app; the table must already be applied to the plane.
    pub fn new(
        config: SwitchConfig,
        verifier: Verifier,
        table: SwitchTable,
        plane: Arc<dyn DataPlane>,
    ) -> Self {
        App {
            config,
            inner: Mutex::new(Inner { table, verifier }),
            plane,
        }
    }

    /// Puts back what the data plane owns, then re-applies the whole table
    /// (repairs drift).
    pub fn reconcile(&self) {
        // Outside the lock: it touches nothing the table decides, and the
        // API need not wait for it.
        if let Err(e) = self.plane.repair() {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(e)),
                "repairing the data plane"
            );
        }
        // Applied under the lock: a copy applied after the lock is released
        // could land after an update and undo it, sending a moved address
        // to its previous switch until the next round (a stall of a whole
        // reconcile period).
        let Ok(inner) = self.inner.lock() else {
            return;
        };
        let table = &inner.table;
        if let Err(e) = self.plane.apply(table, &table.addresses()) {
            tracing::debug!(error = %anyhow::Error::from(e), "reconcile incomplete");
        }
    }

    fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut inner = self.inner.lock().map_err(|_| ApiError::Poisoned)?;
        inner.verifier.verify(
            auth::unix_now(),
            method.as_str(),
            target,
            header("authorization"),
            header(auth::TIMESTAMP_HEADER),
            header(auth::NONCE_HEADER),
            body,
        )?;
        let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["v1", "health"]) => Ok(Json(json!({ "status": "ok" })).into_response()),
            (&Method::GET, ["v1", "state"]) => {
                let view = StateView {
                    name: &self.config.name,
                    care_of: self.config.care_of,
                    home_prefixes: &self.config.home_prefixes,
                    peers: &self.config.peers,
                    table: &inner.table,
                    data_plane: self.plane.stats(),
                };
                Ok(Json(view).into_response())
            }
            (m, ["v1", kind @ ("bindings" | "visitors"), addr]) => {
                let addr: Ipv4Addr = addr.parse().map_err(|_| {
                    ApiError::InvalidRequest(format!("{addr:?} is not an IPv4 address"))
                })?;
                let mut next = inner.table.clone();
                let policy = Policy {
                    home_prefixes: &self.config.home_prefixes,
                    peers: &self.config.peers,
                };
                let outcome = match (m, *kind) {
                    (&Method::PUT, "bindings") => {
                        next.put_binding(&policy, addr, parse_body::<MobilityBinding>(body)?)?
                    }
                    (&Method::PUT, "visitors") => {
                        next.put_visitor(&policy, addr, parse_body::<Visitor>(body)?)?
                    }
                    (&Method::DELETE, "bindings") => next.delete_binding(addr, generation(uri)?)?,
                    (&Method::DELETE, "visitors") => next.delete_visitor(addr, generation(uri)?)?,
                    _ => return Err(ApiError::Method),
                };
                let apply_err = |e| ApiError::Apply(format!("{:#}", anyhow::Error::from(e)));
                if outcome == Outcome::Changed || next != inner.table {
                    // Data plane first, so packets follow the move without
                    // waiting for the disk; the answer waits for both. If the
                    // table cannot be persisted, the data plane is rolled back.
                    let applied = self.plane.apply(&next, &[addr]);
                    if let Err(e) = next.save(&self.config.state_file) {
                        let _ = self.plane.apply(&inner.table, &[addr]);
                        return Err(ApiError::Persist(e));
                    }
                    inner.table = next;
                    tracing::info!(%addr, kind = *kind, method = %m, forwarding = ?inner.table.forwarding(addr), "table updated");
                    applied.map_err(apply_err)?;
                } else {
                    // A repeat also repairs the data plane.
                    self.plane.apply(&inner.table, &[addr]).map_err(apply_err)?;
                }
                Ok(Json(json!({ "outcome": outcome })).into_response())
            }
            (_, ["v1", "health" | "state"]) => Err(ApiError::Method),
            _ => Err(ApiError::NotFound),
        }
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not the JSON described: {e}")))
}

fn generation(uri: &Uri) -> Result<u64, ApiError> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("generation="))
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| ApiError::InvalidRequest("DELETE needs ?generation=N".into()))
}

async fn handler(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The framework's own refusals (a body over the limit) answer in the
    // same shape as the switch's.
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::PayloadTooLarge.into_response()
        }
        Err(e) => {
            return ApiError::InvalidRequest(format!("reading the body: {}", e.body_text()))
                .into_response()
        }
    };
    match app.handle(&method, &uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The router of the control API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .fallback(handler)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SwitchKey;
    use crate::dataplane::sim::SimulatedPlane;

    fn app(dir: &std::path::Path) -> (App, SwitchKey) {
        let key = SwitchKey::new(b"test key of enough bytes".to_vec()).unwrap();
        let config: SwitchConfig = serde_json::from_value(json!({
            "listen": "127.0.0.1:0", "state_file": dir.join("t.json"), "key_file": dir.join("k"),
            "care_of": "198.18.1.2", "home_prefixes": ["203.0.113.0/24"], "peers": ["198.18.2.2"]
        }))
        .unwrap();
        let plane: Arc<dyn DataPlane> = Arc::new(SimulatedPlane::default());
        (
            App::new(
                config,
                Verifier::new(key.clone(), 30),
                SwitchTable::default(),
                plane,
            ),
            key,
        )
    }

    fn call(app: &App, key: &SwitchKey, method: Method, target: &str, body: &str) -> StatusCode {
        let mut headers = HeaderMap::new();
        for (k, v) in auth::signed_headers(key, method.as_str(), target, body.as_bytes()) {
            headers.insert(k, v.parse().unwrap());
        }
        let uri: Uri = target.parse().unwrap();
        match app.handle(&method, &uri, &headers, body.as_bytes()) {
            Ok(r) => r.status(),
            Err(e) => e.into_response().status(),
        }
    }

    /// The error an API call answers with (panics if it succeeds).
    fn refusal(app: &App, key: &SwitchKey, method: Method, target: &str, body: &str) -> ErrorBody {
        let mut headers = HeaderMap::new();
        for (k, v) in auth::signed_headers(key, method.as_str(), target, body.as_bytes()) {
            headers.insert(k, v.parse().unwrap());
        }
        let uri: Uri = target.parse().unwrap();
        match app.handle(&method, &uri, &headers, body.as_bytes()) {
            Ok(r) => panic!("{method} {target} succeeded: {}", r.status()),
            Err(e) => e.body(),
        }
    }

    #[test]
    fn errors_answer_a_code_and_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let (app, key) = app(dir.path());
        let b = r#"{"care_of":"198.18.2.2","vi":"vi-1","key":7,"generation":1}"#;
        assert_eq!(
            call(&app, &key, Method::PUT, "/v1/bindings/203.0.113.10", b),
            StatusCode::OK
        );
        let cases = [
            (
                Method::PUT,
                "/v1/bindings/203.0.113.10",
                "{",
                codes::INVALID_REQUEST,
            ),
            (
                Method::PUT,
                "/v1/bindings/not-an-address",
                b,
                codes::INVALID_REQUEST,
            ),
            (
                Method::DELETE,
                "/v1/bindings/203.0.113.10",
                "",
                codes::INVALID_REQUEST,
            ),
            (Method::PUT, "/v1/bindings/192.0.2.1", b, codes::REFUSED),
            (
                Method::DELETE,
                "/v1/bindings/203.0.113.10?generation=0",
                "",
                codes::STALE_GENERATION,
            ),
            (Method::GET, "/v1/nothing", "", codes::NOT_FOUND),
            (Method::PUT, "/v1/state", "", codes::METHOD_NOT_ALLOWED),
        ];
        for (method, target, body, code) in cases {
            let e = refusal(&app, &key, method.clone(), target, body);
            assert_eq!(e.code, code, "{method} {target}: {e:?}");
            assert!(!e.message.is_empty(), "{method} {target}: {e:?}");
        }
        let stale = refusal(
            &app,
            &key,
            Method::DELETE,
            "/v1/bindings/203.0.113.10?generation=0",
            "",
        );
        assert_eq!(
            stale.message,
            "generation 0 of 203.0.113.10 is older than the current 1"
        );
        let other = SwitchKey::new(b"some other key, wrong".to_vec()).unwrap();
        let e = refusal(&app, &other, Method::GET, "/v1/health", "");
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (codes::UNAUTHENTICATED, "bad signature")
        );

        // On the wire: exactly the two fields, as every Neptune API answers.
        let response = ApiError::from(auth::AuthError::Busy).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
            .unwrap();
        let wire: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            wire,
            json!({"code": "too_many_requests", "message": "too many requests in the replay window"})
        );
    }

    #[test]
    fn binding_lifecycle_over_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let (app, key) = app(dir.path());
        let b = r#"{"care_of":"198.18.2.2","vi":"vi-1","key":7,"generation":1}"#;
        assert_eq!(
            call(&app, &key, Method::PUT, "/v1/bindings/203.0.113.10", b),
            StatusCode::OK
        );
        assert_eq!(
            call(&app, &key, Method::PUT, "/v1/bindings/203.0.113.10", b),
            StatusCode::OK
        );
        let persisted = SwitchTable::load(&dir.path().join("t.json")).unwrap();
        assert_eq!(persisted.bindings.len(), 1);
        let outside = r#"{"care_of":"198.18.2.2","vi":"vi-1","key":7,"generation":1}"#;
        assert_eq!(
            call(&app, &key, Method::PUT, "/v1/bindings/192.0.2.1", outside),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let non_peer = r#"{"care_of":"192.0.2.66","vi":"vi-1","key":7,"generation":2}"#;
        assert_eq!(
            call(
                &app,
                &key,
                Method::PUT,
                "/v1/bindings/203.0.113.10",
                non_peer
            ),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            call(
                &app,
                &key,
                Method::DELETE,
                "/v1/bindings/203.0.113.10?generation=0",
                ""
            ),
            StatusCode::CONFLICT
        );
        assert_eq!(
            call(
                &app,
                &key,
                Method::DELETE,
                "/v1/bindings/203.0.113.10?generation=2",
                ""
            ),
            StatusCode::OK
        );
        assert_eq!(
            call(&app, &key, Method::DELETE, "/v1/bindings/203.0.113.10", ""),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&app, &key, Method::PUT, "/v1/bindings/203.0.113.10", "{"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&app, &key, Method::GET, "/v1/state", ""),
            StatusCode::OK
        );
        assert_eq!(
            call(&app, &key, Method::GET, "/v1/nothing", ""),
            StatusCode::NOT_FOUND
        );
        let other = SwitchKey::new(b"some other key, wrong".to_vec()).unwrap();
        assert_eq!(
            call(&app, &other, Method::GET, "/v1/health", ""),
            StatusCode::UNAUTHORIZED
        );
    }

    /// A plane whose first apply after `arm` (the reconciler's) stops until
    /// released; remembers the last forwarding applied per address.
    #[derive(Debug, Default)]
    struct GatedPlane {
        gate: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
        last: Mutex<std::collections::HashMap<Ipv4Addr, crate::state::Forwarding>>,
    }

    impl DataPlane for GatedPlane {
        fn kind(&self) -> &'static str {
            "gated"
        }
        fn apply(
            &self,
            table: &SwitchTable,
            addrs: &[Ipv4Addr],
        ) -> Result<(), crate::dataplane::DataPlaneError> {
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, release)) = gate {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            let mut last = self.last.lock().unwrap();
            for a in addrs {
                last.insert(*a, table.forwarding(*a));
            }
            Ok(())
        }
        fn stats(&self) -> crate::dataplane::DataPlaneStats {
            crate::dataplane::DataPlaneStats::default()
        }
    }

    #[test]
    fn a_reconcile_round_never_undoes_an_update_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (app, key) = app(dir.path());
        let plane = Arc::new(GatedPlane::default());
        let app = Arc::new(App::new(
            app.config.clone(),
            Verifier::new(key.clone(), 30),
            SwitchTable::default(),
            plane.clone(),
        ));
        let home: Ipv4Addr = "203.0.113.10".parse().unwrap();
        let b = r#"{"care_of":"198.18.2.2","vi":"vi-1","key":7,"generation":1}"#;
        assert_eq!(
            call(&app, &key, Method::PUT, "/v1/bindings/203.0.113.10", b),
            StatusCode::OK
        );
        // The reconciler starts a round with the binding, and stops inside.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        *plane.gate.lock().unwrap() = Some((entered_tx, release_rx));
        let round = std::thread::spawn({
            let app = app.clone();
            move || app.reconcile()
        });
        entered_rx.recv().unwrap();
        // Meanwhile the VI comes home: the binding goes.
        let update = std::thread::spawn({
            let (app, key) = (app.clone(), key.clone());
            move || {
                call(
                    &app,
                    &key,
                    Method::DELETE,
                    "/v1/bindings/203.0.113.10?generation=2",
                    "",
                )
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        release_tx.send(()).unwrap();
        round.join().unwrap();
        assert_eq!(update.join().unwrap(), StatusCode::OK);
        assert_eq!(
            plane.last.lock().unwrap().get(&home),
            Some(&crate::state::Forwarding::Absent),
            "the reconcile round put back the binding the update removed"
        );
    }
}
