//! Durable jobs survive a crash: the real `neptune manager` process is
//! killed (SIGKILL) while a deploy runs, at each step where it can be
//! interrupted in turn, and restarted on the same database; the job
//! finishes (or, when a step fails, rolls back) and nothing leaks: no VM,
//! disk, VM slot or address. The same for suspend and resume, killed
//! part-way through.
//!
//! A job runs the steps of a phase together (all copies, then all defines,
//! ...) and records its progress once per batch (here after every batch;
//! a deploy or terminate by default at most every 250 ms, see
//! `--job-progress-ms`), so it can be interrupted at the first step of
//! each batch, not after every step. The test finds
//! those steps as it goes: each kill waits for the job to be running at a
//! step past the last one interrupted, and every kill is checked in the
//! database, read while the Manager is dead: the job was running, at the
//! step the test records. A job that finishes before such a step is not
//! killed (the kinds of job are then done: each was interrupted at every
//! step past the last one it was caught at, and at two at least). Steps that
//! last less than a poll (local ones between batches) are caught by chance;
//! the log lists the steps seen and interrupted.
//!
//! The hosts are real Agents (HTTP on 127.0.0.1) over simulated
//! hypervisors whose every operation takes a while, run in this test so it
//! can look at them and inject faults.

#![allow(clippy::unwrap_used)] // test helpers fail loudly
#![allow(clippy::print_stderr)] // where each job was interrupted, for the log

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neptune_agent::{AgentConfig, ManagerLink};
use neptune_hypervisor::sim::{Fault, SimConfig, SimHypervisor};
use neptune_hypervisor::{Capacity, Hypervisor, Op};
use neptune_store::{JobRecord, JobState};
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

    /// Starts it again (after killing it, if it still runs).
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

