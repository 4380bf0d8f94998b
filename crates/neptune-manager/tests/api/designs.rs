//! Designs of VIs as users submit them: their validation, the quotas a
//! request is held to (private addresses too), pinned MACs, and OS
//! passwords kept only as hashes.

use super::*;

pub(crate) async fn designs_are_validated(m: &TestManager) {
    let p = m.people().await;
    let alice = m.client(&p.alice);
    let xml =
        r#"<topology id="x"><nodes><node id="a"><ram dimension="lots"/></node></nodes></topology>"#;
    let e = refused(
        alice
            .create_vi(&api::ViDesign::new(api::DesignSource::Xml(xml.to_owned())))
            .await,
    );
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e.code, "invalid_topology");
    let details: Vec<&str> = e.details.iter().map(String::as_str).collect();
    assert!(
        details.contains(&"1:54: \"dimension\" of <ram>: \"lots\" is not a number"),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("missing element <hd>")),
        "{details:?}"
    );
    // No design at all: a body the client cannot even express.
    let (s, v) = m
        .call(Method::POST, "/api/v1/vis", Some(&p.alice), Some(json!({})))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request"))
    );
    let e = refused(alice.create_vi(&catalogue("ring", 2)).await);
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e.message.contains("between 3 and"), "{e:?}");
    // The JSON form works too, and its password stays write-only (read as
    // sent: raw HTTP).
    let topo = json!({"id": "j", "nodes": [{"id": "a", "ram": 128, "disk": 1024, "os": {"password": "topsecret"}}]});
    let vi = m
        .create_vi(&p.alice, json!({"topology": topo, "name": "from json"}))
        .await;
    assert_eq!(vi["name"], "from json");
    assert_eq!(vi["topology"]["nodes"][0]["os"]["password_set"], true);
    assert!(!vi.to_string().contains("topsecret"));
    // Garbage JSON bodies get a clear 4xx, not a crash.
    let resp = m
        .http
        .post(format!("{}/api/v1/vis", m.base))
        .bearer_auth(&p.alice)
        .body("{nope")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
}

pub(crate) async fn quotas_are_enforced(m: &TestManager) {
    let admin = m.login("admin", ADMIN_PASSWORD).await;
    let quota = json!({"vms": 3, "vcpus": 100, "ram_mib": 100000, "public_addresses": 5});
    m.client(&admin)
        .create_user(&new_user("carol", "carol-password", Some(quota)))
        .await
        .unwrap();
    let carol_token = m.login("carol", "carol-password").await;
    let carol = m.client(&carol_token);
    let small = m
        .create_vi(
            &carol_token,
            json!({"catalogue": {"kind": "line", "nodes": 2}}),
        )
        .await;
    let big = m
        .create_vi(
            &carol_token,
            json!({"catalogue": {"kind": "line", "nodes": 2}}),
        )
        .await;
    let id = |vi: &Value| -> ViId { vi["id"].as_str().unwrap().parse().unwrap() };
    carol.act(id(&small), "request").await.unwrap();
    let e = refused(carol.act(id(&big), "request").await);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded"),
        "{e:?}"
    );
    assert_eq!(e.message, "this would bring carol to 4 VMs; the quota is 3");
}

/// Every stored design, as the database returns it.
async fn stored_designs(m: &TestManager) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&m.url).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT design_xml FROM vis")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(x,)| x)
        .collect::<Vec<_>>()
        .join("\n")
}

/// OS passwords of designs are kept as their hashes only: in answers and in
/// the store (read as they are: raw HTTP and the database's rows).
pub(crate) async fn os_passwords_are_kept_hashed(m: &TestManager) {
    let p = m.people().await;
    // Figure 3's node0 has the OS password "antoxps".
    let fig3 = include_str!("../../../neptune-topology/testdata/fig3.xml");
    let vi = m.create_vi(&p.alice, json!({"xml": fig3})).await;
    assert!(!vi.to_string().contains("antoxps"), "{vi}");
    // In the store, only its SHA-512-crypt hash.
    let stored = stored_designs(m).await;
    assert!(stored.contains("password=\"$6$"), "the hash is stored");
    assert!(
        !stored.contains("antoxps"),
        "the password is stored in clear"
    );
    // SQLite's files too (the database and its write-ahead log).
    if let Some(db) = m.url.strip_prefix("sqlite://") {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            bytes.extend(std::fs::read(format!("{db}{suffix}")).unwrap_or_default());
        }
        assert!(!String::from_utf8_lossy(&bytes).contains("antoxps"));
    }
    // A design given with a hash already keeps it as it is.
    let hash = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
    let with_hash = fig3.replace("password=\"antoxps\"", &format!("password=\"{hash}\""));
    m.create_vi(&p.bob, json!({"xml": with_hash})).await;
    assert!(stored_designs(m).await.contains(hash));
}

