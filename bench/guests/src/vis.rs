//! accept -> every VM ready: a Manager on SQLite, one host whose Agent
//! (HTTP on 127.0.0.1) drives libvirt, VIs of tiny guests in a line.
//!
//! Beside the Manager, a watcher thread looks at what the host shows of
//! each VM (its disk, its domain, its QEMU process, its console) every
//! 10 ms, so that the time from accept to the job's success splits into
//! the guests' own boots and what Neptune adds before and after them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use neptune_hypervisor::libvirt::{LibvirtConfig, LibvirtHypervisor};
use neptune_hypervisor::{Capacity, Hypervisor};
use neptune_manager::jobs::{vm_name, HostDirectory};
use neptune_manager::{Config, Manager};
use neptune_types::Secret;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::leftovers::{prefix_of, Leftovers};

const HOST: &str = "napoli-1";
const TEMPLATE: &str = "neptune-tiny";
const ADMIN_PASSWORD: &str = "bench-admin-password";

/// Far above what the 10-VM VI asks: the host stands for this machine,
/// whose 2 cores the guests' vCPUs share (placement must not refuse the
/// VI for it).
const HOST_CAPACITY: Capacity = Capacity {
    cpus: 32,
    ram_mib: 16 * 1024,
    disk_mib: 1 << 20,
    vm_slots: 32,
};

/// The Manager's one host, reached through its Agent.
#[derive(Debug)]
struct OneHost {
    agent: Arc<dyn Hypervisor>,
}

#[async_trait::async_trait]
impl HostDirectory for OneHost {
    async fn hypervisor(
        &self,
        host: &neptune_store::HostRecord,
    ) -> anyhow::Result<Arc<dyn Hypervisor>> {
        anyhow::ensure!(host.name == HOST, "no host {}", host.name);
        Ok(self.agent.clone())
    }
}

/// A running Manager with its host, logged in.
pub(crate) struct Bench {
    base: String,
    http: reqwest::Client,
    admin: String,
    user: String,
    host_dir: PathBuf,
    uri: String,
    pub(crate) uses_kvm: bool,
    _agent: neptune_agent::RunningAgent,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// One run's figures, in seconds from the admin's accept.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) accept: f64,
    pub(crate) total: f64,
    pub(crate) vms: Vec<VmTimes>,
    pub(crate) terminate: f64,
}

/// What the watcher saw of one VM, in seconds from the accept.
#[derive(Debug, Clone, Default)]
pub(crate) struct VmTimes {
    pub(crate) node: String,
    pub(crate) disk: Option<f64>,
    pub(crate) defined: Option<f64>,
    /// The QEMU process's start, as the kernel recorded it.
    pub(crate) qemu: Option<f64>,
    /// When the ready line was first in the console file.
    pub(crate) ready: Option<f64>,
    /// The guest's uptime on the last line its init stamped before the
    /// ready line (the ready line itself carries none): the kernel's start
    /// to ready, as the guest counts it.
    pub(crate) uptime: Option<f64>,
    /// The kernel's start: when the first stamped line was seen less its
    /// uptime stamp (firmware and bootloader run before it).
    pub(crate) kernel: Option<f64>,
}

impl VmTimes {
    /// The guest's own boot: its QEMU's start to its ready line.
    pub(crate) fn boot(&self) -> Option<f64> {
        Some(self.ready? - self.qemu?)
    }
}

impl Run {
    /// The guest whose own boot was the longest.
    pub(crate) fn slowest(&self) -> Option<&VmTimes> {
        self.vms
            .iter()
            .filter(|v| v.boot().is_some())
            .max_by(|a, b| a.boot().unwrap_or(0.0).total_cmp(&b.boot().unwrap_or(0.0)))
    }
}