/// A Manager process on SQLite in `d`, the API token of its administrator,
/// and Agents (in this process) over simulated hosts whose every operation
/// takes 60 ms, `(datacenter, host)` each, with `slots` VM slots; the
/// datacenters are made first (`(name, home pool)`), and a template `base`.
struct Rig {
    manager: ManagerProcess,
    api: Api,
    base: String,
    db: String,
    sims: Vec<Arc<SimHypervisor>>,
    hosts_root: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Rig {
    async fn start(
        d: &Path,
        datacenters: &[(&str, &str)],
        hosts: &[(&str, &str)],
        slots: u32,
    ) -> Rig {
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
        let db = format!("sqlite://{}", d.join("neptune.db").display());
        let args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--database-url".into(),
            db.clone(),
            "--image-dir".into(),
            d.join("images").display().to_string(),
            "--agent-token-file".into(),
            d.join("agent.token").display().to_string(),
            "--admin-password-file".into(),
            d.join("admin.password").display().to_string(),
            // Progress written after every batch, so that the test sees
            // each batch start and can kill the Manager there. (Written
            // less often, as deploys and terminates do by default, a kill
            // repeats the batches since the last write: the same recovery
            // as a kill within a batch, for those two kinds of job. The
            // others write after every batch whatever this says.)
            "--job-progress-ms".into(),
            "0".into(),
        ];
        let manager = ManagerProcess::start(&args);
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
        for (name, pool) in datacenters {
            let (s, _) = api
                .call(
                    reqwest::Method::POST,
                    "/datacenters",
                    Some(json!({"name": name, "home_pools": [pool]})),
                )
                .await;
            assert_eq!(s, 201);
        }
        let (s, v) = api
            .call(
                reqwest::Method::POST,
                "/templates",
                Some(json!({"name": "base", "image": "base.qcow2", "disk_mib": 1024})),
            )
            .await;
        assert_eq!(s, 201, "{v}");

        let hosts_root: PathBuf = d.join("hosts");
        let mut sims = Vec::new();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for (datacenter, name) in hosts {
            let capacity = Capacity {
                cpus: 16,
                ram_mib: 32768,
                disk_mib: 1 << 20,
                vm_slots: slots,
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
                    name: (*name).to_owned(),
                    datacenter: (*datacenter).to_owned(),
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
        while api.get("/hosts").await.as_array().unwrap().len() < hosts.len() {
            assert!(Instant::now() < deadline, "the Agents did not register");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Rig {
            manager,
            api,
            base,
            db,
            sims,
            hosts_root,
            stop,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manager_killed_during_deploys_suspends_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Rig {
        mut manager,
        api,
        base,
        db,
        sims,
        hosts_root,
        stop,
    } = Rig::start(
        d,
        &[("napoli", "192.0.2.0/24")],
        &[("napoli", "h1"), ("napoli", "h2")],
        3,
    )
    .await;

    // One VI of 4 VMs: 17 deploy steps (disk, define, start, ready; its Home Address delivered). Round k kills the Manager at the
    // first step at or after k where the deploy runs (once every such step
    // was interrupted, again at each of them in turn), then kills it again
    // while the VI terminates, at varying delays.
    let total = 17;
    let mut deploys = KillPoints::default();
    for round in 0..total {
        let id = requested_vi(&api).await;
        let (s, v) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/accept"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        let killed = kill_next(
            &api,
            &mut manager,
            &db,
            &v,
            total,
            &mut deploys,
            round as usize,
        )
        .await;
        if killed != Kill::NotKilled {
            manager.restart();
            wait_for_manager(&base).await;
        }
        let v = settle(&api, &id, "deploying").await;
        assert_eq!(
            v["state"], "running",
            "round {round}, killed at step {killed:?}: {v}"
        );
        assert_eq!(v["jobs"][0]["state"], "succeeded");
        // Keep the hosts from filling up: terminate it, also across a kill.
        let (s, _) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/terminate"), None)
            .await;
        assert_eq!(s, 200);
        tokio::time::sleep(Duration::from_millis(70 * (round as u64 % 4))).await;
        manager.restart();
        wait_for_manager(&base).await;
        let v = settle(&api, &id, "terminating").await;
        assert_eq!(v["state"], "terminated", "{v}");
        assert_eq!(
            everything_on(&sims, &hosts_root).await,
            (0, 0),
            "leak after a kill at step {killed:?} (round {round})"
        );
    }
    deploys.assert_complete("deploy");

    // A failing step, and a kill while the job rolls back: nothing stays behind.
    sims[0].add_fault(Fault::always(Op::Start));
    sims[1].add_fault(Fault::always(Op::Start));
    let id = requested_vi(&api).await;
    let (_, v) = api
        .call(reqwest::Method::POST, &format!("/vis/{id}/accept"), None)
        .await;
    let job = v["jobs"][0]["id"].as_str().unwrap().to_owned();
    // Killed while it undoes, with fewer than 7 steps left to undo.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = api.get(&format!("/jobs/{job}")).await;
        let left = j["step"].as_i64().unwrap();
        if j["state"] == "rolling_back" && left < 7 {
            break;
        }
        assert!(
            j["state"] == "running" || j["state"] == "rolling_back",
            "the rollback ended before the kill (missed the window): {j}"
        );
        assert!(Instant::now() < deadline, "no rollback in 30 s: {j}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    manager.kill();
    let at_kill = job_in_store(&db, &job).await;
    assert_eq!(
        (at_kill.state, at_kill.cursor < 7),
        (JobState::RollingBack, true),
        "the kill did not interrupt the rollback: {at_kill:?}"
    );
    eprintln!(
        "rollback interrupted with {} steps left to undo",
        at_kill.cursor
    );
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

    // Suspend (14 steps) and resume (14 steps), the Manager killed part-way
    // through each, at each step where they can be interrupted in turn: the
    // VI ends suspended with its hosts empty, then running again with
    // nothing saved left behind.
    let id = running_vi(&api).await;
    let saved = d.join("images/suspended").join(id.replace('-', ""));
    let (mut suspends, mut resumes) = (KillPoints::default(), KillPoints::default());
    for round in 0.. {
        if suspends.complete && resumes.complete && round >= 4 {
            break;
        }
        assert!(
            round < 16,
            "more interruptible steps than a suspend and a resume have"
        );
        let (s, v) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/suspend"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        let killed = kill_next(&api, &mut manager, &db, &v, 14, &mut suspends, round).await;
        if killed != Kill::NotKilled {
            manager.restart();
            wait_for_manager(&base).await;
        }
        let v = settle(&api, &id, "suspending").await;
        assert_eq!(v["state"], "suspended", "killed at step {killed:?}: {v}");
        assert_eq!(everything_on(&sims, &hosts_root).await, (0, 0));
        assert_eq!(std::fs::read_dir(&saved).unwrap().count(), 8);

        let (s, v) = api
            .call(reqwest::Method::POST, &format!("/vis/{id}/resume"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        let killed = kill_next(&api, &mut manager, &db, &v, 14, &mut resumes, round).await;
        if killed != Kill::NotKilled {
            manager.restart();
            wait_for_manager(&base).await;
        }
        let v = settle(&api, &id, "resuming").await;
        assert_eq!(v["state"], "running", "killed at step {killed:?}: {v}");
        assert_eq!(everything_on(&sims, &hosts_root).await, (4, 4));
        assert!(!saved.exists(), "saved files left after a resume");
    }
    suspends.assert_complete("suspend");
    resumes.assert_complete("resume");
    api.call(reqwest::Method::POST, &format!("/vis/{id}/terminate"), None)
        .await;
    let v = settle(&api, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    assert_eq!(everything_on(&sims, &hosts_root).await, (0, 0));
    let _ = stop.send(true);
}

/// A catalogue VI of 4 VMs behind a gateway (17 deploy steps), requested.
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

/// Where one kind of job was interrupted, and where it was seen running.
#[derive(Debug, Default)]
struct KillPoints {
    /// Steps the job was running at when the Manager was killed (checked in
    /// the database).
    interrupted: BTreeSet<i64>,
    /// Every step a job of this kind was seen running at.
    seen: BTreeSet<i64>,
    /// Steps seen running just before a kill that found the job further on:
    /// steps too short to be caught (a local step between two batches).
    missed: BTreeSet<i64>,
    /// Kills that came after the job's last batch had ended (not counted).
    too_late: usize,
    /// A job finished without being seen running at a step past the last
    /// interrupted one: every step where it could be caught has been.
    complete: bool,
}

impl KillPoints {
    /// The step the next kill waits for: past the last one interrupted
    /// until the job can no longer be interrupted there; then each
    /// interrupted step again, in turn.
    fn next(&self, round: usize) -> i64 {
        if self.complete {
            let again: Vec<i64> = self.interrupted.iter().copied().collect();
            again[round % again.len()]
        } else {
            self.interrupted.last().map_or(0, |s| s + 1)
        }
    }

    fn assert_complete(&self, kind: &str) {
        eprintln!(
            "{kind}: interrupted at steps {:?}, seen running at {:?}, too short to catch {:?}, {} kills too late",
            self.interrupted, self.seen, self.missed, self.too_late
        );
        assert!(
            self.complete,
            "{kind}: not every interruptible step was reached: {self:?}"
        );
        assert!(
            self.interrupted.len() >= 2,
            "{kind}: one interruptible step only: {self:?}"
        );
    }
}

/// What [`kill_next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// The job finished without being seen running at the step wanted or
    /// later: the Manager was not killed.
    NotKilled,
    /// The Manager was killed while the job ran, at this step (as the
    /// database holds it).
    Interrupted(i64),
    /// The job was seen running just before the kill, but had finished by
    /// then, or had only its finish left (its last batch ended in
    /// between): nothing was interrupted.
    TooLate,
}

/// Kills the Manager (SIGKILL) once the VI's newest job, of `total` steps,
/// is seen running at the step `points` names next for `round` or later,
/// and checks in the database, the Manager dead, what the kill
/// interrupted. After a kill (`Interrupted` or `TooLate`) the caller
/// restarts the Manager.
async fn kill_next(
    api: &Api,
    manager: &mut ManagerProcess,
    db: &str,
    vi: &Value,
    total: i64,
    points: &mut KillPoints,
    round: usize,
) -> Kill {
    let job = vi["jobs"].as_array().unwrap().last().unwrap();
    assert_eq!(job["total"], total, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let step = points.next(round);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = api.get(&format!("/jobs/{id}")).await;
        let at = j["step"].as_i64().unwrap();
        // Running with every step done is the instant before the job is
        // recorded as finished: nothing left to interrupt.
        if j["state"] != "running" || at >= total {
            assert!(j["state"] == "succeeded" || at >= total, "{j}");
            points.complete = true;
            return Kill::NotKilled;
        }
        points.seen.insert(at);
        if at >= step {
            manager.kill();
            let record = job_in_store(db, &id).await;
            // Finished, or every step done and only the finish left (the
            // restarted Manager records it): nothing was interrupted.
            if record.state == JobState::Succeeded
                || (record.state == JobState::Running && record.cursor >= total)
            {
                points.too_late += 1;
                return Kill::TooLate;
            }
            assert_eq!(
                record.state,
                JobState::Running,
                "the kill found the job neither running nor finished: {record:?}"
            );
            assert!(record.cursor >= at && record.cursor < total, "{record:?}");
            if record.cursor > at {
                points.missed.insert(at);
            }
            points.seen.insert(record.cursor);
            points.interrupted.insert(record.cursor);
            return Kill::Interrupted(record.cursor);
        }
        assert!(Instant::now() < deadline, "job stuck: {j}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The job as the database holds it (read while the Manager is dead).
async fn job_in_store(db: &str, id: &str) -> JobRecord {
    let store = neptune_store::connect(db).await.unwrap();
    let job = store.job(id.parse().unwrap()).await.unwrap();
    store.close().await;
    job
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

/// An Edge Service Switch of the test (in this process, simulated data
/// plane, on 127.0.0.1): it outlives every Manager kill.
struct TestSwitch {
    url: String,
    key_file: PathBuf,
    care_of: String,
    client: neptune_switch::client::ControlClient,
}

impl TestSwitch {
    async fn start(d: &Path, name: &str, n: u8, prefix: &str, peer: u8) -> TestSwitch {
        let key: String = (0..32u8).map(|i| format!("{:02x}", i ^ n)).collect();
        let key_file = d.join(format!("{name}.key"));
        std::fs::write(&key_file, &key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let care_of = std::net::Ipv4Addr::new(198, 18, 0, n);
        let config = neptune_switch::SwitchConfig {
            name: name.to_owned(),
            listen,
            state_file: d.join(format!("{name}.table.json")),
            key_file: key_file.clone(),
            care_of,
            home_prefixes: vec![prefix.parse().unwrap()],
            peers: vec![std::net::Ipv4Addr::new(198, 18, 0, peer)],
            data_plane: neptune_switch::config::DataPlaneConfig::Simulated,
            max_clock_skew_secs: 30,
            reconcile_secs: 1,
        };
        tokio::spawn(neptune_switch::serve(
            config,
            listener,
            std::future::pending(),
        ));
        TestSwitch {
            url: format!("http://{listen}"),
            key_file,
            care_of: care_of.to_string(),
            client: neptune_switch::client::ControlClient::new(
                listen,
                neptune_switch::auth::SwitchKey::from_hex_file_contents(key.as_bytes()).unwrap(),
            ),
        }
    }

    /// Its table's visitors and bindings of `address`: (visitor's VI,
    /// binding's care-of).
    fn entries(&self, address: &str) -> (Option<String>, Option<String>) {
        let reply = self.client.call("GET", "/v1/state", "").unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let state: Value = serde_json::from_str(&reply.body).unwrap();
        let table = &state["table"];
        (
            table["visitors"][address]["vi"].as_str().map(str::to_owned),
            table["bindings"][address]["care_of"]
                .as_str()
                .map(str::to_owned),
        )
    }
}

/// A running VI moved napoli -> roma -> napoli over and over, the Manager
/// killed at each step where each way can be interrupted, in turn (as for
/// deploys above): every move finishes with the VI where it was sent, its
/// VMs there and nowhere else, its addresses unchanged, and each switch
/// holding exactly the visitor or binding of its Home Address that its
/// place implies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manager_killed_during_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let datacenters = [("napoli", "192.0.2.0/24"), ("roma", "198.51.100.0/24")];
    let hosts = [
        ("napoli", "n1"),
        ("napoli", "n2"),
        ("roma", "r1"),
        ("roma", "r2"),
    ];
    let Rig {
        mut manager,
        api,
        base,
        db,
        sims,
        hosts_root,
        stop,
    } = Rig::start(d, &datacenters, &hosts, 8).await;
    let napoli = TestSwitch::start(d, "napoli", 1, datacenters[0].1, 2).await;
    let roma = TestSwitch::start(d, "roma", 2, datacenters[1].1, 1).await;
    for (dc, sw) in [("napoli", &napoli), ("roma", &roma)] {
        let (s, v) = api
            .call(
                reqwest::Method::PUT,
                &format!("/datacenters/{dc}/switch"),
                Some(
                    json!({"url": sw.url, "key_file": sw.key_file, "care_of": sw.care_of,
                    "port": "dc-public"}),
                ),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let id = running_vi(&api).await;
    let first = api.get(&format!("/vis/{id}")).await;
    let addresses = first["addresses"].clone();
    let home = addresses["home_addresses"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(napoli.entries(&home), (Some(id.clone()), None));

    let mut points = [KillPoints::default(), KillPoints::default()];
    for round in 0.. {
        if points.iter().all(|p| p.complete) && round >= 4 {
            break;
        }
        assert!(round < 24, "more interruptible steps than a migration has");
        for (leg, to) in ["roma", "napoli"].into_iter().enumerate() {
            let (s, v) = api
                .call(
                    reqwest::Method::POST,
                    &format!("/vis/{id}/migrate"),
                    Some(json!({"to": to})),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            let total = v["jobs"].as_array().unwrap().last().unwrap()["total"]
                .as_i64()
                .unwrap();
            let killed =
                kill_next(&api, &mut manager, &db, &v, total, &mut points[leg], round).await;
            if killed != Kill::NotKilled {
                manager.restart();
                wait_for_manager(&base).await;
            }
            let v = settle(&api, &id, "migrating").await;
            let job = v["jobs"].as_array().unwrap().last().unwrap().clone();
            assert_eq!(
                (v["state"].as_str(), job["state"].as_str()),
                (Some("running"), Some("succeeded")),
                "to {to}, killed at step {killed:?}: {v}"
            );
            assert_eq!(v["location"], to, "{v}");
            assert_eq!(v["addresses"], addresses, "addresses kept");
            // Its 4 VMs and their disks on the hosts of `to` alone.
            let (there, elsewhere) = if to == "roma" {
                (&sims[2..], &sims[..2])
            } else {
                (&sims[..2], &sims[2..])
            };
            assert_eq!(
                vm_names(there).await.len(),
                4,
                "killed at {killed:?}: there {:?}, elsewhere {:?}, {v}",
                vm_names(there).await,
                vm_names(elsewhere).await
            );
            assert!(
                vm_names(elsewhere).await.is_empty(),
                "killed at {killed:?}: there {:?}, elsewhere {:?}",
                vm_names(there).await,
                vm_names(elsewhere).await
            );
            assert_eq!(
                everything_on(&sims, &hosts_root).await,
                (4, 4),
                "a VM or disk duplicated after a kill at {killed:?}"
            );
            let used: i64 = api
                .get("/hosts")
                .await
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["used_slots"].as_i64().unwrap())
                .sum();
            assert_eq!(used, 4, "slots leaked after a kill at {killed:?}");
            // The switches: delivered where it runs, bound at home while away.
            if to == "roma" {
                assert_eq!(napoli.entries(&home), (None, Some(roma.care_of.clone())));
                assert_eq!(roma.entries(&home), (Some(id.clone()), None));
            } else {
                assert_eq!(napoli.entries(&home), (Some(id.clone()), None));
                assert_eq!(roma.entries(&home), (None, None));
            }
        }
    }
    points[0].assert_complete("migrate to roma");
    points[1].assert_complete("migrate home");
    api.call(reqwest::Method::POST, &format!("/vis/{id}/terminate"), None)
        .await;
    let v = settle(&api, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    assert_eq!(everything_on(&sims, &hosts_root).await, (0, 0));
    assert_eq!(napoli.entries(&home), (None, None));
    assert_eq!(roma.entries(&home), (None, None));
    let _ = stop.send(true);
}

async fn vm_names(sims: &[Arc<SimHypervisor>]) -> Vec<String> {
    let mut all = Vec::new();
    for sim in sims {
        all.extend(sim.list().await.unwrap().into_iter().map(|v| v.name));
    }
    all
}
