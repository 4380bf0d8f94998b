//! `neptune up` and the API commands as a user runs them: the real binary
//! starts a Manager with simulated datacenters; the CLI logs in, creates,
//! requests, plans, accepts, waits for, saves a VM of, suspends, resumes and
//! terminates a VI. Then the same with real guests: `neptune up
//! --hypervisor libvirt` on the libvirt daemon named by
//! `NEPTUNE_TEST_LIBVIRT_URI` (required in CI, as for the adapter's tests).

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
    start_with(dir, &["--hosts", "2"], "napoli-1, napoli-2, roma-1, roma-2")
}

/// `neptune up` with `args`, checking that it names `hosts`.
fn start_with(dir: &Path, args: &[&str], hosts: &str) -> Up {
    start_from(neptune(), dir, args, hosts)
}

/// [`start_with`], through `command` (the binary itself, or a wrapper).
fn start_from(command: Command, dir: &Path, args: &[&str], hosts: &str) -> Up {
    let (up, rest) = spawn_up(command, dir, args);
    assert!(
        rest.iter()
            .any(|l| l.contains("admin:") && l.contains("admin /")),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains(hosts)), "{rest:?}");
    up
}

/// `neptune up` with `args` on `dir/data`, and the six lines it prints
/// after its URL. Its output is read to the end meanwhile: a closed pipe
/// would end it at its next line.
fn spawn_up(mut command: Command, dir: &Path, args: &[&str]) -> (Up, Vec<String>) {
    let mut child = command
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
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
    // Keep draining stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Up { child, url }, rest)
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

/// Creates a VI of the catalogue; its id.
fn create_vi(dir: &Path, kind: &str, nodes: usize) -> String {
    let nodes = nodes.to_string();
    let created = ok(&cli(
        dir,
        &[
            "vi",
            "create",
            "--catalogue",
            kind,
            "--nodes",
            &nodes,
            "--output",
            "json",
        ],
        None,
    ));
    serde_json::from_str::<serde_json::Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The permission bits of `path`.
fn private_mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
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
    // An SSH key of the admin's, for the guests of their VIs.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILT91Hmx+45ACVNbiRLr9Od5zQ0o0M1A4izOeu5J7tZN admin@laptop";
    let added = ok(&cli(dir.path(), &["key", "add", "-"], Some(key)));
    assert!(
        added.contains(": admin@laptop (SHA256:xO1umV1sxzyE5Gs7w5oaTXH4M67Uacliq3yEzy6O56w)"),
        "{added}"
    );
    let keys = ok(&cli(dir.path(), &["key", "list"], None));
    assert!(keys.contains("ssh-ed25519"), "{keys}");
    let bad = cli(dir.path(), &["key", "add", "-"], Some("not a key"));
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not an SSH key type"),
        "{bad:?}"
    );

    let templates = ok(&cli(dir.path(), &["template", "list"], None));
    // Simulated hosts boot nothing: the default template says so.
    let blank = templates
        .lines()
        .find(|l| l.starts_with("blank "))
        .unwrap_or_else(|| panic!("{templates}"));
    assert!(blank.contains("none: an empty disk"), "{blank}");
    assert!(!templates.contains("Debian"), "{templates}");

    let id = create_vi(dir.path(), "cluster", 4);
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
    assert_eq!(plan["optimal"], true, "four VMs are placed exactly");
    let text = ok(&cli(
        dir.path(),
        &["vi", "plan", &id, "--datacenter", "roma"],
        None,
    ));
    assert!(
        text.starts_with("datacenter roma: cut 0 Mbit/s, proven the least, admissible"),
        "{text}"
    );
    // The plan's addresses: every interface on its link, the Home Address.
    assert!(
        text.contains("INTERFACE") && text.contains("ADDRESS"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("Home Address (roma)")),
        "{text}"
    );
    assert!(
        text.lines().filter(|l| l.contains("link ")).count() >= 4,
        "{text}"
    );
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
    // 4 disks, 4 defines, 4 starts, 4 waits, its Home Address delivered.
    assert!(shown.contains("deploy succeeded (17/17)"), "{shown}");
    // Each VM's state as its host reports it now.
    assert!(shown.contains(" STATE"), "{shown}");
    assert_eq!(
        shown
            .lines()
            .filter(|l| l.trim_end().ends_with(" ready"))
            .count(),
        4,
        "{shown}"
    );
    // Real Agents made the disks on the simulated hosts.
    let disks: usize = ["roma-1", "roma-2"]
        .iter()
        .map(|h| {
            std::fs::read_dir(dir.path().join("data/hosts").join(h).join("disks"))
                .map_or(0, |d| d.count())
        })
        .sum();
    assert_eq!(disks, 4);

    // Its console, through the Manager and the host's Agent: the guest
    // said it is ready, and what is typed shows (a simulated terminal
    // echoes it).
    let console = ok(&cli(
        dir.path(),
        &["vi", "console", &id, "head", "--send", "uptime"],
        None,
    ));
    assert!(
        console.contains(&format!("NEPTUNE-READY iid-{}-head", id.replace('-', ""))),
        "{console}"
    );
    assert!(console.contains("uptime\n"), "{console}");
    let nowhere = cli(dir.path(), &["vi", "console", &id, "nobody"], None);
    assert_eq!(nowhere.status.code(), Some(1), "{nowhere:?}");

    // A VM saved as a template, through the Agent of its host.
    let saved = ok(&cli(
        dir.path(),
        &["template", "save", "golden", "--vi", &id, "--node", "head"],
        None,
    ));
    assert!(saved.contains("template golden saved"), "{saved}");
    let templates = ok(&cli(dir.path(), &["template", "list"], None));
    let golden = templates
        .lines()
        .find(|l| l.starts_with("golden"))
        .unwrap_or_else(|| panic!("{templates}"));
    assert!(
        golden.contains(" admin ") && golden.contains(" private "),
        "{golden}"
    );
    let published = ok(&cli(dir.path(), &["template", "publish", "golden"], None));
    assert_eq!(published.trim(), "template golden (admin) is public");
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

    // An image of this machine uploaded as a template of one's own.
    let image = dir.path().join("own.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("20M")
        .status()
        .unwrap();
    assert!(made.success());
    let imported = ok(&cli(
        dir.path(),
        &[
            "template",
            "import",
            image.to_str().unwrap(),
            "--name",
            "own",
            "--os",
            "Blank",
        ],
        None,
    ));
    assert_eq!(
        imported.trim(),
        "template own imported (qcow2 20 MiB, private)"
    );
    let templates = ok(&cli(dir.path(), &["template", "list"], None));
    assert!(
        templates
            .lines()
            .any(|l| l.starts_with("own ") && l.contains(" private ") && l.contains(" Blank ")),
        "{templates}"
    );
    let again = cli(
        dir.path(),
        &[
            "template",
            "import",
            image.to_str().unwrap(),
            "--name",
            "own",
        ],
        None,
    );
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
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
    // Tenants' data and the database are the service's alone.
    assert_eq!(private_mode(&dir.path().join("data")), 0o700);
    assert_eq!(private_mode(&dir.path().join("data/neptune.db")), 0o600);
    assert_eq!(private_mode(&dir.path().join("data/neptune.db-wal")), 0o600);
    for host in ["roma-1", "roma-2"] {
        let disks = dir.path().join("data/hosts").join(host).join("disks");
        for disk in std::fs::read_dir(disks).unwrap() {
            let disk = disk.unwrap().path();
            assert_eq!(private_mode(&disk) & 0o077, 0, "{}", disk.display());
        }
    }

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

    // The CLI's token is listed, expires, and goes with `logout`.
    let tokens = ok(&cli(dir.path(), &["token", "list"], None));
    let mine = tokens
        .lines()
        .find(|l| l.contains("(this CLI)"))
        .unwrap_or_else(|| panic!("{tokens}"));
    assert!(
        mine.contains("neptune CLI on") && mine.contains(" api ") && !mine.contains("never"),
        "{mine}"
    );
    // An Agent's token, and the users.
    let agent = ok(&cli(
        dir.path(),
        &[
            "token",
            "create",
            "spare",
            "--agent",
            "napoli/napoli-9",
            "--days",
            "7",
        ],
        None,
    ));
    assert_eq!(agent.trim().len(), 64, "{agent}");
    let users = ok(&cli(dir.path(), &["user", "list"], None));
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("admin") && l.contains(" enabled")),
        "{users}"
    );
    let out = ok(&cli(dir.path(), &["logout"], None));
    assert!(out.contains("logged out"), "{out}");
    let after = cli(dir.path(), &["vi", "list"], None);
    assert_eq!(after.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&after.stderr).contains("not logged in"));
    drop(up);
}

