//! Manager benchmarks (see README.md beside this file):
//!
//! 1. accept -> running for a VI of N VMs (default 100) on simulated hosts
//!    reached through real Agents over HTTP (the `neptune up` setup), five
//!    runs, median and spread;
//! 2. API read throughput and latency under `wrk` (if installed): an
//!    authenticated GET of one VI, of the VI list and of `/me`, on SQLite.
//!
//! ```text
//! cargo run --release -p neptune-bench-manager -- [--vms N] [--runs R] [--wrk-seconds S]
//! cargo run -p neptune-bench-manager -- --smoke   # 8 VMs, 1 run, 1 s of wrk: does it still run?
//! ```

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout"
)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use neptune_hypervisor::Capacity;
use neptune_manager::up::{self, UpOptions};
use neptune_topology::catalogue::{Kind, Params};
use serde_json::{json, Value};

struct Args {
    vms: usize,
    runs: usize,
    wrk_seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        vms: 100,
        runs: 5,
        wrk_seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--smoke" {
            // Tiny sizes, one run: checks that the benchmark still runs
            // end to end (scripts/bench-smoke), measures nothing.
            (a.vms, a.runs, a.wrk_seconds) = (8, 1, 1);
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--vms" => a.vms = value.parse()?,
            "--runs" => a.runs = value.parse()?,
            "--wrk-seconds" => a.wrk_seconds = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    if a.vms < 2 || a.runs == 0 {
        bail!("--vms must be at least 2 (the catalogue's smallest cluster) and --runs at least 1");
    }
    Ok(a)
}

