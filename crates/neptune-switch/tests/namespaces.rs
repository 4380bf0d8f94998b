//! Root tests: transparent migration through real `neptune-switchd` daemons
//! (the `neptune switch` daemon) in network namespaces, for the kernel and
//! the userspace data planes. They fail, never skip, when not run as root.

// Test output: stalls are reported on stderr, logs dumped on failure.
#![allow(clippy::print_stderr)]

#[path = "namespaces/testbed.rs"]
mod testbed;

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use neptune_switch::api::codes;
use testbed::*;

/// Both planes share the machine's two cores: run the scenarios one at a time
/// so stalls measure the switch, not the scheduler.
static SERIAL: Mutex<()> = Mutex::new(());

const STALL_LIMIT: Duration = Duration::from_secs(1);

/// How long ess-a stays down when it is restarted mid-binding.
const OUTAGE: Duration = Duration::from_millis(300);

fn is_encapsulated(plane: Plane, h: &[u8; 24], from: Ipv4Addr, to: Ipv4Addr) -> bool {
    src(h) == from
        && dst(h) == to
        && match plane {
            Plane::Kernel | Plane::UserspaceGpe | Plane::UserspaceGpeSockets => {
                udp_dport(h) == Some(4790)
            }
            Plane::Userspace | Plane::UserspaceSockets => proto(h) == 4,
        }
}

/// Moves to `to`, checks the stall and, after the move, what enters the
/// Internet router: nothing sourced from the home address out of DC A,
/// tunnel packets from ess-a to the new switch, and the direct reverse path.
fn move_and_check(
    bed: &mut Testbed,
    echo: &EchoSession,
    to: &'static str,
    generation: u64,
) -> Duration {
    echo.take_max_gap();
    let started = Instant::now();
    bed.move_vm(to, generation);
    let moved = started.elapsed();
    echo.wait_rounds(20);
    let stall = echo.take_max_gap();
    eprintln!(
        "{:?}: move to {to}: longest stall {} ms (re-plug and control calls {} ms)",
        bed.plane,
        stall.as_millis(),
        moved.as_millis()
    );
    assert!(
        stall < STALL_LIMIT,
        "move to {to}: stall {stall:?}, re-plug and control calls took {moved:?}"
    );

    let inet = bed.ns("inet");
    let from_a = Capture::start(&inet, "to-a");
    let into = (to != "a").then(|| Capture::start(&inet, &format!("to-{to}")));
    echo.wait_rounds(30);
    let from_a = from_a.finish();
    if to != "a" {
        let spoofed = from_a.iter().filter(|h| src(h) == HOME).count();
        assert_eq!(
            spoofed, 0,
            "packets with the home address as source left DC A after the move"
        );
        let tunnelled = from_a
            .iter()
            .filter(|h| is_encapsulated(bed.plane, h, bed.ess["a"].care_of, bed.ess[to].care_of))
            .count();
        assert!(
            tunnelled > 0,
            "no encapsulated packet from ess-a to ess-{to} ({} seen)",
            from_a.len()
        );
    }
    if let Some(c) = into {
        let direct = c.finish().iter().filter(|h| src(h) == HOME).count();
        assert!(direct > 0, "the VM's answers do not leave DC {to} directly");
    }
    stall
}