/// `neptune up`'s simulated hosts cost no file each: 600 of them (3 files
/// each made 1800) come up and all register under a limit of 512 open
/// files, and a VI deploys on them.
/// An init system stops `neptune up` with SIGTERM (SIGTERM's default
/// action would end it mid-request): it exits 0, and the next start on
/// the same data directory serves the same administrator.
#[test]
fn up_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = start(dir.path());
    let password = std::fs::read_to_string(dir.path().join("data/admin.password")).unwrap();
    ok(&cli(
        dir.path(),
        &["login", "--url", &up.url, "--password-stdin"],
        Some(&password),
    ));
    let term = Command::new("kill")
        .args(["-TERM", &up.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "neptune up still runs 30 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(up);

    let (restarted, rest) = spawn_up(neptune(), dir.path(), &["--hosts", "2"]);
    assert!(
        rest.iter()
            .any(|l| l.contains("admin:") && l.contains("password in")),
        "{rest:?}"
    );
    ok(&cli(
        dir.path(),
        &["login", "--url", &restarted.url, "--password-stdin"],
        Some(&password),
    ));
}

#[test]
fn up_runs_hundreds_of_hosts_under_a_small_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut limited = Command::new("prlimit");
    limited
        .arg("--nofile=512:512")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_neptune"));
    let up = start_from(limited, dir.path(), &["--hosts", "300"], "napoli-300");
    let password = std::fs::read_to_string(dir.path().join("data/admin.password")).unwrap();
    ok(&cli(
        dir.path(),
        &["login", "--url", &up.url, "--password-stdin"],
        Some(&password),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let hosts = ok(&cli(dir.path(), &["host", "list"], None));
        let ready = hosts.lines().filter(|l| l.contains(" ready ")).count();
        if ready == 600 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ready} of 600 hosts ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let id = create_vi(dir.path(), "cluster", 20);
    ok(&cli(dir.path(), &["vi", "request", &id], None));
    ok(&cli(dir.path(), &["vi", "accept", &id], None));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "running"
    );
    drop(up);
}

