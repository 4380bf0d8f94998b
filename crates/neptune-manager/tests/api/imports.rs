//! Templates imported from images users upload: what is kept, what is
//! refused (and then not kept either), and the time an upload is given.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::*;

/// Uploads `bytes` with the query `query` (as sent, so that malformed
/// ones can be; the status and the raw body).
async fn upload(m: &TestManager, token: &str, query: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let resp = m
        .http
        .post(format!("{}/api/v1/templates/import?{query}", m.base))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A qcow2 image of `size` made by qemu-img (`backing`: over that file).
fn qcow2(dir: &Path, name: &str, size: &str, backing: Option<&Path>) -> Vec<u8> {
    let path = dir.join(name);
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        cmd.arg("-b").arg(b).args(["-F", "raw"]);
    }
    let status = cmd.arg(&path).arg(size).status().unwrap();
    assert!(status.success());
    std::fs::read(path).unwrap()
}

/// The files an upload may leave in the image repository.
fn leftovers(m: &TestManager) -> Vec<String> {
    std::fs::read_dir(m.dir.path().join("images/uploads"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn images_are_imported_as_templates(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let scratch = tempfile::tempdir().unwrap();
    let image = qcow2(scratch.path(), "mine.qcow2", "48M", None);

    let (s, v) = upload(
        m,
        &p.alice,
        "name=mine&os_name=Alpine&vcpus=2",
        image.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let t: api::Template = serde_json::from_value(v).unwrap();
    assert_eq!(
        (
            t.name.as_str(),
            t.owner.as_str(),
            t.visibility,
            t.format.as_str(),
            t.size_mib,
            t.disk_mib,
            t.vcpus,
            t.os_name.as_str()
        ),
        (
            "mine",
            "alice",
            api::Visibility::Private,
            "qcow2",
            48,
            48,
            2,
            "Alpine"
        )
    );
    // Hers alone: bob does not see it, and cannot deploy from it.
    let listed = m.client(&p.bob).templates().await.unwrap();
    assert!(!listed.iter().any(|t| t.name == "mine"), "{listed:?}");
    // Her VI deploys from it: the image is where the hosts find it.
    let design = json!({"topology": {"id": "own", "nodes": [{"id": "a", "software": {"template": "mine"}, "ram": 256, "disk": 48,
        "interfaces": [{"name": "eth0"}]}], "links": []}});
    let id = m.requested_vi(&p.alice, design).await;
    m.accept(&p.admin, &id, None).await;
    let id: ViId = id.parse().unwrap();
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
    let vm = neptune_manager::jobs::vm_name(id, "a");
    let disk = m.sims.sim("host0").disk_path(&vm);
    let made_from: Value = serde_json::from_slice(&std::fs::read(disk).unwrap()).unwrap();
    assert!(
        made_from["template_image"]
            .as_str()
            .is_some_and(|p| p.contains("/images/imported/") && p.ends_with(".qcow2")),
        "{made_from}"
    );

    // Refused, and nothing kept of any refusal.
    let raw = scratch.path().join("base.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let backed = qcow2(scratch.path(), "backed.qcow2", "1M", Some(&raw));
    let vmdk = {
        let path = scratch.path().join("disk.vmdk");
        let status = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "vmdk"])
            .arg(&path)
            .arg("1M")
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(path).unwrap()
    };
    let mut damaged = image.clone();
    // The L1 table's offset (bytes 40..48 of the header) beyond the file.
    damaged[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes());
    for (token, query, bytes, status, code, why) in [
        (
            &p.alice,
            "name=mine",
            image.clone(),
            StatusCode::CONFLICT,
            "conflict",
            "already exists",
        ),
        (
            &p.alice,
            "name=pub&visibility=public",
            image.clone(),
            StatusCode::FORBIDDEN,
            "forbidden",
            "administrators",
        ),
        (
            &p.alice,
            "name=bad%2Fname",
            image.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "template name",
        ),
        (
            &p.alice,
            "name=backed",
            backed,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "backing file",
        ),
        (
            &p.alice,
            "name=vmdk",
            vmdk,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "qcow2 and raw",
        ),
        (
            &p.alice,
            "name=damaged",
            damaged,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "image",
        ),
        (
            &p.alice,
            "name=zero&vcpus=0",
            image.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "vcpus must be positive",
        ),
        (
            &p.alice,
            "name=x&unknown=1",
            image.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "unknown",
        ),
    ] {
        let (s, v) = upload(m, token, query, bytes).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (status, Some(code)),
            "{query}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains(why), "{query}: {v}");
    }
    let (s, v) = upload(m, "not-a-token", "name=anon", image.clone()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "{v}"
    );
    assert!(leftovers(m).is_empty(), "{:?}", leftovers(m));
    let all = m.client(&p.admin).templates().await.unwrap();
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "mine").count(),
        1,
        "{names:?}"
    );
    assert!(!names
        .iter()
        .any(|n| ["backed", "vmdk", "damaged", "empty", "pub"].contains(n)));

    // An administrator may import a public one; raw images are taken too.
    let (s, v) = upload(
        m,
        &p.admin,
        "name=plain&visibility=public",
        vec![7u8; 3 << 20],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let t: api::Template = serde_json::from_value(v).unwrap();
    assert_eq!(
        (t.format.as_str(), t.size_mib, t.visibility),
        ("raw", 3, api::Visibility::Public)
    );

    // A body without a declared size, or larger than the largest image, is
    // refused before it is read; one that ends short is not kept.
    let addr = m.base.trim_start_matches("http://").to_owned();
    let head = |len: &str| {
        format!(
            "POST /api/v1/templates/import?name=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{len}\r\n",
            p.alice
        )
    };
    let (code, body) = answer_of(
        &addr,
        &head(&format!("Content-Length: {}\r\n", (32u64 << 30) + 1)),
        b"",
    );
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    let (code, body) = answer_of(&addr, &head("Transfer-Encoding: chunked\r\n"), b"0\r\n\r\n");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("Content-Length"), "{body}");
    let (code, body) = answer_of(&addr, &head("Content-Length: 0\r\n"), b"");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("empty"), "{body}");
    {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(head("Content-Length: 1048576\r\n").as_bytes())
            .unwrap();
        s.write_all(&[1u8; 1000]).unwrap();
        // Hang up half-way.
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !leftovers(m).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", leftovers(m));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `head` and `body` on a new connection: the status and the text.
fn answer_of(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
        if text.windows(4).any(|w| w == b"\r\n\r\n") && text.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

/// An upload is given the time its size needs, where other bodies keep
/// the server's deadline: on a Manager whose bodies must arrive within
/// 1 s, an image sent over 2.5 s is imported, and a login sent as slowly
/// is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_gets_the_time_its_size_needs() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut config = Config::new(
        format!("sqlite://{}", dir.path().join("neptune.db").display()),
        &images,
    );
    config.admin_password = Some(ADMIN_PASSWORD.to_owned());
    config.http.body_timeout = Duration::from_secs(1);
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
    let token = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"name": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let slowly = move |head: String, body: Vec<u8>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            for part in body.chunks(body.len().div_ceil(5)) {
                std::thread::sleep(Duration::from_millis(500));
                if s.write_all(part).is_err() {
                    break;
                }
            }
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text.get(9..12)
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(0)
        })
    };
    let image = vec![0u8; 64 << 10];
    let head = format!(
        "POST /api/v1/templates/import?name=slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        image.len()
    );
    assert_eq!(slowly(head, image).await.unwrap(), 201);
    let login = br#"{"name": "admin", "password": "admin-password-for-tests"}"#.to_vec();
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        login.len()
    );
    assert_eq!(slowly(head, login).await.unwrap(), 408);
}