fn forged_tunnel_packets_are_dropped(bed: &Testbed) {
    let listener = vm_udp_listener(bed);
    let b = bed.ess["b"].care_of;
    let refused = || {
        let state = bed.client("b").state();
        state["data_plane"]["counters"]["dropped_not_peer"]
            .as_u64()
            .unwrap_or_else(|| panic!("no dropped_not_peer counter: {state}"))
    };
    let before = refused();
    send_tunnel_packet(bed.plane, &bed.ns("cn"), b, b"forged");
    assert_eq!(
        recv_text(&listener),
        None,
        "a tunnel packet from a non-peer reached the VM"
    );
    let after_care_of = refused();
    assert!(after_care_of > before, "drop not counted");

    // Another address of the switch: the kernel's VXLAN socket listens on
    // every local address, so the check must not depend on which one.
    let secondary = Ipv4Addr::new(198, 18, 2, 3);
    sh(&[
        "ip",
        "-n",
        &bed.ess["b"].ns,
        "addr",
        "add",
        &format!("{secondary}/24"),
        "dev",
        "uplink",
    ]);
    send_tunnel_packet(bed.plane, &bed.ns("cn"), secondary, b"forged-secondary");
    assert_eq!(
        recv_text(&listener),
        None,
        "a tunnel packet from a non-peer to a secondary address reached the VM"
    );
    let after_secondary = refused();
    if bed.plane == Plane::Kernel {
        // The userspace plane's sockets are bound to the care-of address:
        // the kernel answers those packets itself, they never reach it.
        assert!(after_secondary > after_care_of, "drop not counted");
    }
    // A broadcast on the uplink's segment reaches the wildcard socket too.
    send_tunnel_packet(
        bed.plane,
        &bed.ns("inet"),
        Ipv4Addr::new(198, 18, 2, 255),
        b"forged-broadcast",
    );
    assert_eq!(
        recv_text(&listener),
        None,
        "a broadcast tunnel packet from a non-peer reached the VM"
    );
    if bed.plane == Plane::Kernel {
        assert!(refused() > after_secondary, "drop not counted");
    }

    // The same packet from a peer goes through: the drop above is the check, not an accident.
    send_tunnel_packet(bed.plane, &bed.ess["a"].ns, b, b"genuine");
    assert_eq!(recv_text(&listener).as_deref(), Some("genuine"));
}

/// The reconcile period of the testbed's switches.
const RECONCILE: Duration = Duration::from_secs(1);

