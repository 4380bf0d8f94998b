//! The web console as the Manager serves it: its page and files with their
//! security and cache headers, and the cookie session with its CSRF and
//! origin checks. (What a browser does with them is web/tests/.)

use reqwest::header::{HeaderMap, HeaderValue};

use super::*;

async fn get(m: &TestManager, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = m.http.get(format!("{}{path}", m.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_its_headers() {
    let m = start(Db::Sqlite).await.unwrap();
    let page = get(&m, "/", &[]).await;
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert!(header(&h, "content-type").starts_with("text/html"));
    let csp = header(&h, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "referrer-policy"), "no-referrer");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    let etag = header(&h, "etag").to_owned();
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert!(
        script.starts_with("/assets/") && script.ends_with(".js"),
        "{script}"
    );

    // Revalidation.
    let again = get(&m, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // Every client-side URL is the same page; nothing under /api is shadowed.
    for path in [
        "/vis",
        "/design",
        "/admin/queue",
        "/vis/6c1b8a1e-7c38-4a4e-9a55-3d5c2b1e0f00",
        // Each resource's own page: a reload or a pasted URL opens it.
        "/admin/hosts/napoli-1",
        "/admin/datacenters",
        "/admin/datacenters/napoli",
        "/admin/users/alice.b",
        "/templates/6c1b8a1e-7c38-4a4e-9a55-3d5c2b1e0f00",
        "/account",
    ] {
        let r = get(&m, path, &[]).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.text().await.unwrap(), html, "{path}");
    }
    for path in [
        "/api/v1/nothing",
        "/vis/a/b",
        "/nothing",
        "/assets/none.js",
        "/admin/hosts/napoli-1/more",
        "/admin/users/",
        "/templates/a/b",
    ] {
        let r = get(&m, path, &[]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["code"].is_string(), "{path}: {body}");
    }

    // Files: compressed when accepted, cached for good, revalidated by ETag.
    let plain = get(&m, &script, &[]).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(header(plain.headers(), "content-encoding").is_empty());
    assert!(header(plain.headers(), "content-type").starts_with("text/javascript"));
    assert!(header(plain.headers(), "cache-control").contains("immutable"));
    let plain_len = plain.bytes().await.unwrap().len();
    let gz = get(&m, &script, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(gz.headers(), "content-encoding"), "gzip");
    assert_eq!(header(gz.headers(), "vary"), "Accept-Encoding");
    let etag = header(gz.headers(), "etag").to_owned();
    let gz = gz.bytes().await.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    assert!(gz.len() * 2 < plain_len, "{} of {plain_len}", gz.len());
    let br = get(&m, &script, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(header(br.headers(), "content-encoding"), "br");
    let cached = get(&m, &script, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
}

/// The session cookie's `name=value` from a `Set-Cookie`.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

async fn send(
    m: &TestManager,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = m.http.request(method, format!("{}{path}", m.base));
    for (k, v) in headers {
        req = req.header(*k, HeaderValue::from_str(v).unwrap());
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, headers, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_need_csrf_and_this_origin() {
    let m = start(Db::Sqlite).await.unwrap();
    let people = m.people().await;
    let origin = m.base.clone();
    let login = json!({"name": "alice", "password": "alice-password"});

    // A wrong password sets no cookie; another origin may not log in.
    let wrong = json!({"name": "alice", "password": "wrong"});
    let (s, h, _) = send(&m, Method::POST, "/api/v1/auth/session", &[], Some(wrong)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.get("set-cookie").is_none());
    let evil = [("origin", "http://evil.example")];
    let (s, h, _) = send(
        &m,
        Method::POST,
        "/api/v1/auth/session",
        &evil,
        Some(login.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(h.get("set-cookie").is_none());

    let (s, h, session) = send(
        &m,
        Method::POST,
        "/api/v1/auth/session",
        &[("origin", &origin)],
        Some(login),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{session}");
    let set_cookie = header(&h, "set-cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        session.get("token").is_none(),
        "the token stays in the cookie: {session}"
    );
    assert_eq!(session["user"]["name"], "alice");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let cookie = cookie_of(&set_cookie);
    assert!(!cookie.contains(&csrf));

    // Reads need only the cookie; the session says its CSRF token again.
    let (s, _, me) = send(&m, Method::GET, "/api/v1/me", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["name"], "alice");
    let (s, _, again) = send(
        &m,
        Method::GET,
        "/api/v1/auth/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["csrf_token"], csrf.as_str());

    // A change needs the CSRF token and this origin.
    let design = json!({"xml": SHOP});
    let refusals: [&[(&str, &str)]; 4] = [
        &[("cookie", &cookie)],
        &[("cookie", &cookie), ("x-csrf-token", "0000")],
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", "http://evil.example"),
        ],
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("sec-fetch-site", "cross-site"),
        ],
    ];
    for headers in refusals {
        let (s, _, v) = send(
            &m,
            Method::POST,
            "/api/v1/vis",
            headers,
            Some(design.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{headers:?}: {v}");
        assert_eq!(v["code"], "forbidden");
    }
    let (_, _, list) = send(&m, Method::GET, "/api/v1/vis", &[("cookie", &cookie)], None).await;
    assert_eq!(list, json!([]), "nothing was created");
    let good = [
        ("cookie", cookie.as_str()),
        ("x-csrf-token", &csrf),
        ("origin", &origin),
    ];
    let (s, _, vi) = send(&m, Method::POST, "/api/v1/vis", &good, Some(design.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{vi}");
    assert_eq!(vi["owner"], "alice");

    // A bearer token is never mixed with the cookie: bob's token acts as bob.
    let bearer = format!("Bearer {}", people.bob);
    let (s, _, vi) = send(
        &m,
        Method::POST,
        "/api/v1/vis",
        &[("cookie", &cookie), ("authorization", &bearer)],
        Some(design),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(vi["owner"], "bob");
    let (s, _, _) = send(
        &m,
        Method::GET,
        "/api/v1/auth/session",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a bearer token is no console session"
    );

    // Logging out needs the CSRF token too, revokes the token and clears the cookie.
    let (s, _, _) = send(
        &m,
        Method::DELETE,
        "/api/v1/auth/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, h, _) = send(&m, Method::DELETE, "/api/v1/auth/session", &good, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(header(&h, "set-cookie").contains("Max-Age=0"));
    let (s, _, _) = send(&m, Method::GET, "/api/v1/me", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
