//! Probes of what a hostile tenant or an anonymous client tries: designs
//! that would take the Manager's memory, sums that would overflow a
//! quota, bodies beyond their limits, malformed requests; and sockets
//! that would take every connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

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
    let uuid: ViId = id.parse().unwrap();
    m.client(&p.alice).act(uuid, "request").await.unwrap();
    m.client(&p.admin)
        .accept(uuid, &api::AcceptRequest::default())
        .await
        .unwrap();
    // Bob pins the same subnet: he learns it is taken, not by whom.
    let copy = m.create_vi(&p.bob, json!({"xml": SHOP})).await;
    let copy: ViId = copy["id"].as_str().unwrap().parse().unwrap();
    let e = refused(m.client(&p.bob).plan(copy, None).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    let message = e.message.as_str();
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
