//! Service Switching end to end, for real: two datacenters (network
//! namespaces), each with its own libvirt daemon, Agent and Edge Service
//! Switch on the kernel data plane, a WAN router, an Internet
//! correspondent, and the Manager, all the `neptune` binary in separate
//! processes (see `service_switching/rig.rs` for the layout). A VI of two
//! tiny guests (an entry point `gw` with a Home Address of dca, and `web1`
//! behind it on a LAN) moves live dca -> dcb -> dca while a correspondent
//! holds one TCP connection to the Home Address and `gw` pings `web1`.
//!
//! Root only, and it boots real guests: without root, or without
//! `NEPTUNE_TEST_LIBVIRT_URI` (libvirt is there) and
//! `NEPTUNE_TEST_TINY_TEMPLATE`, it says SKIPPED and passes, unless `CI`
//! is set.

#![allow(clippy::unwrap_used)] // test helpers fail loudly
#![allow(clippy::print_stderr)] // the measurements, for the log

pub(crate) mod rig;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use rig::{migrate, Console, Rig, CORRESPONDENT, ECHO_PORT, HOME};

/// Why the test cannot run here; panics in CI.
fn prerequisites() -> Option<std::path::PathBuf> {
    let why = if let Some(why) = rig::missing_prerequisite() {
        why
    } else if std::env::var_os("NEPTUNE_TEST_LIBVIRT_URI").is_none() {
        "NEPTUNE_TEST_LIBVIRT_URI is not set (scripts/libvirt-test-server)".to_owned()
    } else if let Some(tiny) = std::env::var_os("NEPTUNE_TEST_TINY_TEMPLATE") {
        return Some(tiny.into());
    } else {
        "NEPTUNE_TEST_TINY_TEMPLATE is not set (scripts/build-tiny-template)".to_owned()
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the Service Switching end-to-end test: {why}"
    );
    eprintln!(
        "SKIPPED {}: {why} (passes without running)",
        std::thread::current().name().unwrap_or("a test")
    );
    None
}