/// `neptune up`'s datacenters each have their switch: a VI of 100 VMs
/// moves napoli -> roma -> napoli from the CLI, its Home Address following
/// it (the switches' tables, kept in the data directory, say so), its
/// disks on the hosts of the datacenter it runs in and nowhere else.
#[test]
fn up_moves_a_100_vm_vi_between_datacenters() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = "napoli-1, napoli-2, napoli-3, napoli-4, napoli-5, napoli-6, napoli-7, roma-1";
    let up = start_with(dir.path(), &["--hosts", "7"], hosts);
    let password = std::fs::read_to_string(dir.path().join("data/admin.password")).unwrap();
    ok(&cli(
        dir.path(),
        &["login", "--url", &up.url, "--password-stdin"],
        Some(&password),
    ));
    let switches = ok(&cli(dir.path(), &["datacenter", "switches"], None));
    for dc in ["napoli", "roma"] {
        let row = switches
            .lines()
            .find(|l| l.starts_with(dc))
            .unwrap_or_else(|| panic!("{switches}"));
        assert!(row.contains(" yes "), "{row}");
    }
    let raised = ok(&cli(
        dir.path(),
        &["user", "quota", "admin", "--vms", "128", "--vcpus", "256"],
        None,
    ));
    assert!(
        raised.starts_with("user admin: 128 VMs, 256 vCPUs,"),
        "{raised}"
    );
    let napoli: Vec<String> = (1..=7).map(|i| format!("napoli-{i}")).collect();
    let roma: Vec<String> = (1..=7).map(|i| format!("roma-{i}")).collect();
    let id = create_vi(dir.path(), "nat-backends", 100);
    ok(&cli(dir.path(), &["vi", "request", &id], None));
    ok(&cli(
        dir.path(),
        &["vi", "accept", &id, "--datacenter", "napoli"],
        None,
    ));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "running"
    );
    assert_eq!(disks_on(dir.path(), &as_strs(&napoli)), 100);
    let show = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(&cli(
            dir,
            &["vi", "show", &id, "--output", "json"],
            None,
        )))
        .unwrap()
    };
    let home = show(dir.path())["addresses"]["home_addresses"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    // The switches keep their tables in the data directory.
    let table = |dc: &str| -> serde_json::Value {
        let path = dir.path().join(format!("data/switches/{dc}.table.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    assert_eq!(table("napoli")["visitors"][&home]["vi"], id.as_str());

    let plan = ok(&cli(
        dir.path(),
        &["vi", "migrate", &id, "--to", "roma", "--plan"],
        None,
    ));
    assert!(plan.starts_with("from napoli to roma: cut "), "{plan}");
    assert!(
        plan.contains(&format!("tunnelled from home: {home}")),
        "{plan}"
    );
    for (to, here, away) in [("roma", &roma, &napoli), ("napoli", &napoli, &roma)] {
        ok(&cli(dir.path(), &["vi", "migrate", &id, "--to", to], None));
        assert_eq!(
            ok(&cli(
                dir.path(),
                &["vi", "wait", &id, "--timeout", "300"],
                None
            ))
            .trim(),
            "running",
            "to {to}"
        );
        let v = show(dir.path());
        assert_eq!(v["location"], to, "{v}");
        assert_eq!(
            v["jobs"].as_array().unwrap().last().unwrap()["state"],
            "succeeded"
        );
        assert_eq!(disks_on(dir.path(), &as_strs(here)), 100, "to {to}");
        assert_eq!(disks_on(dir.path(), &as_strs(away)), 0, "to {to}");
        let (napoli_table, roma_table) = (table("napoli"), table("roma"));
        if to == "roma" {
            assert_eq!(napoli_table["bindings"][&home]["care_of"], "198.18.0.2");
            assert!(napoli_table["visitors"].get(&home).is_none());
            assert_eq!(roma_table["visitors"][&home]["vi"], id.as_str());
            let shown = ok(&cli(dir.path(), &["vi", "show", &id], None));
            assert!(shown.contains("runs in roma, away from home"), "{shown}");
            assert!(shown.contains(" napoli (at roma)"), "{shown}");
            assert!(
                shown.contains(&format!("binding: {home} -> roma (care-of 198.18.0.2)")),
                "{shown}"
            );
        } else {
            assert!(napoli_table["bindings"].get(&home).is_none());
            assert_eq!(napoli_table["visitors"][&home]["vi"], id.as_str());
            assert!(roma_table["visitors"].get(&home).is_none());
        }
    }
    ok(&cli(dir.path(), &["vi", "terminate", &id], None));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "terminated"
    );
    assert!(table("napoli")["visitors"].get(&home).is_none());
    drop(up);
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `virsh` on `uri`: its output, or its error.
fn try_virsh(uri: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .args(["--quiet", "--connect", uri])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn virsh(uri: &str, args: &[&str]) -> String {
    try_virsh(uri, args).unwrap_or_else(|e| panic!("virsh {args:?}: {e}"))
}

/// The names `virsh` lists with `what`, that start with `prefix`.
fn virsh_names(uri: &str, what: &[&str], prefix: &str) -> Vec<String> {
    starting_with(&virsh(uri, what), prefix)
}

/// The lines of a `virsh` listing that start with `prefix`.
fn starting_with(listing: &str, prefix: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Removes what a failed run leaves on the daemon: the domains of the VI
/// and its networks.
struct Leftovers {
    uri: String,
    prefixes: Vec<String>,
}

impl Drop for Leftovers {
    // Never panics: it runs while a failed test unwinds.
    fn drop(&mut self) {
        let names = |what: &[&str], prefix: &str| {
            starting_with(&try_virsh(&self.uri, what).unwrap_or_default(), prefix)
        };
        for p in &self.prefixes {
            for d in names(&["list", "--all", "--name"], p) {
                let _ = try_virsh(&self.uri, &["destroy", &d]);
                let _ = try_virsh(&self.uri, &["undefine", &d]);
            }
            for n in names(&["net-list", "--all", "--name"], p) {
                let _ = try_virsh(&self.uri, &["net-destroy", &n]);
                let _ = try_virsh(&self.uri, &["net-undefine", &n]);
            }
        }
    }
}

/// `neptune up --hypervisor libvirt`: a VI of the catalogue (a NAT entry
/// point in front of a backend) deploys as real QEMU guests on this
/// machine's libvirt, each on its host's disk, wired to its link's network,
/// and terminating it leaves nothing on the daemon.
#[test]
fn up_on_libvirt_runs_real_guests() {
    let Ok(uri) = std::env::var("NEPTUNE_TEST_LIBVIRT_URI") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the libvirt tests: set NEPTUNE_TEST_LIBVIRT_URI"
        );
        skipped("NEPTUNE_TEST_LIBVIRT_URI is not set (scripts/libvirt-test-server starts a libvirt daemon)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = start_with(
        dir.path(),
        &[
            "--hosts",
            "2",
            "--datacenters",
            "napoli",
            "--hypervisor",
            "libvirt",
            "--libvirt-uri",
            &uri,
            // Emulated guests: they run on every machine, KVM or not.
            "--kvm",
            "off",
        ],
        "napoli-1, napoli-2",
    );
    let password = std::fs::read_to_string(dir.path().join("data/admin.password")).unwrap();
    ok(&cli(
        dir.path(),
        &["login", "--url", &up.url, "--password-stdin"],
        Some(&password),
    ));
    let id = create_vi(dir.path(), "nat-backends", 2);
    let hex = id.replace('-', "");
    let vm_prefix = format!("nt-{}-", &hex[..12]);
    let _leftovers = Leftovers {
        uri: uri.clone(),
        prefixes: vec![vm_prefix.clone(), format!("nt-{}-", &hex[..8])],
    };
    ok(&cli(dir.path(), &["vi", "request", &id], None));
    ok(&cli(
        dir.path(),
        &["vi", "accept", &id, "--datacenter", "napoli"],
        None,
    ));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "running"
    );

    let running = virsh_names(&uri, &["list", "--name"], &vm_prefix);
    assert_eq!(running.len(), 2, "{running:?}");
    for vm in &running {
        // The disk is the host's own copy of the template.
        let disks = virsh(&uri, &["domblklist", vm]);
        assert!(
            disks.contains(&format!("{}/data/hosts/napoli-", dir.path().display())),
            "{disks}"
        );
        let host_disk = disks
            .lines()
            .find_map(|l| l.split_whitespace().nth(1))
            .unwrap();
        assert!(Path::new(host_disk).is_file(), "{host_disk}");
        // The backend's NIC is on the LAN's network; the entry point has
        // one there too, and one on the public network.
        let nics = virsh(&uri, &["domiflist", vm]);
        assert!(nics.contains(&format!("nt-{}-", &hex[..8])), "{nics}");
    }
    // The default template booted real guests: each configured itself from
    // its seed and said so on its console.
    let templates = ok(&cli(dir.path(), &["template", "list"], None));
    assert!(
        templates
            .lines()
            .any(|l| l.starts_with("neptune-tiny ") && l.contains("Neptune tiny test guest")),
        "{templates}"
    );
    for node in ["gateway", "backend1"] {
        let console = ok(&cli(dir.path(), &["vi", "console", &id, node], None));
        assert!(
            console.contains(&format!("NEPTUNE-READY iid-{hex}-{node}")),
            "{console}"
        );
    }
    let gateway = running.iter().find(|v| v.ends_with("-gateway")).unwrap();
    assert!(virsh(&uri, &["domiflist", gateway]).contains("public"));
    let info = virsh(&uri, &["dominfo", gateway]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Max memory:") && l.contains("524288 KiB")),
        "the catalogue's 512 MiB: {info}"
    );

    ok(&cli(dir.path(), &["vi", "terminate", &id], None));
    assert_eq!(
        ok(&cli(dir.path(), &["vi", "wait", &id], None)).trim(),
        "terminated"
    );
    assert_eq!(
        virsh_names(&uri, &["list", "--all", "--name"], &vm_prefix),
        Vec::<String>::new()
    );
    assert_eq!(
        virsh_names(
            &uri,
            &["net-list", "--all", "--name"],
            &format!("nt-{}-", &hex[..8])
        ),
        Vec::<String>::new()
    );
    drop(up);
}

/// Says that the calling test did not run, past the test harness's output
/// capture, so a plain `cargo test` shows it: the test passes without
/// proving anything. (In CI, `CI` set, a missing backend fails instead.)
fn skipped(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (passes without running; see README.md, Test)"
    );
}
