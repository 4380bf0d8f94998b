//! Probes of what a hostile tenant or an anonymous client tries: designs
//! that would take the Manager's memory, sums that would overflow a
//! quota, bodies beyond their limits, malformed requests; and sockets
//! that would take every connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

/// A design of `nodes` nodes in a line, as JSON.
fn line_design(nodes: usize, ram_mib: u64) -> Value {
    let nodes_json: Vec<Value> = (0..nodes)
        .map(|i| {
            json!({"id": format!("n{i}"), "ram": ram_mib, "disk": 1,
                "interfaces": [{"name": "eth0"}, {"name": "eth1"}]})
        })
        .collect();
    let links: Vec<Value> = (1..nodes)
        .map(|i| {
            json!({"id": format!("l{i}"), "type": "point_to_point", "bandwidth": 10,
                "endpoints": [{"node": format!("n{}", i - 1), "interface": "eth1"},
                              {"node": format!("n{i}"), "interface": "eth0"}]})
        })
        .collect();
    json!({"topology": {"id": "line", "nodes": nodes_json, "links": links}})
}

pub(crate) async fn designs_and_sums_are_bounded(m: &TestManager) {
    let admin = m.login("admin", ADMIN_PASSWORD).await;
    let quota = json!({"vms": 10, "vcpus": 10, "ram_mib": 1024, "public_addresses": 1,
        "designs": 3, "design_mib": 1});
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "mallory",
            "password": "mallory-password", "role": "user", "quota": quota})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            v["quota"]["designs"].as_i64(),
            v["quota"]["design_mib"].as_i64()
        ),
        (Some(3), Some(1))
    );
    let mallory = m.login("mallory", "mallory-password").await;

    // A node of 2^63 MiB once counted as negative RAM: now refused as
    // beyond any host, naming the node's field.
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/vis",
            Some(&mallory),
            Some(line_design(2, 1 << 63)),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_topology")),
        "{v}"
    );
    assert!(
        v["details"][0]
            .as_str()
            .unwrap()
            .contains("/nodes/0/ram: RAM of 9223372036854775808 MiB is beyond any host"),
        "{v}"
    );
    // A design larger than any design may be.
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/vis",
            Some(&mallory),
            Some(json!({"catalogue": {"kind": "line", "nodes": 10_001}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // 8 GiB under a 1 GiB quota: refused at request, whatever else is held.
    let big = m.create_vi(&mallory, line_design(2, 4096)).await;
    let (s, v) = m
        .post(
            &mallory,
            &format!("/api/v1/vis/{}/request", big["id"].as_str().unwrap()),
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
        "this would bring mallory to 8192 MiB of RAM; the quota is 1024"
    );

    // Designs count from the moment they are stored: three at most, and
    // eight creates at once never make a fourth.
    let creates = (0..8).map(|_| {
        let m = &*m;
        let mallory = mallory.clone();
        async move {
            m.call(
                Method::POST,
                "/api/v1/vis",
                Some(&mallory),
                Some(json!({"catalogue": {"kind": "line", "nodes": 2}})),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(creates).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 2, "{results:?}");
    let refused = results
        .iter()
        .find(|(s, _)| *s != StatusCode::CREATED)
        .unwrap();
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{refused:?}");
    assert_eq!(
        refused.1["message"],
        "mallory holds 3 VIs; the quota is 3 (terminate one to make room)"
    );
    // Terminating one makes room for one.
    let (s, v) = m
        .post(
            &mallory,
            &format!("/api/v1/vis/{}/terminate", big["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // ... but not for a design beyond the MiB the designs may take.
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/vis",
            Some(&mallory),
            Some(json!({"catalogue": {"kind": "star", "nodes": 6000}})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .ends_with("the quota is 1 MiB"),
        "{v}"
    );
    let small = m
        .create_vi(&mallory, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    // An edit is held to the same MiB.
    let (s, v) = m
        .call(
            Method::PUT,
            &format!("/api/v1/vis/{}", small["id"].as_str().unwrap()),
            Some(&mallory),
            Some(
                json!({"catalogue": {"kind": "star", "nodes": 6000}, "version": small["version"]}),
            ),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{v}"
    );
}

pub(crate) async fn requests_keep_their_limits_and_shape(m: &TestManager) {
    let people = m.people().await;
    // Unknown fields are refused, in the API's error shape.
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/vis",
            Some(&people.alice),
            Some(json!({"catalogue": {"kind": "line"}, "colour": "red"})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{v}"
    );
    // Not JSON at all.
    let resp = m
        .http
        .post(format!("{}/api/v1/vis", m.base))
        .bearer_auth(&people.alice)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "unsupported_media_type", "{v}");
    // An XML design of 16 MiB fits the body limit of designs (here its
    // problems are the topology's, not the body's size).
    let xml = format!(
        "<topology id=\"t\"><nodes>{}</nodes></topology>",
        " ".repeat((16 << 20) - 60)
    );
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/vis",
            Some(&people.alice),
            Some(json!({"xml": xml})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_topology")),
        "{v:.200}"
    );
    // A body declared beyond its limit is refused before it is sent: the
    // refusal arrives while the client has sent its headers only.
    let addr = m.base.trim_start_matches("http://").to_owned();
    let refused = tokio::task::spawn_blocking(move || {
        let design = format!(
            "POST /api/v1/vis HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            33 << 20
        );
        let login = "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 2000000\r\n\r\n{";
        (status_of(&addr, &design), status_of(&addr, login))
    })
    .await
    .unwrap();
    assert_eq!(refused, (413, 413));
    // A client that sends the whole body anyway reads the refusal, not a
    // reset connection.
    let huge = format!("{{\"xml\": \"{}\"}}", " ".repeat(33 << 20));
    let resp = m
        .http
        .post(format!("{}/api/v1/vis", m.base))
        .bearer_auth(&people.alice)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "payload_too_large", "{v}");
    // Other bodies are bounded at 1 MiB.
    let name = "x".repeat(2 << 20);
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"name": name, "password": "p"})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // An unknown route and a wrong method, in the same shape.
    let (s, v) = m
        .call(Method::GET, "/api/v1/nowhere", Some(&people.alice), None)
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, v) = m
        .call(Method::DELETE, "/api/v1/vis", Some(&people.alice), None)
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    // The bearer scheme in any case.
    let resp = m
        .http
        .get(format!("{}/api/v1/me", m.base))
        .header("authorization", format!("bearer {}", people.alice))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The plan's datacenter is a query parameter; an unknown one is refused.
    let vi = m
        .create_vi(
            &people.alice,
            json!({"catalogue": {"kind": "line", "nodes": 2}}),
        )
        .await;
    let (s, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{}/plan?colour=red", vi["id"].as_str().unwrap()),
            Some(&people.alice),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{v}"
    );
}

/// Sends `request` on a new connection and returns the status line's code.
fn status_of(addr: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// Whether the server closes `s` within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 before the close is a close too.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut config = Config::new(
        format!("sqlite://{}", dir.path().join("n.db").display()),
        &images,
    );
    config.admin_password = Some(ADMIN_PASSWORD.to_owned());
    config.http = neptune_manager::server::Limits {
        max_connections: 200,
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(2),
    };
    let sims = Arc::new(SimDirectory {
        root: dir.path().join("hosts"),
        sims: Mutex::default(),
        agents: tokio::sync::Mutex::default(),
        libvirt: None,
        down: Mutex::default(),
    });
    let manager = Manager::open(config, sims).await.unwrap();
    let (base, _stop) = serve(manager).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let login: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"name": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        // Twice the cap in idle sockets, and slow headers and bodies.
        let mut idle: Vec<TcpStream> = (0..400).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        let mut slow_header = TcpStream::connect(&addr).unwrap();
        slow_header.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut slow_body = TcpStream::connect(&addr).unwrap();
        slow_body
            .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\"")
            .unwrap();
        // Meanwhile the API answers, anonymous and authenticated.
        let started = Instant::now();
        assert_eq!(status_of(&addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        let read = format!("GET /api/v1/vis HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        assert_eq!(status_of(&addr, &read), 200);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // The oldest idle sockets gave their places: closed already.
        assert!(closed_within(&mut idle[0], Duration::from_millis(500)));
        // Slow headers and bodies are cut after their 2 s, the body with a 408.
        assert!(closed_within(&mut slow_header, Duration::from_secs(4)));
        let mut answer = String::new();
        slow_body.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        let _ = slow_body.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("\"code\":\"request_timeout\""), "{answer:?}");
        // And every idle socket is closed once its 2 s are over.
        let last = idle.last_mut().unwrap();
        assert!(closed_within(last, Duration::from_secs(4)));
        assert_eq!(status_of(&addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    })
    .await
    .unwrap();
}

pub(crate) async fn conflicts_name_no_other_tenant(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 10).await;
    // Alice's shop holds its pinned subnet 10.20.0.0/29 once accepted.
    let shop = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = shop["id"].as_str().unwrap();
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/request"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Bob pins the same subnet: he learns it is taken, not by whom.
    let copy = m.create_vi(&p.bob, json!({"xml": SHOP})).await;
    let (s, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{}/plan", copy["id"].as_str().unwrap()),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.starts_with("subnet 10.20.0.0/29 of link "),
        "{message}"
    );
    assert!(message.ends_with(" is taken"), "{message}");
    assert!(
        !message.contains(id) && !message.contains(&id.replace('-', "")),
        "{message}"
    );
    assert!(!message.contains("VI"), "{message}");
}

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
    let (s, _) = m
        .call(Method::GET, "/api/v1/me", Some(&p.alice), None)
        .await;
    assert_eq!(s, StatusCode::OK);
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

/// Every stored design, as the database returns it.
async fn stored_designs(m: &TestManager) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&m.url).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT design_xml FROM vis")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(x,)| x)
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) async fn os_passwords_are_kept_hashed(m: &TestManager) {
    let p = m.people().await;
    // Figure 3's node0 has the OS password "antoxps".
    let fig3 = include_str!("../../../neptune-topology/testdata/fig3.xml");
    let vi = m.create_vi(&p.alice, json!({"xml": fig3})).await;
    assert!(!vi.to_string().contains("antoxps"), "{vi}");
    // In the store, only its SHA-512-crypt hash.
    let stored = stored_designs(m).await;
    assert!(stored.contains("password=\"$6$"), "the hash is stored");
    assert!(
        !stored.contains("antoxps"),
        "the password is stored in clear"
    );
    // SQLite's files too (the database and its write-ahead log).
    if let Some(db) = m.url.strip_prefix("sqlite://") {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            bytes.extend(std::fs::read(format!("{db}{suffix}")).unwrap_or_default());
        }
        assert!(!String::from_utf8_lossy(&bytes).contains("antoxps"));
    }
    // A design given with a hash already keeps it as it is.
    let hash = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
    let with_hash = fig3.replace("password=\"antoxps\"", &format!("password=\"{hash}\""));
    m.create_vi(&p.bob, json!({"xml": with_hash})).await;
    assert!(stored_designs(m).await.contains(hash));
}

