//! The real `neptune up` binary probed as a hostile client would, over
//! loopback: under a 1024-file limit, many idle sockets do not stop it, and
//! hostile designs and malformed requests get clear errors in the API's
//! shape.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Up {
    child: Child,
    addr: String,
    password: String,
    /// What it printed before it served.
    banner: Vec<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `neptune up` with its open-file limit set to 1024 (soft and hard), as
/// an operator's default shell gives it.
fn up_with_1024_files(dir: &std::path::Path) -> Up {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" up --listen 127.0.0.1:0 --hosts 1 --data-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_neptune"))
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("Neptune is up at http://")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let banner: Vec<String> = lines.by_ref().take(6).map(Result::unwrap).collect();
    let password = std::fs::read_to_string(dir.join("data/admin.password"))
        .unwrap()
        .trim()
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    Up {
        child,
        addr,
        password,
        banner,
    }
}

/// One request on its own connection: the status and the body.
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: neptune\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn up_under_1024_files_outlasts_idle_sockets_and_hostile_input() {
    let dir = tempfile::tempdir().unwrap();
    let up = up_with_1024_files(dir.path());
    let (status, body) = http(
        &up.addr,
        "POST",
        "/api/v1/auth/login",
        None,
        &format!(r#"{{"name": "admin", "password": "{}"}}"#, up.password),
    );
    assert_eq!(status, 200, "{body}");
    let token = json(&body)["token"].as_str().unwrap().to_owned();

    // More idle sockets than the server's 1024 files could hold.
    let idle: Vec<TcpStream> = (0..1500)
        .map(|i| TcpStream::connect(&up.addr).unwrap_or_else(|e| panic!("socket {i}: {e}")))
        .collect();
    let started = Instant::now();
    let (status, _) = http(&up.addr, "GET", "/healthz", None, "");
    assert_eq!(status, 200);
    let (status, body) = http(&up.addr, "GET", "/api/v1/vis", Some(&token), "");
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(idle);

    // A node of 2^63 MiB: refused at validation, naming the field.
    let design = r#"{"topology": {"id": "t", "nodes": [{"id": "a", "ram": 9223372036854775808, "disk": 1}]}}"#;
    let (status, body) = http(&up.addr, "POST", "/api/v1/vis", Some(&token), design);
    assert_eq!(status, 422, "{body}");
    let v = json(&body);
    assert_eq!(v["code"], "invalid_topology");
    assert!(
        v["details"][0]
            .as_str()
            .unwrap()
            .contains("beyond any host"),
        "{v}"
    );
    // A field the schema does not name, and a body that is not JSON.
    let (status, body) = http(
        &up.addr,
        "POST",
        "/api/v1/vis",
        Some(&token),
        r#"{"catalogue": {"kind": "line"}, "owner": "someone-else"}"#,
    );
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (422, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = http(&up.addr, "POST", "/api/v1/vis", Some(&token), "{");
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    // The server is still there.
    let (status, _) = http(&up.addr, "GET", "/healthz", None, "");
    assert_eq!(status, 200);

    // The administrator's password is shown once: when it is created.
    assert!(
        up.banner.iter().any(|l| l.contains(&up.password)),
        "{:?}",
        up.banner
    );
    let password = up.password.clone();
    drop(up);
    let again = up_with_1024_files(dir.path());
    assert!(
        !again.banner.iter().any(|l| l.contains(&password)),
        "{:?}",
        again.banner
    );
    assert!(
        again
            .banner
            .iter()
            .any(|l| l.contains("admin:") && l.contains("(password in ")),
        "{:?}",
        again.banner
    );
}

/// `neptune manager` given the first administrator's password in a file
/// never prints it: the operator has it, and logs keep what is printed.
/// Without the file it prints the generated one, once.
#[test]
fn a_password_from_a_file_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::write(d.join("agent.token"), "agent-token-of-the-password-test").unwrap();
    let password = "a-password-only-the-file-holds";
    std::fs::write(d.join("admin.password"), password).unwrap();
    let start = |db: &str, file: bool| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_neptune"));
        cmd.arg("manager")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--database-url")
            .arg(format!("sqlite://{}", d.join(db).display()))
            .arg("--image-dir")
            .arg(d.join("images"))
            .arg("--agent-token-file")
            .arg(d.join("agent.token"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if file {
            cmd.arg("--admin-password-file")
                .arg(d.join("admin.password"));
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(Ok(line)) = lines.next() {
            let listening = line.contains("listening on");
            banner.push(line);
            if listening || Instant::now() > deadline {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        banner.join("\n")
    };
    let from_file = start("file.db", true);
    assert!(
        from_file.contains("created the first administrator: admin (password from"),
        "{from_file}"
    );
    assert!(!from_file.contains(password), "{from_file}");
    let generated = start("generated.db", false);
    assert!(
        generated.contains("created the first administrator: admin / "),
        "{generated}"
    );
}