/// The icmp_seq numbers a ping log shows answered.
fn answered(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("icmp_seq=")? + "icmp_seq=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vi_moves_between_datacenters_and_keeps_its_connections() {
    let Some(tiny) = prerequisites() else { return };
    let neptune = env!("CARGO_BIN_EXE_neptune");
    let test_started = Instant::now();
    let mut rig = Rig::start(neptune, &tiny, &[]).await;

    // The VI, accepted in dca, running with its guests ready.
    let v = rig.api.post("/vis", json!({ "xml": rig::design(1) })).await;
    let id = v["id"].as_str().unwrap().to_owned();
    rig.api.post(&format!("/vis/{id}/request"), json!({})).await;
    let deploy_started = Instant::now();
    rig.api
        .post(&format!("/vis/{id}/accept"), json!({"datacenter": "dca"}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let deployed = loop {
        let v = rig.api.get(&format!("/vis/{id}")).await;
        if v["state"] != "deploying" {
            break v;
        }
        rig.check_alive();
        assert!(Instant::now() < deadline, "deploying for 5 minutes: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(deployed["state"], "running", "{deployed}");
    assert_eq!(deployed["location"], "dca", "{deployed}");
    eprintln!(
        "deployed in {:.1} s",
        deploy_started.elapsed().as_secs_f64()
    );
    let addresses = deployed["addresses"].clone();
    assert!(
        addresses.to_string().contains(HOME),
        "the Home Address: {addresses}"
    );
    let (dca, dcb) = (rig.dc("dca"), rig.dc("dcb"));
    let dcb_care_of = dcb.wan.to_string();
    assert_eq!(dca.binding(HOME), None);
    assert_eq!(
        dca.table()["visitors"][HOME]["vi"].as_str(),
        Some(id.as_str()),
        "delivered at home"
    );

    // In the guests: the echo service on gw, gw pinging web, uptimes.
    let api = &rig.api;
    let gw = Console::new(api, &id, "gw");
    let web = Console::new(api, &id, "web1");
    gw.login().await;
    web.login().await;
    assert!(
        gw.run(&format!("(nc -ll -p {ECHO_PORT} -e cat >/dev/null 2>&1 &)"))
            .await
    );
    assert!(
        gw.run("ping -c 3 -W 5 10.20.0.2 >/dev/null").await,
        "gw pings web over their link"
    );
    assert!(
        gw.run("(ping -i 0.2 10.20.0.2 > /tmp/ping.log 2>&1 &)")
            .await
    );
    let gw_up = gw.uptime().await;
    let web_up = web.uptime().await;
    let dir = rig.dir.clone();
    std::fs::write(dir.join("correspondent.py"), CORRESPONDENT).unwrap();
    let (result, stop) = (
        dir.join("correspondent.json"),
        dir.join("correspondent.stop"),
    );
    rig.spawn_in_inet(
        "correspondent",
        "python3",
        &[
            dir.join("correspondent.py").display().to_string(),
            HOME.to_owned(),
            ECHO_PORT.to_string(),
            result.display().to_string(),
            stop.display().to_string(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = result.with_extension("json.up");
    while !up.exists() {
        assert!(
            Instant::now() < deadline && !rig.exited("correspondent"),
            "the correspondent did not connect to {HOME}:{ECHO_PORT}: {}",
            std::fs::read_to_string(&result).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Some echoes at home first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut measured = Vec::new();
    for (to, host, care_of) in [
        ("dcb", "dcb-1", Some(dcb_care_of.clone())),
        ("dca", "dca-1", None),
    ] {
        let m = migrate(&mut rig, &id, to).await;
        let v = &m.vi;
        assert_eq!(v["state"], "running", "after the move to {to}: {v}");
        assert_eq!(v["location"], to, "{v}");
        for vm in v["vms"].as_array().unwrap() {
            assert_eq!(vm["host"], host, "{v}");
        }
        assert_eq!(v["addresses"], addresses, "addresses kept");
        let home_switch = rig.dc("dca");
        assert_eq!(
            home_switch.binding(HOME),
            care_of,
            "the home switch's binding after the move to {to}"
        );
        let there = rig.dc(to).table();
        assert_eq!(
            there["visitors"][HOME]["vi"].as_str(),
            Some(id.as_str()),
            "delivered in {to}: {there}"
        );
        eprintln!(
            "moved to {to} in {:.2} s; VMs: {}",
            m.took.as_secs_f64(),
            v["vms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|vm| {
                    let domain = format!(
                        "nt-{}-{}",
                        &id.replace('-', "")[..12],
                        vm["node"].as_str().unwrap_or("?")
                    );
                    match rig.moved_live(&m.job, &domain) {
                        Some(m) => format!(
                            "{domain} moved in {} ms, paused {} ms, {} MiB sent",
                            m.total_ms,
                            m.downtime_ms,
                            m.bytes >> 20
                        ),
                        None => format!("{domain} (no report read)"),
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
        measured.push(m);
        // Echoes keep coming where it runs now.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The correspondent's one connection lived through both moves.
    std::fs::write(&stop, "").unwrap();
    assert!(
        rig.wait_for_exit("correspondent", 20),
        "the correspondent does not end"
    );
    let echo: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    eprintln!("correspondent: {echo}");
    assert_eq!(echo["error"], Value::Null, "{echo}");
    assert_eq!(echo["bad"], 0, "{echo}");
    assert!(echo["sent"].as_u64().unwrap() > 100, "{echo}");
    assert_eq!(echo["echoed"], echo["sent"], "every line came back: {echo}");

    // The guests never booted again; the ping went on while they moved.
    let (gw, web) = (
        Console::new(&rig.api, &id, "gw"),
        Console::new(&rig.api, &id, "web1"),
    );
    gw.runs.set(100);
    web.runs.set(100);
    let gw_after = gw.uptime().await;
    let web_after = web.uptime().await;
    assert!(
        gw_after > gw_up && web_after > web_up,
        "uptimes {gw_up} -> {gw_after}, {web_up} -> {web_after}"
    );
    let log = gw
        .output("kill -INT $(pidof ping); sleep 1; cat /tmp/ping.log")
        .await;
    // While the VI is split a request may be answered twice (a DUP! line).
    let mut seqs = answered(&log);
    let answers = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    let sent = log
        .lines()
        .find_map(|l| {
            l.split(" packets transmitted")
                .next()
                .filter(|_| l.contains("packets transmitted"))
        })
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| seqs.last().copied().unwrap_or(0));
    let mut largest_hole = 0;
    for w in seqs.windows(2) {
        largest_hole = largest_hole.max(w[1].saturating_sub(w[0]).saturating_sub(1));
    }
    let lost = sent.saturating_sub(seqs.len() as u64);
    eprintln!(
        "ping gw -> web every 200 ms: {sent} sent, {} answered ({} duplicate answers), {lost} lost, at most {largest_hole} in a row",
        seqs.len(),
        answers - seqs.len()
    );
    // Both VMs move together but each on its own: while one has moved
    // and the other not, the link is a tunnel between the datacenters.
    // Pings lost: those sent while a guest was paused or its hosts' tables
    // learnt where it went. The ping went on through both moves.
    assert!(seqs.len() > 20, "{log}");
    assert!(
        lost * 4 <= sent,
        "more than a quarter of the pings lost: {log}"
    );
    assert!(
        seqs.last().copied().unwrap_or(0) + 5 >= sent,
        "the last pings were answered: {log}"
    );
    eprintln!(
        "uptime gw {gw_up:.1} -> {gw_after:.1} s, web {web_up:.1} -> {web_after:.1} s; correspondent: {} lines echoed, largest stall {:.0} ms; test {:.0} s",
        echo["echoed"],
        echo["max_gap_ms"].as_f64().unwrap_or(0.0),
        test_started.elapsed().as_secs_f64()
    );
}
