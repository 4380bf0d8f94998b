//! Service Switching measured for real (see README.md beside this file):
//! VIs of 1, 2 and 4 tiny guests (an entry point `gw` with a Home Address
//! of dca, the others behind it on a LAN) moved live dca -> dcb -> dca by
//! the Manager, on the rig of the end-to-end test
//! (`crates/neptune/tests/cli/service_switching/rig.rs`: two datacenters of
//! network namespaces, each with its libvirt daemon, Agent and
//! kernel-plane Edge Service Switch, a WAN router, an Internet
//! correspondent, every daemon the `neptune` binary). For each move:
//!
//! - the whole VI's move, from the request to the VI running there;
//! - each VM's downtime, and the memory and disk bytes sent over all the
//!   VMs, as their source Agents report them from libvirt's finished jobs
//!   (the Manager logs them with the job);
//! - the largest stall of a correspondent's one TCP connection to the Home
//!   Address (a line every 20 ms, each echoed);
//! - from the entry point resuming on the destination (libvirt's lifecycle
//!   event, `virsh event --timestamp` on the destination's daemon) to its
//!   binding applied at the home switch (the kernel's route change, `ip
//!   -ts monitor route` in the home datacenter): both are timestamps of
//!   the same clock, taken where the events happen.
//!
//! ```text
//! neptune-bench-migration [--smoke] [--sizes 1,2,4] [--neptune PATH] [--template PATH]
//! ```
//!
//! Root, libvirt, QEMU, iproute2 and python3; the tiny template
//! (`--template`, else `NEPTUNE_TEST_TINY_TEMPLATE`). Everything it makes
//! is removed at the end, on failure, and on SIGINT or SIGTERM.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout"
)]
#![allow(clippy::unwrap_used, reason = "the rig fails loudly, as in the test")]

#[path = "../../../crates/neptune/tests/cli/service_switching/rig.rs"]
mod rig;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use rig::{migrate, Console, Rig, CORRESPONDENT, ECHO_PORT, HOME};

struct Args {
    sizes: Vec<usize>,
    neptune: PathBuf,
    template: PathBuf,
    /// `neptune agent --migration-max-downtime-ms`, for every Agent (unset:
    /// the Agent's default).
    max_downtime_ms: Option<u64>,
}

const USAGE: &str =
    "usage: neptune-bench-migration [--smoke] [--sizes 1,2,4] [--max-downtime-ms MS] [--neptune PATH] [--template PATH]";

fn args() -> Result<Args, String> {
    let mut sizes = vec![1, 2, 4];
    let mut neptune = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("neptune")))
        .unwrap_or_else(|| PathBuf::from("neptune"));
    let mut template = std::env::var_os("NEPTUNE_TEST_TINY_TEMPLATE").map(PathBuf::from);
    let mut max_downtime_ms = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--smoke" => sizes = vec![1],
            "--sizes" => {
                sizes = value()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=16).contains(n))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("--sizes: numbers of VMs, 1 to 16\n{USAGE}"))?;
            }
            "--max-downtime-ms" => {
                max_downtime_ms = Some(
                    value()?
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| (1..=60_000).contains(ms))
                        .ok_or_else(|| format!("--max-downtime-ms: 1 to 60000\n{USAGE}"))?,
                );
            }
            "--neptune" => neptune = value()?.into(),
            "--template" => template = Some(value()?.into()),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let template = template.ok_or_else(|| {
        format!("no tiny template: --template or NEPTUNE_TEST_TINY_TEMPLATE\n{USAGE}")
    })?;
    Ok(Args {
        sizes,
        neptune,
        template,
        max_downtime_ms,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = rig::missing_prerequisite() {
        eprintln!("neptune-bench-migration: {why}");
        return ExitCode::from(2);
    }
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    // Dropping the run (on a signal) drops the rig: processes killed,
    // guests destroyed, namespaces deleted.
    tokio::select! {
        () = run(&args) => ExitCode::SUCCESS,
        _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); ExitCode::from(130) }
        _ = term.recv() => { eprintln!("terminated"); ExitCode::from(143) }
    }
}

/// One move's figures.
struct Row {
    vms: usize,
    way: String,
    move_s: f64,
    downtimes: Vec<(String, Option<u64>)>,
    /// Memory and disk bytes sent over all the VMs, if every report was read.
    sent: Option<u64>,
    stall_ms: f64,
    binding_ms: Option<f64>,
}

