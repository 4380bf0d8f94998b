//! Real guests: VIs deployed through real Agents onto a libvirt daemon,
//! driven through their serial consoles (when `NEPTUNE_TEST_LIBVIRT_URI`
//! and `NEPTUNE_TEST_TINY_TEMPLATE` are set).

use super::*;

/// Removes the libvirt domains and networks whose names start with the
/// VI's id, whatever the test's outcome.
struct LibvirtLeftovers {
    uri: String,
    prefix: String,
}

impl Drop for LibvirtLeftovers {
    fn drop(&mut self) {
        for (list, stop, undefine) in [
            (["list", "--all", "--name"], "destroy", "undefine"),
            (
                ["net-list", "--all", "--name"],
                "net-destroy",
                "net-undefine",
            ),
        ] {
            for name in virsh(&self.uri, &list).lines().map(str::trim) {
                // The public network is this test's alone on the daemon.
                if name.starts_with(&self.prefix) || name == "public" {
                    virsh(&self.uri, &[stop, name]);
                    virsh(&self.uri, &[undefine, name]);
                }
            }
        }
    }
}

fn virsh(uri: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("virsh")
        .args(["--quiet", "--connect", uri])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A VM's serial console, driven through the Manager's API as a user
/// would: what is typed, and the console's end read back.
struct Console<'a> {
    m: &'a TestManager,
    token: String,
    path: String,
    /// Commands run so far: each one's end marker is unique.
    runs: std::cell::Cell<u32>,
}

impl<'a> Console<'a> {
    /// Logs in as `user` on `node`'s console.
    async fn login(
        m: &'a TestManager,
        token: &str,
        vi: &str,
        node: &str,
        user: &str,
        password: &str,
    ) -> Console<'a> {
        let c = Console {
            m,
            token: token.to_owned(),
            path: format!("/api/v1/vis/{vi}/vms/{node}/console"),
            runs: std::cell::Cell::new(0),
        };
        c.type_in("\n").await;
        c.wait_for("login:").await;
        c.type_in(&format!("{user}\n")).await;
        c.wait_for("Password:").await;
        c.type_in(&format!("{password}\n")).await;
        assert!(c.run("true").await, "logged in on {node}");
        c
    }

    async fn type_in(&self, input: &str) {
        let (s, v) = self
            .m
            .post(&self.token, &self.path, Some(json!({ "input": input })))
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    }

    async fn text(&self) -> String {
        let (s, v) = self
            .m
            .call(Method::GET, &self.path, Some(&self.token), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["text"].as_str().unwrap().to_owned()
    }

    /// Waits (up to 60 s) until the console shows `what`; returns it all.
    async fn wait_for(&self, what: &str) -> String {
        for _ in 0..600 {
            let text = self.text().await;
            if text.contains(what) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "{what:?} never showed on {}: {}",
            self.path,
            self.text().await
        );
    }

    /// Runs `command` in the guest's shell; what it printed.
    async fn output(&self, command: &str) -> String {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mark = n * 1000 + 2;
        self.type_in(&format!(
            "echo \"BEGIN-$((({mark})))\"; {command}; echo \"END-$((({mark})))\"\n"
        ))
        .await;
        let text = self.wait_for(&format!("END-{mark}")).await;
        let begin = text.rfind(&format!("BEGIN-{mark}")).unwrap() + format!("BEGIN-{mark}").len();
        let end = text.rfind(&format!("END-{mark}")).unwrap();
        text[begin..end].trim().replace('\r', "")
    }

    /// Runs `command` in the guest's shell; whether it succeeded.
    async fn run(&self, command: &str) -> bool {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        // The echoed command line shows `$((n*1000+1))`, never its value.
        let mark = n * 1000 + 1;
        self.type_in(&format!("{command}; echo \"END-$((({mark}))) $?\"\n"))
            .await;
        let text = self.wait_for(&format!("END-{mark} ")).await;
        let tail = &text[text.rfind(&format!("END-{mark} ")).unwrap()..];
        tail.starts_with(&format!("END-{mark} 0"))
    }
}

/// The tiny test template, its image copied into the repository.
fn tiny_template(os_name: Option<&str>) -> api::CreateTemplate {
    api::CreateTemplate {
        name: "neptune-tiny".to_owned(),
        image: "neptune-tiny.qcow2".to_owned(),
        os_name: os_name.unwrap_or_default().to_owned(),
        vcpus: None,
        ram_mib: None,
        disk_mib: None,
        software: Vec::new(),
        visibility: None,
    }
}