impl Bench {
    /// Starts the Manager in `dir` (which QEMU's user must be able to
    /// enter) with one host over libvirt at `uri`, and registers `template`.
    pub(crate) async fn start(dir: &Path, uri: &str, template: &Path) -> anyhow::Result<Self> {
        let images = dir.join("images");
        let host_dir = dir.join("hosts").join(HOST);
        std::fs::create_dir_all(&images)?;
        std::fs::create_dir_all(&host_dir)?;
        let libvirt = LibvirtHypervisor::new(LibvirtConfig {
            uri: uri.to_owned(),
            data_dir: host_dir.clone(),
            capacity: HOST_CAPACITY,
            kvm: None,
            public_bridge: None,
            migration: Default::default(),
            migration_max_downtime: None,
        })?;
        if let Some(closed) = libvirt.closed_directory() {
            bail!(
                "QEMU's user cannot enter {}: use a --work-dir it can reach",
                closed.display()
            );
        }
        let uses_kvm = libvirt.uses_kvm();
        let token = Secret::new(Uuid::new_v4().simple().to_string());
        let agent = neptune_agent::start(
            neptune_agent::AgentConfig {
                name: HOST.to_owned(),
                datacenter: "napoli".to_owned(),
                listen: "127.0.0.1:0".parse()?,
                advertise_url: None,
                token: token.clone(),
                manager: None,
                hypervisor: Arc::new(libvirt),
                uplink_mbps: 0,
            },
            std::future::pending(),
        )
        .await?;
        let client = neptune_agent::AgentClient::new(agent.url(), token)?;
        let hosts = OneHost {
            agent: Arc::new(neptune_agent::AgentHypervisor::new(client, HOST_CAPACITY)),
        };
        let mut config = Config::new(
            format!("sqlite://{}", dir.join("neptune.db").display()),
            &images,
        );
        config.admin_password = Some(ADMIN_PASSWORD.to_owned());
        let manager = Manager::open(config, Arc::new(hosts)).await?;
        let (listener, addr) = Manager::bind("127.0.0.1:0".parse()?).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = manager
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("the Manager stopped: {e:#}");
            }
        });
        let mut bench = Bench {
            base: format!("http://{addr}/api/v1"),
            http: reqwest::Client::new(),
            admin: String::new(),
            user: String::new(),
            host_dir,
            uri: uri.to_owned(),
            uses_kvm,
            _agent: agent,
            _stop: stop,
        };
        bench.admin = bench.login("admin", ADMIN_PASSWORD).await?;
        let agent_url = bench._agent.url().to_owned();
        let admin = bench.admin.clone();
        bench
            .call(
                Method::POST,
                "/datacenters",
                &admin,
                Some(json!({"name": "napoli", "home_pools": ["192.0.2.0/24"]})),
            )
            .await?;
        bench
            .call(
                Method::POST,
                "/hosts",
                &admin,
                Some(
                    json!({"datacenter": "napoli", "name": HOST, "agent_url": agent_url,
                    "cpus": HOST_CAPACITY.cpus, "ram_mib": HOST_CAPACITY.ram_mib,
                    "disk_mib": HOST_CAPACITY.disk_mib, "vm_slots": HOST_CAPACITY.vm_slots}),
                ),
            )
            .await?;
        std::fs::copy(template, images.join(format!("{TEMPLATE}.qcow2")))
            .with_context(|| format!("copying {}", template.display()))?;
        bench
            .call(
                Method::POST,
                "/templates",
                &admin,
                Some(
                    json!({"name": TEMPLATE, "image": format!("{TEMPLATE}.qcow2"),
                    "os_name": "Neptune tiny test guest"}),
                ),
            )
            .await?;
        let quota =
            json!({"vms": 1000, "vcpus": 1000, "ram_mib": 1_000_000, "public_addresses": 10});
        bench
            .call(
                Method::POST,
                "/users",
                &admin,
                Some(json!({"name": "bench", "password": "bench-password", "role": "user", "quota": quota})),
            )
            .await?;
        bench.user = bench.login("bench", "bench-password").await?;
        Ok(bench)
    }

    async fn login(&self, name: &str, password: &str) -> anyhow::Result<String> {
        let v: Value = self
            .http
            .post(format!("{}/auth/login", self.base))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await?
            .json()
            .await?;
        Ok(v["token"]
            .as_str()
            .with_context(|| format!("login of {name}: {v}"))?
            .to_owned())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }

    /// Polls job `id` until it succeeds; fails on any other end.
    async fn until_succeeded(&self, id: &str, every: Duration) -> anyhow::Result<()> {
        loop {
            let job = self
                .call(Method::GET, &format!("/jobs/{id}"), &self.admin, None)
                .await?;
            match job["state"].as_str() {
                Some("succeeded") => return Ok(()),
                Some("running") => tokio::time::sleep(every).await,
                _ => bail!("job {id} ended: {job}"),
            }
        }
    }

    /// One VI of `n` VMs: created and requested by the user, accepted by
    /// the admin and timed until its deploy succeeds, then terminated
    /// (the terminate job done, nothing of it left on the daemon).
    pub(crate) async fn run(&self, n: usize, leftovers: &Leftovers) -> anyhow::Result<Run> {
        let vi = self
            .call(Method::POST, "/vis", &self.user, Some(line(n)))
            .await?;
        let id = vi["id"].as_str().context("no VI id")?.to_owned();
        let uuid: Uuid = id.parse()?;
        leftovers.watch(uuid);
        self.call(
            Method::POST,
            &format!("/vis/{id}/request"),
            &self.user,
            None,
        )
        .await?;

        let simple = uuid.simple().to_string();
        let targets: Vec<Target> = (0..n)
            .map(|i| {
                let node = format!("n{i}");
                Target::new(
                    &self.host_dir,
                    &self.uri,
                    &vm_name(uuid.into(), &node),
                    &format!("NEPTUNE-READY iid-{simple}-{node}"),
                    node,
                )
            })
            .collect();
        let clock = Clock::now();
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            std::thread::spawn(move || watch(targets, clock, &stop))
        };

        let accepted = self
            .call(
                Method::POST,
                &format!("/vis/{id}/accept"),
                &self.admin,
                None,
            )
            .await;
        let accept = clock.since();
        let deployed = match accepted {
            Ok(v) => {
                let job = v["jobs"][0]["id"].as_str().context("no job")?.to_owned();
                self.until_succeeded(&job, Duration::from_millis(10)).await
            }
            Err(e) => Err(e),
        };
        let total = clock.since();
        stop.store(true, Ordering::Relaxed);
        let vms = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
        deployed?;

        let started = Instant::now();
        let v = self
            .call(
                Method::POST,
                &format!("/vis/{id}/terminate"),
                &self.admin,
                None,
            )
            .await?;
        let job = v["jobs"]
            .as_array()
            .and_then(|j| j.last())
            .and_then(|j| j["id"].as_str())
            .context("no terminate job")?
            .to_owned();
        self.until_succeeded(&job, Duration::from_millis(50))
            .await?;
        let terminate = started.elapsed().as_secs_f64();
        let v = self
            .call(Method::GET, &format!("/vis/{id}"), &self.admin, None)
            .await?;
        anyhow::ensure!(v["state"] == "terminated", "VI {id} is {}", v["state"]);
        let left = leftovers.remaining(&prefix_of(uuid));
        anyhow::ensure!(left.is_empty(), "terminated, VI {id} left {left:?}");
        Ok(Run {
            accept,
            total,
            vms,
            terminate,
        })
    }
}

