//! A Service Switching domain in network namespaces: a correspondent, an
//! Internet router, three Edge Service Switches (A is home) and a VM whose
//! veth end is re-plugged from datacenter to datacenter.
//!
//! ```text
//!   cn 198.18.0.2 ── inet ──┬── 198.18.1.2 ess-a (home of 203.0.113.0/24) ── vm 203.0.113.10
//!                           ├── 198.18.2.2 ess-b
//!                           └── 198.18.3.2 ess-c
//! ```
//!
//! ess-b lists 45 more peers (`198.51.100.1`-`45`, no switch behind them)
//! before ess-a and ess-c, so its real peers are its 46th and 47th.
//!
//! Everything lives in namespaces named `nss<pid>-<n>-*`, removed on drop
//! (even when a test fails). Only the harness uses `ip`; the switches program
//! the kernel themselves.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neptune_switch::auth::SwitchKey;
use neptune_switch::client::ControlClient;

pub const HOME: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const GW: &str = "169.254.0.1";
pub const API_PORT: u16 = 7400;
/// Peers ess-b lists before ess-a and ess-c (addresses of no switch).
pub const EXTRA_PEERS_OF_B: u8 = 45;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The daemon: `$NEPTUNE_SWITCHD` if set (the benchmark sets it to a
/// release build), else the `neptune-switchd` built for these tests.
pub fn daemon_path() -> PathBuf {
    std::env::var_os("NEPTUNE_SWITCHD")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_BIN_EXE_neptune-switchd").map(PathBuf::from))
        .expect("NEPTUNE_SWITCHD is not set and this is not the switch's test build")
}

/// Fails loudly (never silently passes) when the tests cannot run.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u.to_owned()));
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "these tests build network namespaces and must run as root (CI runs them as root)"
    );
    let ok = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "these tests need iproute2 (`ip`)");
    let ok = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success());
    assert!(
        matches!(ok, Ok(true)),
        "these tests need nftables (`nft`) to change the switches' state by hand"
    );
}

/// Runs a command; panics with its output on failure.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command and returns its stdout, ignoring failure.
pub fn sh_out(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Runs `f` on a thread inside network namespace `ns`; sockets it creates
/// stay in that namespace.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_ns(ns, f)
        .join()
        .expect("namespace thread panicked")
}

/// Like [`in_ns`], in the background.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Which data plane the switches run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Kernel,
    Userspace,
    /// The userspace plane with VXLAN-GPE on the wire (UDP offloads).
    UserspaceGpe,
    /// The userspace plane, RFC 2003, without the injector: super-packets
    /// cut in userspace, segments sent by the raw socket and joined in B.
    UserspaceSockets,
    /// The same on the VXLAN-GPE wire: UDP_SEGMENT trains, UDP_GRO.
    UserspaceGpeSockets,
}

impl Plane {
    /// Whether VXLAN-GPE (UDP 4790) is on the wire.
    pub fn gpe(self) -> bool {
        matches!(
            self,
            Plane::Kernel | Plane::UserspaceGpe | Plane::UserspaceGpeSockets
        )
    }
}

/// One ESS of the bed.
#[derive(Debug, Clone)]
pub struct Ess {
    pub ns: String,
    pub care_of: Ipv4Addr,
    pub config: PathBuf,
    pub log: PathBuf,
    pub state: PathBuf,
}

pub struct Testbed {
    pub prefix: String,
    pub plane: Plane,
    pub dir: tempfile::TempDir,
    pub key: SwitchKey,
    pub ess: HashMap<&'static str, Ess>,
    daemons: HashMap<&'static str, Child>,
    namespaces: Vec<String>,
    /// Which ESS the VM port is plugged into.
    pub vm_at: &'static str,
}

