//! Service Switching end to end, for real: two datacenters (network
//! namespaces), each with its own libvirt daemon, Agent and Edge Service
//! Switch on the kernel data plane, a WAN router, an Internet
//! correspondent, and the Manager, all the `neptune` binary in separate
//! processes (see `service_switching/rig.rs` for the layout). A VI of two
//! tiny guests (an entry point `gw` with a Home Address of dca, and `web`
//! behind it on a LAN) moves live dca -> dcb -> dca while a correspondent
//! holds one TCP connection to the Home Address and `gw` pings `web`.
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

use rig::{Api, Rig};

/// The tiny template's user, as the design sets it.
const USER: &str = "alice";
const USER_PASSWORD: &str = "tiny-secret";
/// The entry point's Home Address, in dca's pool.
const HOME: &str = "192.0.2.10";
/// The TCP echo service's port on the entry point.
const ECHO_PORT: u16 = 7000;

/// The VI: an entry point `gw` (Home Address in dca's pool) and `web`, on
/// one LAN.
const DESIGN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<topology id="switching">
  <nodes>
    <node id="gw">
      <ram dimension="128"/>
      <hd dimension="0,125"/>
      <network_interfaces>
        <interface name="eth0">
          <interface_binding type="HIF"/>
          <entry_point home_address="192.0.2.10"/>
        </interface>
        <interface name="eth1" address="10.20.0.1"><interface_binding type="bridge"/></interface>
      </network_interfaces>
      <operative_system name="Neptune tiny" password="tiny-secret" username="alice"/>
      <software_configuration template="neptune-tiny"/>
    </node>
    <node id="web">
      <ram dimension="128"/>
      <hd dimension="0,125"/>
      <network_interfaces>
        <interface name="eth0" address="10.20.0.2"><interface_binding type="bridge"/></interface>
      </network_interfaces>
      <operative_system name="Neptune tiny" password="tiny-secret" username="alice"/>
      <software_configuration template="neptune-tiny"/>
    </node>
  </nodes>
  <links>
    <link id="lan" type="lan" bandwidth="100" subnet="10.20.0.0/29">
      <endpoint node="gw" interface="eth1"/>
      <endpoint node="web" interface="eth0"/>
    </link>
  </links>
</topology>
"#;

/// The correspondent: one TCP connection to the Home Address, a numbered
/// line every 20 ms, each echo checked; on exit (the stop file appears)
/// a JSON result: lines sent and echoed, echoes out of order, the largest
/// gap between two echoes and when, and any error (reset, close).
const CORRESPONDENT: &str = r#"
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
struct Console<'a> {
    api: &'a Api,
    path: String,
    runs: std::cell::Cell<u32>,
    node: String,
}

impl<'a> Console<'a> {
    fn new(api: &'a Api, vi: &str, node: &str) -> Console<'a> {
        Console {
            api,
            path: format!("/vis/{vi}/vms/{node}/console"),
            runs: std::cell::Cell::new(0),
            node: node.to_owned(),
        }
    }

    /// Logs in as the design's user.
    async fn login(&self) {
        self.type_in("\n").await;
        self.wait_for("login:", 120).await;
        self.type_in(&format!("{USER}\n")).await;
        self.wait_for("Password:", 30).await;
        self.type_in(&format!("{USER_PASSWORD}\n")).await;
        assert!(self.run("true").await, "logged in on {}", self.node);
    }

    async fn type_in(&self, input: &str) {
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

    async fn text(&self) -> String {
        let v = self.api.get(&self.path).await;
        v["text"].as_str().unwrap().to_owned()
    }

    async fn wait_for(&self, what: &str, secs: u64) -> String {
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
    async fn output(&self, command: &str) -> String {
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
    async fn run(&self, command: &str) -> bool {
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
    async fn uptime(&self) -> f64 {
        let text = self.output("cat /proc/uptime").await;
        text.split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("not an uptime on {}: {text:?}", self.node))
    }
}

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

/// What a move looked like.
struct Move {
    #[allow(dead_code)]
    to: &'static str,
    took: Duration,
    moves: Vec<Value>,
    vi: Value,
}

/// Migrates the VI to `to` and waits until it runs there, following its
/// job's moves.
async fn migrate(rig: &mut Rig, id: &str, to: &'static str) -> Move {
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
        if let Some(m) = j["moves"].as_array().filter(|m| !m.is_empty()) {
            moves.clone_from(m);
        }
        if j["state"] != "running" {
            break;
        }
        rig.check_alive();
        assert!(Instant::now() < deadline, "the move to {to} is stuck: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    }
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
    let mut rig = Rig::start(neptune, &tiny).await;

    // The VI, accepted in dca, running with its guests ready.
    let v = rig.api.post("/vis", json!({ "xml": DESIGN })).await;
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
    let web = Console::new(api, &id, "web");
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
            m.moves
                .iter()
                .map(|mv| format!(
                    "{} total {} ms, downtime {} ms, {} MiB",
                    mv["vm"].as_str().unwrap_or("?"),
                    mv["total_ms"],
                    mv["downtime_ms"],
                    mv["bytes_done"].as_u64().unwrap_or(0) >> 20
                ))
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
        Console::new(&rig.api, &id, "web"),
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
    let seqs = answered(&log);
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
        "ping gw -> web every 200 ms: {sent} sent, {} answered, {lost} lost, at most {largest_hole} in a row",
        seqs.len()
    );
    assert!(seqs.len() > 20, "{log}");
    assert!(
        lost * 10 <= sent,
        "more than a tenth of the pings lost: {log}"
    );
    eprintln!(
        "uptime gw {gw_up:.1} -> {gw_after:.1} s, web {web_up:.1} -> {web_after:.1} s; correspondent: {} lines echoed, largest stall {:.0} ms; test {:.0} s",
        echo["echoed"],
        echo["max_gap_ms"].as_f64().unwrap_or(0.0),
        test_started.elapsed().as_secs_f64()
    );
}