/// What a switch owns, removed by hand from ess-b while the VM is there,
/// comes back within one reconcile period: the rule that hands decapsulated
/// packets to the visitors and, on the kernel plane, the nf_tables guard
/// (with its count), ess-a's peer rule and the tunnel device itself. Then
/// forged packets are refused again and ess-a's pass.
fn drift_is_repaired(bed: &Testbed) {
    let kernel = bed.plane == Plane::Kernel;
    let ns = bed.ess["b"].ns.clone();
    let (a, b) = (bed.ess["a"].care_of, bed.ess["b"].care_of);
    let (device, table) = if kernel {
        ("nsw-gpe0", "neptune_nsw_gpe0")
    } else {
        ("nsw-tun0", "")
    };
    let refused = || bed.client("b").state()["data_plane"]["counters"]["dropped_not_peer"].as_u64();
    let counted = refused().expect("the drop counter");
    let peer_rule = format!("from {a} to {b} ipproto udp dport 4790 lookup local");
    let visitors_rule = format!("150:\tfrom all iif {device} lookup 4790");
    let rules = || sh_out(&["ip", "-n", &ns, "rule", "show"]);
    assert!(rules().contains(&visitors_rule), "{}", rules());

    sh(&["ip", "-n", &ns, "rule", "del", "pref", "150"]);
    if kernel {
        assert!(rules().contains(&peer_rule), "{}", rules());
        sh(&[
            "ip", "netns", "exec", &ns, "nft", "delete", "table", "ip", table,
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "rule",
            "del",
            "pref",
            "100",
            "from",
            &a.to_string(),
        ]);
        sh(&["ip", "-n", &ns, "link", "del", device]);
    }
    let cut = Instant::now();
    let repaired = || {
        let rules = rules();
        if !rules.contains(&visitors_rule) {
            return false;
        }
        if !kernel {
            return true;
        }
        let guard = sh_out(&[
            "ip", "netns", "exec", &ns, "nft", "list", "table", "ip", table,
        ]);
        let link = sh_out(&["ip", "-n", &ns, "link", "show", device, "up"]);
        rules.contains(&peer_rule)
            && guard.contains("counter name \"refused\" drop")
            && guard.contains(&format!(
                "ip daddr {b} udp dport 4790 ip saddr @peers accept"
            ))
            && guard.contains(&a.to_string())
            && link.contains("UP")
    };
    let deadline = cut + RECONCILE + Duration::from_secs(1);
    while !repaired() {
        assert!(
            Instant::now() < deadline,
            "not repaired {:?} after the drift:\n{}\n{}",
            cut.elapsed(),
            rules(),
            sh_out(&["ip", "netns", "exec", &ns, "nft", "list", "ruleset"])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "{:?}: drift repaired in {} ms",
        bed.plane,
        cut.elapsed().as_millis()
    );

    // Packets behave as before the drift, and the count went on.
    let listener = vm_udp_listener(bed);
    if kernel {
        let secondary = Ipv4Addr::new(198, 18, 2, 3);
        send_tunnel_packet(bed.plane, &bed.ns("cn"), secondary, b"forged-again");
        assert_eq!(
            recv_text(&listener),
            None,
            "a forged tunnel packet reached the VM after the repair"
        );
        let after = refused().expect("the guard's counter after the repair");
        assert!(after > counted, "count {after}, {counted} before the drift");
    }
    send_tunnel_packet(bed.plane, &bed.ess["a"].ns, b, b"genuine-again");
    assert_eq!(recv_text(&listener).as_deref(), Some("genuine-again"));

    if kernel {
        // Re-applying is idempotent: once whole, the guard is left alone
        // (the ruleset's generation stays put over two more rounds).
        let generation = || in_ns(&ns, neptune_switch::nftables::generation).expect("generation");
        let settled = generation();
        std::thread::sleep(2 * RECONCILE + Duration::from_millis(200));
        assert_eq!(
            generation(),
            settled,
            "the guard is re-installed every round"
        );
    }
}

fn control_api_refusals(bed: &Testbed) {
    let a = bed.client("a");
    // Unsigned.
    let r = a.raw("GET", "/v1/state", Vec::new(), "").expect("call");
    assert_eq!(r.status, 401, "unsigned call: {}", r.body);
    assert_eq!(
        r.code().as_deref(),
        Some(codes::UNAUTHENTICATED),
        "{}",
        r.body
    );
    // Stale timestamp (an hour old, correctly signed).
    let old = neptune_switch::auth::unix_now() - 3600;
    let r = a
        .raw(
            "GET",
            "/v1/state",
            a.inner.headers_at("GET", "/v1/state", "", old),
            "",
        )
        .expect("call");
    assert_eq!(r.status, 401, "stale call: {}", r.body);
    // Replayed.
    let h = a.inner.signed_headers("GET", "/v1/health", "");
    assert_eq!(
        a.raw("GET", "/v1/health", h.clone(), "")
            .expect("call")
            .status,
        200
    );
    let r = a.raw("GET", "/v1/health", h, "").expect("call");
    assert_eq!(r.status, 401, "replayed call: {}", r.body);
    // Signed with another switch's key.
    let other = neptune_switch::client::ControlClient::new(
        "127.0.0.1:7400".parse().expect("addr"),
        neptune_switch::auth::SwitchKey::new(b"not the key of this switch".to_vec()).expect("key"),
    );
    let r = a
        .raw(
            "GET",
            "/v1/state",
            other.signed_headers("GET", "/v1/state", ""),
            "",
        )
        .expect("call");
    assert_eq!(r.status, 401);
    // Outside the home prefixes, and to a non-peer.
    let r = a
        .put_binding("192.0.2.10", bed.ess["b"].care_of, 9)
        .expect("call");
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code().as_deref(), Some(codes::REFUSED), "{}", r.body);
    let r = a
        .put_binding(&HOME.to_string(), Ipv4Addr::new(198, 18, 0, 2), 99)
        .expect("call");
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code().as_deref(), Some(codes::REFUSED), "{}", r.body);
}