/// A line of three VMs of `template` (n0 - n1 - n2, two point-to-point
/// links), as JSON.
fn line_of_three(template: &str) -> Value {
    let node = |id: &str, ifaces: &[&str]| {
        json!({"id": id, "ram": 128, "disk": 256,
            "interfaces": ifaces.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
            "os": {"name": "Neptune tiny", "username": "alice", "password": "tiny-secret"},
            "software": {"template": template}})
    };
    let link = |id: &str, a: &str, ai: &str, b: &str, bi: &str| {
        json!({"id": id, "type": "point_to_point", "bandwidth": 100,
            "endpoints": [{"node": a, "interface": ai}, {"node": b, "interface": bi}]})
    };
    json!({"topology": {"id": "line", "nodes": [
            node("n0", &["eth0"]), node("n1", &["eth0", "eth1"]), node("n2", &["eth0"])],
        "links": [link("l01", "n0", "eth0", "n1", "eth0"), link("l12", "n1", "eth1", "n2", "eth0")]}})
}

/// The paper's deployment, for real: a VI of three VMs on two links is
/// accepted, and the Manager deploys it through real Agents onto libvirt,
/// which runs the guests under QEMU. Each VM's disk is an overlay of the
/// tiny test template on its host, its domain has the node's vCPUs, RAM
/// and one NIC per interface on its link's network; each guest boots,
/// reads its cloud-init seed, configures its planned addresses and says
/// it is ready, which the deploy waits for. It is suspended (nothing left
/// on the hosts) and resumed, and terminating it leaves nothing on the
/// hosts, networks included.
#[tokio::test]
async fn a_vi_deploys_onto_libvirt() {
    let Ok(uri) = std::env::var("NEPTUNE_TEST_LIBVIRT_URI") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the libvirt tests: set NEPTUNE_TEST_LIBVIRT_URI"
        );
        skipped("NEPTUNE_TEST_LIBVIRT_URI is not set (scripts/libvirt-test-server starts a libvirt daemon)");
        return;
    };
    let Ok(tiny) = std::env::var("NEPTUNE_TEST_TINY_TEMPLATE") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must boot real guests: set NEPTUNE_TEST_TINY_TEMPLATE"
        );
        skipped("NEPTUNE_TEST_TINY_TEMPLATE is not set (scripts/build-tiny-template builds it)");
        return;
    };
    let m = start_over(Db::Sqlite, Some(uri.clone())).await.unwrap();
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 10).await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    std::fs::copy(&tiny, m.dir.path().join("images/neptune-tiny.qcow2")).unwrap();
    admin
        .create_template(&tiny_template(Some("Neptune tiny test guest")))
        .await
        .unwrap();
    let id = m
        .requested_vi(&p.alice, line_of_three("neptune-tiny"))
        .await;
    let simple = id.replace('-', "");
    // VMs are `nt-<12 hex>-<node>`, link networks `nt-<8 hex>-<link>`.
    let prefix = format!("nt-{}", &simple[..8]);
    let _leftovers = LibvirtLeftovers {
        uri: uri.clone(),
        prefix: prefix.clone(),
    };
    m.accept(&p.admin, &id, None).await;
    let v = m.wait_vi_for(&p.alice, &id, "deploying", 2400).await;
    assert_eq!(v["state"], "running", "{v}");
    let vms = v["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 3, "{v}");
    let running = virsh(&uri, &["list", "--name"]);
    let mut networks = std::collections::BTreeSet::new();
    for vm in vms {
        let name = &format!("nt-{}-{}", &simple[..12], vm["node"].as_str().unwrap());
        assert!(
            running.lines().any(|l| l.trim() == name),
            "{name} runs: {running}"
        );
        let xml = virsh(&uri, &["dumpxml", name]);
        assert!(
            xml.contains(&format!(
                "<memory unit='KiB'>{}</memory>",
                vm["ram_mib"].as_u64().unwrap() * 1024
            )),
            "{xml}"
        );
        let disk = m
            .dir
            .path()
            .join("hosts")
            .join(vm["host"].as_str().unwrap())
            .join("disks")
            .join(format!("{name}.qcow2"));
        assert!(disk.is_file(), "{}", disk.display());
        for line in virsh(&uri, &["domiflist", name]).lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.get(1), Some(&"network"), "{line}");
            networks.insert(cols[2].to_owned());
        }
    }
    // A line of three: two links, each its own network (entry points may
    // also have a NIC on the public network).
    networks.remove("public");
    assert_eq!(networks.len(), 2, "{networks:?}");
    assert!(
        networks
            .iter()
            .all(|n| n.starts_with(&format!("{prefix}-"))),
        "{networks:?}"
    );

    // Every guest is ready, as its host reports it now.
    let states = alice.vm_states(id.parse().unwrap()).await.unwrap();
    assert_eq!(
        states.iter().filter(|s| s.state == "ready").count(),
        3,
        "{states:?}"
    );
    // Every guest configured itself from its seed: its console says it is
    // ready and shows its planned addresses (read through its Agent).
    let planned = v["addresses"]["interfaces"].as_array().unwrap().clone();
    assert_eq!(planned.len(), 4, "{v}");
    for vm in vms {
        let node = vm["node"].as_str().unwrap();
        let name = format!("nt-{}-{node}", &simple[..12]);
        let agent = m.sims.agents.lock().await[vm["host"].as_str().unwrap()].clone();
        let console = agent.console(&name, 1 << 16).await.unwrap();
        assert!(
            console.contains(&format!("NEPTUNE-READY iid-{simple}-{node}")),
            "{console}"
        );
        for a in planned.iter().filter(|a| a["node"] == node) {
            let line = format!(
                "{}: {} ",
                a["interface"].as_str().unwrap(),
                a["address"].as_str().unwrap()
            );
            assert!(console.contains(&line), "{line:?} in {console}");
        }
    }

    // From inside each guest, through the Manager's console API: log in
    // as the design's user, and every address on the guest's links
    // answers a ping (the peer's across a link's bridge, on one host or
    // over VXLAN between the two).
    for vm in vms {
        let node = vm["node"].as_str().unwrap();
        let console = Console::login(&m, &p.alice, &id, node, "alice", "tiny-secret").await;
        let links: Vec<&str> = planned
            .iter()
            .filter(|a| a["node"] == node)
            .map(|a| a["link"].as_str().unwrap())
            .collect();
        for a in planned
            .iter()
            .filter(|a| links.contains(&a["link"].as_str().unwrap()))
        {
            let address = a["address"].as_str().unwrap().split('/').next().unwrap();
            let ok = console
                .run(&format!("/bin/ping -c 1 -W 5 {address} >/dev/null"))
                .await;
            assert!(ok, "{node} pings {address}");
        }
    }

    // A file written inside n1, and how long its guest has been up.
    let n1 = Console::login(&m, &p.alice, &id, "n1", "alice", "tiny-secret").await;
    assert!(n1.run("echo neptune-was-here > ~/mark").await);
    let uptime = |text: String| -> f64 {
        text.split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("not an uptime: {text:?}"))
    };
    let before = uptime(n1.output("cat /proc/uptime").await);

    // Suspended: every guest's memory saved and its disk exported, nothing
    // left on the hosts; resumed: restored from the saved images onto
    // disks made again from the exported copies, the guests where they
    // were (no boot: their uptime goes on, their shells stay logged in).
    let v = m.act(&p.alice, &id, "suspend", "suspending").await;
    assert_eq!(v["state"], "suspended", "{v}");
    let all = virsh(&uri, &["list", "--all", "--name"]);
    assert!(!all.contains(&prefix), "{all}");
    // Resumed elsewhere: host0 and host1 now offer no room (re-registered
    // with 1 MiB of RAM), a third host all of it.
    for (host, ram) in [("host0", 1), ("host1", 1), ("host2", 65536)] {
        let host = api::RegisterHost {
            ram_mib: ram,
            ..napoli_host(host, "http://127.0.0.1:9", 10, 0)
        };
        admin.register_host(&host).await.unwrap();
    }
    let v = m.act(&p.alice, &id, "resume", "resuming").await;
    assert_eq!(v["state"], "running", "{v}");
    let hosts: Vec<&str> = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| vm["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["host2"; 3], "every VM resumed on another host: {v}");
    let running = virsh(&uri, &["list", "--name"]);
    assert_eq!(
        running.lines().filter(|l| l.starts_with(&prefix)).count(),
        3,
        "{running}"
    );
    let after = uptime(n1.output("cat /proc/uptime").await);
    assert!(
        after > before,
        "uptime {before} s, then {after} s: the guest booted again"
    );
    assert!(
        !n1.text().await.contains("init started"),
        "no boot after the restore"
    );

    // n1 saved as a template; a new VI of it has the file, and its own
    // identity and addresses (a new instance id: the guest configured
    // itself anew). A running VM's disk is copied as it is on the disk
    // (crash-consistent): what the guest has not written out is not in it.
    assert!(n1.run("sync").await);
    let (s, job) = m
        .post(
            &p.alice,
            &format!("/api/v1/vis/{id}/templates"),
            Some(json!({"node": "n1", "name": "golden"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let done = m
        .job_outcome(&p.alice, job["id"].as_str().unwrap(), 120)
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let disks_of = |vi: &str| {
        let simple = vi.replace('-', "");
        let mut found = Vec::new();
        for host in ["host0", "host1", "host2"] {
            for sub in ["disks", "seeds", "consoles"] {
                let dir = m.dir.path().join("hosts").join(host).join(sub);
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&format!("nt-{}", &simple[..12])) {
                        found.push(format!("{host}/{sub}/{name}"));
                    }
                }
            }
        }
        found
    };
    let bridges = |networks: &std::collections::BTreeSet<String>| -> Vec<String> {
        networks
            .iter()
            .filter_map(|n| {
                virsh(&uri, &["net-info", n])
                    .lines()
                    .find_map(|l| l.strip_prefix("Bridge:").map(|b| b.trim().to_owned()))
            })
            .collect()
    };
    let first_bridges = bridges(&networks);
    assert_eq!(first_bridges.len(), 2, "{networks:?}");

    // Terminated: no domain, network, bridge, disk, seed, console or QEMU
    // process of the VI is left.
    let leftovers = |vi_prefix: String, bridges: Vec<String>, vi: String| {
        let all = virsh(&uri, &["list", "--all", "--name"]);
        assert!(!all.contains(&vi_prefix), "{all}");
        let nets = virsh(&uri, &["net-list", "--all", "--name"]);
        assert!(!nets.contains(&vi_prefix), "{nets}");
        for b in &bridges {
            assert!(
                !std::path::Path::new("/sys/class/net").join(b).exists(),
                "bridge {b} is left"
            );
        }
        assert_eq!(disks_of(&vi), Vec::<String>::new());
        let qemu = std::process::Command::new("pgrep")
            .args(["-f", &format!("guest={}", &vi_prefix)])
            .output()
            .unwrap();
        assert!(
            qemu.stdout.is_empty(),
            "QEMU left: {}",
            String::from_utf8_lossy(&qemu.stdout)
        );
    };
    let v = m.act(&p.alice, &id, "terminate", "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    leftovers(prefix.clone(), first_bridges, id.clone());

    let again = m.requested_vi(&p.alice, line_of_three("golden")).await;
    let again_simple = again.replace('-', "");
    let again_prefix = format!("nt-{}", &again_simple[..8]);
    let _more_leftovers = LibvirtLeftovers {
        uri: uri.clone(),
        prefix: again_prefix.clone(),
    };
    m.accept(&p.admin, &again, None).await;
    let v = m.wait_vi_for(&p.alice, &again, "deploying", 2400).await;
    assert_eq!(v["state"], "running", "{v}");
    let n0 = Console::login(&m, &p.alice, &again, "n0", "alice", "tiny-secret").await;
    assert_eq!(n0.output("cat ~/mark").await, "neptune-was-here");
    assert_eq!(n0.output("hostname").await, "n0");
    let planned = v["addresses"]["interfaces"].as_array().unwrap().clone();
    let mine = planned.iter().find(|a| a["node"] == "n0").unwrap();
    let shown = n0.output("ip -o -4 addr show dev eth0").await;
    assert!(
        shown.contains(mine["address"].as_str().unwrap()),
        "{mine} in {shown}"
    );
    let mut again_networks = std::collections::BTreeSet::new();
    for line in virsh(&uri, &["net-list", "--name"]).lines() {
        if line.trim().starts_with(&again_prefix) {
            again_networks.insert(line.trim().to_owned());
        }
    }
    let again_bridges = bridges(&again_networks);
    let v = m.act(&p.alice, &again, "terminate", "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    leftovers(again_prefix, again_bridges, again.clone());
}

/// A network namespace of the test's own, removed when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The paper's typical VI for real: a NAT/firewall entry point in front
/// of a private backend, in a datacenter whose public network has a
/// router. A "public" network namespace stands for the outside, with the
/// router's address: the backend reaches it through the NAT node
/// (masqueraded: the namespace has no route to the private addresses), and
/// a correspondent there reaches the entry point's web server at its Home
/// Address.
#[tokio::test]
async fn a_nat_vi_reaches_and_is_reached_from_outside() {
    let (Ok(uri), Ok(tiny)) = (
        std::env::var("NEPTUNE_TEST_LIBVIRT_URI"),
        std::env::var("NEPTUNE_TEST_TINY_TEMPLATE"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must boot real guests: set NEPTUNE_TEST_LIBVIRT_URI and NEPTUNE_TEST_TINY_TEMPLATE"
        );
        skipped("NEPTUNE_TEST_LIBVIRT_URI or NEPTUNE_TEST_TINY_TEMPLATE is not set");
        return;
    };
    let m = start_over(Db::Sqlite, Some(uri.clone())).await.unwrap();
    let p = m.people().await;
    let admin = m.client(&p.admin);
    let dc = admin
        .create_datacenter(&api::CreateDatacenter {
            name: "capri".to_owned(),
            home_pools: vec!["203.0.113.0/24".to_owned()],
            public_gateway: Some("203.0.113.254".to_owned()),
        })
        .await
        .unwrap();
    assert_eq!(dc.public_gateway.as_deref(), Some("203.0.113.254"));
    let host = api::RegisterHost {
        datacenter: "capri".to_owned(),
        ..napoli_host("capri0", "http://127.0.0.1:9", 10, 0)
    };
    admin.register_host(&host).await.unwrap();
    std::fs::copy(&tiny, m.dir.path().join("images/neptune-tiny.qcow2")).unwrap();
    admin.create_template(&tiny_template(None)).await.unwrap();
    let node = |id: &str, ifaces: Value| {
        json!({"id": id, "ram": 128, "disk": 256, "interfaces": ifaces,
            "os": {"name": "Neptune tiny", "username": "alice", "password": "tiny-secret"},
            "software": {"template": "neptune-tiny"}})
    };
    let design = json!({"topology": {"id": "nat", "nodes": [
            node("gw", json!([{"name": "eth0", "entry_point": {}}, {"name": "eth1"}])),
            node("web", json!([{"name": "eth0"}]))],
        "links": [{"id": "lan", "type": "lan", "bandwidth": 100,
            "endpoints": [{"node": "gw", "interface": "eth1"}, {"node": "web", "interface": "eth0"}]}]}});
    let id = m.requested_vi(&p.alice, design).await;
    let simple = id.replace('-', "");
    let _leftovers = LibvirtLeftovers {
        uri: uri.clone(),
        prefix: format!("nt-{}", &simple[..8]),
    };
    m.accept(&p.admin, &id, Some(json!({"datacenter": "capri"})))
        .await;
    let v = m.wait_vi_for(&p.alice, &id, "deploying", 2400).await;
    assert_eq!(v["state"], "running", "{v}");
    let home = v["addresses"]["home_addresses"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    // The outside: a namespace on the public network's bridge, holding
    // the datacenter's router address.
    let bridge = virsh(&uri, &["net-info", "public"])
        .lines()
        .find_map(|l| l.strip_prefix("Bridge:").map(|b| b.trim().to_owned()))
        .expect("the public network");
    let tag = std::process::id() % 100_000;
    let ns = Netns(format!("ntnat{tag}"));
    let (outer, inner) = (format!("ntnat{tag}h"), format!("ntnat{tag}n"));
    ip(&["netns", "add", &ns.0]);
    ip(&[
        "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns.0,
    ]);
    ip(&["link", "set", &outer, "master", &bridge, "up"]);
    ip(&[
        "-n",
        &ns.0,
        "addr",
        "add",
        "203.0.113.254/24",
        "dev",
        &inner,
    ]);
    ip(&["-n", &ns.0, "link", "set", &inner, "up"]);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);

    // The backend reaches the outside through the NAT node.
    let web = Console::login(&m, &p.alice, &id, "web", "alice", "tiny-secret").await;
    assert!(
        web.run("/bin/ping -c 2 -W 5 203.0.113.254 >/dev/null")
            .await,
        "the backend pings the outside through the NAT node"
    );
    // A correspondent outside reaches the entry point's web server at its
    // Home Address.
    let mut page = String::new();
    let mut why = String::new();
    for _ in 0..20 {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "python3", "-c"])
            .arg("import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")
            .arg(format!("http://{home}/"))
            .output()
            .unwrap();
        page = String::from_utf8_lossy(&out.stdout).into_owned();
        why = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        page.contains("gw"),
        "the entry point's page at {home}: {page:?} ({why})\n{}",
        Console::login(&m, &p.alice, &id, "gw", "alice", "tiny-secret")
            .await
            .output("ip -o addr show dev eth0; ip route")
            .await
    );

    let v = m.act(&p.alice, &id, "terminate", "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
}
