//! Durable jobs survive a crash: the real `neptune manager` process is
//! killed (SIGKILL) while a deploy runs, after each step in turn, and
//! restarted on the same database; the job finishes (or, when a step fails,
//! rolls back) and nothing leaks: no VM, disk, VM slot or address. The same
//! for suspend and resume, killed part-way through.
//!
//! The hosts are real Agents (HTTP on 127.0.0.1) over simulated
//! hypervisors whose every operation takes a while, run in this test so it
//! can look at them and inject faults.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neptune_agent::{AgentConfig, ManagerLink};
use neptune_hypervisor::sim::{Fault, SimConfig, SimHypervisor};
use neptune_hypervisor::{Capacity, Hypervisor, Op};
use neptune_types::Secret;
use serde_json::{json, Value};

const AGENT_TOKEN: &str = "crash-test-agent-token";
const PASSWORD: &str = "crash-test-admin-password";

struct ManagerProcess {
    child: Child,
    args: Vec<String>,
}

impl ManagerProcess {
    fn start(args: &[String]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_neptune"))
            .arg("manager")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ManagerProcess {
            child,
            args: args.to_vec(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no shutdown, no flush
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        *self = ManagerProcess::start(&self.args.clone());
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null), // the Manager is down (being restarted)
        }
    }