fn migration_scenario(plane: Plane) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut bed = Testbed::new(plane);
    // The home switch blackholes its home prefix (no loop while a binding changes).
    let blackholes = sh_out(&[
        "ip",
        "-n",
        &bed.ess["a"].ns,
        "route",
        "show",
        "type",
        "blackhole",
    ]);
    assert!(
        blackholes.contains("203.0.113.0/24"),
        "no blackhole for the home prefix: {blackholes}"
    );
    let echo = EchoSession::start(&bed);

    // A -> B.
    let stall_ab = move_and_check(&mut bed, &echo, "b", 1);
    forged_tunnel_packets_are_dropped(&bed);
    drift_is_repaired(&bed);
    echo.wait_rounds(20);

    // Bulk data through the tunnel arrives intact (the userspace plane cuts
    // TCP super-packets at home and joins segments again in B, or, on the
    // VXLAN-GPE wire, hands them whole to the stack and gets them whole in B).
    let bytes = 8 << 20;
    assert_eq!(
        bulk_transfer(&bed, bytes),
        (bytes, fnv(&pattern(bytes))),
        "bulk data corrupted"
    );
    if plane != Plane::Kernel {
        let a = bed.client("a").state();
        let b = bed.client("b").state();
        let count =
            |s: &serde_json::Value, k: &str| s["data_plane"]["counters"][k].as_u64().unwrap_or(0);
        eprintln!(
            "{plane:?} counters after the bulk transfer: a {} b {}",
            a["data_plane"]["counters"], b["data_plane"]["counters"]
        );
        assert!(
            count(&a, "super_packets") > 0,
            "no TCP super-packet cut at home: {a}"
        );
        // B writes super-packets to its TUN: segments it joined, or, on the
        // VXLAN-GPE wire, super-packets that crossed the namespaces uncut.
        assert!(
            count(&b, "coalesced_writes") + count(&b, "whole_received") > 0,
            "no super-packet written in B: {b}"
        );
    }

    // ess-a restarted mid-binding: killed hard, its kernel state gone, back
    // from its persisted table.
    echo.take_max_gap();
    bed.kill("a");
    if plane == Plane::Kernel {
        sh(&[
            "ip",
            "-n",
            &bed.ess["a"].ns,
            "route",
            "flush",
            "proto",
            "78",
        ]);
    }
    // Down long enough for the connection to lose packets: only the
    // persisted table can bring it back. The traffic must see the outage:
    // no round trip while ess-a is down (one already past ess-a when it
    // died may finish in the first 50 ms), and a stall at least as long.
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let rounds_down = echo.rounds();
    std::thread::sleep(OUTAGE - Duration::from_millis(50));
    let through = echo.rounds() - rounds_down;
    let outage = down.elapsed();
    bed.start("a");
    echo.wait_rounds(20);
    let stall_restart = echo.take_max_gap();
    eprintln!(
        "{plane:?}: ess-a down {} ms: {through} round trips through it meanwhile, longest stall {} ms",
        outage.as_millis(),
        stall_restart.as_millis()
    );
    assert_eq!(
        through, 0,
        "the traffic went on while ess-a was down: the outage was not seen"
    );
    assert!(
        stall_restart + Duration::from_millis(50) >= outage,
        "restart stall {stall_restart:?} shorter than the outage {outage:?}"
    );
    assert!(
        stall_restart < Duration::from_secs(3),
        "restart stall {stall_restart:?}"
    );
    let state = bed.client("a").state();
    assert_eq!(
        state["table"]["bindings"][HOME.to_string()]["care_of"],
        "198.18.2.2",
        "{state}"
    );

    // B -> C; the late update of the first move is refused.
    let stall_bc = move_and_check(&mut bed, &echo, "c", 2);
    let late = bed
        .client("a")
        .put_binding(&HOME.to_string(), bed.ess["b"].care_of, 1)
        .expect("call");
    assert_eq!(late.status, 409, "{}", late.body);
    assert_eq!(
        late.code().as_deref(),
        Some(codes::STALE_GENERATION),
        "{}",
        late.body
    );
    echo.wait_rounds(10);

    // C -> home.
    let stall_home = move_and_check(&mut bed, &echo, "a", 3);
    let state = bed.client("a").state();
    assert!(
        state["table"]["bindings"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "{state}"
    );

    control_api_refusals(&bed);
    let rounds = echo
        .finish()
        .unwrap_or_else(|e| panic!("the TCP connection broke: {e}"));
    eprintln!(
        "{plane:?}: {rounds} echo rounds; stalls A->B {} ms, restart {} ms, B->C {} ms, C->A {} ms; scenario {:.1} s",
        stall_ab.as_millis(),
        stall_restart.as_millis(),
        stall_bc.as_millis(),
        stall_home.as_millis(),
        started.elapsed().as_secs_f64()
    );
}

