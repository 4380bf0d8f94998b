//! The Manager's API against a real Manager on port 0, on both stores:
//! SQLite in a temporary directory and, when `NEPTUNE_TEST_POSTGRES_URL`
//! names a server (scripts/test-all starts one; required in CI), a fresh
//! PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // test helpers fail loudly

use std::path::Path;

use neptune_manager::{Config, Manager};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const ADMIN_PASSWORD: &str = "admin-password-for-tests";
const SHOP: &str = include_str!("../../neptune-topology/testdata/web-with-links.xml");

struct TestManager {
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

enum Db {
    Sqlite,
    Postgres,
}

async fn database_url(db: &Db, dir: &Path) -> Option<String> {
    match db {
        Db::Sqlite => Some(format!("sqlite://{}", dir.join("neptune.db").display())),
        Db::Postgres => {
            let Ok(base) = std::env::var("NEPTUNE_TEST_POSTGRES_URL") else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the PostgreSQL API tests"
                );
                eprintln!("PostgreSQL API tests not run: NEPTUNE_TEST_POSTGRES_URL is not set");
                return None;
            };
            sqlx_create_database(&base).await
        }
    }
}

async fn sqlx_create_database(base: &str) -> Option<String> {
    // A fresh database through a throw-away store connection to the server's default database.
    let name = format!("neptune_api_{}", Uuid::new_v4().simple());
    let admin = neptune_store::connect(base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .unwrap();
    admin.close().await;
    let (server, _) = base.rsplit_once('/').unwrap();
    Some(format!("{server}/{name}"))
}

async fn start(db: Db) -> Option<TestManager> {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(&db, dir.path()).await?;
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut config = Config::new(url, &images);
    config.admin_password = Some(ADMIN_PASSWORD.to_owned());
    let manager = Manager::open(config).await.unwrap();
    assert_eq!(
        manager.created_admin.as_ref().map(|(n, _)| n.as_str()),
        Some("admin")
    );
    let (listener, addr) = Manager::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        manager
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Some(TestManager {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        dir,
        _shutdown: tx,
    })
}

impl TestManager {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn login(&self, name: &str, password: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"name": name, "password": password})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Admin, users alice and bob, and a datacenter.
    async fn people(&self) -> People {
        let admin = self.login("admin", ADMIN_PASSWORD).await;
        for name in ["alice", "bob"] {
            let (s, v) = self
                .call(
                    Method::POST,
                    "/api/v1/users",
                    Some(&admin),
                    Some(json!({"name": name, "password": format!("{name}-password"), "role": "user"})),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, _) = self
            .call(
                Method::POST,
                "/api/v1/datacenters",
                Some(&admin),
                Some(json!({"name": "napoli"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        People {
            alice: self.login("alice", "alice-password").await,
            bob: self.login("bob", "bob-password").await,
            admin,
        }
    }

    async fn create_vi(&self, token: &str, body: Value) -> Value {
        let (s, v) = self
            .call(Method::POST, "/api/v1/vis", Some(token), Some(body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

struct People {
    admin: String,
    alice: String,
    bob: String,
}

async fn lifecycle_with_approval(m: &TestManager) {
    let p = m.people().await;
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = vi["id"].as_str().unwrap().to_owned();
    assert_eq!(vi["state"], "defined");
    assert_eq!(vi["owner"], "alice");
    assert_eq!(vi["summary"]["nodes"], 3);
    assert_eq!(vi["topology"]["links"][0]["subnet"], "10.20.0.0/29");
    assert!(!vi.to_string().contains("s3cret"), "password leaked: {vi}");

    // Bob cannot see it; the admin can.
    let (s, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Accepting a defined VI is refused by the lifecycle, with the reason.
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/accept"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        v["message"],
        "cannot accept a VI that is defined: only a requested VI can be accepted"
    );

    // Edit while defined, with the version it is based on.
    let edited = SHOP.replace("bandwidth=\"1000\"", "bandwidth=\"500\"");
    let (s, v) = m
        .call(
            Method::PUT,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            Some(json!({"xml": edited, "version": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["version"].as_i64(),
            v["summary"]["bandwidth_mbps"].as_i64()
        ),
        (Some(2), Some(500))
    );
    let (s, _) = m
        .call(
            Method::PUT,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            Some(json!({"xml": SHOP, "version": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "stale version");

    // Request; only an admin accepts; the owner cannot.
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/request"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("requested"))
    );
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/accept"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/accept"),
            Some(&p.admin),
            Some(json!({"datacenter": "napoli"})),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("accepted")),
        "{v}"
    );
    assert_eq!(v["home_datacenter"], "napoli");
    let history: Vec<(&str, &str, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("defined", "requested", "alice"),
            ("requested", "accepted", "admin")
        ]
    );

    // Editing is over once requested.
    let (s, v) = m
        .call(
            Method::PUT,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            Some(json!({"xml": SHOP, "version": 4})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Terminate (accepted, never deployed: nothing to release).
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/terminate"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("terminated")),
        "{v}"
    );
    let (s, _) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/terminate"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "terminated is final");

    // Reject with a reason, then revise back to defined.
    let vi = m
        .create_vi(
            &p.bob,
            json!({"catalogue": {"kind": "three-tier", "nodes": 4}}),
        )
        .await;
    let id = vi["id"].as_str().unwrap();
    assert_eq!(vi["summary"]["nodes"], 4);
    m.call(
        Method::POST,
        &format!("/api/v1/vis/{id}/request"),
        Some(&p.bob),
        None,
    )
    .await;
    let (s, _) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/reject"),
            Some(&p.admin),
            Some(json!({"reason": " "})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a reason is required");
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/reject"),
            Some(&p.admin),
            Some(json!({"reason": "no budget"})),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str(), v["reject_reason"].as_str()),
        (StatusCode::OK, Some("rejected"), Some("no budget"))
    );
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/revise"),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("defined")));

    // Lists: each user their own, the admin all.
    let (_, mine) = m.call(Method::GET, "/api/v1/vis", Some(&p.bob), None).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let (_, all) = m
        .call(Method::GET, "/api/v1/vis", Some(&p.admin), None)
        .await;
    assert_eq!(all.as_array().unwrap().len(), 2);
}

async fn designs_are_validated(m: &TestManager) {
    let p = m.people().await;
    let (s, v) = m.call(Method::POST, "/api/v1/vis", Some(&p.alice), Some(json!({"xml": "<topology id=\"x\"><nodes><node id=\"a\"><ram dimension=\"lots\"/></node></nodes></topology>"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["code"], "invalid_topology");
    let details: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details.contains(&"1:54: \"dimension\" of <ram>: \"lots\" is not a number"),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("missing element <hd>")),
        "{details:?}"
    );
    let (s, v) = m
        .call(Method::POST, "/api/v1/vis", Some(&p.alice), Some(json!({})))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request"))
    );
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/vis",
            Some(&p.alice),
            Some(json!({"catalogue": {"kind": "ring", "nodes": 2}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["message"].as_str().unwrap().contains("between 3 and"),
        "{v}"
    );
    // The JSON form works too, and its password stays write-only.
    let topo = json!({"id": "j", "nodes": [{"id": "a", "ram": 128, "disk": 1024, "os": {"password": "topsecret"}}]});
    let vi = m
        .create_vi(&p.alice, json!({"topology": topo, "name": "from json"}))
        .await;
    assert_eq!(vi["name"], "from json");
    assert_eq!(vi["topology"]["nodes"][0]["os"]["password_set"], true);
    assert!(!vi.to_string().contains("topsecret"));
    // Garbage JSON bodies get a clear 4xx, not a crash.
    let resp = m
        .http
        .post(format!("{}/api/v1/vis", m.base))
        .bearer_auth(&p.alice)
        .body("{nope")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
}

async fn quotas_are_enforced(m: &TestManager) {
    let admin = m.login("admin", ADMIN_PASSWORD).await;
    let quota = json!({"vms": 3, "vcpus": 100, "ram_mib": 100000, "public_addresses": 5});
    let (s, _) = m
        .call(Method::POST, "/api/v1/users", Some(&admin), Some(json!({"name": "carol", "password": "carol-password", "role": "user", "quota": quota})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let carol = m.login("carol", "carol-password").await;
    let small = m
        .create_vi(&carol, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let big = m
        .create_vi(&carol, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let (s, _) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{}/request", small["id"].as_str().unwrap()),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{}/request", big["id"].as_str().unwrap()),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{v}"
    );
    assert_eq!(
        v["message"],
        "this would bring carol to 4 VMs; the quota is 3"
    );
}

async fn concurrent_accepts_have_one_winner(m: &TestManager) {
    let p = m.people().await;
    let vi = m
        .create_vi(&p.alice, json!({"catalogue": {"kind": "star", "nodes": 3}}))
        .await;
    let id = vi["id"].as_str().unwrap().to_owned();
    m.call(
        Method::POST,
        &format!("/api/v1/vis/{id}/request"),
        Some(&p.alice),
        None,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, url, token) = (
            m.http.clone(),
            format!("{}/api/v1/vis/{id}/accept", m.base),
            p.admin.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let (_, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        2,
        "one request, one accept"
    );
}

async fn credentials(m: &TestManager) {
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "admin", "password": "nope"})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "nobody", "password": "nope"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let admin = m.login("admin", ADMIN_PASSWORD).await;
    // API tokens work; logout revokes the session token.
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"name": "cli"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let api_token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(v["expires_at"], Value::Null);
    let (s, v) = m
        .call(Method::GET, "/api/v1/me", Some(&api_token), None)
        .await;
    assert_eq!(
        (s, v["name"].as_str(), v["role"].as_str()),
        (StatusCode::OK, Some("admin"), Some("admin"))
    );
    let (s, _) = m
        .call(Method::POST, "/api/v1/auth/logout", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = m.call(Method::GET, "/api/v1/me", Some(&admin), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = m
        .call(Method::GET, "/api/v1/me", Some("not-a-token"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // User listings never carry password hashes.
    let (_, users) = m
        .call(Method::GET, "/api/v1/users", Some(&api_token), None)
        .await;
    assert!(!users.to_string().contains("argon2"), "{users}");
    // Short passwords and bad names are refused.
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&api_token),
            Some(json!({"name": "dave", "password": "short", "role": "user"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&api_token),
            Some(json!({"name": "da ve", "password": "long-enough", "role": "user"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn templates_from_images(m: &TestManager) {
    let p = m.people().await;
    let images = m.dir.path().join("images");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(images.join("tiny.qcow2"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(status.success());
    let body = json!({"name": "tiny", "image": "tiny.qcow2", "os_name": "Debian", "software": [{"name": "nginx", "type": "webserver"}]});
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.alice),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            v["format"].as_str(),
            v["size_mib"].as_i64(),
            v["disk_mib"].as_i64()
        ),
        (Some("qcow2"), Some(64), Some(64))
    );
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.admin),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, list) = m
        .call(Method::GET, "/api/v1/templates", Some(&p.alice), None)
        .await;
    assert_eq!(list[0]["software"][0]["name"], "nginx");
    for (image, why) in [
        (
            "../../../../../../../../etc/passwd",
            "inside the image repository",
        ),
        ("missing.qcow2", "not found"),
    ] {
        let (s, v) = m
            .call(
                Method::POST,
                "/api/v1/templates",
                Some(&p.admin),
                Some(json!({"name": "bad", "image": image})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{image}");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }
    std::fs::write(images.join("junk.img"), b"").unwrap();
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.admin),
            Some(json!({"name": "junk", "image": "junk.img", "disk_mib": 0})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

async fn hosts_register_and_list(m: &TestManager) {
    let p = m.people().await;
    let host = json!({"datacenter": "napoli", "name": "h1", "agent_url": "http://127.0.0.1:9", "cpus": 8, "ram_mib": 16384, "disk_mib": 200000, "vm_slots": 10});
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/hosts",
            Some(&p.alice),
            Some(host.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/hosts",
            Some(&p.admin),
            Some(host.clone()),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );
    let mut unknown = host.clone();
    unknown["datacenter"] = json!("atlantis");
    let (s, _) = m
        .call(Method::POST, "/api/v1/hosts", Some(&p.admin), Some(unknown))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let mut zero = host;
    zero["cpus"] = json!(0);
    let (s, _) = m
        .call(Method::POST, "/api/v1/hosts", Some(&p.admin), Some(zero))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    assert_eq!(
        (hosts[0]["name"].as_str(), hosts[0]["datacenter"].as_str()),
        (Some("h1"), Some("napoli"))
    );
}

/// Every endpoint x {anonymous, user A (owner), user B, admin}.
async fn authorization_matrix(m: &TestManager) {
    let p = m.people().await;
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
            Method::POST,
            format!("/api/v1/vis/{id}/accept"),
            None,
            [S::UNAUTHORIZED, S::FORBIDDEN, S::FORBIDDEN, ANY],
        ),
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
    for (method, path, body, expected) in &rows {
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

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let m = super::start(super::Db::Sqlite).await.unwrap();
                super::$name(&m).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(m) = super::start(super::Db::Postgres).await {
                    super::$name(&m).await;
                }
            })*
        }
    };
}

on_both_stores!(
    lifecycle_with_approval,
    designs_are_validated,
    quotas_are_enforced,
    concurrent_accepts_have_one_winner,
    credentials,
    templates_from_images,
    hosts_register_and_list,
    authorization_matrix,
);

#[test]
fn openapi_document_is_checked_in() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/neptune.json");
    let generated = serde_json::to_string_pretty(&neptune_manager::openapi()).unwrap() + "\n";
    if std::env::var_os("NEPTUNE_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi/neptune.json is out of date: rerun with NEPTUNE_UPDATE_GOLDEN=1 and commit it"
    );
}
