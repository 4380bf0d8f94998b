//! Scale benchmark (see README.md beside this file): a `neptune manager`
//! process (release build, SQLite or PostgreSQL) and, in this process,
//! datacenters of simulated hosts, each a real Agent on one shared
//! listener (`neptune_agent::start_farm`), then:
//!
//! 1. hosts: the time until every host is ready, and the Manager's RSS idle;
//! 2. accepts: VIs of `--vms` VMs each created, requested and accepted by
//!    `--clients` concurrent clients: accepts/s, accept latency p50/p99,
//!    accept -> running p50/p99;
//! 3. terminates: all of them terminated by the same clients; the hosts and
//!    address pools empty again; the Manager's RSS then;
//! 4. one VI of `--big` VMs: accept -> running, and terminate -> terminated;
//! 5. with `--managers 2` (PostgreSQL only), a second Manager on the same
//!    database and the phases of `ha.rs`: accepts split over both, each
//!    terminate sent to both at once, then one Manager killed mid-deploy and
//!    mid-terminate.
//!
//! ```text
//! cargo build --release -p neptune -p neptune-bench-scale
//! target/release/neptune-bench-scale [--datacenters 3] [--hosts 10000] [--vis 1000] [--vms 20]
//!     [--clients 64] [--big 1500] [--database-url postgres://...] [--managers 2]
//! target/debug/neptune-bench-scale --smoke    # tiny sizes: does it still run?
//! ```

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use neptune_agent::{AgentConfig, ManagerLink};
use neptune_hypervisor::sim::{SimConfig, SimHypervisor};
use neptune_hypervisor::Capacity;
use neptune_types::Secret;
use serde_json::{json, Value};

mod ha;

