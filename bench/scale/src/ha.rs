//! The two-Manager phases (`--managers 2`): Managers `a` and `b` share one
//! PostgreSQL database and every Agent reports to either.
//!
//! 5. split accepts: each VI created and requested on one Manager and
//!    accepted on the other, the clients alternating, so both plan in the
//!    same datacenters at once; then each VI's terminate sent to both
//!    Managers at the same moment (one must win, the other be refused);
//! 6. mid-deploy: clients create and request on `a` and accept on `b`;
//!    `b` is killed (SIGKILL) once half the accepts are in, while its
//!    deploy jobs run; `a` must take them over when their leases end;
//! 7. mid-terminate: `b` started again, the same VIs terminated on it, and
//!    it is killed again half-way.
//!
//! The clients behave as clients of a pair of Managers behind a load
//! balancer would: a call that cannot reach its Manager (refused, or cut
//! by its death) is made again on the other, after reading the VI there
//! when the cut call may have taken effect. Every other failure is an
//! error to the client, counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use reqwest::{Method, StatusCode};

use super::*;

pub(crate) struct Run<'a> {
    /// Managers `a` and `b`.
    pub apis: [Arc<Api>; 2],
    pub spec: &'a ManagerSpec,
    pub port_b: u16,
    pub names: &'a [&'a str],
    pub vis: usize,
    pub vms: usize,
    pub clients: usize,
    pub pools_before: &'a [(String, i64)],
}

/// Milliseconds since the Unix epoch, as the Manager stamps job leases.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A client of both Managers (see the module's doc).
#[derive(Clone)]
struct Client {
    apis: [Arc<Api>; 2],
    /// The Manager it uses now.
    at: usize,
    /// Calls made again on the other Manager.
    moves: Arc<AtomicUsize>,
}

/// How many times a call is moved between the Managers before giving up:
/// enough to ride out one Manager's death while the other answers.
const TRIES: usize = 20;

impl Client {
    async fn fail_over(&mut self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
        self.at = 1 - self.at;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        for _ in 0..TRIES {
            match self.apis[self.at]
                .send(method.clone(), path, body.as_ref())
                .await
            {
                Ok((status, v)) if status.is_success() => return Ok(v),
                Ok((status, v)) => bail!("{path}: {status} {v}"),
                Err(_) => self.fail_over().await,
            }
        }
        bail!("{path}: neither Manager answers")
    }

    /// POSTs `action` to VI `id`, which is in state `from`. A call cut
    /// before its answer may have taken effect: only if the VI, read on
    /// the other Manager, is still `from` is it made again.
    async fn act(
        &mut self,
        id: &str,
        action: &str,
        body: Option<Value>,
        from: &str,
    ) -> anyhow::Result<()> {
        let path = format!("/vis/{id}/{action}");
        for _ in 0..TRIES {
            match self.apis[self.at]
                .send(Method::POST, &path, body.as_ref())
                .await
            {
                Ok((status, _)) if status.is_success() => return Ok(()),
                Ok((status, v)) => bail!("{path}: {status} {v}"),
                Err(_) => {
                    self.fail_over().await;
                    let vi = self.call(Method::GET, &format!("/vis/{id}"), None).await?;
                    if vi["state"] != from {
                        return Ok(());
                    }
                }
            }
        }
        bail!("{path}: neither Manager answers")
    }

