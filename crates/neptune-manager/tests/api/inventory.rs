//! The inventory: hosts registered in datacenters and listed.

use super::*;

pub(crate) async fn hosts_register_and_list(m: &TestManager) {
    let p = m.people().await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    let host = api::RegisterHost {
        datacenter: "napoli".to_owned(),
        name: "h1".to_owned(),
        agent_url: "http://127.0.0.1:9".to_owned(),
        cpus: 8,
        ram_mib: 16384,
        disk_mib: 200000,
        vm_slots: 10,
        uplink_mbps: 0,
    };
    let e = refused(alice.register_host(&host).await);
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    let h = admin.register_host(&host).await.unwrap();
    assert_eq!(h.state, api::HostState::Ready, "{h:?}");
    let unknown = api::RegisterHost {
        datacenter: "atlantis".to_owned(),
        ..host.clone()
    };
    let e = refused(admin.register_host(&unknown).await);
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    let zero = api::RegisterHost { cpus: 0, ..host };
    let e = refused(admin.register_host(&zero).await);
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    let hosts = admin.hosts().await.unwrap();
    assert_eq!(
        (hosts[0].name.as_str(), hosts[0].datacenter.as_str()),
        ("h1", "napoli")
    );
    // Administrators see how many hosts each datacenter has ready and
    // unreachable; other users see no count.
    let counts = |dcs: Vec<api::Datacenter>| {
        dcs.into_iter()
            .map(|d| (d.name, d.hosts))
            .collect::<Vec<_>>()
    };
    let napoli = counts(admin.datacenters().await.unwrap())
        .into_iter()
        .find(|(name, _)| name == "napoli")
        .unwrap();
    assert_eq!(
        napoli.1,
        Some(api::HostCounts {
            ready: 1,
            unreachable: 0
        })
    );
    assert!(counts(alice.datacenters().await.unwrap())
        .iter()
        .all(|(_, hosts)| hosts.is_none()));
}