const USAGE: &str = "\
usage: neptune-bench-scale [--datacenters 3] [--hosts 10000] [--vis 1000] [--vms 20]
           [--clients 64] [--big 1500 (0: none)] [--heartbeat-secs 30]
           [--database-url postgres://...] [--managers 1|2] [--rounds 1]
       neptune-bench-scale --smoke    (tiny sizes: does it still run?)
--hosts is per datacenter; --managers 2 needs --database-url (PostgreSQL).";

/// Whether the VI of detail `v` is still in `transient`, or its last job
/// still runs: an accepted VI's deploy job may not have started (it starts
/// at once, or once another Manager takes it over from one that died).
/// `neptune vi wait` waits the same way; a deploy rolled back leaves its
/// VI `accepted` with its job ended, which ends the wait.
fn unsettled(v: &Value, transient: &str) -> bool {
    let job_runs = v["jobs"]
        .as_array()
        .and_then(|jobs| jobs.last())
        .and_then(|job| job["state"].as_str())
        .is_some_and(|s| s == "running" || s == "rolling_back");
    v["state"].as_str() == Some(transient) || job_runs
}

/// " (round 2 of 3)" when phases 2 and 3 run more than once.
fn round_label(round: usize, rounds: usize) -> String {
    if rounds == 1 {
        String::new()
    } else {
        format!(" (round {round} of {rounds})")
    }
}

struct Args {
    datacenters: usize,
    hosts: usize,
    vis: usize,
    vms: usize,
    clients: usize,
    big: usize,
    heartbeat_secs: u64,
    database_url: Option<String>,
    managers: usize,
    rounds: usize,
}

/// The options given, or `None` when the usage was asked for (and printed).
fn args() -> anyhow::Result<Option<Args>> {
    let mut a = Args {
        datacenters: 3,
        hosts: 10_000,
        vis: 1000,
        vms: 20,
        clients: 64,
        big: 1500,
        heartbeat_secs: 30,
        database_url: None,
        managers: 1,
        rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return Ok(None);
        }
        if flag == "--smoke" {
            (a.hosts, a.vis, a.vms, a.clients, a.big) = (20, 8, 4, 4, 30);
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--datacenters" => a.datacenters = value.parse()?,
            "--hosts" => a.hosts = value.parse()?,
            "--vis" => a.vis = value.parse()?,
            "--vms" => a.vms = value.parse()?,
            "--clients" => a.clients = value.parse()?,
            "--big" => a.big = value.parse()?,
            "--heartbeat-secs" => a.heartbeat_secs = value.parse()?,
            "--database-url" => a.database_url = Some(value),
            "--managers" => a.managers = value.parse()?,
            "--rounds" => a.rounds = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    if a.big == 1 {
        bail!("--big is a VI of 2 VMs or more, or 0 for none");
    }
    if a.datacenters == 0 || a.datacenters > 3 || a.hosts == 0 || a.clients == 0 || a.vms < 2 {
        bail!("1 to 3 datacenters, at least one host and one client, VIs of 2 VMs or more");
    }
    if a.rounds == 0 {
        bail!("--rounds is 1 or more");
    }
    if a.managers == 0 || a.managers > 2 {
        bail!("--managers is 1 or 2");
    }
    if a.managers == 2 && a.database_url.is_none() {
        bail!("--managers 2 shares one PostgreSQL database: give --database-url");
    }
    Ok(Some(a))
}

/// The `neptune` binary built beside this one.
fn neptune_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("neptune");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (cargo build [--release] -p neptune)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The Manager process, killed (SIGKILL) on drop.
struct ManagerProcess(Child);

/// How to start a `neptune manager` process; every one of them shares the
/// database, the image directory and the tokens.
struct ManagerSpec {
    binary: PathBuf,
    dir: PathBuf,
    db: String,
    silence: String,
}

impl ManagerSpec {
    /// Starts the Manager `instance` on `port`, its log appended to
    /// `manager-<instance>.log` in the temporary directory (a restart
    /// adds to it).
    fn start(&self, instance: &str, port: u16) -> anyhow::Result<ManagerProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(instance))?;
        let child = Command::new(&self.binary)
            .arg("manager")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &self.db])
            .args(["--instance", instance])
            .arg("--image-dir")
            .arg(self.dir.join("images"))
            .arg("--agent-token-file")
            .arg(self.dir.join("agent.token"))
            .arg("--admin-password-file")
            .arg(self.dir.join("admin.password"))
            .args(["--host-silence-secs", &self.silence])
            .args(["--reconcile-secs", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(ManagerProcess(child))
    }

    fn log(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("manager-{instance}.log"))
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ManagerProcess {
    /// Its resident memory, MiB.
    fn rss_mib(&self) -> anyhow::Result<f64> {
        self.status_mib("VmRSS")
    }

    /// One memory field of `/proc/PID/status` (`VmRSS`, `RssAnon`, ...), MiB.
    fn status_mib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .with_context(|| format!("no {field}"))?
            .trim()
            .parse()?;
        Ok(kib / 1024.0)
    }

    /// The CPU time it has used (user and system), seconds: what a phase
    /// cost the Manager, steadier than its wall time on a shared machine.
    fn cpu_secs(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))?;
        // The fields after the command's name, which may hold spaces:
        // utime and stime are the 14th and 15th of the line.
        let after = stat.rsplit_once(") ").context("no stat")?.1;
        let ticks: Vec<f64> = after
            .split(' ')
            .skip(11)
            .take(2)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // USER_HZ, 100 on Linux whatever the kernel's own tick.
        Ok(ticks.iter().sum::<f64>() / 100.0)
    }

    /// Where its resident memory is: the heap and stacks, the mapped files
    /// (the binary's code paged in, mostly), and shared memory (SQLite's
    /// WAL index).
    fn rss_parts(&self) -> anyhow::Result<String> {
        Ok(format!(
            "anon {:.1}, file {:.1}, shmem {:.1} MiB",
            self.status_mib("RssAnon")?,
            self.status_mib("RssFile")?,
            self.status_mib("RssShmem")?
        ))
    }

    /// Its resident memory once it has settled: read every half second
    /// until it has not fallen by 0.25 MiB or more for [`SETTLED_FOR`]
    /// (at most [`SETTLE_AT_MOST`]). Idle and after terminating are both
    /// read so, as an operator would read a quiet Manager: after a burst
    /// it gives memory back in steps over seconds (the allocator's pages
    /// after a second unused, the SQLite connections after three quiet
    /// seconds, tokio's blocking threads after ten idle).
    async fn settled_rss_mib(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut low = self.rss_mib()?;
        let mut low_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.rss_mib()?;
            if now <= low - 0.25 {
                low = now;
                low_since = Instant::now();
            }
            if low_since.elapsed() >= SETTLED_FOR || started.elapsed() >= SETTLE_AT_MOST {
                return Ok(now);
            }
        }
    }
}

