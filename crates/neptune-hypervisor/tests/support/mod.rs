//! What the libvirt tests and the conformance suite share: the daemon
//! the tests run against, `virsh`, a second daemon standing for another
//! host, and the note a skipped test leaves. Each test binary uses part
//! of it.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use neptune_hypervisor::libvirt::{LibvirtConfig, LibvirtHypervisor};
use neptune_hypervisor::Capacity;

/// The daemon named by `NEPTUNE_TEST_LIBVIRT_URI`; `None` (the test
/// skipped) when it is not set, outside CI.
pub(crate) fn libvirt_uri() -> Option<String> {
    let Ok(uri) = std::env::var("NEPTUNE_TEST_LIBVIRT_URI") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the libvirt tests: set NEPTUNE_TEST_LIBVIRT_URI"
        );
        skipped("NEPTUNE_TEST_LIBVIRT_URI is not set (scripts/libvirt-test-server starts a libvirt daemon)");
        return None;
    };
    Some(uri)
}

/// Runs `virsh` against `uri`: whether it succeeded, and what it said.
pub(crate) fn virsh(uri: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .arg("--quiet")
        .arg("--connect")
        .arg(uri)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The names a `virsh` listing prints.
pub(crate) fn names(uri: &str, what: &[&str]) -> Vec<String> {
    let (ok, text) = virsh(uri, what);
    assert!(ok, "{text}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An adapter over `data_dir` running emulated guests.
pub(crate) fn adapter(uri: &str, data_dir: &Path, capacity: Capacity) -> LibvirtHypervisor {
    LibvirtHypervisor::new(LibvirtConfig {
        uri: uri.to_owned(),
        data_dir: data_dir.to_owned(),
        capacity,
        // Emulated guests: they run on every machine, KVM or not.
        kvm: Some(false),
        public_bridge: None,
        migration: Default::default(),
        migration_max_downtime: None,
    })
    .unwrap()
}

/// Says that the calling test did not run, past the test harness's output
/// capture, so a plain `cargo test` shows it: the test passes without
/// proving anything. (In CI, `CI` set, a missing backend fails instead.)
pub(crate) fn skipped(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (passes without running; see README.md, Test)"
    );
}

/// A second libvirt daemon, standing for another host: its own network
/// namespace (so its bridges may take the names the first daemon's have)
/// reached from the test's over a veth pair, its own mount namespace over
/// libvirt's run, state and configuration folders, its own host UUID
/// (libvirt refuses to move a VM to the host it is on). QEMU's capability
/// probe (seconds under emulation) is cached across runs.
pub(crate) struct SecondDaemon {
    ns: String,
    veth: String,
    child: std::process::Child,
    /// Its connection URI (a socket in its own folder).
    pub(crate) uri: String,
    /// Where the moves' streams reach it: `tcp://ADDRESS`.
    pub(crate) stream: String,
    _dir: tempfile::TempDir,
}

impl SecondDaemon {
    /// Starts it and waits until it answers.
    pub(crate) fn start() -> Self {
        let pid = std::process::id();
        let ns = format!("ntt{pid}m");
        let veth = format!("ntm{pid}");
        let net = 100 + pid % 100;
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &ns]);
        let inside = format!("{veth}b");
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns]);
        ip(&["addr", "add", &format!("10.213.{net}.1/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        for args in [
            vec!["addr", "add", &format!("10.213.{net}.2/30"), "dev", &inside],
            vec!["link", "set", &inside, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", ns.as_str()];
            all.extend(args.iter().copied());
            ip(&all);
        }
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path();
        for d in ["run", "lib", "etc", "log"] {
            std::fs::create_dir_all(h.join(d)).unwrap();
        }
        let cache = Path::new("/var/tmp/neptune-test-libvirt-cache");
        std::fs::create_dir_all(cache).unwrap();
        std::fs::write(
            h.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\nstdio_handler = \"file\"\nmigration_address = \"0.0.0.0\"\n",
        )
        .unwrap();
        let host_uuid = format!("6e657074-756e-4500-8000-{:012x}", u64::from(pid));
        std::fs::write(
            h.join("etc/libvirtd.conf"),
            format!("auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\nunix_sock_rw_perms = \"0700\"\nhost_uuid = \"{host_uuid}\"\n"),
        )
        .unwrap();
        let mounts = [
            ("run", "/run/libvirt"),
            ("lib", "/var/lib/libvirt"),
            ("etc", "/etc/libvirt"),
            ("log", "/var/log/libvirt"),
        ]
        .iter()
        .map(|(from, to)| format!("mkdir -p {to} && mount --bind {}/{from} {to}", h.display()))
        .chain([format!(
            "mkdir -p /var/cache/libvirt && mount --bind {} /var/cache/libvirt",
            cache.display()
        )])
        .collect::<Vec<_>>()
        .join(" && ");
        let script = format!(
            "mount --make-rprivate / && {mounts} && exec libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid"
        );
        let log = std::fs::File::create(h.join("libvirtd.out")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "unshare", "-m", "sh", "-c", &script])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let uri = format!(
            "qemu+unix:///system?socket={}",
            h.join("run/libvirt-sock").display()
        );
        let mut daemon = SecondDaemon {
            ns,
            veth,
            child,
            uri,
            stream: format!("tcp://10.213.{net}.2"),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if virsh(&daemon.uri, &["version"]).0 {
                break;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                let out = std::fs::read_to_string(daemon._dir.path().join("libvirtd.out"))
                    .unwrap_or_default();
                panic!("the second libvirtd ended ({status}): {out}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the second libvirtd does not answer"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        daemon
    }
}

impl Drop for SecondDaemon {
    fn drop(&mut self) {
        let (_, names) = virsh(&self.uri, &["list", "--all", "--name"]);
        for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
            virsh(&self.uri, &["destroy", name]);
            virsh(&self.uri, &["undefine", name]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
