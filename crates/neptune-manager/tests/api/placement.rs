//! Placement and its plan preview: hosts' capacity and uplinks are never
//! exceeded, parallel accepts share them, LANs fit hosts' uplinks.

use super::*;

/// Accepts in three datacenters at once draw addresses from the same
/// private pools: every one succeeds (none is refused for an address
/// another took meanwhile), and no address is given twice.
pub(crate) async fn parallel_accepts_across_datacenters(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 4, 50).await;
    for (dc, pool) in [("roma", "198.51.100.0/24"), ("milano", "203.0.113.0/24")] {
        let (s, v) = m
            .post(
                &p.admin,
                "/api/v1/datacenters",
                Some(json!({"name": dc, "home_pools": [pool]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        for i in 0..4 {
            let body = json!({"datacenter": dc, "name": format!("{dc}{i}"), "agent_url": "http://127.0.0.1:9",
                "cpus": 64, "ram_mib": 65536, "disk_mib": 1 << 20, "vm_slots": 50});
            let (s, v) = m.post(&p.admin, "/api/v1/hosts", Some(body)).await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    }
    let admin = m.client(&p.admin);
    let quota = json!({"vms": 1000, "vcpus": 1000, "ram_mib": 10_000_000,
        "public_addresses": 1000, "designs": 1000});
    admin
        .create_user(&new_user("wide", "wide-password", Some(quota)))
        .await
        .unwrap();
    let wide = m.login("wide", "wide-password").await;
    let owner = m.client(&wide);
    let mut ids = Vec::new();
    for _ in 0..90 {
        let vi = m
            .create_vi(
                &wide,
                json!({"catalogue": {"kind": "nat-backends", "nodes": 2}}),
            )
            .await;
        let id: ViId = vi["id"].as_str().unwrap().parse().unwrap();
        owner.act(id, "request").await.unwrap();
        ids.push(id);
    }
    let mut tasks = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let (admin, id) = (admin.clone(), *id);
        let dc = ["napoli", "roma", "milano"][k % 3].to_owned();
        tasks.push(tokio::spawn(async move {
            admin
                .accept(
                    id,
                    &api::AcceptRequest {
                        datacenter: Some(dc),
                        placement: None,
                    },
                )
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut addresses = std::collections::HashSet::new();
    for id in &ids {
        let v = m.wait_detail(&p.admin, *id, ViState::Deploying).await;
        assert_eq!(v.vi.state, ViState::Running, "{v:?}");
        for i in &v.addresses.as_ref().unwrap().interfaces {
            let a = i.address.split('/').next().unwrap().to_owned();
            assert!(addresses.insert(a.clone()), "address {a} given twice");
        }
    }
}

/// 200 VIs accepted in parallel: every one placed, no address given twice,
/// no host over capacity.
pub(crate) async fn many_parallel_accepts(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 10, 50).await;
    let admin = m.client(&p.admin);
    let quota = json!({"vms": 1000, "vcpus": 1000, "ram_mib": 10_000_000,
        "public_addresses": 1000, "designs": 1000});
    admin
        .create_user(&new_user("big", "big-password", Some(quota)))
        .await
        .unwrap();
    let big = m.login("big", "big-password").await;
    let owner = m.client(&big);
    let mut ids = Vec::new();
    for _ in 0..200 {
        let vi = m
            .create_vi(
                &big,
                json!({"catalogue": {"kind": "nat-backends", "nodes": 2}}),
            )
            .await;
        let id: ViId = vi["id"].as_str().unwrap().parse().unwrap();
        owner.act(id, "request").await.unwrap();
        ids.push(id);
    }
    let mut tasks = Vec::new();
    for id in &ids {
        let (admin, id) = (admin.clone(), *id);
        tasks.push(tokio::spawn(async move {
            admin.accept(id, &api::AcceptRequest::default()).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut addresses = std::collections::HashSet::new();
    let mut blocks = Vec::new();
    for id in &ids {
        let v = m.wait_detail(&p.admin, *id, ViState::Deploying).await;
        assert_eq!(v.vi.state, ViState::Running, "{v:?}");
        let plan = v.addresses.as_ref().unwrap();
        for i in &plan.interfaces {
            let a = i.address.split('/').next().unwrap().to_owned();
            assert!(addresses.insert(a.clone()), "address {a} given twice");
        }
        let h = plan.home_addresses[0].address.clone();
        assert!(addresses.insert(h.clone()), "Home Address {h} given twice");
        blocks.push(plan.block.clone().unwrap());
    }
    blocks.sort();
    blocks.dedup();
    assert_eq!(blocks.len(), 200, "every VI has its own block");
    let hosts = admin.hosts().await.unwrap();
    let mut placed = 0;
    for h in &hosts {
        assert!(h.used_slots <= h.vm_slots, "{h:?}");
        assert!(h.used_vcpus <= h.cpus, "{h:?}");
        assert!(h.used_ram_mib <= h.ram_mib, "{h:?}");
        placed += h.used_slots;
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
    let admin = m.client(&p.admin);
    for i in 0..4 {
        let host = napoli_host(&format!("h{i}"), "http://127.0.0.1:9", 12, 10_000);
        admin.register_host(&host).await.unwrap();
    }
    let id: ViId = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "nat-backends", "nodes": 40, "bandwidth": 100}}),
        )
        .await
        .parse()
        .unwrap();
    let plan = admin.plan(id, None).await.unwrap();
    assert!(plan.admissible, "{}", plan.cut_mbps);
    // 39 backends on the gateway's LAN, 12 per host: at most 39 cross.
    let cut = plan.cut_mbps;
    assert!(cut <= 3900, "{cut}");
    // Too large to be proven: a lower bound and the gap it leaves.
    assert!(!plan.optimal);
    let bound = plan.lower_bound_mbps.unwrap();
    assert!(bound <= cut && bound > 0, "{bound} {cut}");
    let gap = plan.gap.unwrap();
    assert!(
        (gap - (cut - bound) as f64 / cut as f64).abs() < 1e-9,
        "{gap}"
    );
    // A small VI's plan is proven the best.
    let small: ViId = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "ring", "nodes": 24}}),
        )
        .await
        .parse()
        .unwrap();
    let small_plan = admin.plan(small, None).await.unwrap();
    assert_eq!(
        (small_plan.optimal, small_plan.gap),
        (true, Some(0.0)),
        "{}",
        small_plan.cut_mbps
    );
    assert_eq!(small_plan.lower_bound_mbps, Some(small_plan.cut_mbps));
    let v = admin
        .accept(id, &api::AcceptRequest::default())
        .await
        .unwrap();
    assert_eq!(v.vi.state, ViState::Deploying, "{v:?}");
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(v.vi.state, ViState::Running);
    for h in admin.hosts().await.unwrap() {
        let used = h.used_uplink_mbps;
        let members = v.vms.iter().filter(|vm| vm.host == h.name).count() as i64;
        // Never below what the LAN can put on the uplink: 100 x min(k, 40 - k).
        assert!(
            used >= 100 * members.min(40 - members),
            "{}: {used} for {members}",
            h.name
        );
        assert!(used <= 10_000, "{}: {used}", h.name);
    }
}

pub(crate) async fn capacity_is_never_exceeded(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 3).await;
    let admin = m.client(&p.admin);
    let a = m
        .create_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let b = m
        .create_vi(&p.bob, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let a: ViId = a["id"].as_str().unwrap().parse().unwrap();
    let b: ViId = b["id"].as_str().unwrap().parse().unwrap();
    for (vi, t) in [(a, &p.alice), (b, &p.bob)] {
        m.client(t).act(vi, "request").await.unwrap();
    }
    admin
        .accept(a, &api::AcceptRequest::default())
        .await
        .unwrap();
    let e = refused(admin.accept(b, &api::AcceptRequest::default()).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert!(e.message.contains("nothing fits"), "{e:?}");
    let still = m.client(&p.bob).vi(b).await.unwrap();
    assert_eq!(
        still.vi.state,
        ViState::Requested,
        "a refused accept changes nothing"
    );
    // A manual map that overfills the host is refused with the reason.
    let manual = api::AcceptRequest {
        datacenter: None,
        placement: Some(
            [("node0", "host0"), ("node1", "ghost")]
                .into_iter()
                .map(|(n, h)| (n.to_owned(), h.to_owned()))
                .collect(),
        ),
    };
    let e = refused(admin.accept(b, &manual).await);
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{e:?}");
    assert!(e.message.contains("\"ghost\" is not a ready host"), "{e:?}");
}

/// Hosts register their uplinks; placement keeps each VI's traffic between
/// hosts within them, the store reserves it, and a VI that cannot fit is
/// refused with the reason.
pub(crate) async fn uplinks_limit_acceptance(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 0, 3).await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    for (name, uplink) in [("wide0", 150), ("wide1", 150), ("thin0", 50), ("thin1", 50)] {
        let h = admin
            .register_host(&napoli_host(name, "http://127.0.0.1:9", 3, uplink))
            .await
            .unwrap();
        assert_eq!(h.uplink_mbps, uplink, "{h:?}");
    }
    // A line of 6 VMs over two hosts of 3 slots cuts one 100 Mbit/s link,
    // which only the wide hosts' uplinks can carry.
    let first: ViId = m.running_vi(&p, "line", 6).await.parse().unwrap();
    let v = alice.vi(first).await.unwrap();
    assert!(v.vms.iter().all(|vm| vm.host.starts_with("wide")), "{v:?}");
    let hosts = admin.hosts().await.unwrap();
    let used = |name: &str| {
        hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap()
            .used_uplink_mbps
    };
    assert_eq!((used("wide0"), used("wide1"), used("thin0")), (100, 100, 0));

    // The next one would have to cross the thin uplinks: refused, nothing reserved.
    let id: ViId = m
        .requested_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 6}}))
        .await
        .parse()
        .unwrap();
    let plan = admin.plan(id, None).await.unwrap();
    assert!(!plan.admissible, "{plan:?}");
    let e = refused(admin.accept(id, &api::AcceptRequest::default()).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert!(e.message.contains("uplinks"), "{e:?}");
    assert_eq!(m.used_slots(&p.admin).await, 6);

    // Terminating the first frees its share of the uplinks.
    alice.act(first, "terminate").await.unwrap();
    m.wait_detail(&p.alice, first, ViState::Terminating).await;
    let hosts = admin.hosts().await.unwrap();
    assert!(hosts.iter().all(|h| h.used_uplink_mbps == 0), "{hosts:?}");
}
