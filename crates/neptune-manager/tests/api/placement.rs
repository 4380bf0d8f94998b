//! Placement and its plan preview: hosts' capacity and uplinks are never
//! exceeded, parallel accepts share them, LANs fit hosts' uplinks.

use super::*;

/// 200 VIs accepted in parallel: every one placed, no address given twice,
/// no host over capacity.
pub(crate) async fn many_parallel_accepts(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 10, 50).await;
    let quota = json!({"vms": 1000, "vcpus": 1000, "ram_mib": 10_000_000,
        "public_addresses": 1000, "designs": 1000});
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&p.admin),
            Some(
                json!({"name": "big", "password": "big-password", "role": "user", "quota": quota}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let big = m.login("big", "big-password").await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let owner = &big;
        let vi = m
            .create_vi(
                owner,
                json!({"catalogue": {"kind": "nat-backends", "nodes": 2}}),
            )
            .await;
        let id = vi["id"].as_str().unwrap().to_owned();
        let (s, v) = m
            .call(
                Method::POST,
                &format!("/api/v1/vis/{id}/request"),
                Some(owner),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push(id);
    }
    let mut tasks = Vec::new();
    for id in &ids {
        let (http, url, token) = (
            m.http.clone(),
            format!("{}/api/v1/vis/{id}/accept", m.base),
            p.admin.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let resp = http.post(url).bearer_auth(token).send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut addresses = std::collections::HashSet::new();
    let mut blocks = Vec::new();
    for id in &ids {
        let v = m.wait_vi(&p.admin, id, "deploying").await;
        assert_eq!(v["state"], "running", "{v}");
        for i in v["addresses"]["interfaces"].as_array().unwrap() {
            let a = i["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_owned();
            assert!(addresses.insert(a.clone()), "address {a} given twice");
        }
        let h = v["addresses"]["home_addresses"][0]["address"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(addresses.insert(h.clone()), "Home Address {h} given twice");
        blocks.push(v["addresses"]["block"].as_str().unwrap().to_owned());
    }
    blocks.sort();
    blocks.dedup();
    assert_eq!(blocks.len(), 200, "every VI has its own block");
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    let mut placed = 0;
    for h in hosts.as_array().unwrap() {
        assert!(h["used_slots"].as_i64() <= h["vm_slots"].as_i64(), "{h}");
        assert!(h["used_vcpus"].as_i64() <= h["cpus"].as_i64(), "{h}");
        assert!(h["used_ram_mib"].as_i64() <= h["ram_mib"].as_i64(), "{h}");
        placed += h["used_slots"].as_i64().unwrap();
    }
    assert_eq!(placed, 400);
    assert_eq!(m.vms_everywhere().await.len(), 400);
}

/// A LAN is a shared segment: a 40-member one at 100 Mbit/s spread over
/// hosts of 10 Gbit/s uplinks fits (as a clique it needed 51 200 Mbit/s of
/// one uplink), and each host's reservation bounds what really crosses it.
pub(crate) async fn a_lan_fits_hosts_uplinks(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 0, 3).await;
    for i in 0..4 {
        let body = json!({"datacenter": "napoli", "name": format!("h{i}"), "agent_url": "http://127.0.0.1:9",
            "cpus": 64, "ram_mib": 65536, "disk_mib": 1 << 20, "vm_slots": 12, "uplink_mbps": 10_000});
        let (s, v) = m.post(&p.admin, "/api/v1/hosts", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let id = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "nat-backends", "nodes": 40, "bandwidth": 100}}),
        )
        .await;
    let (_, plan) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}/plan"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(plan["admissible"], true, "{}", plan["cut_mbps"]);
    // 39 backends on the gateway's LAN, 12 per host: at most 39 cross.
    let cut = plan["cut_mbps"].as_u64().unwrap();
    assert!(cut <= 3900, "{cut}");
    // Too large to be proven: a lower bound and the gap it leaves.
    assert_eq!(plan["optimal"], false);
    let bound = plan["lower_bound_mbps"].as_u64().unwrap();
    assert!(bound <= cut && bound > 0, "{bound} {cut}");
    let gap = plan["gap"].as_f64().unwrap();
    assert!(
        (gap - (cut - bound) as f64 / cut as f64).abs() < 1e-9,
        "{gap}"
    );
    // A small VI's plan is proven the best.
    let small = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "ring", "nodes": 24}}),
        )
        .await;
    let (_, small_plan) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{small}/plan"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(
        (small_plan["optimal"].as_bool(), small_plan["gap"].as_f64()),
        (Some(true), Some(0.0)),
        "{}",
        small_plan["cut_mbps"]
    );
    assert_eq!(small_plan["lower_bound_mbps"], small_plan["cut_mbps"]);
    m.accept(&p.admin, &id, None).await;
    let v = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(v["state"], "running");
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    for h in hosts.as_array().unwrap() {
        let used = h["used_uplink_mbps"].as_i64().unwrap();
        let members = v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["host"] == h["name"])
            .count() as i64;
        // Never below what the LAN can put on the uplink: 100 x min(k, 40 - k).
        assert!(
            used >= 100 * members.min(40 - members),
            "{}: {used} for {members}",
            h["name"]
        );
        assert!(used <= 10_000, "{}: {used}", h["name"]);
    }
}

