//! Two datacenters, an Internet and a Manager on one machine, for real:
//! what `service_switching.rs` (the end-to-end test) and
//! `bench/migration` (its measurements) build on.
//!
//! ```text
//!   root namespace: the Manager ──veth── wan (router) ──veth── inet: the correspondent
//!                                        │         │
//!                                      veth       veth
//!                                        │         │
//!          dca: libvirtd, Agent, switch, br-pub    dcb: libvirtd, Agent, switch, br-pub
//! ```
//!
//! Every name starts with the rig's prefix (`nss<pid>`); dropping the rig
//! (also while a test panics) kills every process it started, destroys
//! the guests left on its daemons and deletes its namespaces. Each
//! datacenter has a private libvirt daemon in its own network and mount
//! namespaces (QEMU's capability probe cached under
//! `/var/tmp/neptune-test-libvirt-cache`), one Agent and one Edge Service
//! Switch (kernel data plane) in its network namespace, and a bridge
//! `br-pub`, its public network, where entry points are plugged: it holds
//! the home datacenter's public gateway address, with the same MAC in
//! both datacenters, so an entry point keeps its gateway wherever it runs.
//! Addresses (`N` from the process id):
//!
//! | where | address |
//! | --- | --- |
//! | the Manager (root end of the veth into wan) | `10.214.N.1` |
//! | wan, toward root / dca / dcb / inet | `10.214.N.2`, `.5`, `.9`, `.13` |
//! | dca (Agent, switch control API, care-of) | `10.214.N.6` |
//! | dcb | `10.214.N.10` |
//! | the correspondent (inet) | `10.214.N.14` |
//!
//! Home prefixes: dca 192.0.2.0/24 (public gateway 192.0.2.1), dcb
//! 198.51.100.0/24, routed by wan to their datacenter.

#![allow(dead_code)] // the test and the benchmark use different parts

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The datacenters: name, home prefix, public gateway.
pub(crate) const DATACENTERS: [(&str, &str, &str); 2] = [
    ("dca", "192.0.2.0/24", "192.0.2.1"),
    ("dcb", "198.51.100.0/24", "198.51.100.1"),
];

/// The MAC of every datacenter's `br-pub`: the entry points' gateway
/// answers with the same address wherever they run.
const GATEWAY_MAC: &str = "02:4e:ff:00:00:01";

const AGENT_TOKEN: &str = "service-switching-agent-token";
const PASSWORD: &str = "service-switching-admin-password";
const AGENT_PORT: u16 = 7070;
const SWITCH_PORT: u16 = 7400;

/// Runs a command; panics with what it printed when it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_quietly(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Why the rig cannot run here, if it cannot: not root, or a program
/// missing.
pub(crate) fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not root (namespaces, bridges and libvirt daemons need it)".into());
    }
    for program in ["ip", "libvirtd", "virsh", "qemu-img", "python3", "unshare"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{program} is not installed"));
        }
    }
    None
}

/// A process the rig started, killed when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, log: PathBuf, program: &str, args: &[String]) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One datacenter of the rig.
pub(crate) struct Datacenter {
    pub(crate) name: String,
    /// Its network namespace.
    pub(crate) ns: String,
    /// Its address on the WAN: the Agent's, the switch's control API's,
    /// the care-of address.
    pub(crate) wan: Ipv4Addr,
    /// Its libvirt daemon's URI (a socket path every mount namespace sees).
    pub(crate) libvirt_uri: String,
    /// The one host's name.
    pub(crate) host: String,
    /// The switch's control API and a client holding its key.
    pub(crate) switch: neptune_switch::client::ControlClient,
    pub(crate) switch_url: String,
    pub(crate) key_file: PathBuf,
}

impl Datacenter {
    /// The switch's table, as `GET /v1/state` answers it.
    pub(crate) fn table(&self) -> Value {
        let reply = self.switch.call("GET", "/v1/state", "").unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let state: Value = serde_json::from_str(&reply.body).unwrap();
        state["table"].clone()
    }

    /// The care-of address its home switch binds `address` to, if any.
    pub(crate) fn binding(&self, address: &str) -> Option<String> {
        self.table()["bindings"][address]["care_of"]
            .as_str()
            .map(str::to_owned)
    }