/// A line of `n` VMs of the tiny template (n0 - n1 - ... - n{n-1}), 128 MiB
/// and one vCPU each, on point-to-point links; no entry point (the public
/// network would be shared with whatever else the daemon runs).
fn line(n: usize) -> Value {
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            let mut ifaces = Vec::new();
            if i > 0 {
                ifaces.push(json!({"name": "eth0"}));
            }
            if i + 1 < n {
                ifaces.push(json!({"name": if i > 0 { "eth1" } else { "eth0" }}));
            }
            json!({"id": format!("n{i}"), "ram": 128, "disk": 256, "interfaces": ifaces,
                "os": {"name": "Neptune tiny", "username": "bench", "password": "tiny-secret"},
                "software": {"template": TEMPLATE}})
        })
        .collect();
    let links: Vec<Value> = (1..n)
        .map(|i| {
            let left = if i > 1 { "eth1" } else { "eth0" };
            json!({"id": format!("l{i}"), "type": "point_to_point", "bandwidth": 100,
                "endpoints": [{"node": format!("n{}", i - 1), "interface": left},
                              {"node": format!("n{i}"), "interface": "eth0"}]})
        })
        .collect();
    json!({"topology": {"id": format!("line{n}"), "nodes": nodes, "links": links}})
}

/// Seconds since the accept, for the bench's observations and for the
/// kernel's process start times (seconds since boot, /proc/uptime's clock).
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    /// The system's uptime at `start`.
    uptime: f64,
}

impl Clock {
    fn now() -> Self {
        let uptime = read_uptime().unwrap_or(f64::NAN);
        Clock {
            start: Instant::now(),
            uptime,
        }
    }

    fn since(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn at_uptime(&self, uptime: f64) -> f64 {
        uptime - self.uptime
    }
}

fn read_uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks a second of /proc's start times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The start of process `pid`, in seconds since boot.
fn process_start(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted
    // from the last ')' on (the state is field 3, the start time field 22).
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks / clock_ticks())
}

/// One VM the watcher looks for, and what it saw.
struct Target {
    times: VmTimes,
    disk: PathBuf,
    /// The files the system daemon keeps of a defined and of a running
    /// domain; another daemon keeps them elsewhere (not watched then).
    xml: Option<PathBuf>,
    pid: Option<PathBuf>,
    console: PathBuf,
    console_len: u64,
    ready_line: String,
}

impl Target {
    fn new(host_dir: &Path, uri: &str, vm: &str, ready_line: &str, node: String) -> Self {
        let system = uri.starts_with("qemu:///system");
        Target {
            times: VmTimes {
                node,
                ..VmTimes::default()
            },
            disk: host_dir.join("disks").join(format!("{vm}.qcow2")),
            xml: system.then(|| PathBuf::from(format!("/etc/libvirt/qemu/{vm}.xml"))),
            pid: system.then(|| PathBuf::from(format!("/run/libvirt/qemu/{vm}.pid"))),
            console: host_dir.join("consoles").join(format!("{vm}.log")),
            console_len: 0,
            ready_line: ready_line.to_owned(),
        }
    }