pub(crate) async fn private_addresses_are_a_quota(m: &TestManager) {
    let admin = m.login("admin", ADMIN_PASSWORD).await;
    let quota = json!({"vms": 200, "vcpus": 200, "ram_mib": 1_000_000, "public_addresses": 10,
        "private_addresses": 300});
    m.client(&admin)
        .create_user(&new_user("dave", "dave-password", Some(quota)))
        .await
        .unwrap();
    let dave = m.login("dave", "dave-password").await;
    let pinned = |subnet: &str| {
        let mut d = line_design(2, 512);
        d["topology"]["links"][0]["subnet"] = json!(subnet);
        d
    };
    let request = |vi: Value| {
        let client = m.client(&dave);
        async move {
            let id: ViId = vi["id"].as_str().unwrap().parse().unwrap();
            client.act(id, "request").await
        }
    };
    // Half the private pool for a link of two VMs: refused, as it says.
    let greedy = m.create_vi(&dave, pinned("10.128.0.0/9")).await;
    let e = refused(request(greedy).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert!(e.message.contains("a pin may hold at most 256"), "{e:?}");
    // A /24 pin counts 256 addresses, a line of two its /31.
    let fair = m.create_vi(&dave, pinned("10.9.9.0/24")).await;
    request(fair).await.unwrap();
    let small = m
        .create_vi(&dave, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    request(small).await.unwrap();
    // A LAN of 100 needs a /25: past the quota of 300.
    let lan = m
        .create_vi(
            &dave,
            json!({"catalogue": {"kind": "cluster", "nodes": 100}}),
        )
        .await;
    let e = refused(request(lan).await);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded"),
        "{e:?}"
    );
    assert_eq!(
        e.message,
        "this would bring dave to 386 private addresses; the quota is 300"
    );
}

/// A pair of VMs on a point-to-point link, the first NIC's MAC pinned
/// (unless `mac` is empty).
fn pinned_mac_design(mac: &str) -> Value {
    let mut eth0 = json!({"name": "eth0"});
    if !mac.is_empty() {
        eth0["mac"] = json!(mac);
    }
    json!({"topology": {"id": "pinned", "nodes": [
        {"id": "a", "ram": 64, "disk": 1, "interfaces": [eth0]},
        {"id": "b", "ram": 64, "disk": 1, "interfaces": [{"name": "eth0"}]}],
        "links": [{"id": "ab", "type": "point_to_point", "bandwidth": 10,
            "endpoints": [{"node": "a", "interface": "eth0"}, {"node": "b", "interface": "eth0"}]}]}})
}

pub(crate) async fn pinned_macs_are_unique_in_the_domain(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 10).await;
    let first = m
        .requested_vi(&p.alice, pinned_mac_design("1E:87:3F:D6:E7:8D"))
        .await;
    m.accept(&p.admin, &first, None).await;
    // Alice's second VI pins the same MAC: refused, naming her VI.
    let again = m
        .requested_vi(&p.alice, pinned_mac_design("1e:87:3f:d6:e7:8d"))
        .await;
    let admin = m.client(&p.admin);
    let planned = api::AcceptRequest::default();
    let accept = |id: &str| admin.accept(id.parse().unwrap(), &planned);
    let e = refused(accept(&again).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    let message = &e.message;
    assert!(
        message.starts_with("MAC 1e:87:3f:d6:e7:8d is pinned in the design and VI "),
        "{message}"
    );
    assert!(message.contains(&first), "{message}");
    // Nothing of the refused VI is held: it is still requested.
    let v = m.client(&p.alice).vi(again.parse().unwrap()).await.unwrap();
    assert_eq!(v.vi.state, ViState::Requested, "{v:?}");
    // A pin in Neptune's own range is refused as such.
    let ours = m
        .requested_vi(&p.bob, pinned_mac_design("02:4E:0A:00:00:01"))
        .await;
    let e = refused(accept(&ours).await);
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{e:?}");
    assert!(
        e.message.contains("a/eth0 pins MAC 02:4E:0A:00:00:01"),
        "{e:?}"
    );
    // Once the holder is terminated, the MAC is free again.
    m.wait_vi(&p.alice, &first, "deploying").await;
    m.act(&p.alice, &first, "terminate", "terminating").await;
    m.accept(&p.admin, &again, None).await;
    // Beside it, a VI with no pins: every NIC of the domain has its own
    // MAC, and each guest's seed matches its NICs by them.
    let other = m.requested_vi(&p.bob, pinned_mac_design("")).await;
    m.accept(&p.admin, &other, None).await;
    m.wait_vi(&p.alice, &again, "deploying").await;
    m.wait_vi(&p.bob, &other, "deploying").await;
    let mut macs = std::collections::HashSet::new();
    for host in ["host0", "host1"] {
        for vm in m.sims.sim(host).list().await.unwrap() {
            let seed = vm.spec.seed.as_ref().expect("every VM has its seed");
            for nic in &vm.spec.nics {
                assert!(macs.insert(nic.mac.clone()), "{} twice", nic.mac);
                assert!(
                    seed.network_config
                        .contains(&format!("macaddress: \"{}\"", nic.mac)),
                    "{}",
                    seed.network_config
                );
            }
        }
    }
    assert_eq!(macs.len(), 4);
    assert!(macs.contains("1e:87:3f:d6:e7:8d"), "{macs:?}");
}
