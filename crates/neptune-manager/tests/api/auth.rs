//! Logging in and out (and its throttling), API tokens, user accounts and
//! their SSH keys; and who may call which endpoint.

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
            Method::GET,
            "/api/v1/hosts/host0".into(),
            None,
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
        (
            Method::GET,
            "/api/v1/users/alice".into(),
            None,
            [S::UNAUTHORIZED, ANY, S::FORBIDDEN, ANY],
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

/// Failed logins are throttled per name and per source: 429 and its
/// `Retry-After` (the wire itself, so raw HTTP).
pub(crate) async fn logins_are_throttled(m: &TestManager) {
    let p = m.people().await;
    let login = |name: &'static str, password: &'static str| async move {
        m.http
            .post(format!("{}/api/v1/auth/login", m.base))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(
            login("alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The sixth try waits, even with the right password: nothing is checked.
    let resp = login("alice", "alice-password").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "too_many_requests", "{v}");
    // Alice's tokens still work, and Bob logs in.
    m.client(&p.alice).me().await.unwrap();
    assert_eq!(login("bob", "bob-password").await.status(), StatusCode::OK);
    // Unknown names count as failures too, up to the source's limit.
    let mut limited = false;
    for i in 0..40 {
        let name: &'static str = Box::leak(format!("nobody{i}").into_boxed_str());
        if login(name, "x").await.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "a source guessing many names is held back");
}

pub(crate) async fn tokens_and_accounts_are_managed(m: &TestManager) {
    let p = m.people().await;
    let (alice, bob, admin) = (m.client(&p.alice), m.client(&p.bob), m.client(&p.admin));
    let now = neptune_manager::now_ms();
    // An API token expires (90 days by default, at most 365).
    let t = alice.create_api_token("script").await.unwrap();
    let expires = t.expires_at.unwrap();
    assert!((expires - now - 90 * 86_400_000).abs() < 60_000, "{t:?}");
    let (script, script_id) = (t.token.clone(), t.id);
    for days in [0, 366] {
        let e = refused(
            alice
                .create_token(&api::CreateApiToken {
                    name: "x".to_owned(),
                    expires_in_days: Some(days),
                    scope: None,
                    host: None,
                })
                .await,
        );
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{e:?}");
    }
    // Listed, never with a secret (read as sent: raw HTTP).
    let (s, list) = m
        .call(Method::GET, "/api/v1/tokens", Some(&p.alice), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!list.to_string().contains(&script), "{list}");
    let list: Vec<api::TokenInfo> = serde_json::from_value(list).unwrap();
    let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["login", "script"], "{list:?}");
    assert!(list[0].current);
    // Revoked by id: by its owner, not by another user.
    let e = refused(bob.revoke_token(script_id).await);
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    m.client(&script).me().await.unwrap();
    // 204 exactly: no other test pins it.
    let (s, _) = m
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{script_id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let e = refused(m.client(&script).me().await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);

    // A new password revokes every other token; the old one stops working.
    let other = m.login("alice", "alice-password").await;
    let e = refused(alice.change_password("wrong", "alice-new-password").await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    // 204 exactly: no other test pins it.
    let (s, v) = m
        .post(
            &p.alice,
            "/api/v1/me/password",
            Some(
                json!({"current_password": "alice-password", "new_password": "alice-new-password"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let e = refused(m.client(&other).me().await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    alice.me().await.expect("the token used to change it stays");
    let anonymous = Client::new(&m.base, None);
    let e = refused(anonymous.login("alice", "alice-password").await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    m.login("alice", "alice-new-password").await;

    // A disabled user has no way in; an administrator cannot disable themselves.
    let bob_id = bob.me().await.unwrap().id;
    let admin_id = admin.me().await.unwrap().id;
    let e = refused(alice.set_user_disabled(bob_id, true).await);
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    let e = refused(admin.set_user_disabled(admin_id, true).await);
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    // 200 exactly, for disable and enable: no other test pins it.
    let v: api::User = m
        .post_exactly(
            &p.admin,
            &format!("/api/v1/users/{bob_id}/disable"),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(v.disabled, "{v:?}");
    let e = refused(bob.me().await);
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let e = refused(anonymous.login("bob", "bob-password").await);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let _: api::User = m
        .post_exactly(
            &p.admin,
            &format!("/api/v1/users/{bob_id}/enable"),
            None,
            StatusCode::OK,
        )
        .await;
    m.login("bob", "bob-password").await;

    // An Agent's token registers its own host, and does nothing else.
    let agent_token = |name: &str| api::CreateApiToken {
        name: name.to_owned(),
        expires_in_days: None,
        scope: Some(api::TokenScope::Agent),
        host: Some("napoli/host7".to_owned()),
    };
    let e = refused(alice.create_token(&agent_token("a")).await);
    assert_eq!(
        e.status,
        StatusCode::FORBIDDEN,
        "only administrators: {e:?}"
    );
    let v = admin
        .create_token(&agent_token("agent of host7"))
        .await
        .unwrap();
    let agent = m.client(&v.token);
    let host = |name: &str| api::RegisterHost {
        datacenter: "napoli".to_owned(),
        name: name.to_owned(),
        agent_url: "http://127.0.0.1:9".to_owned(),
        cpus: 4,
        ram_mib: 4096,
        disk_mib: 65536,
        vm_slots: 4,
        uplink_mbps: 0,
    };
    agent.register_host(&host("host7")).await.unwrap();
    let e = refused(agent.register_host(&host("host8")).await);
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    let refusals = [
        ("GET /vis", refused(agent.vis().await)),
        ("GET /hosts", refused(agent.hosts().await)),
        ("POST /tokens", refused(agent.create_api_token("x").await)),
        ("GET /users", refused(agent.users().await)),
    ];
    for (call, e) in refusals {
        assert_eq!(e.status, StatusCode::FORBIDDEN, "{call}: {e:?}");
    }
    // Logging out revokes the session.
    if let Err(e) = bob.logout().await {
        assert_eq!(refused::<()>(Err(e)).status, StatusCode::UNAUTHORIZED);
    }
}

/// A real key (ssh-keygen -t ed25519) and its fingerprint (ssh-keygen -l).
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILT91Hmx+45ACVNbiRLr9Od5zQ0o0M1A4izOeu5J7tZN alice@example";
const FINGERPRINT: &str = "SHA256:xO1umV1sxzyE5Gs7w5oaTXH4M67Uacliq3yEzy6O56w";

pub(crate) async fn ssh_keys_reach_the_guests(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let (alice, bob) = (m.client(&p.alice), m.client(&p.bob));
    let path = "/api/v1/me/ssh-keys";
    // 201 exactly: no other test pins it.
    let k: api::SshKey = m
        .post_exactly(
            &p.alice,
            path,
            Some(json!({"public_key": KEY})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        (k.name.as_str(), k.fingerprint.as_str()),
        ("alice@example", FINGERPRINT)
    );
    // Refusals name the problem.
    let key = |public_key: &str| api::AddSshKey {
        public_key: public_key.to_owned(),
        name: None,
    };
    let e = refused(alice.add_ssh_key(&key(KEY)).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert!(e.message.contains(FINGERPRINT), "{e:?}");
    let e = refused(alice.add_ssh_key(&key("ssh-dss AAAA x")).await);
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{e:?}");
    assert!(
        e.message
            .starts_with("public_key: \"ssh-dss\" is not an SSH key type"),
        "{e:?}"
    );
    // Keys are their owner's: Bob sees none and deletes none of Alice's.
    assert!(bob.ssh_keys().await.unwrap().is_empty());
    let id = k.id;
    let e = refused(bob.remove_ssh_key(id).await);
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    // A VI of Alice's: its guest's seed lets her key in, for the node's user.
    let design = json!({"topology": {"id": "keyed", "nodes": [
        {"id": "a", "ram": 64, "disk": 1, "interfaces": [{"name": "eth0"}],
         "os": {"name": "Debian", "username": "alice", "password": "s3cret-s3cret"}},
        {"id": "b", "ram": 64, "disk": 1, "interfaces": [{"name": "eth0"}]}],
        "links": [{"id": "ab", "type": "point_to_point", "bandwidth": 10,
            "endpoints": [{"node": "a", "interface": "eth0"}, {"node": "b", "interface": "eth0"}]}]}});
    let vi = m.requested_vi(&p.alice, design).await;
    m.accept(&p.admin, &vi, None).await;
    m.wait_vi(&p.alice, &vi, "deploying").await;
    let vms = m.sims.sim("host0").list().await.unwrap();
    let a = vms.iter().find(|v| v.name.ends_with("-a")).unwrap();
    let user_data = &a.spec.seed.as_ref().unwrap().user_data;
    assert!(
        user_data.contains(&format!("      - \"{KEY}\"\n")),
        "{user_data}"
    );
    assert!(user_data.contains("  - name: \"alice\"\n"), "{user_data}");
    assert!(
        !user_data.contains("s3cret"),
        "the password is hashed: {user_data}"
    );
    // Deleted (204 exactly: no other test pins it): listed no more.
    let (s, _) = m
        .call(
            Method::DELETE,
            &format!("{path}/{id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(alice.ssh_keys().await.unwrap().is_empty());
}
