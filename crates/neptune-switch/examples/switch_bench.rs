//! Benchmark of the Edge Service Switch, in one run: iperf3 TCP throughput
//! and UDP packets/s from the correspondent to the VM's home address through
//! plain routing (VM at home), the kernel data plane and the userspace data
//! plane (VM in datacenter B, tunnelled by ess-a), as ratios to plain
//! routing; and the migration stall of a TCP connection in milliseconds.
//!
//! Run through `bench/switch/run.sh` (root; builds release binaries). It
//! lives here as an example of `neptune-switch` so that it shares the root
//! tests' namespace testbed and builds with the workspace.

// A benchmark prints its report.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/namespaces/testbed.rs"]
mod testbed;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use testbed::{EchoSession, Plane, Testbed, HOME};

#[derive(Debug, Clone, Copy, Default)]
struct Throughput {
    tcp_gbps: f64,
    udp_pps: f64,
    /// CPU time of iperf3 (both ends) and the switch daemons per GB of the
    /// TCP run: what the path costs, whatever share of the machine it got.
    cpu_s_per_gb: f64,
    /// The switch daemons' part of it.
    daemons_cpu_s_per_gb: f64,
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// User + system CPU seconds in fields `at` and `at + 1` of `/proc/PID/stat`
/// (14: the process's own, 16: its waited-for children's).
fn cpu_seconds(pid: &str, at: usize) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which may hold spaces: field 3 is first.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let get = |n: usize| fields.get(n - 3).copied().unwrap_or(0.0);
    (get(at) + get(at + 1)) / TICKS
}

/// CPU seconds so far of the waited-for children (iperf3) and of the daemons.
fn cpu_now(bed: &Testbed) -> (f64, f64) {
    let daemons = bed
        .daemon_pids()
        .iter()
        .map(|p| cpu_seconds(&p.to_string(), 14))
        .sum::<f64>();
    (cpu_seconds("self", 16), daemons)
}