/// A provider behind DC B drops packets whose source is not its own (strict
/// reverse-path filter on the router's link to B): with reverse tunnelling the
/// VM's answers go home through the tunnel and the connection still works.
fn reverse_tunnelling_scenario(plane: Plane) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = Testbed::new(plane);
    let inet = bed.ns("inet");
    sh(&[
        "ip",
        "netns",
        "exec",
        &inet,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/conf/to-b/rp_filter",
    ]);
    let echo = EchoSession::start(&bed);
    echo.take_max_gap();
    let home_switch = bed.ess["a"].care_of;
    bed.move_vm_with("b", 1, Some(home_switch));
    echo.wait_rounds(20);
    let stall = echo.take_max_gap();
    eprintln!(
        "{plane:?}: move to b with reverse tunnelling: longest stall {} ms",
        stall.as_millis()
    );
    assert!(stall < STALL_LIMIT, "stall {stall:?}");
    let from_b = Capture::start(&inet, "to-b");
    echo.wait_rounds(30);
    let from_b = from_b.finish();
    assert_eq!(
        from_b.iter().filter(|h| src(h) == HOME).count(),
        0,
        "the VM's answers left DC B directly"
    );
    let tunnelled = from_b
        .iter()
        .filter(|h| is_encapsulated(plane, h, bed.ess["b"].care_of, home_switch))
        .count();
    assert!(
        tunnelled > 0,
        "no reverse-tunnelled packet from ess-b to ess-a"
    );
    echo.finish()
        .unwrap_or_else(|e| panic!("the TCP connection broke: {e}"));
}

#[test]
fn kernel_data_plane_tunnels_reverse_traffic_home_on_request() {
    reverse_tunnelling_scenario(Plane::Kernel);
}

#[test]
fn userspace_data_plane_tunnels_reverse_traffic_home_on_request() {
    reverse_tunnelling_scenario(Plane::Userspace);
}

#[test]
fn userspace_vxlan_gpe_wire_keeps_a_tcp_connection_across_datacenters() {
    migration_scenario(Plane::UserspaceGpe);
}

#[test]
fn kernel_data_plane_keeps_a_tcp_connection_across_datacenters() {
    migration_scenario(Plane::Kernel);
}

#[test]
fn userspace_data_plane_keeps_a_tcp_connection_across_datacenters() {
    migration_scenario(Plane::Userspace);
}

/// The paths the switch falls back to when the kernel refuses the injector.
#[test]
fn userspace_data_plane_without_injector_keeps_a_tcp_connection_across_datacenters() {
    migration_scenario(Plane::UserspaceSockets);
    migration_scenario(Plane::UserspaceGpeSockets);
}