    /// Polls VI `id` until it leaves `transient` and its last job ends
    /// ([`unsettled`]); its state then.
    async fn settle(
        &mut self,
        id: &str,
        transient: &str,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.call(Method::GET, &format!("/vis/{id}"), None).await?;
            if !unsettled(&v, transient) {
                return Ok(v["state"].as_str().unwrap_or_default().to_owned());
            }
            if Instant::now() > deadline {
                bail!("VI {id} still {transient} after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the clients of one phase saw.
#[derive(Default)]
struct Seen {
    /// VIs that reached the phase's goal state.
    ids: Vec<String>,
    /// Failures other than an unreachable Manager, with the first few.
    errors: usize,
    examples: Vec<String>,
}

impl Seen {
    fn merge(&mut self, other: Seen) {
        self.ids.extend(other.ids);
        self.errors += other.errors;
        for e in other.examples {
            if self.examples.len() < 3 {
                self.examples.push(e);
            }
        }
    }

    fn fail(&mut self, err: &anyhow::Error) {
        self.errors += 1;
        if self.examples.len() < 3 {
            self.examples.push(format!("{err:#}"));
        }
    }
}

/// One Manager killed while its jobs ran: what the other made of them.
struct Takeover {
    /// The dead Manager's unfinished jobs at the kill.
    jobs: usize,
    /// The longest a job's lease still had to run at the kill, s.
    lease_left: f64,
    /// From the kill until every one of their VIs left the job's
    /// transient state, s.
    kill_to_done: f64,
    /// The worst time, over those VIs, from the end of its job's lease
    /// to its final state, s (goal <= 10); none without such VIs.
    after_lease: Option<f64>,
    /// Their VIs' final states, counted.
    finals: Vec<(String, usize)>,
}

impl Run<'_> {
    fn client(&self, at: usize, moves: &Arc<AtomicUsize>) -> Client {
        Client {
            apis: self.apis.clone(),
            at,
            moves: moves.clone(),
        }
    }

    fn base_b(&self) -> String {
        format!("http://127.0.0.1:{}", self.port_b)
    }

    pub(crate) async fn all(&self, mut b: ManagerProcess) -> anyhow::Result<()> {
        println!("== two Managers on one PostgreSQL database");
        let server_errors_before = self.apis[0].server_errors.load(Ordering::Relaxed);
        self.split().await?;

        // 6. Kill b mid-deploy.
        let moves = Arc::new(AtomicUsize::new(0));
        let (seen, takeover) = self.killed_during_deploys(&mut b, &moves).await?;
        report(
            "mid-deploy",
            "running",
            &seen,
            &takeover,
            moves.load(Ordering::Relaxed),
        );

        // 7. b again, killed mid-terminate.
        drop(b);
        let mut b = self.spec.start("b", self.port_b)?;
        wait_for_manager(&self.base_b()).await?;
        let moves = Arc::new(AtomicUsize::new(0));
        let (seen_t, takeover) = self
            .killed_during_terminates(&mut b, &seen.ids, &moves)
            .await?;
        report(
            "mid-terminate",
            "terminated",
            &seen_t,
            &takeover,
            moves.load(Ordering::Relaxed),
        );

        // Whatever a client's failure left behind is terminated on `a`
        // before the leak check, so that only what the Managers lost shows
        // as a leak.
        let a = &self.apis[0];
        let mut left = Vec::new();
        for vi in a.get("/vis").await?.as_array().into_iter().flatten() {
            let (id, state) = (vi["id"].as_str().unwrap_or_default(), &vi["state"]);
            if state != "terminated" {
                left.push(format!("{id} {state}"));
                if a.post(&format!("/vis/{id}/terminate"), None).await.is_ok() {
                    a.settle(id, "terminating", Duration::from_secs(120))
                        .await?;
                }
            }
        }
        let hosts = a.get("/hosts").await?;
        let used: i64 = hosts.as_array().map_or(0, |h| {
            h.iter()
                .map(|h| h["used_slots"].as_i64().unwrap_or(0))
                .sum()
        });
        let pools_after = used_addresses(&a.get("/address-pools").await?);
        let deadlocks = self.count_in_logs("deadlock detected")?;
        let server_errors =
            self.apis[0].server_errors.load(Ordering::Relaxed) - server_errors_before;
        println!(
            "two Managers, after everything is terminated: VIs left by the clients {left:?}; slots still used {used} (goal 0); addresses used per pool before {:?}, after {pools_after:?} (goal: the same); 5xx answers {server_errors} (goal 0); 'deadlock detected' in the Managers' logs {deadlocks} (goal 0)",
            self.pools_before
        );
        drop(b);
        Ok(())
    }

    /// Lines of both Managers' logs that contain `needle`.
    fn count_in_logs(&self, needle: &str) -> anyhow::Result<usize> {
        let mut n = 0;
        for instance in ["a", "b"] {
            let log = std::fs::read_to_string(self.spec.log(instance)).unwrap_or_default();
            n += log.lines().filter(|l| l.contains(needle)).count();
        }
        Ok(n)
    }

    /// Phase 5: split accepts, then terminates sent to both Managers at once.
    async fn split(&self) -> anyhow::Result<()> {
        let server_errors_before = self.apis[0].server_errors.load(Ordering::Relaxed);
        let deadlocks_before = self.count_in_logs("deadlock detected")?;
        let next = Arc::new(AtomicUsize::new(0));
        let retried = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..self.clients {
            let (apis, next, retried) = (self.apis.clone(), next.clone(), retried.clone());
            let (vis, vms) = (self.vis, self.vms);
            let names: Vec<String> = self.names.iter().map(|n| (*n).to_owned()).collect();
            tasks.spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= vis {
                        return seen;
                    }
                    let (home, other) = (&apis[c % 2], &apis[(c + 1) % 2]);
                    let dc = &names[k % names.len()];
                    let one = async {
                        let vi = home
                            .post(
                                "/vis",
                                Some(json!({"name": format!("h{c}-{k}"),
                                    "catalogue": {"kind": "cluster", "nodes": vms, "template": "base"}})),
                            )
                            .await?;
                        let id = vi["id"].as_str().context("no id")?.to_owned();
                        home.post(&format!("/vis/{id}/request"), None).await?;
                        // A 409 "try again" (a commit that lost its room to
                        // the other Manager five times) is tried again, as
                        // it asks.
                        let body = json!({"datacenter": dc});
                        let mut tries = 0;
                        loop {
                            let (status, v) = other
                                .send(Method::POST, &format!("/vis/{id}/accept"), Some(&body))
                                .await?;
                            if status.is_success() {
                                break;
                            }
                            tries += 1;
                            if status != StatusCode::CONFLICT || tries == 5 {
                                bail!("accept {id}: {status} {v}");
                            }
                            retried.fetch_add(1, Ordering::Relaxed);
                        }
                        let state = home.settle(&id, "deploying", Duration::from_secs(300)).await?;
                        if state != "running" {
                            bail!("VI {id} ended {state}");
                        }
                        Ok::<_, anyhow::Error>(id)
                    };
                    match one.await {
                        Ok(id) => seen.ids.push(id),
                        Err(e) => seen.fail(&e),
                    }
                }
            });
        }
        let mut accepted = Seen::default();
        while let Some(r) = tasks.join_next().await {
            accepted.merge(r?);
        }
        let wall = started.elapsed().as_secs_f64();

        // Each terminate sent to both Managers at the same moment.
        let ids = Arc::new(accepted.ids.clone());
        let next = Arc::new(AtomicUsize::new(0));
        let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.clients {
            let (apis, next, ids, outcomes) = (
                self.apis.clone(),
                next.clone(),
                ids.clone(),
                outcomes.clone(),
            );
            tasks.spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(k) else {
                        return seen;
                    };
                    let path = format!("/vis/{id}/terminate");
                    let (x, y) = tokio::join!(
                        apis[0].send(Method::POST, &path, None),
                        apis[1].send(Method::POST, &path, None)
                    );
                    let statuses: Vec<Option<StatusCode>> =
                        [x, y].into_iter().map(|r| r.ok().map(|(s, _)| s)).collect();
                    if let Ok(mut o) = outcomes.lock() {
                        o.push(statuses);
                    }
                    match apis[k % 2]
                        .settle(id, "terminating", Duration::from_secs(300))
                        .await
                    {
                        Ok(state) if state == "terminated" => seen.ids.push(id.clone()),
                        Ok(state) => seen.fail(&anyhow::anyhow!("VI {id} ended {state}")),
                        Err(e) => seen.fail(&e),
                    }
                }
            });
        }
        let mut terminated = Seen::default();
        while let Some(r) = tasks.join_next().await {
            terminated.merge(r?);
        }
        let terminate_wall = started.elapsed().as_secs_f64();
        let outcomes = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
        let ok = |s: &Option<StatusCode>| s.is_some_and(|s| s.is_success());
        let one_won = outcomes
            .iter()
            .filter(|s| s.iter().filter(|s| ok(s)).count() == 1)
            .count();
        let both_won = outcomes.iter().filter(|s| s.iter().all(ok)).count();
        let conflicts = outcomes
            .iter()
            .flatten()
            .filter(|s| **s == Some(StatusCode::CONFLICT))
            .count();
        let server_errors =
            self.apis[0].server_errors.load(Ordering::Relaxed) - server_errors_before;
        let deadlocks = self.count_in_logs("deadlock detected")? - deadlocks_before;
        println!(
            "split accepts: {} of {} VIs of {} VMs requested on one Manager and accepted on the other by {} clients in {wall:.1} s ({:.1}/s); accepts tried again after a 409 {}; client errors {}{}",
            accepted.ids.len(),
            self.vis,
            self.vms,
            self.clients,
            accepted.ids.len() as f64 / wall,
            retried.load(Ordering::Relaxed),
            accepted.errors,
            examples(&accepted.examples),
        );
        println!(
            "concurrent terminates: {} VIs, each sent to both Managers at once, in {terminate_wall:.1} s: one accepted {one_won}, both {both_won}, 409 answers {conflicts}; terminated {}; client errors {}{}",
            outcomes.len(),
            terminated.ids.len(),
            terminated.errors,
            examples(&terminated.examples),
        );
        println!(
            "split accepts and concurrent terminates: 5xx answers {server_errors} (goal 0), 'deadlock detected' in the Managers' logs {deadlocks} (goal 0)"
        );
        Ok(())
    }

    /// Phase 6: VIs accepted on `b`, killed when half of them are in.
    async fn killed_during_deploys(
        &self,
        b: &mut ManagerProcess,
        moves: &Arc<AtomicUsize>,
    ) -> anyhow::Result<(Seen, Takeover)> {
        let next = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..self.clients {
            let mut client = self.client(1, moves);
            let (a, next, accepted) = (self.apis[0].clone(), next.clone(), accepted.clone());
            let (vis, vms) = (self.vis, self.vms);
            let names: Vec<String> = self.names.iter().map(|n| (*n).to_owned()).collect();
            tasks.spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= vis {
                        return seen;
                    }
                    let dc = &names[k % names.len()];
                    let one = async {
                        let vi = a
                            .post(
                                "/vis",
                                Some(json!({"name": format!("d{c}-{k}"),
                                    "catalogue": {"kind": "cluster", "nodes": vms, "template": "base"}})),
                            )
                            .await?;
                        let id = vi["id"].as_str().context("no id")?.to_owned();
                        a.post(&format!("/vis/{id}/request"), None).await?;
                        client
                            .act(&id, "accept", Some(json!({"datacenter": dc})), "requested")
                            .await?;
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let state = client
                            .settle(&id, "deploying", Duration::from_secs(300))
                            .await?;
                        if state != "running" {
                            bail!("VI {id} ended {state}");
                        }
                        Ok::<_, anyhow::Error>(id)
                    };
                    match one.await {
                        Ok(id) => seen.ids.push(id),
                        Err(e) => seen.fail(&e),
                    }
                }
            });
        }
        self.kill_halfway(b, tasks, &accepted, self.vis.div_ceil(2), "deploying")
            .await
    }

    /// Phase 7: `ids` terminated on `b`, killed when half are asked.
    async fn killed_during_terminates(
        &self,
        b: &mut ManagerProcess,
        ids: &[String],
        moves: &Arc<AtomicUsize>,
    ) -> anyhow::Result<(Seen, Takeover)> {
        let ids = Arc::new(ids.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let asked = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.clients {
            let mut client = self.client(1, moves);
            let (ids, next, asked) = (ids.clone(), next.clone(), asked.clone());
            tasks.spawn(async move {
                let mut seen = Seen::default();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(k) else {
                        return seen;
                    };
                    let one = async {
                        client.act(id, "terminate", None, "running").await?;
                        asked.fetch_add(1, Ordering::Relaxed);
                        let state = client
                            .settle(id, "terminating", Duration::from_secs(300))
                            .await?;
                        if state != "terminated" {
                            bail!("VI {id} ended {state}");
                        }
                        Ok::<_, anyhow::Error>(())
                    };
                    match one.await {
                        Ok(()) => seen.ids.push(id.clone()),
                        Err(e) => seen.fail(&e),
                    }
                }
            });
        }
        self.kill_halfway(b, tasks, &asked, ids.len().div_ceil(2), "terminating")
            .await
    }

    /// Kills `b` once `done` reaches `half` (or the clients ended), watches
    /// the takeover of its jobs (VIs leaving `transient`), then waits for
    /// the clients.
    async fn kill_halfway(
        &self,
        b: &mut ManagerProcess,
        mut tasks: tokio::task::JoinSet<Seen>,
        done: &AtomicUsize,
        half: usize,
        transient: &str,
    ) -> anyhow::Result<(Seen, Takeover)> {
        while done.load(Ordering::Relaxed) < half && !tasks.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let takeover = self.kill_and_watch(b, transient).await?;
        let mut seen = Seen::default();
        while let Some(r) = tasks.join_next().await {
            seen.merge(r?);
        }
        Ok((seen, takeover))
    }

    /// Kills `b` (SIGKILL), reads its unfinished jobs and their leases from
    /// the database, and watches their VIs on `a` until each leaves
    /// `transient`.
    async fn kill_and_watch(
        &self,
        b: &mut ManagerProcess,
        transient: &str,
    ) -> anyhow::Result<Takeover> {
        b.0.kill()?;
        let killed = Instant::now();
        let killed_ms = now_ms();
        b.0.wait()?;
        // The dead Manager renews nothing: the leases read now are final.
        let out = Command::new("psql")
            .arg(&self.spec.db)
            .args(["-At", "-F", " ", "-c"])
            .arg(
                "SELECT vi_id::text, lease_until FROM jobs \
                 WHERE owner = 'b' AND state IN ('running', 'rolling_back')",
            )
            .output()
            .context("running psql (install postgresql-client)")?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut jobs: Vec<(String, i64)> = Vec::new();
        for line in String::from_utf8(out.stdout)?.lines() {
            let (vi, lease) = line.split_once(' ').context("psql's output")?;
            jobs.push((vi.to_owned(), lease.parse()?));
        }
        let a = &self.apis[0];
        let mut pending: Vec<(String, i64)> = jobs.clone();
        let mut after_lease_ms = i64::MIN;
        let mut finals: Vec<(String, usize)> = Vec::new();
        let limit = Instant::now() + Duration::from_secs(300);
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (vi, lease) in pending {
                let v = a.get(&format!("/vis/{vi}")).await?;
                let state = v["state"].as_str().unwrap_or_default().to_owned();
                if unsettled(&v, transient) {
                    still.push((vi, lease));
                    continue;
                }
                after_lease_ms = after_lease_ms.max(now_ms() - lease);
                match finals.iter_mut().find(|(s, _)| *s == state) {
                    Some((_, n)) => *n += 1,
                    None => finals.push((state, 1)),
                }
            }
            pending = still;
            if Instant::now() > limit {
                bail!(
                    "{} VIs still {transient} 300 s after the kill",
                    pending.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lease_left = jobs.iter().map(|j| j.1 - killed_ms).max().unwrap_or(0);
        Ok(Takeover {
            jobs: jobs.len(),
            lease_left: lease_left as f64 / 1e3,
            kill_to_done: killed.elapsed().as_secs_f64(),
            after_lease: (!jobs.is_empty()).then(|| after_lease_ms as f64 / 1e3),
            finals,
        })
    }
}

fn examples(e: &[String]) -> String {
    if e.is_empty() {
        String::new()
    } else {
        format!(" (e.g. {})", e.join("; "))
    }
}

fn report(phase: &str, goal_state: &str, seen: &Seen, t: &Takeover, moves: usize) {
    println!(
        "killed {phase}: the killed Manager's unfinished jobs {}, their leases' longest remainder {:.1} s; kill -> every one of their VIs settled {:.1} s; lease end -> settled, worst {} s (goal <= 10 s); their final states {:?} (goal: all {goal_state}); clients: {} VIs {goal_state}, errors {} (goal 0){}, calls moved to the other Manager {moves}",
        t.jobs,
        t.lease_left,
        t.kill_to_done,
        t.after_lease.map_or("none".to_owned(), |s| format!("{s:.1}")),
        t.finals,
        seen.ids.len(),
        seen.errors,
        examples(&seen.examples),
    );
}