async fn run(args: &Args) {
    let started = Instant::now();
    let agent_args: Vec<String> = args
        .max_downtime_ms
        .map(|ms| vec!["--migration-max-downtime-ms".to_owned(), ms.to_string()])
        .unwrap_or_default();
    let mut rig = Rig::start(
        &args.neptune.display().to_string(),
        &args.template,
        &agent_args,
    )
    .await;
    println!(
        "rig up in {:.1} s: two datacenters (dca, dcb), each a libvirt daemon, an Agent and a kernel-plane switch; maximum downtime {}",
        started.elapsed().as_secs_f64(),
        args.max_downtime_ms
            .map_or("the Agent's default".to_owned(), |ms| format!("{ms} ms")),
    );
    let mut rows = Vec::new();
    for &n in &args.sizes {
        rows.extend(one_vi(&mut rig, n).await);
    }
    println!();
    println!("| VMs | move | whole VI (s) | MiB sent | downtime per VM (ms) | correspondent's largest stall (ms) | entry point resumed -> bound at home (ms) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {} | {} | {:.0} | {} |",
            r.vms,
            r.way,
            r.move_s,
            r.sent.map_or("?".to_owned(), |b| (b >> 20).to_string()),
            r.downtimes
                .iter()
                .map(|(vm, d)| format!("{vm} {}", d.map_or("?".to_owned(), |d| d.to_string())))
                .collect::<Vec<_>>()
                .join(", "),
            r.stall_ms,
            r.binding_ms
                .map_or("not seen".to_owned(), |b| format!("{b:.0}"))
        );
    }
    println!(
        "total {:.0} s (goals: stall <= 300 ms, resume -> binding <= 20 ms)",
        started.elapsed().as_secs_f64()
    );
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Deploys a VI of `n` VMs in dca, moves it to dcb and back while a
/// correspondent talks to its entry point, terminates it.
async fn one_vi(rig: &mut Rig, n: usize) -> Vec<Row> {
    let v = rig
        .api
        .post("/vis", json!({ "xml": rig::design(n - 1) }))
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    rig.api.post(&format!("/vis/{id}/request"), json!({})).await;
    let t = Instant::now();
    rig.api
        .post(&format!("/vis/{id}/accept"), json!({"datacenter": "dca"}))
        .await;
    let v = wait_while(rig, &id, "deploying", 600).await;
    assert_eq!(v["state"], "running", "{v}");
    println!(
        "VI of {n} VM(s): deployed in dca in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let simple = id.replace('-', "");
    let gw_domain = format!("nt-{}-gw", &simple[..12]);

    let gw = Console::new(&rig.api, &id, "gw");
    gw.login().await;
    assert!(
        gw.run(&format!("(nc -ll -p {ECHO_PORT} -e cat >/dev/null 2>&1 &)"))
            .await
    );
    drop(gw);

    // Monitors: the home switch's routes, both daemons' domain events.
    let tag = format!("n{n}");
    let dca_ns = rig.dc("dca").ns.clone();
    rig.spawn_in(
        &dca_ns,
        &format!("routes-{tag}"),
        "ip",
        &["-ts".into(), "monitor".into(), "route".into()],
    );
    for dc in ["dca", "dcb"] {
        let uri = rig.dc(dc).libvirt_uri.clone();
        rig.spawn_in(
            "",
            &format!("events-{dc}-{tag}"),
            "virsh",
            &[
                "-c".into(),
                uri,
                "event".into(),
                "--all".into(),
                "--loop".into(),
                "--timestamp".into(),
            ],
        );
    }
    let dir = rig.dir.clone();
    std::fs::write(dir.join("correspondent.py"), CORRESPONDENT).unwrap();
    let result = dir.join(format!("correspondent-{tag}.json"));
    let stop = dir.join(format!("correspondent-{tag}.stop"));
    let name = format!("correspondent-{tag}");
    rig.spawn_in_inet(
        &name,
        "python3",
        &[
            dir.join("correspondent.py").display().to_string(),
            HOME.to_owned(),
            ECHO_PORT.to_string(),
            result.display().to_string(),
            stop.display().to_string(),
        ],
    );
    let up = result.with_extension("json.up");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !up.exists() {
        assert!(
            Instant::now() < deadline && !rig.exited(&name),
            "the correspondent did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut windows = Vec::new();
    for to in ["dcb", "dca"] {
        let from = if to == "dcb" { "dca" } else { "dcb" };
        let t0 = now();
        let m = migrate(rig, &id, to).await;
        assert_eq!(m.vi["state"], "running", "{}", m.vi);
        assert_eq!(m.vi["location"], to, "{}", m.vi);
        let t1 = now();
        // Each VM's move as its source Agent reported it.
        let reports = m.vi["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| {
                let node = vm["node"].as_str().unwrap_or("?").to_owned();
                let domain = format!("nt-{}-{node}", &simple[..12]);
                (node, rig.moved_live(&m.job, &domain))
            })
            .collect::<Vec<_>>();
        let sent = reports
            .iter()
            .map(|(_, r)| r.map(|r| r.bytes))
            .sum::<Option<u64>>();
        let downtimes = reports
            .into_iter()
            .map(|(node, r)| (node, r.map(|r| r.downtime_ms)))
            .collect::<Vec<_>>();
        println!(
            "  {from} -> {to}: whole VI {:.2} s, {} MiB sent; downtime {}",
            m.took.as_secs_f64(),
            sent.map_or("?".to_owned(), |b| (b >> 20).to_string()),
            downtimes
                .iter()
                .map(|(vm, d)| format!("{vm} {} ms", d.map_or("?".to_owned(), |d| d.to_string())))
                .collect::<Vec<_>>()
                .join(", ")
        );
        windows.push((
            format!("{from} -> {to}"),
            to,
            t0,
            t1,
            m.took,
            downtimes,
            sent,
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    std::fs::write(&stop, "").unwrap();
    assert!(
        rig.wait_for_exit(&name, 20),
        "the correspondent does not end"
    );
    let echo: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(echo["error"], Value::Null, "the connection broke: {echo}");
    assert_eq!(echo["echoed"], echo["sent"], "lines lost: {echo}");
    let routes = rig.stop(&format!("routes-{tag}"));
    let events = [
        ("dca", rig.stop(&format!("events-dca-{tag}"))),
        ("dcb", rig.stop(&format!("events-dcb-{tag}"))),
    ];

    let mut rows = Vec::new();
    for (way, to, t0, t1, took, downtimes, sent) in windows {
        // The largest gap between echoes that began during the move (or
        // the 2 s after it).
        let gaps = echo["gaps_over_100ms"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let stall_ms = gaps
            .iter()
            .filter_map(|g| Some((g[0].as_f64()?, g[1].as_f64()?)))
            .filter(|(at, _)| *at >= t0 - 1.0 && *at <= t1 + 2.0)
            .map(|(_, ms)| ms)
            .fold(0.0, f64::max);
        let resumed = events
            .iter()
            .find(|(dc, _)| *dc == to)
            .and_then(|(_, log)| {
                log.lines()
                    .filter(|l| l.contains(&format!("'{gw_domain}'")) && l.contains("Resumed"))
                    .filter_map(timestamp)
                    .find(|at| *at >= t0 && *at <= t1)
            });
        // The home switch's route for the Home Address in the main table:
        // a tunnel to dcb's care-of address while away, the port to the
        // VM at home (a replace: no deletion is shown).
        let bound = routes
            .lines()
            .filter(|l| {
                l.contains(&format!("] {HOME} "))
                    && !l.contains(" table ")
                    && if to == "dca" {
                        l.contains("dev br-pub")
                    } else {
                        l.contains(" encap ")
                    }
            })
            .filter_map(timestamp)
            .find(|at| *at >= t0 && *at <= t1 + 1.0);
        let binding_ms = match (resumed, bound) {
            (Some(r), Some(b)) => Some((b - r) * 1000.0),
            _ => None,
        };
        println!(
            "  {way}: correspondent's largest stall {stall_ms:.0} ms; gw resumed -> bound at home {}",
            binding_ms.map_or_else(
                || format!("not seen (resumed {resumed:?}, bound {bound:?})"),
                |b| format!("{b:.0} ms")
            )
        );
        rows.push(Row {
            vms: n,
            way,
            move_s: took.as_secs_f64(),
            downtimes,
            sent,
            stall_ms,
            binding_ms,
        });
    }
    println!(
        "  correspondent: {} lines echoed over one connection, largest stall {:.0} ms",
        echo["echoed"],
        echo["max_gap_ms"].as_f64().unwrap_or(0.0)
    );

    rig.api
        .post(&format!("/vis/{id}/terminate"), json!({}))
        .await;
    let v = wait_while(rig, &id, "terminating", 300).await;
    assert_eq!(v["state"], "terminated", "{v}");
    rows
}

async fn wait_while(rig: &mut Rig, id: &str, transient: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = rig.api.get(&format!("/vis/{id}")).await;
        if v["state"] != transient {
            return v;
        }
        rig.check_alive();
        assert!(Instant::now() < deadline, "{transient} for {secs} s: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The UTC time a monitor's line starts with, in seconds since the epoch:
/// `[2026-12-06T14:33:48.448563] ...` (`ip -ts monitor`) or
/// `2026-12-06 14:33:48.441+0000: ...` (`virsh event --timestamp`), both
/// run with TZ=UTC.
fn timestamp(line: &str) -> Option<f64> {
    let s = line.trim_start_matches('[');
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm) = (num(11, 13)?, num(14, 16)?);
    let secs: String = s
        .get(17..)?
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let secs: f64 = secs.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    #[allow(clippy::cast_precision_loss, reason = "seconds since 1970 fit")]
    let whole = (days * 86_400 + hh * 3600 + mm * 60) as f64;
    Some(whole + secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn monitor_timestamps_are_read() {
        let a = super::timestamp("[2026-12-06T14:33:48.448563] 192.0.2.10 dev lo").unwrap();
        let b = super::timestamp("2026-12-06 14:33:48.441+0000: event 'lifecycle'").unwrap();
        assert!((a - 1_796_567_628.448_563).abs() < 1e-3, "{a}");
        assert!((a - b - 0.007_563).abs() < 1e-3);
        assert_eq!(super::timestamp("Deleted 192.0.2.10"), None);
    }
}