/// Mbit/s of every host's uplink: enough for any placement of the VI.
///
/// Placement respects host uplinks. The cluster is one LAN, which placement
/// models as a star through its head (docs/placement.md): a host carries
/// the catalogue's bandwidth (100 Mbit/s) for each of its VMs whose link to
/// the head crosses its uplink, at most `n - 1` of them (9 900 Mbit/s for
/// 100 VMs, within `neptune up`'s default 10 000). The benchmark gives its
/// hosts at least that and at least `up`'s default, so any placement the
/// solver prefers fits: it measures the Manager, not the network.
fn uplink_mbps_for(vms: usize) -> anyhow::Result<u64> {
    let per_link = Params::new(Kind::Cluster).bandwidth.0;
    (vms as u64 - 1)
        .checked_mul(per_link)
        .map(|need| need.max(UpOptions::new("").uplink_mbps))
        .context("the cluster is too large for any uplink")
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url}: {status} {v}");
    }
    Ok(v)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let mut opts = UpOptions::new(dir.path());
    opts.listen = "127.0.0.1:0".parse()?;
    opts.datacenters = vec!["napoli".into()];
    opts.hosts_per_datacenter = 4;
    opts.host_capacity = Capacity {
        cpus: 256,
        ram_mib: 1 << 20,
        disk_mib: 1 << 30,
        vm_slots: 64,
    };
    let uplink = uplink_mbps_for(args.vms)?;
    opts.uplink_mbps = uplink;
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (running, _server) = up::start(opts, async move {
        let _ = stopped.await;
    })
    .await?;
    let base = format!("{}/api/v1", running.url);
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"name": running.admin_name, "password": running.admin_password.expose()}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().context("no token")?.to_owned();
    // Let every Agent register.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(
        &http,
        reqwest::Method::GET,
        &format!("{base}/hosts"),
        &token,
        None,
    )
    .await?
    .as_array()
    .map_or(0, Vec::len)
        < 4
    {
        if Instant::now() > deadline {
            bail!("the Agents did not register");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A user whose quota holds the VIs (the default quota is 64 VMs).
    let quota = json!({"vms": 100_000, "vcpus": 100_000, "ram_mib": 1_000_000_000i64, "public_addresses": 1000});
    call(
        &http,
        reqwest::Method::POST,
        &format!("{base}/users"),
        &token,
        Some(
            json!({"name": "bench", "password": "bench-password", "role": "user", "quota": quota}),
        ),
    )
    .await?;
    let user: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"name": "bench", "password": "bench-password"}))
        .send()
        .await?
        .json()
        .await?;
    let user_token = user["token"].as_str().context("no token")?.to_owned();

    println!(
        "== accept -> running, {} VMs, {} runs (4 simulated hosts behind real Agents, uplinks of {} Mbit/s, SQLite)",
        args.vms, args.runs, uplink
    );
    let mut times = Vec::new();
    let mut last_id = String::new();
    for run in 0..args.runs {
        let vi = call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/vis"),
            &user_token,
            Some(json!({"catalogue": {"kind": "cluster", "nodes": args.vms}})),
        )
        .await?;
        let id = vi["id"].as_str().context("no id")?.to_owned();
        call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/vis/{id}/request"),
            &user_token,
            None,
        )
        .await?;
        let start = Instant::now();
        let accepted = call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/vis/{id}/accept"),
            &token,
            None,
        )
        .await?;
        let accept_ms = start.elapsed().as_secs_f64() * 1e3;
        let job = accepted["jobs"][0]["id"]
            .as_str()
            .context("no job")?
            .to_owned();
        loop {
            let j = call(
                &http,
                reqwest::Method::GET,
                &format!("{base}/jobs/{job}"),
                &token,
                None,
            )
            .await?;
            match j["state"].as_str() {
                Some("succeeded") => break,
                Some("running") => tokio::time::sleep(Duration::from_millis(2)).await,
                other => bail!("deploy ended {other:?}: {j}"),
            }
        }
        let total = start.elapsed().as_secs_f64();
        println!("run {}: accept (plan + commit) {accept_ms:.0} ms, accept -> running {:.3} s ({} steps)", run + 1, total, 3 * args.vms);
        times.push(total);
        if run + 1 < args.runs {
            call(
                &http,
                reqwest::Method::POST,
                &format!("{base}/vis/{id}/terminate"),
                &token,
                None,
            )
            .await?;
            loop {
                let v = call(
                    &http,
                    reqwest::Method::GET,
                    &format!("{base}/vis/{id}"),
                    &token,
                    None,
                )
                .await?;
                if v["state"] == "terminated" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        last_id = id;
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    println!(
        "accept -> running: median {:.3} s (min {min:.3}, max {max:.3}); goal < 1 s: {}",
        median(times.clone()),
        if median(times) < 1.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    if args.wrk_seconds == 0 {
        return Ok(());
    }
    if tokio::process::Command::new("wrk")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        println!("wrk is not installed (apt-get install wrk): API throughput not measured");
        return Ok(());
    }
    for (what, path) in [
        (
            format!("GET /api/v1/vis/{{id}} (a {}-VM VI)", args.vms),
            format!("/vis/{last_id}"),
        ),
        (
            "GET /api/v1/vis (the admin's list)".to_owned(),
            "/vis".to_owned(),
        ),
        ("GET /api/v1/me".to_owned(), "/me".to_owned()),
    ] {
        let out = tokio::process::Command::new("wrk")
            .args([
                "-t2",
                "-c32",
                &format!("-d{}s", args.wrk_seconds),
                "--latency",
                "-H",
            ])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{base}{path}"))
            .output()
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        // Without its summary line wrk did not measure anything; refused
        // requests would measure the error path, not the read.
        let Some(rps) = text.lines().find(|l| l.starts_with("Requests/sec:")) else {
            bail!(
                "wrk on {path} printed no Requests/sec ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if let Some(errors) = text.lines().find(|l| l.contains("Non-2xx")) {
            bail!("{what}: the Manager refused requests: {}", errors.trim());
        }
        let percentile = |p: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(p))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_owned()
        };
        let (p50, p99) = (percentile("50%"), percentile("99%"));
        let socket_errors = text
            .lines()
            .find(|l| l.contains("Socket errors"))
            .unwrap_or("")
            .trim();
        println!(
            "== wrk -t2 -c32 -d{}s {what}: {}, latency p50 {p50}, p99 {p99} {socket_errors}",
            args.wrk_seconds,
            rps.trim()
        );
    }
    Ok(())
}