/// The daemon with the simulated data plane, driven over real HTTP on
/// loopback (no root needed): flags instead of a config file, persistence
/// across a restart, replay protection across it, and the refusals.
#[test]
fn simulated_switch_persists_its_table_across_restarts() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), "00112233445566778899aabbccddeeff").expect("key");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let start = || {
        Command::new(daemon_path())
            .args([
                "--listen",
                &listen,
                "--care-of",
                "198.18.1.2",
                "--data-plane",
                "simulated",
            ])
            .args(["--home-prefix", "203.0.113.0/24", "--peer", "198.18.2.2"])
            .arg("--state-file")
            .arg(dir.path().join("state/table.json"))
            .arg("--key-file")
            .arg(dir.path().join("key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the switch")
    };
    let key = neptune_switch::auth::SwitchKey::from_file(&dir.path().join("key")).expect("key");
    let client = neptune_switch::client::ControlClient::new(listen.parse().expect("addr"), key);
    let wait_up = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !client
            .call("GET", "/v1/health", "")
            .is_ok_and(|r| r.status == 200)
        {
            assert!(Instant::now() < deadline, "the switch did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let first = Kill(start());
    wait_up();
    let r = client
        .put_binding("203.0.113.10", "198.18.2.2", "vi-1", 7, 1)
        .expect("call");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("changed"), "{}", r.body);
    let again = client
        .put_binding("203.0.113.10", "198.18.2.2", "vi-1", 7, 1)
        .expect("call");
    assert!(again.body.contains("unchanged"), "{}", again.body);
    assert_eq!(
        client
            .raw("GET", "/v1/state", &[], "")
            .expect("call")
            .status,
        401
    );
    // A request captured on the wire, answered once before the restart.
    let captured = client.signed_headers("GET", "/v1/state", "");
    let r = client.raw("GET", "/v1/state", &captured, "").expect("call");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(first);

    // Within the clock-skew window of the capture, a new run refuses it
    // (its nonce cache is empty; the mark on disk is what refuses it)...
    let _second = Kill(start());
    wait_up();
    let replayed = client.raw("GET", "/v1/state", &captured, "").expect("call");
    assert_eq!(
        replayed.status, 401,
        "a request captured before the restart was accepted again: {}",
        replayed.body
    );
    assert!(!replayed.body.contains("bindings"), "{}", replayed.body);
    // ... and the mark is one owner-only number beside the table.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mark = dir.path().join("state/table.json.replay");
        let meta = std::fs::metadata(&mark).expect("replay mark");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&mark).expect("replay mark");
        assert!(text.trim().parse::<u64>().is_ok(), "{text:?}");
    }
    let state = client.call("GET", "/v1/state", "").expect("call");
    let state: serde_json::Value = serde_json::from_str(&state.body).expect("JSON");
    assert_eq!(
        state["table"]["bindings"]["203.0.113.10"]["care_of"], "198.18.2.2",
        "{state}"
    );
    assert_eq!(
        state["data_plane"]["counters"]["tunnel_routes"], 1,
        "not re-applied: {state}"
    );
    let stale = client
        .put_binding("203.0.113.10", "198.18.2.2", "vi-1", 7, 0)
        .expect("call");
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert!(
        !state.to_string().contains("00112233"),
        "the key leaked into the state"
    );
}

/// A `neptune-switchd` on loopback with the simulated data plane, started
/// from flags (no root needed), killed on drop.
struct LoopbackSwitch {
    child: std::process::Child,
    client: neptune_switch::client::ControlClient,
}