    async fn get(&self, path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, v) = self.call(reqwest::Method::GET, path, None).await;
            if s == 200 {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} kept failing: {s} {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_manager(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "the Manager did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn everything_on(sims: &[Arc<SimHypervisor>], root: &Path) -> (usize, usize) {
    let mut vms = 0;
    for s in sims {
        vms += s.list().await.unwrap().len();
    }
    let disks = std::fs::read_dir(root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|h| std::fs::read_dir(h.path().join("disks")).map_or(0, |d| d.count()))
        .sum();
    (vms, disks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manager_killed_during_deploys_suspends_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("images")).unwrap();
    std::fs::write(d.join("agent.token"), AGENT_TOKEN).unwrap();
    std::fs::write(d.join("admin.password"), PASSWORD).unwrap();
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(d.join("images/base.qcow2"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(ok.success());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--database-url".into(),
        format!("sqlite://{}", d.join("neptune.db").display()),
        "--image-dir".into(),
        d.join("images").display().to_string(),
        "--agent-token-file".into(),
        d.join("agent.token").display().to_string(),
        "--admin-password-file".into(),
        d.join("admin.password").display().to_string(),
    ];
    let mut manager = ManagerProcess::start(&args);
    wait_for_manager(&base).await;

    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"name": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = Api {
        base: base.clone(),
        http: http.clone(),
        token: login["token"].as_str().unwrap().to_owned(),
    };
    let (_, api_token) = session
        .call(
            reqwest::Method::POST,
            "/tokens",
            Some(json!({"name": "crash test"})),
        )
        .await;
    let api = Api {
        base: base.clone(),
        http,
        token: api_token["token"].as_str().unwrap().to_owned(),
    };
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            "/datacenters",
            Some(json!({"name": "napoli", "home_pools": ["192.0.2.0/24"]})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            "/templates",
            Some(json!({"name": "base", "image": "base.qcow2", "disk_mib": 1024})),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // Two hosts, each operation taking 60 ms.
    let hosts_root: PathBuf = d.join("hosts");
    let mut sims = Vec::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for name in ["h1", "h2"] {
        let capacity = Capacity {
            cpus: 16,
            ram_mib: 32768,
            disk_mib: 1 << 20,
            vm_slots: 3,
        };
        let config = SimConfig::new(hosts_root.join(name), capacity)
            .with_uniform_delay(Duration::from_millis(60));
        let sim = Arc::new(SimHypervisor::new(config).unwrap());
        sims.push(sim.clone());
        let mut link = ManagerLink::new(base.clone(), Secret::new(api.token.clone()));
        link.heartbeat = Duration::from_millis(500);
        let mut rx = stopped.clone();
        neptune_agent::start(
            AgentConfig {
                name: name.to_owned(),
                datacenter: "napoli".to_owned(),
                listen: "127.0.0.1:0".parse().unwrap(),
                advertise_url: None,
                token: Secret::new(AGENT_TOKEN),
                manager: Some(link),
                hypervisor: sim,
                uplink_mbps: 10_000,
            },
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get("/hosts").await.as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the Agents did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One VI of 4 VMs: 12 deploy steps. Kill the Manager after step k, for every k.
    let total = 12;
    for kill_after in 0..total {
        let id = requested_vi(&api).await;
        let (s, v) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/accept"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        kill_after_step(&api, &mut manager, &base, &v, kill_after, total).await;
        let v = settle(&api, &id, "deploying").await;
        assert_eq!(v["state"], "running", "killed after step {kill_after}: {v}");
        assert_eq!(v["jobs"][0]["state"], "succeeded");
        // Keep the hosts from filling up: terminate it, also across a kill.
        let (s, _) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/terminate"), None)
            .await;
        assert_eq!(s, 200);
        tokio::time::sleep(Duration::from_millis(70 * (kill_after as u64 % 4))).await;
        manager.restart();
        wait_for_manager(&base).await;
        let v = settle(&api, &id, "terminating").await;
        assert_eq!(v["state"], "terminated", "{v}");
        assert_eq!(
            everything_on(&sims, &hosts_root).await,
            (0, 0),
            "leak after a kill after step {kill_after}"
        );
    }

    // A failing step, and a kill while the job rolls back: nothing stays behind.
    sims[0].add_fault(Fault::always(Op::Start));
    sims[1].add_fault(Fault::always(Op::Start));
    let id = requested_vi(&api).await;
    let (_, v) = api
        .call(reqwest::Method::POST, &format!("/vis/{id}/accept"), None)
        .await;
    let job = v["jobs"][0]["id"].as_str().unwrap().to_owned();
    loop {
        let j = api.get(&format!("/jobs/{job}")).await;
        if j["state"] == "rolling_back" && j["step"].as_i64().unwrap() < 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    manager.restart();
    wait_for_manager(&base).await;
    let v = settle(&api, &id, "deploying").await;
    assert_eq!(v["state"], "accepted", "{v}");
    assert_eq!(v["jobs"][0]["state"], "rolled_back");
    assert_eq!(everything_on(&sims, &hosts_root).await, (0, 0));
    // Its reservations go with a terminate.
    api.call(reqwest::Method::POST, &format!("/vis/{id}/terminate"), None)
        .await;
    let v = settle(&api, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    let hosts = api.get("/hosts").await;
    for h in hosts.as_array().unwrap() {
        assert_eq!(h["used_slots"], 0, "slot leaked: {h}");
    }
    sims[0].set_faults(Vec::new());
    sims[1].set_faults(Vec::new());

    // Suspend (14 steps) and resume (10 steps), the Manager killed part-way
    // through each: the VI ends suspended with its hosts empty, then running
    // again with nothing saved left behind.
    let id = running_vi(&api).await;
    let saved = d.join("images/suspended").join(id.replace('-', ""));
    for (suspend_kill, resume_kill) in [(1, 1), (5, 5), (9, 9), (13, 3)] {
        let (s, v) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/suspend"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        kill_after_step(&api, &mut manager, &base, &v, suspend_kill, 14).await;
        let v = settle(&api, &id, "suspending").await;
        assert_eq!(
            v["state"], "suspended",
            "killed after step {suspend_kill}: {v}"
        );
        assert_eq!(everything_on(&sims, &hosts_root).await, (0, 0));
        assert_eq!(std::fs::read_dir(&saved).unwrap().count(), 8);

        let (s, v) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/resume"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        kill_after_step(&api, &mut manager, &base, &v, resume_kill, 10).await;
        let v = settle(&api, &id, "resuming").await;
        assert_eq!(
            v["state"], "running",
            "killed after step {resume_kill}: {v}"
        );
        assert_eq!(everything_on(&sims, &hosts_root).await, (4, 4));
        assert!(!saved.exists(), "saved files left after a resume");
    }
    api.call(reqwest::Method::POST, &format!("/vis/{id}/terminate"), None)
        .await;
    let v = settle(&api, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    assert_eq!(everything_on(&sims, &hosts_root).await, (0, 0));
    let _ = stop.send(true);
}

/// A catalogue VI of 4 VMs (12 deploy steps), requested.
async fn requested_vi(api: &Api) -> String {
    let (s, vi) = api
        .call(
            reqwest::Method::POST,
            "/vis",
            Some(json!({"catalogue": {"kind": "nat-backends", "nodes": 4, "template": "base"}})),
        )
        .await;
    assert_eq!(s, 201, "{vi}");
    let id = vi["id"].as_str().unwrap().to_owned();
    let (s, v) = api
        .call(reqwest::Method::POST, &format!("/vis/{id}/request"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    id
}

/// A catalogue VI of 4 VMs, accepted and running.
async fn running_vi(api: &Api) -> String {
    let id = requested_vi(api).await;
    api.call(reqwest::Method::POST, &format!("/vis/{id}/accept"), None)
        .await;
    let v = settle(api, &id, "deploying").await;
    assert_eq!(v["state"], "running", "{v}");
    id
}

/// Kills and restarts the Manager once the VI's newest job has done `step` steps.
async fn kill_after_step(
    api: &Api,
    manager: &mut ManagerProcess,
    base: &str,
    vi: &Value,
    step: i64,
    total: i64,
) {
    let job = vi["jobs"].as_array().unwrap().last().unwrap();
    assert_eq!(job["total"], total, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = api.get(&format!("/jobs/{id}")).await;
        if j["step"].as_i64().unwrap() >= step || j["state"] != "running" {
            break;
        }
        assert!(Instant::now() < deadline, "job stuck: {j}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    manager.restart();
    wait_for_manager(base).await;
}

/// Waits until the VI leaves `transient`.
async fn settle(api: &Api, id: &str, transient: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = api.get(&format!("/vis/{id}")).await;
        if v["state"] != transient {
            return v;
        }
        assert!(Instant::now() < deadline, "VI stuck {transient}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
