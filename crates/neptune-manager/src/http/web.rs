//! The web console: its page at `/` and at every client-side URL of the
//! console, and its compiled-in files under `/assets/`, with the security
//! headers every console answer carries.
//!
//! The console is a client of the public API only; nothing here reads the
//! store. Client-side URLs are listed one by one (never a catch-all) so that
//! an unknown path, and anything under `/api/`, keeps its JSON 404.

use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use neptune_console::Asset;

use crate::AppState;

/// The page's policy: scripts, styles, fonts and connections from this
/// origin only (no inline script or style, no `eval`), images also as
/// `data:` URLs (the page's empty icon), never framed.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Client-side URLs of the console: each answers with its page, which
/// routes in the browser. Kept in step with `web/src/main.jsx`.
const PAGES: &[&str] = &[
    "/",
    "/login",
    "/design",
    "/design/{id}",
    "/vis",
    "/vis/{id}",
    "/templates",
    "/templates/{id}",
    "/account",
    "/admin",
    "/admin/queue",
    "/admin/queue/{id}",
    "/admin/hosts",
    "/admin/hosts/{name}",
    "/admin/datacenters",
    "/admin/datacenters/{name}",
    "/admin/templates",
    "/admin/users",
    "/admin/users/{name}",
];

pub(crate) fn router() -> Router<AppState> {
    let mut router = Router::new().route("/assets/{*file}", get(asset));
    for page in PAGES {
        router = router.route(page, get(index));
    }
    router.layer(axum::middleware::from_fn(security_headers))
}

/// The console's page.
#[utoipa::path(get, path = "/", responses((status = 200, description = "The web console (text/html)"),
    (status = 304, description = "The page named by If-None-Match is current")))]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    match neptune_console::index() {
        Some(page) => serve(page, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A file of the console (content-hashed name, cached for a year; gzip or
/// Brotli when accepted).
#[utoipa::path(get, path = "/assets/{file}", params(("file" = String, Path, description = "File name, as the page names it")),
    responses((status = 200, description = "The file"), (status = 304, description = "Not modified"),
        (status = 404, description = "No such file")))]
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match neptune_console::get(&format!("assets/{file}")) {
        Some(found) => serve(found, &headers),
        None => crate::error::ApiError::NotFound("console file").into_response(),
    }
}

/// Which precompressed form to send: Brotli, then gzip, then none, as the
/// client's `Accept-Encoding` allows (a `q=0` refuses a coding).
fn encoding(headers: &HeaderMap) -> Option<&'static str> {
    let accepted: Vec<String> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!refused).then_some(name)
        })
        .collect();
    ["br", "gzip"]
        .into_iter()
        .find(|coding| accepted.iter().any(|a| a == coding))
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == asset.etag || tag.trim() == "*")
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let (body, coding) = match encoding(headers) {
            Some("br") => (asset.brotli, Some("br")),
            Some(_) => (asset.gzip, Some("gzip")),
            None => (asset.body, None),
        };
        let mut response = body.into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if let Some(coding) = coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        response
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// Headers every answer of the console carries.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_best_accepted_coding_is_chosen() {
        assert_eq!(encoding(&accept("gzip, deflate, br, zstd")), Some("br"));
        assert_eq!(encoding(&accept("gzip")), Some("gzip"));
        assert_eq!(encoding(&accept("br;q=0, GZIP;q=0.5")), Some("gzip"));
        assert_eq!(encoding(&accept("identity")), None);
        assert_eq!(encoding(&HeaderMap::new()), None);
    }

    #[test]
    fn no_page_route_is_under_the_api() {
        assert!(PAGES
            .iter()
            .all(|p| !p.starts_with("/api") && !p.starts_with("/assets")));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
