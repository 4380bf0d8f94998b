//! Service Switching through the Manager: each datacenter's Edge Service
//! Switch registered and driven for real (switch daemons in this process,
//! on 127.0.0.1, with the simulated data plane), a VI moved live between
//! datacenters and back, an owner's request, a move that fails and rolls
//! back, drift repaired.

use std::net::{Ipv4Addr, SocketAddr};

use neptune_hypervisor::sim::Fault;
use neptune_hypervisor::{Hypervisor as _, Op};
use neptune_switch::auth::SwitchKey;
use neptune_switch::client::ControlClient;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{People, TestManager, SHOP};

/// A switch daemon of the test, and a client holding its key.
pub(crate) struct TestSwitch {
    pub url: String,
    pub key_file: String,
    pub care_of: Ipv4Addr,
    pub client: ControlClient,
}

impl TestSwitch {
    /// Its table, as `GET /v1/state` answers it.
    pub(crate) fn table(&self) -> Value {
        let reply = self.client.call("GET", "/v1/state", "").unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let state: Value = serde_json::from_str(&reply.body).unwrap();
        state["table"].clone()
    }
}

/// Starts a switch for `prefix` with care-of `198.18.0.<n>`, peers the
/// other care-of addresses of the domain.
pub(crate) async fn start_switch(
    m: &TestManager,
    name: &str,
    n: u8,
    prefix: &str,
    peers: &[u8],
) -> TestSwitch {
    let dir = m.dir.path().join("switches");
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join(format!("{name}.key"));
    let key: String = (0..32).map(|i| format!("{:02x}", i * 7 + n)).collect();
    std::fs::write(&key_file, &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen: SocketAddr = listener.local_addr().unwrap();
    let care_of = Ipv4Addr::new(198, 18, 0, n);
    let config = neptune_switch::SwitchConfig {
        name: format!("ess-{name}"),
        listen,
        state_file: dir.join(format!("{name}.table.json")),
        key_file: key_file.clone(),
        care_of,
        home_prefixes: vec![prefix.parse().unwrap()],
        peers: peers
            .iter()
            .map(|p| Ipv4Addr::new(198, 18, 0, *p))
            .collect(),
        data_plane: neptune_switch::config::DataPlaneConfig::Simulated,
        max_clock_skew_secs: 30,
        reconcile_secs: 1,
    };
    tokio::spawn(neptune_switch::serve(
        config,
        listener,
        std::future::pending(),
    ));
    let client = ControlClient::new(
        listen,
        SwitchKey::from_hex_file_contents(key.as_bytes()).unwrap(),
    );
    TestSwitch {
        url: format!("http://{listen}"),
        key_file: key_file.display().to_string(),
        care_of,
        client,
    }
}

/// Two datacenters, napoli (home, 192.0.2.0/24) and roma
/// (198.51.100.0/24), each with two hosts and its switch registered.
pub(crate) async fn two_datacenters(m: &TestManager) -> (People, TestSwitch, TestSwitch) {
    let p = m.people().await;
    let (s, v) = m
        .post(
            &p.admin,
            "/api/v1/datacenters",
            Some(json!({"name": "roma", "home_pools": ["198.51.100.0/24"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    m.infrastructure(&p.admin, 2, 16).await;
    // Roma's hosts are machines of their own: links between the
    // datacenters are tunnels to them.
    for i in 0..2 {
        let body = json!({"datacenter": "roma", "name": format!("roma{i}"), "agent_url": format!("http://127.0.0.{}:9", 5 + i),
            "cpus": 64, "ram_mib": 65536, "disk_mib": 1 << 20, "vm_slots": 16});
        let (s, v) = m.post(&p.admin, "/api/v1/hosts", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let napoli = start_switch(m, "napoli", 1, "192.0.2.0/24", &[2]).await;
    let roma = start_switch(m, "roma", 2, "198.51.100.0/24", &[1]).await;
    for (dc, sw) in [("napoli", &napoli), ("roma", &roma)] {
        let (s, v) = m
            .call(
                Method::PUT,
                &format!("/api/v1/datacenters/{dc}/switch"),
                Some(&p.admin),
                Some(json!({"url": sw.url, "key_file": sw.key_file,
                    "care_of": sw.care_of.to_string(), "port": "dc-public"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["reachable"], true, "{v}");
    }
    (p, napoli, roma)
}

/// Alice's shop, requested, accepted in napoli and running: its id and
/// detail.
async fn running_shop(m: &TestManager, p: &People) -> (String, Value) {
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = vi["id"].as_str().unwrap().to_owned();
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/request"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    m.accept(&p.admin, &id, Some(json!({"datacenter": "napoli"})))
        .await;
    let running = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(running["state"], "running", "{running}");
    (id, running)
}

/// `POST /api/v1/vis/{id}/migrate {"to": to}` as `token`.
async fn migrate(m: &TestManager, token: &str, id: &str, to: &str) -> (StatusCode, Value) {
    m.post(
        token,
        &format!("/api/v1/vis/{id}/migrate"),
        Some(json!({ "to": to })),
    )
    .await
}

fn hosts_of(vi: &Value) -> Vec<String> {
    let mut hosts: Vec<String> = vi["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["host"].as_str().unwrap().to_owned())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// A registration is checked against the switch before it is kept.
pub(crate) async fn switches_are_registered_by_administrators(m: &TestManager) {
    let (p, napoli, _roma) = two_datacenters(m).await;
    let put = |token: &str, body: Value| {
        let token = token.to_owned();
        async move {
            m.call(
                Method::PUT,
                "/api/v1/datacenters/napoli/switch",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let good = json!({"url": napoli.url, "key_file": napoli.key_file,
        "care_of": napoli.care_of.to_string(), "port": "dc-public"});
    let (s, v) = put(&p.alice, good.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // A key the switch does not share.
    let wrong = m.dir.path().join("wrong.key");
    std::fs::write(&wrong, "00112233445566778899aabbccddeeff").unwrap();
    let mut body = good.clone();
    body["key_file"] = json!(wrong.display().to_string());
    let (s, v) = put(&p.admin, body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("signed"), "{v}");
    assert!(
        !v.to_string().contains("00112233"),
        "the key never shows: {v}"
    );
    // A key file that is not hex.
    std::fs::write(&wrong, "not a key").unwrap();
    let (s, v) = put(&p.admin, {
        let mut b = good.clone();
        b["key_file"] = json!(wrong.display().to_string());
        b
    })
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("hex"), "{v}");
    // Another care-of address than the switch's.
    let mut body = good.clone();
    body["care_of"] = json!("198.18.0.9");
    let (s, v) = put(&p.admin, body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("198.18.0.1"), "{v}");
    // Not a URL of an address; nobody there.
    for (url, status) in [
        ("http://ess-napoli:7400", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://127.0.0.1:9", StatusCode::CONFLICT),
    ] {
        let mut body = good.clone();
        body["url"] = json!(url);
        let (s, v) = put(&p.admin, body).await;
        assert_eq!(s, status, "{url}: {v}");
    }
    // A switch that is not the home switch of the datacenter's pool.
    let (s, v) = m
        .call(
            Method::PUT,
            "/api/v1/datacenters/roma/switch",
            Some(&p.admin),
            Some(good.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("198.51.100.0/24"),
        "{v}"
    );
    // Listed, and forgotten.
    let (s, v) = m
        .call(Method::GET, "/api/v1/switches", Some(&p.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let listed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["datacenter"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["napoli", "roma"], "{v}");
    let (s, _) = m
        .call(Method::GET, "/api/v1/switches", Some(&p.alice), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = m
        .call(
            Method::DELETE,
            "/api/v1/datacenters/roma/switch",
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = m
        .call(
            Method::DELETE,
            "/api/v1/datacenters/roma/switch",
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Only a running or suspended VI moves.
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = vi["id"].as_str().unwrap().to_owned();
    let (s, v) = migrate(m, &p.admin, &id, "roma").await;
    assert_eq!(
        (s, v["message"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("cannot migrate a VI that is defined: only a running or suspended VI can be migrated")
        ),
        "{v}"
    );
}

/// A running VI moves live napoli -> roma -> napoli: same addresses, its
/// VMs on the other datacenter's hosts and nowhere else, its Home Address
/// delivered by the switch of the datacenter it runs in and bound at home
/// while it is away; its owner asks first, an administrator moves it.
pub(crate) async fn a_vi_moves_between_datacenters_and_back(m: &TestManager) {
    let (p, napoli, roma) = two_datacenters(m).await;
    let (id, running) = running_shop(m, &p).await;
    assert_eq!(running["location"], "napoli");
    let home = "192.0.2.10";
    // Delivered at home, tunnelled from nowhere.
    let t = napoli.table();
    assert_eq!(t["visitors"][home]["vi"], json!(id), "{t}");
    assert_eq!(t["visitors"][home]["port"], "dc-public");
    assert!(t["bindings"].as_object().unwrap().is_empty(), "{t}");
    assert!(roma.table()["visitors"].as_object().unwrap().is_empty());

    // The owner asks; an administrator sees the request and the plan.
    let (s, v) = migrate(m, &p.alice, &id, "roma").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "running");
    assert_eq!(v["migration_request"]["to"], "roma", "{v}");
    assert_eq!(v["migration_request"]["requested_by"], "alice");
    let (s, v) = migrate(m, &p.alice, &id, "roma").await;
    assert_eq!(s, StatusCode::CONFLICT, "one request at a time: {v}");
    let (s, v) = migrate(m, &p.bob, &id, "roma").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not bob's: {v}");
    let (_, requests) = m
        .call(
            Method::GET,
            "/api/v1/migration-requests",
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(requests[0]["vi"], json!(id), "{requests}");
    let (s, plan) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}/migrate/plan?to=roma"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["from"], "napoli");
    assert_eq!(plan["plan"]["datacenter"], "roma");
    assert_eq!(plan["split_mbps"], 1000, "{plan}");
    assert_eq!(plan["copy_mib"], 256 + 1536 + 2 * (512 + 4096), "{plan}");
    assert_eq!(plan["bound_addresses"], json!([home]));
    for vm in plan["plan"]["vms"].as_array().unwrap() {
        assert!(vm["host"].as_str().unwrap().starts_with("roma"), "{plan}");
    }
    let (s, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}/migrate/plan?to=napoli"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "it is there already: {v}");

    // Granted: moved live.
    let addresses = running["addresses"].clone();
    let (s, v) = migrate(m, &p.admin, &id, "roma").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "migrating", "{v}");
    assert_eq!(
        v["migration_request"],
        Value::Null,
        "the request is granted"
    );
    let moved = m.wait_vi(&p.alice, &id, "migrating").await;
    assert_eq!(moved["state"], "running", "{moved}");
    let job = moved["jobs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("migrate"), Some("succeeded")),
        "{job}"
    );
    assert_eq!(hosts_of(&moved)[0].get(..4), Some("roma"), "{moved}");
    assert!(hosts_of(&moved).iter().all(|h| h.starts_with("roma")));
    assert_eq!(moved["addresses"], addresses, "every address is kept");
    assert_eq!(moved["location"], "roma");
    assert_eq!(moved["home_datacenter"], "napoli");
    assert_eq!(
        moved["bindings"],
        json!([{"address": home, "datacenter": "roma", "care_of": "198.18.0.2"}])
    );
    // While it was split, napoli's hosts flooded the VI's link to the roma
    // hosts its VMs went to, and every VM arrived there on a segment
    // reaching the hosts of both sides.
    let joined: Vec<String> = ["host0", "host1"]
        .iter()
        .flat_map(|h| m.sims.sim(h).joins())
        .flatten()
        .flat_map(|j| j.segment.map(|s| s.peers).unwrap_or_default())
        .map(|p| p.ip().to_string())
        .collect();
    assert!(!joined.is_empty(), "the source hosts joined the segment");
    assert!(
        joined
            .iter()
            .all(|ip| ip == "127.0.0.5" || ip == "127.0.0.6"),
        "{joined:?}"
    );
    // The VMs run on roma's hosts only, every one once; napoli's hosts
    // hold nothing of the VI.
    let mut on_roma = Vec::new();
    for h in ["roma0", "roma1"] {
        on_roma.extend(
            m.sims
                .sim(h)
                .list()
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.name),
        );
    }
    for h in ["host0", "host1"] {
        assert!(m.sims.sim(h).list().await.unwrap().is_empty(), "{h}");
        assert_eq!(
            std::fs::read_dir(m.sims.sim(h).root().join("disks")).map_or(0, |d| d.count()),
            0,
            "{h}'s disks are removed"
        );
    }
    on_roma.sort();
    assert_eq!(on_roma.len(), 3, "{on_roma:?}");
    assert_eq!(m.vms_everywhere().await, on_roma);
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    for h in hosts.as_array().unwrap() {
        let used = h["used_slots"].as_i64().unwrap();
        if h["name"].as_str().unwrap().starts_with("host") {
            assert_eq!(used, 0, "napoli's slots are freed: {h}");
        }
    }
    // Bound at home to roma's care-of; delivered in roma, not in napoli.
    let t = napoli.table();
    assert_eq!(t["bindings"][home]["care_of"], "198.18.0.2", "{t}");
    assert_eq!(t["bindings"][home]["vi"], json!(id));
    assert!(t["visitors"].get(home).is_none(), "{t}");
    let r = roma.table();
    assert_eq!(r["visitors"][home]["vi"], json!(id), "{r}");
    assert!(r["bindings"].as_object().unwrap().is_empty());

    // Back home: the binding goes, napoli delivers again.
    let (s, v) = migrate(m, &p.admin, &id, "napoli").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let back = m.wait_vi(&p.alice, &id, "migrating").await;
    assert_eq!(back["state"], "running", "{back}");
    assert!(
        hosts_of(&back).iter().all(|h| h.starts_with("host")),
        "{back}"
    );
    assert_eq!(back["location"], "napoli");
    assert_eq!(back["bindings"], json!([]));
    assert_eq!(back["addresses"], addresses);
    let t = napoli.table();
    assert!(t["bindings"].get(home).is_none(), "{t}");
    assert_eq!(t["visitors"][home]["vi"], json!(id), "{t}");
    assert!(roma.table()["visitors"].get(home).is_none());
    // Generations only grew: every update of the address was newer.
    assert!(
        t["removed_bindings"][home]["generation"].as_u64().unwrap() >= 3,
        "{t}"
    );

    // Terminated: no switch knows the address any more.
    let done = m.act(&p.alice, &id, "terminate", "terminating").await;
    assert_eq!(done["state"], "terminated", "{done}");
    for table in [napoli.table(), roma.table()] {
        assert!(table["visitors"].get(home).is_none(), "{table}");
        assert!(table["bindings"].get(home).is_none(), "{table}");
    }
    assert!(m.vms_everywhere().await.is_empty());
}

/// A move that fails part way (the second VM cannot arrive) rolls back:
/// the VM that moved comes back, the target slots are freed, the switches
/// hold what they held.
pub(crate) async fn a_failed_move_rolls_back(m: &TestManager) {
    let (p, napoli, roma) = two_datacenters(m).await;
    let (id, running) = running_shop(m, &p).await;
    let before_hosts = hosts_of(&running);
    let before = m.vms_everywhere().await;
    let napoli_table = napoli.table();
    for h in ["roma0", "roma1"] {
        m.sims
            .sim(h)
            .add_fault(Fault::always(Op::Incoming).for_vm("web2"));
    }
    let (s, v) = migrate(m, &p.admin, &id, "roma").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let after = m.wait_vi_for(&p.alice, &id, "migrating", 4000).await;
    assert_eq!(after["state"], "running", "{after}");
    let job = after["jobs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(job["state"], "rolled_back", "{job}");
    assert!(job["error"].as_str().unwrap().contains("web2"), "{job}");
    assert_eq!(hosts_of(&after), before_hosts);
    assert_eq!(after["location"], "napoli");
    assert_eq!(m.vms_everywhere().await, before);
    for h in ["roma0", "roma1"] {
        assert!(m.sims.sim(h).list().await.unwrap().is_empty(), "{h}");
    }
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    for h in hosts.as_array().unwrap() {
        if h["name"].as_str().unwrap().starts_with("roma") {
            assert_eq!(h["used_slots"], 0, "the target slots are freed: {h}");
        }
    }
    let t = napoli.table();
    assert_eq!(t["visitors"], napoli_table["visitors"], "{t}");
    assert!(t["bindings"].as_object().unwrap().is_empty(), "{t}");
    assert!(roma.table()["visitors"].as_object().unwrap().is_empty());
}

/// A binding whose generation the switch has passed (here: a binding
/// removed by hand far ahead) is sent again above the switch's, and the VI
/// is bound all the same. Its generation is taken before it is sent; a
/// live move prepares it before the move and sends it when the guest
/// resumes (the libvirt namespace test), the simulated adapter's VM runs
/// in the target only once its move is done, so here it is prepared and
/// sent then: the same `switching::send` either way.
pub(crate) async fn a_stale_binding_is_sent_above_the_switchs(m: &TestManager) {
    let (p, napoli, _roma) = two_datacenters(m).await;
    let (id, _) = running_shop(m, &p).await;
    let home = "192.0.2.10";
    let reply = napoli.client.delete_binding(home, 5000).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (s, v) = migrate(m, &p.admin, &id, "roma").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let moved = m.wait_vi(&p.alice, &id, "migrating").await;
    assert_eq!(moved["state"], "running", "{moved}");
    assert_eq!(moved["location"], "roma", "{moved}");
    let t = napoli.table();
    assert_eq!(t["bindings"][home]["care_of"], "198.18.0.2", "{t}");
    assert!(
        t["bindings"][home]["generation"].as_u64().unwrap() > 5000,
        "sent again above the switch's: {t}"
    );
}

/// What drifts on a switch (an entry deleted or changed by hand, a switch
/// registered after the VI deployed) is put back by a reconcile pass.
pub(crate) async fn switch_drift_is_repaired(m: &TestManager) {
    let (p, napoli, _roma) = two_datacenters(m).await;
    let (id, _) = running_shop(m, &p).await;
    let home = "192.0.2.10";
    // Deleted by hand (with a generation far ahead), and a stray binding
    // of the VI added.
    let reply = napoli.client.delete_visitor(home, 1000).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = napoli
        .client
        .put_binding(home, "198.18.0.2", &id, 0, 1001)
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (s, report) = m.post(&p.admin, "/api/v1/reconcile", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["switch_entries_applied"], 1, "{report}");
    assert_eq!(report["switch_entries_removed"], 1, "{report}");
    assert_eq!(report["switches_unreachable"], 0, "{report}");
    let t = napoli.table();
    assert_eq!(t["visitors"][home]["vi"], json!(id), "{t}");
    assert!(
        t["visitors"][home]["generation"].as_u64().unwrap() > 1000,
        "caught up with the switch's generation: {t}"
    );
    assert!(t["bindings"].get(home).is_none(), "{t}");
    // Nothing left to repair.
    let (_, report) = m.post(&p.admin, "/api/v1/reconcile", None).await;
    assert_eq!(
        (
            report["switch_entries_applied"].as_u64(),
            report["switch_entries_removed"].as_u64()
        ),
        (Some(0), Some(0)),
        "{report}"
    );
}
