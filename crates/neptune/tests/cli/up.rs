//! `neptune up` and the API commands as a user runs them: the real binary
//! starts a Manager with simulated datacenters; the CLI logs in, creates,
//! requests, plans, accepts, waits for, saves a VM of, suspends, resumes and
//! terminates a VI.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

struct Up {
    child: Child,
    url: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn neptune() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neptune"))
}

fn start(dir: &Path) -> Up {
    let mut child = neptune()
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--hosts",
            "2",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("Neptune is up at ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let rest: Vec<String> = lines.by_ref().take(6).map(Result::unwrap).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("admin:") && l.contains("admin /")),
        "{rest:?}"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("napoli-1, napoli-2, roma-1, roma-2")),
        "{rest:?}"
    );
    // Keep draining stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Up { child, url }
}

fn cli(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = neptune()
        .args(args)
        .env("NEPTUNE_CONFIG", dir.join("credentials.json"))
        .env_remove("NEPTUNE_URL")
        .env_remove("NEPTUNE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Disks on the simulated hosts `hosts` of `neptune up`.
fn disks_on(dir: &Path, hosts: &[&str]) -> usize {
    hosts
        .iter()
        .map(|h| {
            std::fs::read_dir(dir.join("data/hosts").join(h).join("disks")).map_or(0, |d| d.count())
        })
        .sum()
}

#[test]
fn up_then_a_vi_lifecycle_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(dir.path());
    let password = std::fs::read_to_string(dir.path().join("data/admin.password")).unwrap();
    let mode = std::fs::metadata(dir.path().join("data/admin.password")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let wrong = cli(
        dir.path(),
        &["login", "--url", &up.url, "--password-stdin"],
        Some("nope\n"),
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong user name or password"));
    ok(&cli(
        dir.path(),
        &["login", "--url", &up.url, "--password-stdin"],
        Some(&password),
    ));
    let creds = std::fs::read_to_string(dir.path().join("credentials.json")).unwrap();
    assert!(
        !creds.contains(password.trim()),
        "the password is not stored"
    );

    let hosts = ok(&cli(dir.path(), &["host", "list"], None));
    assert_eq!(
        hosts.lines().filter(|l| l.contains(" ready ")).count(),
        4,
        "{hosts}"
    );
    let templates = ok(&cli(dir.path(), &["template", "list"], None));
    assert!(templates.contains("debian-12"), "{templates}");

    let created = ok(&cli(
        dir.path(),
        &[
            "vi",
            "create",
            "--catalogue",
            "cluster",
            "--nodes",
            "4",
            "--output",
            "json",
        ],
        None,
    ));
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&cli(dir.path(), &["vi", "request", &id], None));
    let plan = ok(&cli(
        dir.path(),
        &[
            "vi",
            "plan",
            &id,
            "--datacenter",
            "roma",
            "--output",
            "json",
        ],
        None,
    ));
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["vms"].as_array().unwrap().len(), 4);
    assert!(plan["vms"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["host"].as_str().unwrap().starts_with("roma-")));
    ok(&cli(
        dir.path(),
        &["vi", "accept", &id, "--datacenter", "roma"],
        None,
    ));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "running"
    );
    let shown = ok(&cli(dir.path(), &["vi", "show", &id], None));
    assert!(shown.contains("deploy succeeded (12/12)"), "{shown}");
    // Real Agents made the disks on the simulated hosts.
    let disks: usize = ["roma-1", "roma-2"]
        .iter()
        .map(|h| {
            std::fs::read_dir(dir.path().join("data/hosts").join(h).join("disks"))
                .map_or(0, |d| d.count())
        })
        .sum();
    assert_eq!(disks, 4);

    // A VM saved as a template, through the Agent of its host.
    let saved = ok(&cli(
        dir.path(),
        &["template", "save", "golden", "--vi", &id, "--node", "head"],
        None,
    ));
    assert!(saved.contains("template golden saved"), "{saved}");
    let templates = ok(&cli(dir.path(), &["template", "list"], None));
    assert!(templates.contains("golden"), "{templates}");
    let taken = cli(
        dir.path(),
        &["template", "save", "golden", "--vi", &id, "--node", "head"],
        None,
    );
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );

    // Suspend frees the hosts; resume brings the VMs back through the Agents.
    ok(&cli(dir.path(), &["vi", "suspend", &id], None));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "suspended"
    );
    assert_eq!(disks_on(dir.path(), &["roma-1", "roma-2"]), 0);
    let saved_dir = dir
        .path()
        .join("data/images/suspended")
        .join(id.replace('-', ""));
    assert_eq!(std::fs::read_dir(&saved_dir).unwrap().count(), 8);
    ok(&cli(dir.path(), &["vi", "resume", &id], None));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "running"
    );
    assert_eq!(disks_on(dir.path(), &["roma-1", "roma-2"]), 4);
    assert!(!saved_dir.exists());

    ok(&cli(dir.path(), &["vi", "terminate", &id], None));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "terminated"
    );
    let refused = cli(dir.path(), &["vi", "accept", &id], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a terminated VI is final (conflict)")
    );
    drop(up);
}