    fn look(&mut self, clock: &Clock) {
        let now = clock.since();
        let t = &mut self.times;
        if t.disk.is_none() && self.disk.is_file() {
            t.disk = Some(now);
        }
        if t.defined.is_none() && self.xml.as_ref().is_some_and(|x| x.is_file()) {
            t.defined = Some(now);
        }
        if t.qemu.is_none() {
            if let Some(start) = self
                .pid
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|pid| process_start(pid.trim()))
            {
                t.qemu = Some(clock.at_uptime(start));
            }
        }
        if t.ready.is_none() {
            let len = std::fs::metadata(&self.console).map_or(0, |m| m.len());
            if len != self.console_len {
                self.console_len = len;
                if let Ok(bytes) = std::fs::read(&self.console) {
                    let log = String::from_utf8_lossy(&bytes);
                    if t.kernel.is_none() {
                        t.kernel = first_stamp(&log).map(|up| now - up);
                    }
                    if let Some(uptime) = ready_in(&log, &self.ready_line) {
                        t.ready = Some(now);
                        t.uptime = uptime;
                    }
                }
            }
        }
    }
}

/// What the console shows since the adapter's last boot mark.
fn since_boot(log: &str) -> &str {
    log.rfind("\n-- Neptune: ").map_or(log, |at| &log[at + 1..])
}

const STAMP: &str = "neptune-tiny: [";

/// The uptime stamp of the first line the guest's init printed since the
/// last boot mark.
fn first_stamp(log: &str) -> Option<f64> {
    let since = since_boot(log);
    let rest = &since[since.find(STAMP)? + STAMP.len()..];
    rest[..rest.find(']')?].parse().ok()
}

/// Whether `log` shows `ready_line` since the adapter's last boot mark;
/// if so, the uptime of the last stamped line before it.
fn ready_in(log: &str, ready_line: &str) -> Option<Option<f64>> {
    let since = log.rfind("\n-- Neptune: ").map_or(log, |at| &log[at + 1..]);
    let at = since.match_indices(ready_line).find_map(|(at, m)| {
        since[at + m.len()..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
            .then_some(at)
    })?;
    let before = &since[..at];
    let uptime = before.rfind(STAMP).and_then(|s| {
        let rest = &before[s + STAMP.len()..];
        rest[..rest.find(']')?].parse().ok()
    });
    Some(uptime)
}

/// Looks at every target every 10 ms until `stop`; returns what it saw.
fn watch(mut targets: Vec<Target>, clock: Clock, stop: &AtomicBool) -> Vec<VmTimes> {
    loop {
        for t in &mut targets {
            t.look(&clock);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A last look: the job may have succeeded within the last 10 ms.
    for t in &mut targets {
        t.look(&clock);
    }
    targets.into_iter().map(|t| t.times).collect()
}

/// The median of `xs` (the upper one of an even count); NaN if empty.
pub(crate) fn median(xs: impl IntoIterator<Item = f64>) -> f64 {
    let mut xs: Vec<f64> = xs.into_iter().collect();
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Load averages (1, 5, 15 min), for the report: other work on the
/// machine shows in every figure.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_ready_line_and_the_uptime_before_it() {
        let line = "NEPTUNE-READY iid-ab-n1";
        let log = "neptune-tiny: [0.9] old\nNEPTUNE-READY iid-ab-n1\n\n-- Neptune: boot of x --\n\
                   neptune-tiny: [3.41] mounting\nneptune-tiny: [5.02] httpd\nNEPTUNE-READY iid-ab-n1\r\n";
        assert_eq!(ready_in(log, line), Some(Some(5.02)));
        assert_eq!(first_stamp(log), Some(3.41));
        assert_eq!(ready_in("NEPTUNE-READY iid-ab-n10\n", line), None);
        let rebooted = "NEPTUNE-READY iid-ab-n1\n\n-- Neptune: boot of x --\nbooting\n";
        assert_eq!(ready_in(rebooted, line), None);
    }

    #[test]
    fn a_line_of_one_has_no_link() {
        let one = line(1);
        assert_eq!(one["topology"]["links"].as_array().unwrap().len(), 0);
        let three = line(3);
        assert_eq!(three["topology"]["links"].as_array().unwrap().len(), 2);
        assert_eq!(
            three["topology"]["nodes"][1]["interfaces"],
            json!([{"name": "eth0"}, {"name": "eth1"}])
        );
    }
}
