//! Cookie sessions for the web console: the same tokens as bearer tokens
//! (same store, same lifetime), carried in an `HttpOnly; SameSite=Strict`
//! cookie so that no script of the page can read them.
//!
//! A cookie is sent by the browser on its own, so a request authenticated by
//! it must prove it comes from the console: every state-changing one
//! (`POST`, `PUT`, `PATCH`, `DELETE`) carries `X-CSRF-Token`, a value derived
//! from the session token that only a page which logged in (or asked
//! `GET /api/v1/auth/session`, which another origin cannot read) knows, and
//! none may come from another origin (`Origin`, `Sec-Fetch-Site`). Bearer
//! tokens are untouched: a request with an `Authorization` header never looks
//! at the cookie.

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use neptune_api as api;
use sha2::{Digest, Sha256};

use super::user_out;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The cookie's name.
pub(crate) const COOKIE: &str = "neptune_session";

/// The header a cookie-authenticated state-changing request carries.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session token: a hash under its own label, so that
/// neither the stored token hash nor the CSRF token reveals the other.
pub(crate) fn csrf_token(session_token: &str) -> String {
    Sha256::new()
        .chain_update(b"neptune-console-csrf\0")
        .chain_update(session_token.as_bytes())
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal, in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session token of the request's cookie, if it has one.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Whether the method may change something (RFC 9110's unsafe methods).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a request another site made the browser send: an `Origin` that
/// is not this host's, or a fetch the browser itself marks cross-site.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused =
        || ApiError::Forbidden("a request from another origin cannot use a console session");
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Err(refused());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(refused()),
    }
}

/// The session token of a request without an `Authorization` header, taken
/// from its cookie; for a state-changing request only with a matching
/// `X-CSRF-Token` and from this origin.
pub(crate) fn authenticate_cookie(parts: &Parts) -> Result<&str, ApiError> {
    let token = cookie_token(&parts.headers).ok_or(ApiError::Unauthenticated)?;
    if changes_state(&parts.method) {
        same_origin(&parts.headers)?;
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !same_secret(sent, csrf_token(token).as_bytes()) {
            return Err(ApiError::Forbidden(
                "a console request that changes something needs its session's X-CSRF-Token header",
            ));
        }
    }
    Ok(token)
}

/// `Set-Cookie` for a session token (or, empty, one that clears it).
/// `Secure` when the console is reached over HTTPS (directly or through a
/// proxy that says so), which a browser requires before it sends it back.
fn set_cookie(headers: &HeaderMap, token: &str, max_age_s: i64) -> HeaderValue {
    let https = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if https { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        max_age_s.max(0)
    );
    // A token is hex and the rest is fixed text: always a valid header.
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("neptune_session=; Max-Age=0"))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Logs in for the web console: the session token goes into an `HttpOnly`,
/// `SameSite=Strict` cookie (`neptune_session`, path `/`, the session's
/// lifetime), the answer carries the CSRF token. Limited like
/// `POST /api/v1/auth/login`, and refused from another origin.
#[utoipa::path(post, path = "/api/v1/auth/session", request_body = api::LoginRequest,
    responses((status = 200, body = api::ConsoleSession,
            headers(("Set-Cookie" = String, description = "neptune_session=TOKEN; HttpOnly; SameSite=Strict; Path=/; Max-Age=SECONDS"))),
        (status = 401, body = api::ErrorBody), (status = 403, body = api::ErrorBody),
        (status = 429, body = api::ErrorBody)))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    peer: Option<Extension<crate::server::Peer>>,
    headers: HeaderMap,
    Json(req): Json<api::LoginRequest>,
) -> ApiResult<Response> {
    // A forged login would sign the victim into the attacker's account.
    same_origin(&headers)?;
    let Json(login) = super::login(State(state.clone()), peer, Json(req)).await?;
    let max_age = login
        .expires_at
        .map_or(state.config.session_ttl_ms, |at| at - crate::now_ms())
        / 1000;
    let body = api::ConsoleSession {
        csrf_token: csrf_token(&login.token),
        expires_at: login.expires_at,
        user: login.user,
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&headers, &login.token, max_age),
    );
    Ok(no_store(response))
}

/// The console session of the request's cookie: its user and CSRF token
/// (how a reloaded page learns them again).
#[utoipa::path(get, path = "/api/v1/auth/session", security(("cookie" = [])),
    responses((status = 200, body = api::ConsoleSession), (status = 401, body = api::ErrorBody)))]
pub(crate) async fn show_session(headers: HeaderMap, caller: Caller) -> ApiResult<Response> {
    let token = cookie_token(&headers).ok_or(ApiError::Unauthenticated)?;
    // A bearer request may carry someone's stale cookie; that is not its session.
    if crate::auth::token_hash(token) != caller.token_hash {
        return Err(ApiError::Unauthenticated);
    }
    Ok(no_store(
        Json(api::ConsoleSession {
            csrf_token: csrf_token(token),
            expires_at: None,
            user: user_out(&caller.user),
        })
        .into_response(),
    ))
}

/// Logs the console out: revokes the session token and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/auth/session", security(("cookie" = [])),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses((status = 204), (status = 401, body = api::ErrorBody), (status = 403, body = api::ErrorBody)))]
pub(crate) async fn delete_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
) -> ApiResult<Response> {
    state.store.delete_token(&caller.token_hash).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&headers, "", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; neptune_session=abc ; b=2")]);
        assert_eq!(cookie_token(&h), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "neptune_session=xyz")]);
        assert_eq!(cookie_token(&h), Some("xyz"));
        assert_eq!(
            cookie_token(&headers(&[("cookie", "neptune_session=")])),
            None
        );
        assert_eq!(
            cookie_token(&headers(&[("cookie", "xneptune_session=a")])),
            None
        );
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_token("one");
        assert_ne!(a, csrf_token("two"));
        assert_ne!(a, crate::auth::token_hash("one"));
        assert!(same_secret(a.as_bytes(), csrf_token("one").as_bytes()));
        assert!(!same_secret(a.as_bytes(), &a.as_bytes()[1..]));
        assert!(!same_secret(b"", a.as_bytes()));
    }

    #[test]
    fn only_this_origin_may_use_a_session() {
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin(&ok).is_ok());
        assert!(
            same_origin(&headers(&[("host", "a:1")])).is_ok(),
            "no Origin: not a browser's cross-origin request"
        );
        let other = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(same_origin(&other).is_err());
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(same_origin(&null).is_err());
        let site = headers(&[("host", "a:1"), ("sec-fetch-site", "cross-site")]);
        assert!(same_origin(&site).is_err());
    }
}