fn iperf(bed: &Testbed, secs: u32, udp: bool) -> anyhow::Result<Value> {
    let vm = bed.ns("vm");
    let cn = bed.ns("cn");
    let home = HOME.to_string();
    let mut server = Command::new("ip")
        .args([
            "netns", "exec", &vm, "iperf3", "-s", "-1", "-B", &home, "-p", "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (is iperf3 installed?)")?;
    std::thread::sleep(Duration::from_millis(400));
    let secs = secs.to_string();
    let mut args = vec![
        "netns", "exec", &cn, "iperf3", "-c", &home, "-p", "5201", "-t", &secs, "-J",
    ];
    if udp {
        args.extend(["-u", "-b", "0", "-l", "64"]);
    }
    let out = Command::new("ip")
        .args(&args)
        .output()
        .context("running iperf3 -c")?;
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

fn measure(bed: &Testbed, secs: u32) -> anyhow::Result<Throughput> {
    let cpu0 = cpu_now(bed);
    let tcp = iperf(bed, secs, false)?;
    let cpu1 = cpu_now(bed);
    let (iperf_cpu, daemons_cpu) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let bps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let bytes = tcp["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    let udp = iperf(bed, secs, true)?;
    let sum = &udp["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = sum["seconds"].as_f64().unwrap_or(1.0).max(0.001);
    Ok(Throughput {
        tcp_gbps: bps / 1e9,
        udp_pps: (packets - lost) / seconds,
        cpu_s_per_gb: (iperf_cpu + daemons_cpu) / (bytes / 1e9).max(1e-9),
        daemons_cpu_s_per_gb: daemons_cpu / (bytes / 1e9).max(1e-9),
    })
}

/// Moves A -> B -> C -> A -> B with a TCP echo running; stall of each move in ms.
fn stalls(bed: &mut Testbed) -> anyhow::Result<Vec<(String, u128)>> {
    let echo = EchoSession::start(bed);
    let mut out = Vec::new();
    for (generation, to) in [(1, "b"), (2, "c"), (3, "a"), (4, "b")] {
        echo.wait_rounds(20);
        echo.take_max_gap();
        let from = bed.vm_at;
        bed.move_vm(to, generation);
        echo.wait_rounds(20);
        out.push((format!("{from}->{to}"), echo.take_max_gap().as_millis()));
    }
    echo.finish()
        .map_err(|e| anyhow::anyhow!("the TCP connection broke: {e}"))?;
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let secs: u32 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if std::env::var_os("NEPTUNE_SWITCHD").is_none() {
        // target/<profile>/examples/switch_bench -> target/<profile>/neptune-switchd
        let exe = std::env::current_exe()?;
        let profile_dir = exe
            .parent()
            .and_then(|p| p.parent())
            .context("locating the target directory")?;
        std::env::set_var("NEPTUNE_SWITCHD", profile_dir.join("neptune-switchd"));
    }
    eprintln!("daemon: {}", testbed::daemon_path().display());

    let mut kernel_bed = Testbed::new(Plane::Kernel);
    eprintln!("plain routing (VM at home) ...");
    let plain = measure(&kernel_bed, secs)?;
    eprintln!("kernel data plane: migrations ...");
    let kernel_stalls = stalls(&mut kernel_bed)?;
    eprintln!("kernel data plane: throughput (VM in B) ...");
    let kernel = measure(&kernel_bed, secs)?;
    drop(kernel_bed);

    let mut results = Vec::new();
    for (plane, name) in [
        (
            Plane::Userspace,
            "userspace data plane, RFC 2003 (TUN, GRO injector)",
        ),
        (
            Plane::UserspaceGpe,
            "userspace data plane, VXLAN-GPE wire (TUN, GSO injector)",
        ),
    ] {
        let mut bed = Testbed::new(plane);
        eprintln!("{name}: migrations ...");
        let s = stalls(&mut bed)?;
        eprintln!("{name}: throughput (VM in B) ...");
        let t = measure(&bed, secs)?;
        let counters = json!({
            "home": bed.client("a").state()["data_plane"]["counters"],
            "foreign": bed.client("b").state()["data_plane"]["counters"],
        });
        results.push((name, t, s, counters));
    }

    let row = |name: &str, t: Throughput| {
        format!(
            "| {name} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            t.tcp_gbps,
            t.tcp_gbps / plain.tcp_gbps.max(1e-9),
            t.udp_pps,
            t.udp_pps / plain.udp_pps.max(1e-9),
            t.tcp_gbps / kernel.tcp_gbps.max(1e-9),
            t.cpu_s_per_gb,
            kernel.cpu_s_per_gb / t.cpu_s_per_gb.max(1e-9),
        )
    };
    println!(
        "load average (1, 5, 15 min) after the run: {}\n",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| path | TCP Gbit/s | TCP / plain | UDP 64 B packets/s received | pps / plain | TCP / kernel | CPU s per GB (TCP) | kernel CPU / this CPU |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!("{}", row("plain routing (VM at home)", plain));
    println!("{}", row("kernel data plane (VXLAN-GPE)", kernel));
    for (name, t, _, _) in &results {
        println!("{}", row(name, *t));
    }
    println!();
    println!(
        "| move | kernel stall ms | userspace IP-in-IP stall ms | userspace VXLAN-GPE stall ms |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (i, (m, k)) in kernel_stalls.iter().enumerate() {
        let u = |r: usize| {
            results
                .get(r)
                .and_then(|x| x.2.get(i))
                .map(|x| x.1)
                .unwrap_or(0)
        };
        println!("| {m} | {k} | {} | {} |", u(0), u(1));
    }
    let report = json!({
        "seconds_per_run": secs,
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "plain": { "tcp_gbps": plain.tcp_gbps, "udp_pps": plain.udp_pps, "cpu_s_per_gb": plain.cpu_s_per_gb },
        "kernel": { "tcp_gbps": kernel.tcp_gbps, "udp_pps": kernel.udp_pps, "cpu_s_per_gb": kernel.cpu_s_per_gb, "stalls_ms": kernel_stalls },
        "userspace": results.iter().map(|(name, t, s, counters)| json!({
            "path": name, "tcp_gbps": t.tcp_gbps, "udp_pps": t.udp_pps, "cpu_s_per_gb": t.cpu_s_per_gb,
            "daemons_cpu_s_per_gb": t.daemons_cpu_s_per_gb, "stalls_ms": s,
            "switch_counters": counters,
        })).collect::<Vec<_>>(),
    });
    println!();
    println!("```json\n{}\n```", serde_json::to_string_pretty(&report)?);
    Ok(())
}