pub(crate) async fn tokens_and_accounts_are_managed(m: &TestManager) {
    let p = m.people().await;
    let now = neptune_manager::now_ms();
    // An API token expires (90 days by default, at most 365).
    let (s, t) = m
        .post(&p.alice, "/api/v1/tokens", Some(json!({"name": "script"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let expires = t["expires_at"].as_i64().unwrap();
    assert!((expires - now - 90 * 86_400_000).abs() < 60_000, "{t}");
    let script = t["token"].as_str().unwrap().to_owned();
    let script_id = t["id"].as_str().unwrap().to_owned();
    for days in [0, 366] {
        let (s, v) = m
            .post(
                &p.alice,
                "/api/v1/tokens",
                Some(json!({"name": "x", "expires_in_days": days})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    // Listed, never with a secret.
    let (s, list) = m
        .call(Method::GET, "/api/v1/tokens", Some(&p.alice), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!list.to_string().contains(&script), "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["login", "script"], "{list}");
    assert_eq!(list[0]["current"], true);
    // Revoked by id: by its owner, not by another user.
    let (s, _) = m
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{script_id}"),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = m.call(Method::GET, "/api/v1/me", Some(&script), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = m
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{script_id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = m.call(Method::GET, "/api/v1/me", Some(&script), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A new password revokes every other token; the old one stops working.
    let other = m.login("alice", "alice-password").await;
    let (s, _) = m
        .post(
            &p.alice,
            "/api/v1/me/password",
            Some(json!({"current_password": "wrong", "new_password": "alice-new-password"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
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
    let (s, _) = m.call(Method::GET, "/api/v1/me", Some(&other), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = m
        .call(Method::GET, "/api/v1/me", Some(&p.alice), None)
        .await;
    assert_eq!(s, StatusCode::OK, "the token used to change it stays");
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "alice", "password": "alice-password"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    m.login("alice", "alice-new-password").await;

    // A disabled user has no way in; an administrator cannot disable themselves.
    let (_, me) = m.call(Method::GET, "/api/v1/me", Some(&p.bob), None).await;
    let bob_id = me["id"].as_str().unwrap().to_owned();
    let (_, admin) = m
        .call(Method::GET, "/api/v1/me", Some(&p.admin), None)
        .await;
    let (s, _) = m
        .post(&p.alice, &format!("/api/v1/users/{bob_id}/disable"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = m
        .post(
            &p.admin,
            &format!("/api/v1/users/{}/disable", admin["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/users/{bob_id}/disable"), None)
        .await;
    assert_eq!(
        (s, v["disabled"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    let (s, _) = m.call(Method::GET, "/api/v1/me", Some(&p.bob), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"name": "bob", "password": "bob-password"})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (s, _) = m
        .post(&p.admin, &format!("/api/v1/users/{bob_id}/enable"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    m.login("bob", "bob-password").await;

    // An Agent's token registers its own host, and does nothing else.
    let (s, v) = m
        .post(
            &p.alice,
            "/api/v1/tokens",
            Some(json!({"name": "a", "scope": "agent", "host": "napoli/host7"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only administrators: {v}");
    let (s, v) = m
        .post(
            &p.admin,
            "/api/v1/tokens",
            Some(json!({"name": "agent of host7", "scope": "agent", "host": "napoli/host7"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let agent = v["token"].as_str().unwrap().to_owned();
    let host = |name: &str| {
        json!({"datacenter": "napoli", "name": name, "agent_url": "http://127.0.0.1:9",
        "cpus": 4, "ram_mib": 4096, "disk_mib": 65536, "vm_slots": 4})
    };
    let (s, v) = m.post(&agent, "/api/v1/hosts", Some(host("host7"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = m.post(&agent, "/api/v1/hosts", Some(host("host8"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (method, path) in [
        (Method::GET, "/api/v1/vis"),
        (Method::GET, "/api/v1/hosts"),
        (Method::POST, "/api/v1/tokens"),
        (Method::GET, "/api/v1/users"),
    ] {
        let (s, v) = m
            .call(method, path, Some(&agent), Some(json!({"name": "x"})))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
    }
    // Logging out revokes the session.
    let (s, _) = m.post(&p.bob, "/api/v1/auth/logout", None).await;
    assert!(s == StatusCode::NO_CONTENT || s == StatusCode::UNAUTHORIZED);
}

pub(crate) async fn private_addresses_are_a_quota(m: &TestManager) {
    let admin = m.login("admin", ADMIN_PASSWORD).await;
    let quota = json!({"vms": 200, "vcpus": 200, "ram_mib": 1_000_000, "public_addresses": 10,
        "private_addresses": 300});
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "dave",
            "password": "dave-password", "role": "user", "quota": quota})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dave = m.login("dave", "dave-password").await;
    let pinned = |subnet: &str| {
        let mut d = line_design(2, 512);
        d["topology"]["links"][0]["subnet"] = json!(subnet);
        d
    };
    let request = |id: Value| {
        let dave = dave.clone();
        async move {
            m.post(
                &dave,
                &format!("/api/v1/vis/{}/request", id.as_str().unwrap()),
                None,
            )
            .await
        }
    };
    // Half the private pool for a link of two VMs: refused, as it says.
    let greedy = m.create_vi(&dave, pinned("10.128.0.0/9")).await;
    let (s, v) = request(greedy["id"].clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("a pin may hold at most 256"),
        "{v}"
    );
    // A /24 pin counts 256 addresses, a line of two its /31.
    let fair = m.create_vi(&dave, pinned("10.9.9.0/24")).await;
    let (s, v) = request(fair["id"].clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let small = m
        .create_vi(&dave, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let (s, v) = request(small["id"].clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A LAN of 100 needs a /25: past the quota of 300.
    let lan = m
        .create_vi(
            &dave,
            json!({"catalogue": {"kind": "cluster", "nodes": 100}}),
        )
        .await;
    let (s, v) = request(lan["id"].clone()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{v}"
    );
    assert_eq!(
        v["message"],
        "this would bring dave to 386 private addresses; the quota is 300"
    );
}

/// A pair of VMs on a point-to-point link, the first NIC's MAC pinned
/// (unless `mac` is empty).
fn pinned_mac_design(mac: &str) -> Value {
    let mut eth0 = json!({"name": "eth0"});
    if !mac.is_empty() {
        eth0["mac"] = json!(mac);
    }
    json!({"topology": {"id": "pinned", "nodes": [
        {"id": "a", "ram": 64, "disk": 1, "interfaces": [eth0]},
        {"id": "b", "ram": 64, "disk": 1, "interfaces": [{"name": "eth0"}]}],
        "links": [{"id": "ab", "type": "point_to_point", "bandwidth": 10,
            "endpoints": [{"node": "a", "interface": "eth0"}, {"node": "b", "interface": "eth0"}]}]}})
}

pub(crate) async fn pinned_macs_are_unique_in_the_domain(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 10).await;
    let first = m
        .requested_vi(&p.alice, pinned_mac_design("1E:87:3F:D6:E7:8D"))
        .await;
    m.accept(&p.admin, &first, None).await;
    // Alice's second VI pins the same MAC: refused, naming her VI.
    let again = m
        .requested_vi(&p.alice, pinned_mac_design("1e:87:3f:d6:e7:8d"))
        .await;
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{again}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.starts_with("MAC 1e:87:3f:d6:e7:8d is pinned in the design and VI "),
        "{message}"
    );
    assert!(message.contains(&first), "{message}");
    // Nothing of the refused VI is held: it is still requested.
    let (_, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{again}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(v["state"], "requested", "{v}");
    // A pin in Neptune's own range is refused as such.
    let ours = m
        .requested_vi(&p.bob, pinned_mac_design("02:4E:0A:00:00:01"))
        .await;
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{ours}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("a/eth0 pins MAC 02:4E:0A:00:00:01"),
        "{v}"
    );
    // Once the holder is terminated, the MAC is free again.
    m.wait_vi(&p.alice, &first, "deploying").await;
    m.act(&p.alice, &first, "terminate", "terminating").await;
    m.accept(&p.admin, &again, None).await;
    // Beside it, a VI with no pins: every NIC of the domain has its own
    // MAC, and each guest's seed matches its NICs by them.
    let other = m.requested_vi(&p.bob, pinned_mac_design("")).await;
    m.accept(&p.admin, &other, None).await;
    m.wait_vi(&p.alice, &again, "deploying").await;
    m.wait_vi(&p.bob, &other, "deploying").await;
    let mut macs = std::collections::HashSet::new();
    for host in ["host0", "host1"] {
        for vm in m.sims.sim(host).list().await.unwrap() {
            let seed = vm.spec.seed.as_ref().expect("every VM has its seed");
            for nic in &vm.spec.nics {
                assert!(macs.insert(nic.mac.clone()), "{} twice", nic.mac);
                assert!(
                    seed.network_config
                        .contains(&format!("macaddress: \"{}\"", nic.mac)),
                    "{}",
                    seed.network_config
                );
            }
        }
    }
    assert_eq!(macs.len(), 4);
    assert!(macs.contains("1e:87:3f:d6:e7:8d"), "{macs:?}");
}

/// A real key (ssh-keygen -t ed25519) and its fingerprint (ssh-keygen -l).
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILT91Hmx+45ACVNbiRLr9Od5zQ0o0M1A4izOeu5J7tZN alice@example";
const FINGERPRINT: &str = "SHA256:xO1umV1sxzyE5Gs7w5oaTXH4M67Uacliq3yEzy6O56w";

pub(crate) async fn ssh_keys_reach_the_guests(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let path = "/api/v1/me/ssh-keys";
    let (s, k) = m
        .post(&p.alice, path, Some(json!({"public_key": KEY})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert_eq!(
        (k["name"].as_str(), k["fingerprint"].as_str()),
        (Some("alice@example"), Some(FINGERPRINT))
    );
    // Refusals name the problem.
    let (s, v) = m
        .post(&p.alice, path, Some(json!({"public_key": KEY})))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains(FINGERPRINT), "{v}");
    let (s, v) = m
        .post(
            &p.alice,
            path,
            Some(json!({"public_key": "ssh-dss AAAA x"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("public_key: \"ssh-dss\" is not an SSH key type"),
        "{v}"
    );
    // Keys are their owner's: Bob sees none and deletes none of Alice's.
    let (_, bobs) = m.call(Method::GET, path, Some(&p.bob), None).await;
    assert_eq!(bobs, json!([]));
    let id = k["id"].as_str().unwrap();
    let (s, _) = m
        .call(Method::DELETE, &format!("{path}/{id}"), Some(&p.bob), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
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
    // Deleted: listed no more.
    let (s, _) = m
        .call(
            Method::DELETE,
            &format!("{path}/{id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, mine) = m.call(Method::GET, path, Some(&p.alice), None).await;
    assert_eq!(mine, json!([]));
}

pub(crate) async fn software_must_be_in_the_template(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let image = m.dir.path().join("images/webby.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("64M")
        .status()
        .unwrap();
    assert!(made.success());
    let (s, v) = m
        .post(
            &p.admin,
            "/api/v1/templates",
            Some(json!({"name": "webby", "image": "webby.qcow2",
                "software": [{"name": "nginx", "type": "package", "version": "1.22"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let design = |software: &str| {
        json!({"topology": {"id": "web", "nodes": [
            {"id": "web", "ram": 64, "disk": 64, "interfaces": [{"name": "eth0"}],
             "software": {"template": "webby",
                "software": [{"name": software, "type": "webserver", "version": ""}]}}]}})
    };
    let apache = m.requested_vi(&p.alice, design("apache")).await;
    let (s, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{apache}/plan"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["message"],
        "node web asks for software \"apache\", which template \"webby\" does not carry \
         (its image has 1 packages; a node's software must be in its template)"
    );
    let nginx = m.requested_vi(&p.alice, design("nginx")).await;
    let (s, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{nginx}/plan"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // An unknown template is refused, naming it.
    let none = m
        .requested_vi(
            &p.alice,
            json!({"topology": {"id": "x", "nodes": [{"id": "n", "ram": 64, "disk": 64,
                "interfaces": [], "software": {"template": "nowhere"}}]}}),
        )
        .await;
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{none}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("\"nowhere\""),
        "{v}"
    );
}