pub(crate) async fn capacity_is_never_exceeded(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 3).await;
    let a = m
        .create_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let b = m
        .create_vi(&p.bob, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    for (vi, t) in [(&a, &p.alice), (&b, &p.bob)] {
        m.call(
            Method::POST,
            &format!("/api/v1/vis/{}/request", vi["id"].as_str().unwrap()),
            Some(t),
            None,
        )
        .await;
    }
    let (s, _) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{}/accept", a["id"].as_str().unwrap()),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{}/accept", b["id"].as_str().unwrap()),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("nothing fits"),
        "{v}"
    );
    let (_, still) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{}", b["id"].as_str().unwrap()),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!(
        still["state"], "requested",
        "a refused accept changes nothing"
    );
    // A manual map that overfills the host is refused with the reason.
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{}/accept", b["id"].as_str().unwrap()),
            Some(&p.admin),
            Some(json!({"placement": {"node0": "host0", "node1": "ghost"}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("\"ghost\" is not a ready host"),
        "{v}"
    );
}

/// Hosts register their uplinks; placement keeps each VI's traffic between
/// hosts within them, the store reserves it, and a VI that cannot fit is
/// refused with the reason.
pub(crate) async fn uplinks_limit_acceptance(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 0, 3).await;
    for (name, uplink) in [("wide0", 150), ("wide1", 150), ("thin0", 50), ("thin1", 50)] {
        let body = json!({"datacenter": "napoli", "name": name, "agent_url": "http://127.0.0.1:9",
            "cpus": 64, "ram_mib": 65536, "disk_mib": 1 << 20, "vm_slots": 3, "uplink_mbps": uplink});
        let (s, v) = m.post(&p.admin, "/api/v1/hosts", Some(body)).await;
        assert_eq!(
            (s, v["uplink_mbps"].as_i64()),
            (StatusCode::OK, Some(uplink)),
            "{v}"
        );
    }
    // A line of 6 VMs over two hosts of 3 slots cuts one 100 Mbit/s link,
    // which only the wide hosts' uplinks can carry.
    let first = m.running_vi(&p, "line", 6).await;
    let (_, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{first}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert!(
        v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|vm| vm["host"].as_str().unwrap().starts_with("wide")),
        "{v}"
    );
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    let used = |name: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap()["used_uplink_mbps"]
            .as_i64()
            .unwrap()
    };
    assert_eq!((used("wide0"), used("wide1"), used("thin0")), (100, 100, 0));

    // The next one would have to cross the thin uplinks: refused, nothing reserved.
    let id = m
        .requested_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 6}}))
        .await;
    let (_, plan) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}/plan"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(plan["admissible"], false, "{plan}");
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("uplinks"), "{v}");
    assert_eq!(m.used_slots(&p.admin).await, 6);

    // Terminating the first frees its share of the uplinks.
    m.post(&p.alice, &format!("/api/v1/vis/{first}/terminate"), None)
        .await;
    m.wait_vi(&p.alice, &first, "terminating").await;
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["used_uplink_mbps"] == 0),
        "{hosts}"
    );
}
