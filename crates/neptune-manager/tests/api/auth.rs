//! Logging in and out, API tokens, user accounts; and who may call which
//! endpoint.

use super::*;

pub(crate) async fn credentials(m: &TestManager) {
    let anonymous = Client::new(&m.base, None);
    let e = refused(anonymous.login("admin", "nope").await);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let e = refused(anonymous.login("nobody", "nope").await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let admin = m.login("admin", ADMIN_PASSWORD).await;
    // API tokens work; logout revokes the session token.
    let v = m.client(&admin).create_api_token("cli").await.unwrap();
    let api_token = v.token.clone();
    // 90 days unless asked otherwise.
    let days = (v.expires_at.unwrap() - neptune_manager::now_ms()) / 86_400_000;
    assert!((89..=90).contains(&days), "{v:?}");
    let me = m.client(&api_token).me().await.unwrap();
    assert_eq!((me.name.as_str(), me.role), ("admin", api::Role::Admin));
    m.client(&admin).logout().await.unwrap();
    let e = refused(m.client(&admin).me().await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let e = refused(m.client("not-a-token").me().await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    // User listings never carry password hashes (read as sent: raw HTTP).
    let (_, users) = m
        .call(Method::GET, "/api/v1/users", Some(&api_token), None)
        .await;
    assert!(!users.to_string().contains("argon2"), "{users}");
    // Short passwords and bad names are refused.
    let admin = m.client(&api_token);
    let e = refused(admin.create_user(&new_user("dave", "short", None)).await);
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    let e = refused(
        admin
            .create_user(&new_user("da ve", "long-enough", None))
            .await,
    );
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Every endpoint x {anonymous, user A (owner), user B, admin}: the exact
/// status of each, so raw HTTP.
pub(crate) async fn authorization_matrix(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let vi = m
        .create_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let id = vi["id"].as_str().unwrap().to_owned();
    use StatusCode as S;
    const ANY: S = S::OK;
    // (method, path, body, anonymous, alice (owner), bob, admin). Calls are
    // made in this order per row: admin last, so state-changing calls by
    // others are refused before the admin's one succeeds.
    let rows: Vec<(Method, String, Option<Value>, [S; 4])> = vec![
        (Method::GET, "/healthz".into(), None, [ANY, ANY, ANY, ANY]),
        (
            Method::GET,
            "/api/v1/openapi.json".into(),
            None,
            [ANY, ANY, ANY, ANY],
        ),
        (
            Method::GET,
            "/api/v1/me".into(),
            None,
            [S::UNAUTHORIZED, ANY, ANY, ANY],
        ),
        (
            Method::GET,
            "/api/v1/users".into(),
            None,
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"name": "zed", "password": "zed-password", "role": "user"})),
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, S::CREATED],
        ),
        (
            Method::GET,
            "/api/v1/datacenters".into(),
            None,
            [S::UNAUTHORIZED, ANY, ANY, ANY],
        ),
        (
            Method::POST,
            "/api/v1/datacenters".into(),
            Some(json!({"name": "roma"})),
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, S::CREATED],
        ),
        (
            Method::GET,
            "/api/v1/hosts".into(),
            None,
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        (
            Method::POST,
            "/api/v1/hosts".into(),
            Some(
                json!({"datacenter": "roma", "name": "r1", "agent_url": "http://127.0.0.1:9", "cpus": 4, "ram_mib": 4096, "disk_mib": 9999, "vm_slots": 4}),
            ),
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        (
            Method::GET,
            "/api/v1/templates".into(),
            None,
            [S::UNAUTHORIZED, ANY, ANY, ANY],
        ),
        (
            Method::POST,
            "/api/v1/templates".into(),
            Some(json!({"name": "t", "image": "none"})),
            [
                S::UNAUTHORIZED,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::UNPROCESSABLE_ENTITY,
            ],
        ),
        (
            Method::GET,
            "/api/v1/catalogue".into(),
            None,
            [S::UNAUTHORIZED, ANY, ANY, ANY],
        ),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"name": "x"})),
            [S::UNAUTHORIZED, S::CREATED, S::CREATED, S::CREATED],
        ),
        (
            Method::GET,
            "/api/v1/vis".into(),
            None,
            [S::UNAUTHORIZED, ANY, ANY, ANY],
        ),
        (
            Method::POST,
            "/api/v1/vis".into(),
            Some(json!({"catalogue": {"kind": "star"}})),
            [S::UNAUTHORIZED, S::CREATED, S::CREATED, S::CREATED],
        ),
        (
            Method::GET,
            format!("/api/v1/vis/{id}"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, ANY],
        ),
        (
            Method::PUT,
            format!("/api/v1/vis/{id}"),
            Some(json!({"catalogue": {"kind": "line", "nodes": 3}, "version": 1})),
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, S::FORBIDDEN],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/request"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, S::FORBIDDEN],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/withdraw"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, S::FORBIDDEN],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/request"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, S::FORBIDDEN],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/reject"),
            Some(json!({"reason": "r"})),
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/revise"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, S::FORBIDDEN],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/request"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, S::FORBIDDEN],
        ),
        (
            Method::GET,
            format!("/api/v1/vis/{id}/plan"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, ANY],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/accept"),
            None,
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        (
            Method::GET,
            "/api/v1/address-pools".into(),
            None,
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        (
            Method::POST,
            "/api/v1/reconcile".into(),
            None,
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        // Not a call: waits until the deploy job has finished.
        (Method::OPTIONS, "wait-running".into(), None, [ANY; 4]),
        (
            Method::GET,
            format!("/api/v1/vis/{id}/jobs"),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, ANY],
        ),
        (
            Method::GET,
            "/api/v1/jobs/{job}".into(),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, ANY],
        ),
        (
            Method::GET,
            "/api/v1/jobs/{job}/events".into(),
            None,
            [S::UNAUTHORIZED, ANY, S::NOT_FOUND, ANY],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/templates"),
            Some(json!({"node": "ghost", "name": "saved"})),
            [
                S::UNAUTHORIZED,
                S::UNPROCESSABLE_ENTITY,
                S::NOT_FOUND,
                S::UNPROCESSABLE_ENTITY,
            ],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/resume"),
            None,
            [S::UNAUTHORIZED, S::CONFLICT, S::NOT_FOUND, S::CONFLICT],
        ),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/suspend"),
            None,
            [S::UNAUTHORIZED, S::OK, S::NOT_FOUND, S::CONFLICT],
        ),
        // Not a call: waits until the suspend job has finished.
        (Method::OPTIONS, "wait-suspended".into(), None, [ANY; 4]),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/resume"),
            None,
            [S::UNAUTHORIZED, S::OK, S::NOT_FOUND, S::CONFLICT],
        ),
        (Method::OPTIONS, "wait-resumed".into(), None, [ANY; 4]),
        (
            Method::POST,
            format!("/api/v1/vis/{id}/terminate"),
            None,
            [S::UNAUTHORIZED, S::OK, S::NOT_FOUND, S::CONFLICT],
        ),
        (
            Method::POST,
            "/api/v1/auth/logout".into(),
            None,
            [S::UNAUTHORIZED, S::NO_CONTENT, S::NO_CONTENT, S::NO_CONTENT],
        ),
    ];
    let mut failures = Vec::new();
    let mut job = String::new();
    for (method, path, body, expected) in &rows {
        if path == "wait-running" {
            let v = m.wait_vi(&p.admin, &id, "deploying").await;
            assert_eq!(v["state"], "running", "{v}");
            job = v["jobs"][0]["id"].as_str().unwrap().to_owned();
            continue;
        }
        if path == "wait-suspended" {
            let v = m.wait_vi(&p.admin, &id, "suspending").await;
            assert_eq!(v["state"], "suspended", "{v}");
            continue;
        }
        if path == "wait-resumed" {
            let v = m.wait_vi(&p.admin, &id, "resuming").await;
            assert_eq!(v["state"], "running", "{v}");
            continue;
        }
        let path = &path.replace("{job}", &job);
        let callers = [
            None,
            Some(p.alice.as_str()),
            Some(p.bob.as_str()),
            Some(p.admin.as_str()),
        ];
        for (who, (token, want)) in ["anonymous", "alice", "bob", "admin"]
            .iter()
            .zip(callers.iter().zip(expected))
        {
            let (got, v) = m.call(method.clone(), path, *token, body.clone()).await;
            if got != *want {
                failures.push(format!(
                    "{method} {path} as {who}: got {got}, want {want}: {v}"
                ));
            }
            if got.is_client_error() && !v["code"].is_string() {
                failures.push(format!(
                    "{method} {path} as {who}: error without a code: {v}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