    /// Runs `args` in its namespace.
    pub(crate) fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.ns.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

/// The Manager's API, as an administrator.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) token: String,
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&s), "POST {path}: {s} {v}");
        v
    }
}

/// One VM's live move as its source Agent reported it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MovedLive {
    pub(crate) total_ms: u64,
    /// How long the guest was paused for the switch-over.
    pub(crate) downtime_ms: u64,
    /// Memory and disk bytes sent.
    pub(crate) bytes: u64,
}

/// The whole rig.
pub(crate) struct Rig {
    pub(crate) prefix: String,
    pub(crate) dir: PathBuf,
    pub(crate) net: u8,
    pub(crate) api: Api,
    pub(crate) dcs: Vec<Datacenter>,
    /// The correspondent's namespace.
    pub(crate) inet: String,
    pub(crate) wan_ns: String,
    /// Agents, switches, the Manager: stopped first.
    procs: Vec<Proc>,
    /// What tests and benchmarks run beside them (correspondents,
    /// monitors): stopped before them, and free to end.
    helpers: Vec<Proc>,
    /// The libvirt daemons, with their URIs: stopped after their guests.
    daemons: Vec<(Proc, String)>,
    namespaces: Vec<String>,
    root_veth: String,
    started: Instant,
}

impl Rig {
    /// Builds the namespaces, starts the daemons, the Manager, the Agents
    /// and the switches, creates the datacenters (dca's public gateway
    /// set), registers the switches and the tiny template (`tiny`: its
    /// image). `neptune`: the binary; `agent_args`: more arguments for
    /// every Agent (`--migration-max-downtime-ms 50`).
    pub(crate) async fn start(neptune: &str, tiny: &Path, agent_args: &[String]) -> Rig {
        let pid = std::process::id();
        let prefix = format!("nss{pid}");
        let net = u8::try_from(16 + pid % 200).unwrap();
        let dir = std::env::temp_dir().join(format!("neptune-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = |host: u8| Ipv4Addr::new(10, 214, net, host);
        let mut rig = Rig {
            prefix: prefix.clone(),
            dir: dir.clone(),
            net,
            api: Api {
                base: String::new(),
                http: reqwest::Client::new(),
                token: String::new(),
            },
            dcs: Vec::new(),
            inet: format!("{prefix}-inet"),
            wan_ns: format!("{prefix}-wan"),
            procs: Vec::new(),
            helpers: Vec::new(),
            daemons: Vec::new(),
            namespaces: Vec::new(),
            root_veth: format!("{prefix}r"),
            started: Instant::now(),
        };
        let ns = |n: &str| format!("{prefix}-{n}");
        for n in ["wan", "dca", "dcb", "inet"] {
            let name = ns(n);
            run("ip", &["netns", "add", &name]);
            rig.namespaces.push(name.clone());
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &name,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ],
            );
            run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        }
        let wan = ns("wan");
        // root <-> wan
        run(
            "ip",
            &[
                "link",
                "add",
                &rig.root_veth,
                "type",
                "veth",
                "peer",
                "name",
                "root",
                "netns",
                &wan,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", a(1)),
                "dev",
                &rig.root_veth,
            ],
        );
        run("ip", &["link", "set", &rig.root_veth, "up"]);
        run(
            "ip",
            &[
                "-n",
                &wan,
                "addr",
                "add",
                &format!("{}/30", a(2)),
                "dev",
                "root",
            ],
        );
        run("ip", &["-n", &wan, "link", "set", "root", "up"]);
        run(
            "ip",
            &[
                "route",
                "replace",
                &format!("10.214.{net}.0/24"),
                "via",
                &a(2).to_string(),
            ],
        );
        // wan <-> dca, dcb, inet: wan .4k+1, the other end .4k+2.
        for (k, n) in [(1u8, "dca"), (2, "dcb"), (3, "inet")] {
            let (w, o) = (a(4 * k + 1), a(4 * k + 2));
            let other = ns(n);
            run(
                "ip",
                &[
                    "link", "add", n, "netns", &wan, "type", "veth", "peer", "name", "wan",
                    "netns", &other,
                ],
            );
            run(
                "ip",
                &["-n", &wan, "addr", "add", &format!("{w}/30"), "dev", n],
            );
            run("ip", &["-n", &wan, "link", "set", n, "up"]);
            run(
                "ip",
                &[
                    "-n",
                    &other,
                    "addr",
                    "add",
                    &format!("{o}/30"),
                    "dev",
                    "wan",
                ],
            );
            run("ip", &["-n", &other, "link", "set", "wan", "up"]);
            run(
                "ip",
                &[
                    "-n",
                    &other,
                    "route",
                    "add",
                    "default",
                    "via",
                    &w.to_string(),
                ],
            );
        }
        // The Internet routes each home prefix to its datacenter.
        for (k, (_, home, _)) in DATACENTERS.iter().enumerate() {
            let via = a(4 * (k as u8 + 1) + 2).to_string();
            run("ip", &["-n", &wan, "route", "add", home, "via", &via]);
        }

        // The Manager, in the root namespace, on its veth's address.
        std::fs::create_dir_all(dir.join("images")).unwrap();
        std::fs::write(dir.join("agent.token"), AGENT_TOKEN).unwrap();
        std::fs::write(dir.join("admin.password"), PASSWORD).unwrap();
        let port = std::net::TcpListener::bind((a(1), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://{}:{port}", a(1));
        let args: Vec<String> = vec![
            "manager".into(),
            "--listen".into(),
            format!("{}:{port}", a(1)),
            "--database-url".into(),
            format!("sqlite://{}", dir.join("neptune.db").display()),
            "--image-dir".into(),
            dir.join("images").display().to_string(),
            "--agent-token-file".into(),
            dir.join("agent.token").display().to_string(),
            "--admin-password-file".into(),
            dir.join("admin.password").display().to_string(),
        ];
        rig.procs.push(Proc::spawn(
            "manager",
            dir.join("manager.log"),
            neptune,
            &args,
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "the Manager did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let login: Value = rig
            .api
            .http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"name": "admin", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        rig.api.base = base.clone();
        rig.api.token = login["token"].as_str().unwrap().to_owned();
        let token = rig
            .api
            .post("/tokens", json!({"name": "service switching rig"}))
            .await;
        rig.api.token = token["token"].as_str().unwrap().to_owned();
        std::fs::write(dir.join("manager.token"), &rig.api.token).unwrap();
        // Tokens only their owner reads, as the Agents want them.
        for token in ["agent.token", "manager.token"] {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.join(token), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        for (name, home, gateway) in DATACENTERS {
            let body = if name == "dca" {
                json!({"name": name, "home_pools": [home], "public_gateway": gateway})
            } else {
                json!({"name": name, "home_pools": [home]})
            };
            let (s, v) = rig
                .api
                .call(reqwest::Method::POST, "/datacenters", Some(body))
                .await;
            assert_eq!(s, 201, "{v}");
        }
        std::fs::copy(tiny, dir.join("images/neptune-tiny.qcow2")).unwrap();
        let (s, v) = rig
            .api
            .call(
                reqwest::Method::POST,
                "/templates",
                Some(
                    json!({"name": "neptune-tiny", "image": "neptune-tiny.qcow2",
                    "os_name": "Neptune tiny test guest"}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{v}");

        // Each datacenter: its public bridge, libvirt daemon, Agent, switch.
        let home_gateway = DATACENTERS[0].2;
        for (k, (name, home, _)) in DATACENTERS.iter().enumerate() {
            let dns = ns(name);
            let wan_addr = a(4 * (k as u8 + 1) + 2);
            let peer = a(4 * (2 - k as u8) + 2);
            run(
                "ip",
                &[
                    "-n",
                    &dns,
                    "link",
                    "add",
                    "br-pub",
                    "address",
                    GATEWAY_MAC,
                    "type",
                    "bridge",
                ],
            );
            run(
                "ip",
                &[
                    "-n",
                    &dns,
                    "addr",
                    "add",
                    &format!("{home_gateway}/32"),
                    "dev",
                    "br-pub",
                ],
            );
            run("ip", &["-n", &dns, "link", "set", "br-pub", "up"]);
            let h = dir.join(name);
            let (daemon, uri) = start_libvirtd(&h, &dns, name, k);
            rig.daemons.push((daemon, uri.clone()));
            // It answers before the next starts: the first connection
            // probes QEMU (seconds) unless the capabilities are cached,
            // and the next daemon then finds them cached.
            wait_for_libvirtd(&mut rig.daemons[k].0, &uri);

            // The switch.
            let key: String = (0..32u8)
                .map(|i| format!("{:02x}", i.wrapping_mul(13) ^ (k as u8 + 1)))
                .collect();
            let key_file = h.join("ess.key");
            std::fs::write(&key_file, &key).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            let switch_listen = SocketAddr::from((wan_addr, SWITCH_PORT));
            let args: Vec<String> = [
                "netns",
                "exec",
                &dns,
                neptune,
                "switch",
                "--name",
                &format!("ess-{name}"),
                "--listen",
                &switch_listen.to_string(),
                "--state-file",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([
                h.join("ess.table.json").display().to_string(),
                "--key-file".into(),
                key_file.display().to_string(),
                "--care-of".into(),
                wan_addr.to_string(),
                "--home-prefix".into(),
                (*home).to_owned(),
                "--peer".into(),
                peer.to_string(),
                "--data-plane".into(),
                "kernel".into(),
            ])
            .collect();
            rig.procs.push(Proc::spawn(
                &format!("switch {name}"),
                h.join("switch.log"),
                "ip",
                &args,
            ));

            // The Agent.
            let host = format!("{name}-1");
            let agent_listen = SocketAddr::from((wan_addr, AGENT_PORT));
            let mut args: Vec<String> = vec![
                "netns".into(),
                "exec".into(),
                dns.clone(),
                neptune.into(),
                "agent".into(),
                "--listen".into(),
                agent_listen.to_string(),
                "--name".into(),
                host.clone(),
                "--datacenter".into(),
                (*name).to_owned(),
                "--token-file".into(),
                dir.join("agent.token").display().to_string(),
                "--manager".into(),
                base.clone(),
                "--manager-token-file".into(),
                dir.join("manager.token").display().to_string(),
                "--hypervisor".into(),
                "libvirt".into(),
                "--libvirt-uri".into(),
                uri.clone(),
                "--kvm".into(),
                "off".into(),
                "--public-bridge".into(),
                "br-pub".into(),
                "--migration-connect".into(),
                uri.clone(),
                "--migration-stream".into(),
                format!("tcp://{wan_addr}"),
                "--data-dir".into(),
                h.join("agent").display().to_string(),
                "--cpus".into(),
                "8".into(),
                "--ram-mib".into(),
                "8192".into(),
                "--disk-mib".into(),
                "65536".into(),
                "--vm-slots".into(),
                "16".into(),
                "--heartbeat-secs".into(),
                "1".into(),
            ];
            args.extend_from_slice(agent_args);
            rig.procs.push(Proc::spawn(
                &format!("agent {name}"),
                h.join("agent.log"),
                "ip",
                &args,
            ));
            rig.dcs.push(Datacenter {
                name: (*name).to_owned(),
                ns: dns,
                wan: wan_addr,
                libvirt_uri: uri,
                host,
                switch: neptune_switch::client::ControlClient::new(
                    switch_listen,
                    neptune_switch::auth::SwitchKey::from_hex_file_contents(key.as_bytes())
                        .unwrap(),
                ),
                switch_url: format!("http://{switch_listen}"),
                key_file,
            });
        }
        eprintln!(
            "rig: libvirt daemons answer {:.1} s after the start",
            rig.started.elapsed().as_secs_f64()
        );
        // Agents registered.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let hosts = rig.api.get("/hosts").await;
            if hosts.as_array().map_or(0, Vec::len) == rig.dcs.len() {
                break;
            }
            rig.check_alive();
            assert!(
                Instant::now() < deadline,
                "the Agents did not register: {hosts}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Switches registered (the Manager checks each with a signed GET).
        for k in 0..rig.dcs.len() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                rig.check_alive();
                let dc = &rig.dcs[k];
                let body = json!({"url": dc.switch_url, "key_file": dc.key_file,
                    "care_of": dc.wan.to_string(), "port": "br-pub"});
                let (s, v) = rig
                    .api
                    .call(
                        reqwest::Method::PUT,
                        &format!("/datacenters/{}/switch", dc.name),
                        Some(body),
                    )
                    .await;
                if s == 200 {
                    assert_eq!(v["reachable"], true, "{v}");
                    break;
                }
                assert!(
                    s == 409 && Instant::now() < deadline,
                    "switch of {}: {s} {v}",
                    dc.name
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        eprintln!(
            "rig: up in {:.1} s (prefix {prefix}, files in {})",
            rig.started.elapsed().as_secs_f64(),
            dir.display()
        );
        rig
    }

    /// Panics, with its log, when a process of the rig ended.
    pub(crate) fn check_alive(&mut self) {
        for p in self
            .procs
            .iter_mut()
            .chain(self.daemons.iter_mut().map(|(p, _)| p))
        {
            if !p.alive() {
                panic!("{} ended: {}", p.name, p.log_tail());
            }
        }
    }

    pub(crate) fn dc(&self, name: &str) -> &Datacenter {
        self.dcs.iter().find(|d| d.name == name).unwrap()
    }

    /// The Manager's log so far.
    pub(crate) fn manager_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("manager.log")).unwrap_or_default()
    }

    /// How VM `domain`'s move in migrate job `job` went, as its source
    /// Agent reported it (libvirt's finished job) and the Manager logged
    /// it; `None` when the Manager found the VM moved without reading a
    /// report.
    pub(crate) fn moved_live(&self, job: &str, domain: &str) -> Option<MovedLive> {
        let field = |line: &str, name: &str| -> Option<u64> {
            let rest = &line[line.find(name)? + name.len()..];
            rest.split_whitespace().next()?.parse().ok()
        };
        self.manager_log()
            .lines()
            .filter(|l| {
                l.contains("VM moved live")
                    && l.contains(job)
                    && l.contains(&format!("vm=\"{domain}\""))
            })
            .find_map(|l| {
                Some(MovedLive {
                    total_ms: field(l, "total_ms=")?,
                    downtime_ms: field(l, "downtime_ms=")?,
                    bytes: field(l, "bytes=")?,
                })
            })
    }

    /// Runs `program` in the correspondent's namespace, in the background.
    pub(crate) fn spawn_in_inet(&mut self, name: &str, program: &str, args: &[String]) {
        let inet = self.inet.clone();
        self.spawn_in(&inet, name, program, args);
    }

    /// Runs `program` in namespace `ns` (the root namespace: empty), in
    /// the background, with TZ=UTC, its output in `<dir>/<name>.log`;
    /// stopped with the rig or by [`Rig::stop`].
    pub(crate) fn spawn_in(&mut self, ns: &str, name: &str, program: &str, args: &[String]) {
        let mut all: Vec<String> = vec!["TZ=UTC".into()];
        if !ns.is_empty() {
            all.extend(["ip".into(), "netns".into(), "exec".into(), ns.to_owned()]);
        }
        all.push(program.into());
        all.extend_from_slice(args);
        let log = self.dir.join(format!("{name}.log"));
        self.helpers.push(Proc::spawn(name, log, "env", &all));
    }

    /// Stops the process `name` the rig started; its log.
    pub(crate) fn stop(&mut self, name: &str) -> String {
        let Some(k) = self.helpers.iter().position(|p| p.name == name) else {
            return String::new();
        };
        let mut p = self.helpers.remove(k);
        p.stop();
        std::fs::read_to_string(&p.log).unwrap_or_default()
    }

    /// Whether the process `name` ended.
    pub(crate) fn exited(&mut self, name: &str) -> bool {
        self.helpers
            .iter_mut()
            .find(|p| p.name == name)
            .is_none_or(|p| !p.alive())
    }

    /// Waits until the process `name` ended (at most `secs`); whether it did.
    pub(crate) fn wait_for_exit(&mut self, name: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(p) = self.helpers.iter_mut().find(|p| p.name == name) {
                if !p.alive() {
                    return true;
                }
            } else {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The address of the correspondent.
    pub(crate) fn correspondent(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.net, 14)
    }

    /// Every process's log tail, for a failure's message.
    pub(crate) fn logs(&self) -> String {
        self.procs
            .iter()
            .chain(&self.helpers)
            .chain(self.daemons.iter().map(|(p, _)| p))
            .map(|p| format!("--- {} ({}):\n{}", p.name, p.log.display(), p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Waits until the daemon answers at `uri`.
fn wait_for_libvirtd(daemon: &mut Proc, uri: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let ok = Command::new("virsh")
            .args(["--quiet", "--connect", uri, "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(
            daemon.alive(),
            "{} ended: {}",
            daemon.name,
            daemon.log_tail()
        );
        assert!(Instant::now() < deadline, "{} does not answer", daemon.name);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the private libvirt daemon of datacenter `k` in namespace `ns`
/// over folder `h`; its process and URI.
fn start_libvirtd(h: &Path, ns: &str, name: &str, k: usize) -> (Proc, String) {
    let _ = std::fs::remove_dir_all(h);
    for d in ["run", "lib", "etc", "log"] {
        std::fs::create_dir_all(h.join(d)).unwrap();
    }
    // Kept between runs (and shared with the libvirt adapter's tests):
    // QEMU's capability probe takes seconds.
    let cache = Path::new("/var/tmp/neptune-test-libvirt-cache");
    std::fs::create_dir_all(cache).unwrap();
    std::fs::write(
        h.join("etc/qemu.conf"),
        "user = \"root\"\ngroup = \"root\"\nstdio_handler = \"file\"\nmigration_address = \"0.0.0.0\"\n",
    )
    .unwrap();
    // Each its own host UUID: libvirt refuses to move a VM to its own host.
    let host_uuid = format!(
        "6e657074-756e-4500-8{k:03x}-{:012x}",
        u64::from(std::process::id())
    );
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
    let args: Vec<String> = ["netns", "exec", ns, "unshare", "-m", "sh", "-c", &script]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let daemon = Proc::spawn(
        &format!("libvirtd {name}"),
        h.join("libvirtd.log"),
        "ip",
        &args,
    );
    let uri = format!(
        "qemu+unix:///system?socket={}",
        h.join("run/libvirt-sock").display()
    );
    (daemon, uri)
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("rig: logs at the failure\n{}", self.logs());
        }
        for p in self.helpers.iter_mut().chain(&mut self.procs) {
            p.stop();
        }
        for (daemon, uri) in &mut self.daemons {
            for name in run_quietly(
                "virsh",
                &["--quiet", "--connect", uri, "list", "--all", "--name"],
            )
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            {
                run_quietly("virsh", &["--quiet", "--connect", uri, "destroy", name]);
                run_quietly(
                    "virsh",
                    &["--quiet", "--connect", uri, "undefine", name, "--nvram"],
                );
            }
            daemon.stop();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_veth])
            .output();
        // Kept for a look after a failure, or when NEPTUNE_TEST_KEEP is set.
        if !std::thread::panicking() && std::env::var_os("NEPTUNE_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The tiny template's user, as the design sets it.
pub(crate) const USER: &str = "alice";
pub(crate) const USER_PASSWORD: &str = "tiny-secret";
/// The entry point's Home Address, in dca's pool.
pub(crate) const HOME: &str = "192.0.2.10";
/// The TCP echo service's port on the entry point.
pub(crate) const ECHO_PORT: u16 = 7000;

/// A VI of `1 + backends` tiny guests: an entry point `gw` with the Home
/// Address [`HOME`] (dca's pool), and `web1`, `web2`, ... behind it on one
/// LAN (10.20.0.0/24, gw .1, web<i> .(1 + i)).
pub(crate) fn design(backends: usize) -> String {
    let node = |id: &str, interfaces: &str| {
        format!(
            r#"    <node id="{id}">
      <ram dimension="128"/>
      <hd dimension="0,125"/>
      <network_interfaces>
{interfaces}      </network_interfaces>
      <operative_system name="Neptune tiny" password="{USER_PASSWORD}" username="{USER}"/>
      <software_configuration template="neptune-tiny"/>
    </node>
"#
        )
    };
    let mut gw = format!(
        "        <interface name=\"eth0\">\n          <interface_binding type=\"HIF\"/>\n          <entry_point home_address=\"{HOME}\"/>\n        </interface>\n"
    );
    if backends > 0 {
        gw.push_str("        <interface name=\"eth1\" address=\"10.20.0.1\"><interface_binding type=\"bridge\"/></interface>\n");
    }
    let mut nodes = node("gw", &gw);
    let mut endpoints = String::from("      <endpoint node=\"gw\" interface=\"eth1\"/>\n");
    for i in 1..=backends {
        nodes.push_str(&node(
            &format!("web{i}"),
            &format!(
                "        <interface name=\"eth0\" address=\"10.20.0.{}\"><interface_binding type=\"bridge\"/></interface>\n",
                1 + i
            ),
        ));
        endpoints.push_str(&format!(
            "      <endpoint node=\"web{i}\" interface=\"eth0\"/>\n"
        ));
    }
    let links = if backends > 0 {
        format!("  <links>\n    <link id=\"lan\" type=\"lan\" bandwidth=\"100\" subnet=\"10.20.0.0/24\">\n{endpoints}    </link>\n  </links>\n")
    } else {
        String::new()
    };
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<topology id=\"switching\">\n  <nodes>\n{nodes}  </nodes>\n{links}</topology>\n")
}

/// The correspondent: one TCP connection to the Home Address, a numbered
/// line every 20 ms, each echo checked; on exit (the stop file appears)
/// a JSON result: lines sent and echoed, echoes out of order, the largest
/// gap between two echoes and when, and any error (reset, close).
pub(crate) const CORRESPONDENT: &str = r#"
import json, os, socket, sys, threading, time
addr, port, out, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {"sent": 0, "echoed": 0, "bad": 0, "max_gap_ms": 0.0, "max_gap_at": 0.0,
       "gaps_over_100ms": [], "error": None, "connect_ms": None}
t0 = time.time()
s = None
while time.time() - t0 < 60:
    try:
        s = socket.create_connection((addr, port), timeout=2)
        break
    except OSError as e:
        res["error"] = "connect: %s" % e
        time.sleep(0.2)
if s is None:
    json.dump(res, open(out, "w")); sys.exit(1)
res["error"] = None
res["connect_ms"] = (time.time() - t0) * 1000
s.settimeout(None)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
open(out + ".up", "w").close()
lock = threading.Lock()
def reader():
    buf, last, expect = b"", None, 0
    try:
        while True:
            data = s.recv(65536)
            if not data:
                res["error"] = res["error"] or "closed by the peer"
                return
            now = time.time()
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip() != str(expect).encode():
                    res["bad"] += 1
                expect += 1
                with lock:
                    res["echoed"] = expect
                if last is not None:
                    gap = (now - last) * 1000
                    if gap > res["max_gap_ms"]:
                        res["max_gap_ms"], res["max_gap_at"] = gap, last
                    if gap > 100:
                        res["gaps_over_100ms"].append([round(last, 3), round(gap, 1)])
                last = now
    except OSError as e:
        res["error"] = res["error"] or "receive: %s" % e
t = threading.Thread(target=reader, daemon=True)
t.start()
n = 0
while not os.path.exists(stop) and t.is_alive():
    try:
        s.sendall(b"%d\n" % n)
    except OSError as e:
        res["error"] = res["error"] or "send: %s" % e
        break
    n += 1
    res["sent"] = n
    time.sleep(0.02)
deadline = time.time() + 10
while res["echoed"] < res["sent"] and time.time() < deadline and t.is_alive():
    time.sleep(0.05)
json.dump(res, open(out, "w"))
"#;

/// A VM's serial console, through the Manager's API as a user drives it.
pub(crate) struct Console<'a> {
    api: &'a Api,
    path: String,
    /// Commands run so far: each one's end marker is unique.
    pub(crate) runs: std::cell::Cell<u32>,
    node: String,
}

impl<'a> Console<'a> {
    pub(crate) fn new(api: &'a Api, vi: &str, node: &str) -> Console<'a> {
        Console {
            api,
            path: format!("/vis/{vi}/vms/{node}/console"),
            runs: std::cell::Cell::new(0),
            node: node.to_owned(),
        }
    }

    /// Logs in as the design's user.
    pub(crate) async fn login(&self) {
        self.type_in("\n").await;
        self.wait_for("login:", 120).await;
        self.type_in(&format!("{USER}\n")).await;
        self.wait_for("Password:", 30).await;
        self.type_in(&format!("{USER_PASSWORD}\n")).await;
        assert!(self.run("true").await, "logged in on {}", self.node);
    }

    pub(crate) async fn type_in(&self, input: &str) {
        let (s, v) = self
            .api
            .call(
                reqwest::Method::POST,
                &self.path,
                Some(json!({ "input": input })),
            )
            .await;
        assert_eq!(s, 204, "{v}");
    }

    pub(crate) async fn text(&self) -> String {
        let v = self.api.get(&self.path).await;
        v["text"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn wait_for(&self, what: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.text().await;
            if text.contains(what) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what:?} never showed on {}'s console: {text}",
                self.node
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `command` in the guest's shell; what it printed.
    pub(crate) async fn output(&self, command: &str) -> String {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mark = n * 1000 + 2;
        // The echoed command line shows `$((n))`, never its value.
        self.type_in(&format!(
            "echo \"BEGIN-$((({mark})))\"; {command}; echo \"END-$((({mark})))\"\n"
        ))
        .await;
        let text = self.wait_for(&format!("END-{mark}"), 60).await;
        let begin = text.rfind(&format!("BEGIN-{mark}")).unwrap() + format!("BEGIN-{mark}").len();
        let end = text.rfind(&format!("END-{mark}")).unwrap();
        text[begin..end].trim().replace('\r', "")
    }

    /// Runs `command`; whether it succeeded.
    pub(crate) async fn run(&self, command: &str) -> bool {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mark = n * 1000 + 1;
        self.type_in(&format!("{command}; echo \"END-$((({mark}))) $?\"\n"))
            .await;
        let text = self.wait_for(&format!("END-{mark} "), 60).await;
        let tail = &text[text.rfind(&format!("END-{mark} ")).unwrap()..];
        tail.starts_with(&format!("END-{mark} 0"))
    }

    /// The guest's uptime in seconds.
    pub(crate) async fn uptime(&self) -> f64 {
        let text = self.output("cat /proc/uptime").await;
        text.split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("not an uptime on {}: {text:?}", self.node))
    }
}

/// What a move looked like.
pub(crate) struct Move {
    pub(crate) to: &'static str,
    /// From the request to the VI running there.
    pub(crate) took: Duration,
    /// Its job's moves, each as last seen (fields absent when the job
    /// ended before the Manager showed them).
    pub(crate) moves: Vec<Value>,
    /// The VI, running there.
    pub(crate) vi: Value,
    /// Its migrate job's id.
    pub(crate) job: String,
}

/// Migrates the VI to `to` and waits until it runs there, following its
/// job's moves.
pub(crate) async fn migrate(rig: &mut Rig, id: &str, to: &'static str) -> Move {
    let started = Instant::now();
    let v = rig
        .api
        .post(&format!("/vis/{id}/migrate"), json!({ "to": to }))
        .await;
    assert_eq!(v["state"], "migrating", "{v}");
    let job = v["jobs"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut moves = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let j = rig.api.get(&format!("/jobs/{job}")).await;
        // Each VM's move as last seen (the job shows none once it ended).
        for m in j["moves"].as_array().into_iter().flatten() {
            match moves
                .iter_mut()
                .find(|seen: &&mut Value| seen["vm"] == m["vm"])
            {
                Some(seen) => *seen = m.clone(),
                None => moves.push(m.clone()),
            }
        }
        if j["state"] != "running" {
            break;
        }
        rig.check_alive();
        assert!(Instant::now() < deadline, "the move to {to} is stuck: {j}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let vi = loop {
        let vi = rig.api.get(&format!("/vis/{id}")).await;
        if vi["state"] != "migrating" {
            break vi;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Move {
        to,
        took: started.elapsed(),
        moves,
        vi,
        job,
    }
}