impl Testbed {
    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    pub fn new(plane: Plane) -> Testbed {
        require_root();
        let prefix = format!(
            "nss{}-{}-",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let key_hex =
            "6e657074756e652d7465737462656420".to_owned() + "6b65792d30313233343536373839";
        std::fs::write(dir.path().join("key"), &key_hex).expect("key");
        let key = SwitchKey::from_file(&dir.path().join("key")).expect("key");
        let mut bed = Testbed {
            prefix,
            plane,
            dir,
            key,
            ess: HashMap::new(),
            daemons: HashMap::new(),
            namespaces: Vec::new(),
            vm_at: "a",
        };
        bed.build_network();
        for (name, n) in [("a", 1u8), ("b", 2), ("c", 3)] {
            let care_of = Ipv4Addr::new(198, 18, n, 2);
            let ess = Ess {
                ns: bed.ns(&format!("ess{name}")),
                care_of,
                config: bed.dir.path().join(format!("ess-{name}.json")),
                log: bed.dir.path().join(format!("ess-{name}.log")),
                state: bed.dir.path().join(format!("ess-{name}.table.json")),
            };
            // ess-b knows 45 more switches, listed before the real ones: a
            // peer beyond the 40th must be reached like the first (the kernel
            // plane once had policy rules for the first 40 peers only).
            let others = if name == "b" { EXTRA_PEERS_OF_B } else { 0 };
            let peers: Vec<String> = (1..=others)
                .map(|i| format!("\"198.51.100.{i}\""))
                .chain(
                    (1u8..=3)
                        .filter(|m| *m != n)
                        .map(|m| format!("\"198.18.{m}.2\"")),
                )
                .collect();
            let home = if name == "a" {
                "\"203.0.113.0/24\""
            } else {
                ""
            };
            let plane_json = match plane {
                Plane::Kernel => r#"{"kind":"kernel"}"#,
                Plane::Userspace => r#"{"kind":"userspace"}"#,
                Plane::UserspaceGpe => r#"{"kind":"userspace","wire":"vxlan-gpe"}"#,
                Plane::UserspaceSockets => r#"{"kind":"userspace","inject":false}"#,
                Plane::UserspaceGpeSockets => {
                    r#"{"kind":"userspace","wire":"vxlan-gpe","inject":false}"#
                }
            };
            let config = format!(
                r#"{{"name":"ess-{name}","listen":"127.0.0.1:{API_PORT}","state_file":"{}","key_file":"{}",
                "care_of":"{care_of}","home_prefixes":[{home}],"peers":[{}],"data_plane":{plane_json},
                "reconcile_secs":1}}"#,
                ess.state.display(),
                bed.dir.path().join("key").display(),
                peers.join(",")
            );
            std::fs::write(&ess.config, config).expect("config");
            bed.ess.insert(name, ess);
        }
        for name in ["a", "b", "c"] {
            bed.start(name);
        }
        // The VM starts at home, delivered by ess-a.
        bed.plug_port("a");
        let r = bed
            .client("a")
            .put_visitor(&HOME.to_string(), "vmport", "vi-1", 7, 0)
            .expect("visitor");
        assert_eq!(r.status, 200, "{}", r.body);
        bed
    }

    fn add_ns(&mut self, short: &str) -> String {
        let ns = self.ns(short);
        sh(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        for key in ["all/rp_filter", "default/rp_filter"] {
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sh",
                "-c",
                &format!("echo 0 > /proc/sys/net/ipv4/conf/{key}"),
            ]);
        }
        ns
    }

    fn veth(
        &self,
        a_ns: &str,
        a: &str,
        a_addr: Option<&str>,
        b_ns: &str,
        b: &str,
        b_addr: Option<&str>,
    ) {
        sh(&[
            "ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", b, "netns", b_ns,
        ]);
        for (ns, dev, addr) in [(a_ns, a, a_addr), (b_ns, b, b_addr)] {
            if let Some(addr) = addr {
                sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
    }

    fn build_network(&mut self) {
        let cn = self.add_ns("cn");
        let inet = self.add_ns("inet");
        let vm = self.add_ns("vm");
        let essa = self.add_ns("essa");
        let essb = self.add_ns("essb");
        let essc = self.add_ns("essc");
        for ns in [&inet, &essa, &essb, &essc] {
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ]);
        }
        self.veth(
            &cn,
            "eth0",
            Some("198.18.0.2/24"),
            &inet,
            "to-cn",
            Some("198.18.0.1/24"),
        );
        sh(&[
            "ip",
            "-n",
            &cn,
            "route",
            "add",
            "default",
            "via",
            "198.18.0.1",
        ]);
        for (n, ess) in [(1, &essa), (2, &essb), (3, &essc)] {
            let inet_side = format!("198.18.{n}.1/24");
            let ess_side = format!("198.18.{n}.2/24");
            let name = ["", "to-a", "to-b", "to-c"][n];
            self.veth(
                &inet,
                name,
                Some(&inet_side),
                ess,
                "uplink",
                Some(&ess_side),
            );
            sh(&[
                "ip",
                "-n",
                ess,
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{n}.1"),
            ]);
        }
        // The home prefix is announced by datacenter A.
        sh(&[
            "ip",
            "-n",
            &inet,
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "198.18.1.2",
        ]);
        // The VM: its home address, a link-local gateway on whatever port it is plugged into.
        self.veth(&vm, "eth0", Some("203.0.113.10/32"), &essa, "vmport", None);
        sh(&["ip", "-n", &vm, "route", "add", GW, "dev", "eth0"]);
        sh(&[
            "ip", "-n", &vm, "route", "add", "default", "via", GW, "dev", "eth0",
        ]);
    }

    /// Gives the VM's port its gateway address on `ess` (what an Agent does).
    fn plug_port(&self, ess: &str) {
        let ns = &self.ess[ess].ns;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "replace",
            &format!("{GW}/32"),
            "dev",
            "vmport",
        ]);
        sh(&["ip", "-n", ns, "link", "set", "vmport", "up"]);
    }

    /// Moves the VM's veth end to another datacenter.
    pub fn replug(&mut self, to: &'static str) {
        let from = &self.ess[self.vm_at].ns;
        sh(&[
            "ip",
            "-n",
            from,
            "link",
            "set",
            "vmport",
            "netns",
            &self.ess[to].ns,
        ]);
        self.plug_port(to);
        self.vm_at = to;
    }

    /// Re-plugs the VM into `to` and tells the switches, as the Manager will:
    /// the foreign switch accepts the visitor, the home switch binds (or
    /// unbinds when the VM comes home), the old datacenter forgets the visitor.
    pub fn move_vm(&mut self, to: &'static str, generation: u64) {
        self.move_vm_with(to, generation, None);
    }

    /// [`Testbed::move_vm`], optionally with reverse tunnelling to `reverse`.
    pub fn move_vm_with(&mut self, to: &'static str, generation: u64, reverse: Option<Ipv4Addr>) {
        let from = self.vm_at;
        self.replug(to);
        let home = HOME.to_string();
        let ok = |r: std::io::Result<neptune_switch::client::Reply>| {
            let r = r.expect("control call");
            assert_eq!(r.status, 200, "{}", r.body);
        };
        let visitor = neptune_switch::state::Visitor {
            port: "vmport".into(),
            via: None,
            vi: "vi-1".into(),
            key: 7,
            generation,
            reverse_tunnel: reverse,
        };
        ok(self.client(to).put_visitor_with(&home, visitor));
        if to == "a" {
            ok(self.client("a").delete_binding(&home, generation));
        } else {
            ok(self
                .client("a")
                .put_binding(&home, self.ess[to].care_of, generation));
        }
        ok(self.client(from).delete_visitor(&home, generation));
    }

    pub fn client(&self, ess: &str) -> NsClient {
        NsClient {
            ns: self.ess[ess].ns.clone(),
            inner: ControlClient::new(
                SocketAddr::from(([127, 0, 0, 1], API_PORT)),
                self.key.clone(),
            ),
        }
    }

    /// Starts (or restarts) a switch daemon and waits for its API.
    pub fn start(&mut self, name: &'static str) {
        let ess = &self.ess[name];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ess.log)
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ess.ns])
            .arg(daemon_path())
            .arg("--config")
            .arg(&ess.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning the switch");
        self.daemons.insert(name, child);
        let client = self.client(name);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = client.call("GET", "/v1/health", "") {
                if r.status == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("switch {name} did not come up:\n{}", self.log(name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process ids of the running switch daemons.
    pub fn daemon_pids(&self) -> Vec<u32> {
        self.daemons.values().map(Child::id).collect()
    }

    /// Kills a daemon hard (no shutdown path).
    pub fn kill(&mut self, name: &'static str) {
        if let Some(mut c) = self.daemons.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, name: &str) -> String {
        self.ess
            .get(name)
            .and_then(|e| std::fs::read_to_string(&e.log).ok())
            .unwrap_or_default()
    }

    pub fn dump_logs(&self) {
        for name in ["a", "b", "c"] {
            eprintln!("---- ess-{name} log ----\n{}", self.log(name));
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
            for ns in &self.namespaces {
                eprintln!(
                    "---- {ns} ----\n{}{}",
                    sh_out(&["ip", "-n", ns, "route"]),
                    sh_out(&["ip", "-n", ns, "rule"])
                );
            }
        }
        let names: Vec<&'static str> = self.daemons.keys().copied().collect();
        for n in names {
            self.kill(n);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A control client that connects from inside a switch's namespace.
#[derive(Debug, Clone)]
pub struct NsClient {
    pub ns: String,
    pub inner: ControlClient,
}

impl NsClient {
    fn run<T: Send + 'static>(&self, f: impl FnOnce(&ControlClient) -> T + Send + 'static) -> T {
        let c = self.inner.clone();
        in_ns(&self.ns, move || f(&c))
    }
    pub fn call(
        &self,
        m: &str,
        t: &str,
        b: &str,
    ) -> std::io::Result<neptune_switch::client::Reply> {
        let (m, t, b) = (m.to_owned(), t.to_owned(), b.to_owned());
        self.run(move |c| c.call(&m, &t, &b))
    }
    pub fn raw(
        &self,
        m: &str,
        t: &str,
        h: Vec<(String, String)>,
        b: &str,
    ) -> std::io::Result<neptune_switch::client::Reply> {
        let (m, t, b) = (m.to_owned(), t.to_owned(), b.to_owned());
        self.run(move |c| c.raw(&m, &t, &h, &b))
    }
    pub fn put_binding(
        &self,
        home: &str,
        care_of: Ipv4Addr,
        generation: u64,
    ) -> std::io::Result<neptune_switch::client::Reply> {
        let home = home.to_owned();
        self.run(move |c| c.put_binding(&home, &care_of.to_string(), "vi-1", 7, generation))
    }
    pub fn delete_binding(
        &self,
        home: &str,
        generation: u64,
    ) -> std::io::Result<neptune_switch::client::Reply> {
        let home = home.to_owned();
        self.run(move |c| c.delete_binding(&home, generation))
    }
    pub fn put_visitor(
        &self,
        addr: &str,
        port: &str,
        vi: &str,
        key: u32,
        generation: u64,
    ) -> std::io::Result<neptune_switch::client::Reply> {
        let (addr, port, vi) = (addr.to_owned(), port.to_owned(), vi.to_owned());
        self.run(move |c| c.put_visitor(&addr, &port, &vi, key, generation))
    }
    pub fn put_visitor_with(
        &self,
        addr: &str,
        visitor: neptune_switch::state::Visitor,
    ) -> std::io::Result<neptune_switch::client::Reply> {
        let addr = addr.to_owned();
        self.run(move |c| c.put_visitor_with(&addr, &visitor))
    }
    pub fn delete_visitor(
        &self,
        addr: &str,
        generation: u64,
    ) -> std::io::Result<neptune_switch::client::Reply> {
        let addr = addr.to_owned();
        self.run(move |c| c.delete_visitor(&addr, generation))
    }
    pub fn state(&self) -> serde_json::Value {
        let r = self.call("GET", "/v1/state", "").expect("state");
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).expect("state JSON")
    }
}

/// A TCP echo session from the correspondent to the VM's home address,
/// exchanging a small message every 5 ms and recording the longest gap.
pub struct EchoSession {
    stop: Arc<AtomicBool>,
    max_gap_us: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
    client: Option<std::thread::JoinHandle<Result<(), String>>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl EchoSession {
    pub fn start(bed: &Testbed) -> EchoSession {
        let listener = in_ns(&bed.ns("vm"), || {
            TcpListener::bind((HOME, 5001)).expect("listen")
        });
        let server = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let max_gap_us = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(AtomicU64::new(0));
        let stream = in_ns(&bed.ns("cn"), || {
            TcpStream::connect((HOME, 5001)).expect("connect to the home address")
        });
        let (s2, g2, r2) = (stop.clone(), max_gap_us.clone(), rounds.clone());
        let client = std::thread::spawn(move || -> Result<(), String> {
            let mut s = stream;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let mut last = Instant::now();
            let mut i: u64 = 0;
            while !s2.load(Ordering::Relaxed) {
                let msg = i.to_be_bytes();
                s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
                let mut back = [0u8; 8];
                s.read_exact(&mut back)
                    .map_err(|e| format!("read after {i} rounds: {e}"))?;
                if back != msg {
                    return Err("echo mismatch".into());
                }
                let now = Instant::now();
                let gap = u64::try_from(now.duration_since(last).as_micros()).unwrap_or(u64::MAX);
                g2.fetch_max(gap, Ordering::Relaxed);
                r2.fetch_add(1, Ordering::Relaxed);
                last = now;
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        let me = EchoSession {
            stop,
            max_gap_us,
            rounds,
            client: Some(client),
            server: Some(server),
        };
        me.wait_rounds(20);
        me
    }

    /// Waits until `n` more rounds completed (the path works now).
    pub fn wait_rounds(&self, n: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.rounds.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the TCP connection stopped exchanging data"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Round trips completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Longest gap since the last reset, and resets it.
    pub fn take_max_gap(&self) -> Duration {
        Duration::from_micros(self.max_gap_us.swap(0, Ordering::Relaxed))
    }

    pub fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        let r = self
            .client
            .take()
            .map(|c| c.join().unwrap_or_else(|_| Err("client panicked".into())));
        drop(self.server.take());
        r.unwrap_or(Ok(()))?;
        Ok(self.rounds.load(Ordering::Relaxed))
    }
}

/// Sends `bytes` of a known pattern from the correspondent to the VM over a
/// fresh TCP connection; returns what the VM received, hashed (FNV-1a).
pub fn bulk_transfer(bed: &Testbed, bytes: usize) -> (usize, u64) {
    let listener = in_ns(&bed.ns("vm"), || {
        TcpListener::bind((HOME, 5002)).expect("listen")
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut n = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    for b in &buf[..k] {
                        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
                    }
                    n += k;
                }
            }
        }
        (n, h)
    });
    let stream = in_ns(&bed.ns("cn"), || {
        TcpStream::connect((HOME, 5002)).expect("connect")
    });
    let mut s = stream;
    s.set_write_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let data = pattern(bytes);
    s.write_all(&data).expect("bulk write");
    drop(s);
    server.join().expect("bulk server")
}

/// The bulk pattern and its FNV-1a hash.
pub fn pattern(bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 11)) as u8)
        .collect()
}

pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Counts IPv4 packets arriving at the Internet router on one interface.
pub struct Capture {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<[u8; 24]>>>,
}

impl Capture {
    /// Captures the first 24 IP-header bytes of every IPv4 packet entering `ifname` in `ns`.
    pub fn start(ns: &str, ifname: &str) -> Capture {
        use nix::sys::socket::{
            recvfrom, setsockopt, socket, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol,
            SockType,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let ifname = ifname.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = spawn_in_ns(ns, move || {
            use std::os::fd::AsRawFd as _;
            let index = nix::net::if_::if_nametoindex(ifname.as_str()).expect("ifindex");
            let fd = socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::EthAll,
            )
            .expect("packet socket");
            setsockopt(
                &fd,
                sockopt::ReceiveTimeout,
                &nix::sys::time::TimeVal::new(0, 100_000),
            )
            .expect("timeout");
            let _ = ready_tx.send(());
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::Relaxed) {
                let Ok((n, addr)) = recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) else {
                    continue;
                };
                let Some(addr) = addr else { continue };
                // 4 = PACKET_OUTGOING: only what enters the router.
                if addr.ifindex() != index as usize || addr.pkttype() == 4 {
                    continue;
                }
                if n >= 14 + 24 && buf[12] == 0x08 && buf[13] == 0x00 {
                    let mut h = [0u8; 24];
                    h.copy_from_slice(&buf[14..38]);
                    seen.push(h);
                }
            }
            seen
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        Capture {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Vec<[u8; 24]> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("capture"))
            .unwrap_or_default()
    }
}

pub fn src(h: &[u8; 24]) -> Ipv4Addr {
    Ipv4Addr::new(h[12], h[13], h[14], h[15])
}
pub fn dst(h: &[u8; 24]) -> Ipv4Addr {
    Ipv4Addr::new(h[16], h[17], h[18], h[19])
}
pub fn proto(h: &[u8; 24]) -> u8 {
    h[9]
}
/// UDP destination port, if the header is a 20-byte IPv4 header followed by UDP.
pub fn udp_dport(h: &[u8; 24]) -> Option<u16> {
    (h[0] == 0x45 && h[9] == 17).then(|| u16::from_be_bytes([h[22], h[23]]))
}

/// Sends one forged tunnel packet carrying UDP to HOME:7777 from namespace
/// `from_ns`, to the switch at `to`, in the encapsulation of `plane`.
pub fn send_tunnel_packet(plane: Plane, from_ns: &str, to: Ipv4Addr, payload: &[u8]) {
    let payload = payload.to_vec();
    in_ns(from_ns, move || {
        let inner =
            neptune_switch::packet::build_udp(CN, 4444, HOME, 7777, &payload).expect("inner");
        match plane {
            Plane::Kernel | Plane::UserspaceGpe | Plane::UserspaceGpeSockets => {
                let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
                s.set_broadcast(true).expect("broadcast");
                let mut pkt = neptune_switch::packet::vxlan_gpe_header(7).to_vec();
                pkt.extend_from_slice(&inner);
                s.send_to(&pkt, SocketAddrV4::new(to, 4790)).expect("send");
            }
            Plane::Userspace | Plane::UserspaceSockets => {
                let s = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::RAW,
                    Some(socket2::Protocol::from(4)),
                )
                .expect("raw");
                s.set_broadcast(true).expect("broadcast");
                s.send_to(&inner, &SocketAddrV4::new(to, 0).into())
                    .expect("send");
            }
        }
    });
}

/// Listens on HOME:7777 in the VM; returns what arrives within `wait`.
pub fn vm_udp_listener(bed: &Testbed) -> UdpSocket {
    let s = in_ns(&bed.ns("vm"), || {
        UdpSocket::bind((HOME, 7777)).expect("bind 7777")
    });
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    s
}

pub fn recv_text(s: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 512];
    s.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}