impl LoopbackSwitch {
    /// Starts a switch whose key file is `dir/key` and waits for its API.
    fn start(dir: &std::path::Path, extra: &[&str]) -> LoopbackSwitch {
        use std::process::{Command, Stdio};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(daemon_path())
            .args(["--listen", &listen, "--care-of", "198.18.1.2"])
            .args(["--home-prefix", "203.0.113.0/24", "--peer", "198.18.2.2"])
            .arg("--state-file")
            .arg(dir.join("state/table.json"))
            .arg("--key-file")
            .arg(dir.join("key"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the switch");
        let key = neptune_switch::auth::SwitchKey::from_file(&dir.join("key")).expect("key");
        let client = neptune_switch::client::ControlClient::new(listen.parse().expect("addr"), key);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !client
            .call("GET", "/v1/health", "")
            .is_ok_and(|r| r.status == 200)
        {
            assert!(Instant::now() < deadline, "the switch did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        LoopbackSwitch { child, client }
    }
}

impl Drop for LoopbackSwitch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every refusal, including the framework's (a body over the limit), is
/// `{"code", "message"}` and nothing else, as every Neptune API answers.
#[test]
fn simulated_switch_answers_every_error_with_a_code_and_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), "00112233445566778899aabbccddeeff").expect("key");
    let switch = LoopbackSwitch::start(dir.path(), &["--data-plane", "simulated"]);
    let c = &switch.client;
    let shape = |what: &str, r: neptune_switch::client::Reply, status: u16, code: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let body: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{what}: {e}: {}", r.body));
        let fields = body.as_object().map(|o| {
            let mut k: Vec<&str> = o.keys().map(String::as_str).collect();
            k.sort_unstable();
            k
        });
        assert_eq!(fields, Some(vec!["code", "message"]), "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    };
    shape(
        "unsigned",
        c.raw("GET", "/v1/state", &[], "").expect("call"),
        401,
        codes::UNAUTHENTICATED,
    );
    shape(
        "unknown path",
        c.call("GET", "/v1/nothing", "").expect("call"),
        404,
        codes::NOT_FOUND,
    );
    shape(
        "wrong method",
        c.call("POST", "/v1/bindings/203.0.113.10", "")
            .expect("call"),
        405,
        codes::METHOD_NOT_ALLOWED,
    );
    shape(
        "not JSON",
        c.call("PUT", "/v1/bindings/203.0.113.10", "{")
            .expect("call"),
        400,
        codes::INVALID_REQUEST,
    );
    shape(
        "outside the home prefixes",
        c.put_binding("192.0.2.10", "198.18.2.2", "vi-1", 7, 1)
            .expect("call"),
        422,
        codes::REFUSED,
    );
    let r = c
        .put_binding("203.0.113.10", "198.18.2.2", "vi-1", 7, 1)
        .expect("call");
    assert_eq!(r.status, 200, "{}", r.body);
    shape(
        "older generation",
        c.put_binding("203.0.113.10", "198.18.2.2", "vi-1", 7, 0)
            .expect("call"),
        409,
        codes::STALE_GENERATION,
    );
    let big = "x".repeat(neptune_switch::api::MAX_BODY_BYTES + 1);
    shape(
        "body over the limit",
        c.call("PUT", "/v1/bindings/203.0.113.10", &big)
            .expect("call"),
        413,
        codes::PAYLOAD_TOO_LARGE,
    );
}

/// Runs the daemon with `args` and returns how it ended and its stderr; a
/// daemon still running after 10 s (it accepted what it should refuse) is
/// killed and fails the test.
fn run_to_exit(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(daemon_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the switch");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the switch started instead of refusing {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    (status, stderr)
}

/// The flags of a simulated switch on a free loopback port, keyed by `key`.
fn loopback_flags(dir: &std::path::Path, key: &std::path::Path) -> Vec<std::ffi::OsString> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut flags: Vec<std::ffi::OsString> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--care-of",
        "198.18.1.2",
        "--state-file",
    ]
    .iter()
    .map(Into::into)
    .collect();
    flags.push(dir.join("table.json").into());
    flags.push("--key-file".into());
    flags.push(key.into());
    flags
}

/// A key file that is not hex, or too short, stops the switch at start with
/// the file and the problem named (it used to be taken as raw bytes, and
/// every call then failed with 401).
#[test]
fn a_key_file_that_is_not_a_hex_key_stops_the_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, contents, problem) in [
        (
            "letter.key",
            "00112233445566778899aabbccddeefg\n",
            "line 1, column 32 (byte 31): 'g' is not a hex digit",
        ),
        (
            "odd.key",
            "00112233445566778899aabbccddeeff0\n",
            "33 hex digits, an odd number",
        ),
        (
            "short.key",
            "00112233\n",
            "the key is 4 bytes long; at least 16",
        ),
    ] {
        let key = dir.path().join(name);
        std::fs::write(&key, contents).expect("key");
        let flags = loopback_flags(dir.path(), &key);
        let args: Vec<&std::ffi::OsStr> = flags.iter().map(|f| f.as_os_str()).collect();
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&key.display().to_string()) && stderr.contains(problem),
            "{name}: the error does not name the file and say {problem:?}: {stderr}"
        );
    }
}

/// `--device-kind` with another data plane than the kernel's was silently
/// ignored; it stops the switch now (simulated here: no root, no devices,
/// should an old build start anyway).
#[test]
fn device_kind_without_the_kernel_plane_stops_the_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff").expect("key");
    let mut flags = loopback_flags(dir.path(), &key);
    flags.extend(["--data-plane", "simulated", "--device-kind", "ipip"].map(Into::into));
    let args: Vec<&std::ffi::OsStr> = flags.iter().map(|f| f.as_os_str()).collect();
    let (status, stderr) = run_to_exit(&args);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--device-kind applies only to the kernel data plane"),
        "{stderr}"
    );
}