/// How long the Manager's memory must not fall to count as settled.
const SETTLED_FOR: Duration = Duration::from_secs(10);
/// The longest a reading of settled memory waits.
const SETTLE_AT_MOST: Duration = Duration::from_secs(60);

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
    /// 5xx answers, counted by every `Api` of the run.
    server_errors: Arc<std::sync::atomic::AtomicUsize>,
}

impl Api {
    /// One request: its status and body, or the transport's error (the
    /// Manager unreachable, or gone before it answered).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::StatusCode, Value), reqwest::Error> {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_server_error() {
            self.server_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.send(method, path, body.as_ref()).await?;
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Waits for the VI to leave `transient` and its last job to end
    /// ([`unsettled`]); its state then. Each read
    /// names the detail held and waits for it to change (`wait_ms`, a
    /// long-poll), as a client following a VI would.
    async fn settle(&self, id: &str, transient: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        let mut held = String::new();
        loop {
            let mut req = self
                .http
                .get(format!("{}/api/v1/vis/{id}?wait_ms=10000", self.base))
                .bearer_auth(&self.token);
            if !held.is_empty() {
                req = req.header("If-None-Match", &held);
            }
            let resp = req.send().await?;
            let status = resp.status();
            if status.is_server_error() {
                self.server_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some(tag) = resp.headers().get("etag").and_then(|t| t.to_str().ok()) {
                held = tag.to_owned();
            }
            if status == reqwest::StatusCode::OK {
                let v: Value = resp.json().await?;
                if !unsettled(&v, transient) {
                    return Ok(v["state"].as_str().unwrap_or_default().to_owned());
                }
            } else if status != reqwest::StatusCode::NOT_MODIFIED {
                bail!("/vis/{id}: {status}");
            }
            if Instant::now() > deadline {
                bail!("VI {id} still {transient} after {limit:?}");
            }
        }
    }
}

/// Addresses used in each pool, by pool.
fn used_addresses(pools: &Value) -> Vec<(String, i64)> {
    pools
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["pool"].as_str().unwrap_or_default().to_owned(),
                        p["used"].as_i64().unwrap_or(-1),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
    xs[i.min(xs.len() - 1)]
}

async fn wait_for_manager(base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        if Instant::now() > deadline {
            bail!("the Manager did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = args()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::create_dir_all(d.join("images"))?;
    let agent_token = "scale-bench-agent-token-0123456789";
    let password = "scale-bench-admin-password";
    write_secret(&d.join("agent.token"), agent_token)?;
    write_secret(&d.join("admin.password"), password)?;
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(d.join("images/base.qcow2"))
        .arg("64M")
        .status()
        .context("running qemu-img (install qemu-utils)")?;
    if !ok.success() {
        bail!("qemu-img failed");
    }
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let db = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", d.join("neptune.db").display()));
    let spec = ManagerSpec {
        binary: neptune_binary()?,
        dir: d.to_owned(),
        db: db.clone(),
        silence: (args.heartbeat_secs * 3).to_string(),
    };
    let manager = spec.start("a", port)?;
    wait_for_manager(&base).await?;
    // The second Manager starts once the first has made the schema and the
    // administrator, so the two do not race for them.
    let second = if args.managers == 2 {
        let port_b = free_port()?;
        let m = spec.start("b", port_b)?;
        wait_for_manager(&format!("http://127.0.0.1:{port_b}")).await?;
        Some((m, port_b))
    } else {
        None
    };
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()?;
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"name": "admin", "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let server_errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let session = Api {
        base: base.clone(),
        http: http.clone(),
        token: login["token"].as_str().context("no token")?.to_owned(),
        server_errors: server_errors.clone(),
    };
    let token = session
        .post("/tokens", Some(json!({"name": "scale bench"})))
        .await?["token"]
        .as_str()
        .context("no API token")?
        .to_owned();
    let api = Arc::new(Api {
        base: base.clone(),
        http: http.clone(),
        token,
        server_errors: server_errors.clone(),
    });
    let admin = api.get("/me").await?;
    let admin_id = admin["id"].as_str().context("no id")?.to_owned();
    api.call(
        reqwest::Method::PUT,
        &format!("/users/{admin_id}/quota"),
        Some(
            json!({"vms": 1_000_000, "vcpus": 1_000_000, "ram_mib": 1_000_000_000_000i64,
            "public_addresses": 100_000, "designs": 100_000, "design_mib": 100_000,
            "private_addresses": 1_000_000_000}),
        ),
    )
    .await?;
    let names = ["napoli", "roma", "milano"];
    // A Home Address per VI: 1 000 VIs in three datacenters outgrow a /24
    // each, so the pools are /20s of the benchmarking range (RFC 2544).
    let pools = ["198.18.0.0/20", "198.18.16.0/20", "198.18.32.0/20"];
    for (name, pool) in names.iter().zip(pools).take(args.datacenters) {
        api.post(
            "/datacenters",
            Some(json!({"name": name, "home_pools": [pool]})),
        )
        .await?;
    }
    api.post(
        "/templates",
        Some(json!({"name": "base", "image": "base.qcow2", "disk_mib": 1024})),
    )
    .await?;

    // 1. Hosts.
    let total_hosts = args.datacenters * args.hosts;
    println!(
        "== {} datacenters x {} simulated hosts (one listener; heartbeats every {} s), {} on {}",
        args.datacenters,
        args.hosts,
        args.heartbeat_secs,
        if args.managers == 2 {
            "two Managers"
        } else {
            "Manager"
        },
        if db.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        }
    );
    let capacity = Capacity {
        cpus: 64,
        ram_mib: 256 * 1024,
        disk_mib: 1 << 30,
        vm_slots: 64,
    };
    let mut urls = vec![base.clone()];
    if let Some((_, port_b)) = &second {
        urls.push(format!("http://127.0.0.1:{port_b}"));
    }
    let mut configs = Vec::with_capacity(total_hosts);
    for dc in names.iter().take(args.datacenters) {
        for i in 0..args.hosts {
            // With two Managers, half the Agents report to each first, so
            // a killed Manager leaves half of them to move to the other.
            let mut order = urls.clone();
            order.rotate_left(i % urls.len());
            let mut link = ManagerLink::to_any(order, Secret::new(api.token.clone()));
            link.heartbeat = Duration::from_secs(args.heartbeat_secs);
            let name = format!("{dc}-{i}");
            // In memory: 30 000 hosts' disk and table files would cost
            // this process more CPU than the Manager it measures.
            let sim = SimHypervisor::new(
                SimConfig::new(d.join("hosts").join(&name), capacity).volatile(),
            )?;
            configs.push(AgentConfig {
                name,
                datacenter: (*dc).to_owned(),
                listen: "127.0.0.1:0".parse()?,
                advertise_url: None,
                token: Secret::new(agent_token),
                manager: Some(link),
                hypervisor: Arc::new(sim),
                uplink_mbps: 0,
            });
        }
    }
    let started = Instant::now();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let _farm = neptune_agent::start_farm(configs, "127.0.0.1:0".parse()?, async move {
        let _ = stopped.await;
    })
    .await?;
    let ready_after = loop {
        // The datacenters' host counts, not the list of every host: an
        // operator's view of a domain coming up, and one cheap read.
        let dcs = api.get("/datacenters").await?;
        let ready: u64 = dcs.as_array().map_or(0, |d| {
            d.iter().filter_map(|d| d["hosts"]["ready"].as_u64()).sum()
        });
        if ready == total_hosts as u64 {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{ready} of {total_hosts} hosts ready after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One VI through its life before idle is read, so that what the
    // Manager makes once for the paths a VI takes is in both readings, not
    // counted against the rounds: the binary's code for those paths, paged
    // in on first use (1.9 MiB of RssFile, file pages the kernel may drop
    // at any time), SQLite's compiled statements, tables built lazily.
    one_life(&api, "warm-up", names[0], args.vms).await?;
    let idle_rss = manager.settled_rss_mib().await?;
    println!(
        "hosts: {total_hosts} ready in {:.1} s (goal <= 10 s); Manager RSS idle {idle_rss:.0} MiB after one warm-up VI (goal <= 1024; {})",
        ready_after.as_secs_f64(),
        manager.rss_parts()?
    );

    let pools_before = used_addresses(&api.get("/address-pools").await?);

    for round in 1..=args.rounds {
        // 2. Accepts by many clients.
        let cpu_before = manager.cpu_secs()?;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        for c in 0..args.clients {
            let (api, next) = (api.clone(), next.clone());
            let (vis, vms, dcs) = (args.vis, args.vms, args.datacenters);
            tasks.spawn(async move {
                let mut out: Vec<(String, f64, f64)> = Vec::new();
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= vis {
                        return Ok::<_, anyhow::Error>(out);
                    }
                    let vi = api
                        .post(
                            "/vis",
                            Some(json!({"name": format!("s{round}-{c}-{k}"),
                                "catalogue": {"kind": "cluster", "nodes": vms, "template": "base"}})),
                        )
                        .await?;
                    let id = vi["id"].as_str().context("no id")?.to_owned();
                    api.post(&format!("/vis/{id}/request"), None).await?;
                    let dc = names[k % dcs];
                    let t = Instant::now();
                    api.post(
                        &format!("/vis/{id}/accept"),
                        Some(json!({"datacenter": dc})),
                    )
                    .await?;
                    let accept = t.elapsed().as_secs_f64();
                    let state = api
                        .settle(&id, "deploying", Duration::from_secs(300))
                        .await?;
                    if state != "running" {
                        bail!("VI {id} ended {state}");
                    }
                    out.push((id, accept, t.elapsed().as_secs_f64()));
                }
            });
        }
        let mut done = Vec::new();
        while let Some(r) = tasks.join_next().await {
            done.extend(r??);
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = manager.cpu_secs()? - cpu_before;
        let mut accepts: Vec<f64> = done.iter().map(|d| d.1 * 1e3).collect();
        let mut running: Vec<f64> = done.iter().map(|d| d.2 * 1e3).collect();
        println!(
            "accepts{}: {} VIs of {} VMs by {} clients in {wall:.1} s: {:.1} accepts/s end to end (goal >= 100); accept p50 {:.0} ms, p99 {:.0} ms (goal <= 500); accept -> running p50 {:.0} ms, p99 {:.0} ms (goal <= 2000); Manager CPU {:.1} ms per VI (created, requested, accepted, deployed, followed)",
            round_label(round, args.rounds),
            done.len(),
            args.vms,
            args.clients,
            done.len() as f64 / wall,
            percentile(&mut accepts, 0.5),
            percentile(&mut accepts, 0.99),
            percentile(&mut running, 0.5),
            percentile(&mut running, 0.99),
            cpu * 1e3 / done.len().max(1) as f64,
        );
        let loaded_rss = manager.rss_mib()?;

        // 3. Terminates.
        let ids: Arc<Vec<String>> = Arc::new(done.into_iter().map(|d| d.0).collect());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.clients {
            let (api, next, ids) = (api.clone(), next.clone(), ids.clone());
            tasks.spawn(async move {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(id) = ids.get(k) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    api.post(&format!("/vis/{id}/terminate"), None).await?;
                    let state = api
                        .settle(id, "terminating", Duration::from_secs(300))
                        .await?;
                    if state != "terminated" {
                        bail!("VI {id} ended {state}");
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let terminate_wall = started.elapsed().as_secs_f64();
        // Measured before the checks below: listing every host is the
        // benchmark's own read, as large as the domain, not the workload's.
        let after_rss = manager.settled_rss_mib().await?;
        let after_parts = manager.rss_parts()?;
        let hosts = api.get("/hosts").await?;
        let used: i64 = hosts.as_array().map_or(0, |h| {
            h.iter()
                .map(|h| h["used_slots"].as_i64().unwrap_or(0))
                .sum()
        });
        let pools_after = used_addresses(&api.get("/address-pools").await?);
        println!(
            "terminates{}: {} VIs in {terminate_wall:.1} s; slots still used {used} (goal 0); addresses used per pool before {pools_before:?}, after {pools_after:?} (goal: the same); Manager RSS idle {idle_rss:.0} MiB, loaded {loaded_rss:.0} MiB, after {after_rss:.0} MiB ({:+.1} % of idle; goal within 10 %; {after_parts})",
            round_label(round, args.rounds),
            ids.len(),
            (after_rss - idle_rss) / idle_rss * 100.0
        );
    }

    // 4. One big VI (none with --big 0).
    if args.big > 0 {
        big_vi(&api, names[0], args.big).await?;
    }

    if let Some((manager_b, port_b)) = second {
        let b = Arc::new(Api {
            base: format!("http://127.0.0.1:{port_b}"),
            http,
            token: api.token.clone(),
            server_errors: server_errors.clone(),
        });
        let run = ha::Run {
            apis: [api.clone(), b],
            spec: &spec,
            port_b,
            names: &names[..args.datacenters],
            vis: args.vis,
            vms: args.vms,
            clients: args.clients,
            pools_before: &pools_before,
        };
        run.all(manager_b).await?;
    }
    println!(
        "server errors (5xx) over the whole run: {}",
        server_errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    drop(manager);
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Phase 4: one VI of `vms` VMs in `datacenter`, accepted until running,
/// then terminated.
async fn big_vi(api: &Api, datacenter: &str, vms: usize) -> anyhow::Result<()> {
    let (deploy, terminate) = one_life(api, "big", datacenter, vms).await?;
    println!(
        "big VI: {vms} VMs, accept -> running {deploy:.2} s; terminate -> terminated {terminate:.2} s (goal <= 3 s)"
    );
    Ok(())
}

/// A VI `name` of `vms` VMs created, requested, accepted in `datacenter`,
/// run and terminated: the seconds from its accept to `running`, and from
/// its terminate to `terminated`.
async fn one_life(
    api: &Api,
    name: &str,
    datacenter: &str,
    vms: usize,
) -> anyhow::Result<(f64, f64)> {
    let vi = api
        .post(
            "/vis",
            Some(json!({"name": name,
            "catalogue": {"kind": "cluster", "nodes": vms, "template": "base"}})),
        )
        .await?;
    let id = vi["id"].as_str().context("no id")?.to_owned();
    api.post(&format!("/vis/{id}/request"), None).await?;
    let t = Instant::now();
    api.post(
        &format!("/vis/{id}/accept"),
        Some(json!({"datacenter": datacenter})),
    )
    .await?;
    let state = api
        .settle(&id, "deploying", Duration::from_secs(600))
        .await?;
    let deploy = t.elapsed().as_secs_f64();
    if state != "running" {
        bail!("VI {name} ended {state}");
    }
    let t = Instant::now();
    api.post(&format!("/vis/{id}/terminate"), None).await?;
    let state = api
        .settle(&id, "terminating", Duration::from_secs(600))
        .await?;
    if state != "terminated" {
        bail!("VI {name} ended {state}");
    }
    Ok((deploy, t.elapsed().as_secs_f64()))
}
