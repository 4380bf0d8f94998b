//! The inventory: hosts registered in datacenters and listed.

use super::*;

pub(crate) async fn hosts_register_and_list(m: &TestManager) {
    let p = m.people().await;
    let host = json!({"datacenter": "napoli", "name": "h1", "agent_url": "http://127.0.0.1:9", "cpus": 8, "ram_mib": 16384, "disk_mib": 200000, "vm_slots": 10});
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/hosts",
            Some(&p.alice),
            Some(host.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/hosts",
            Some(&p.admin),
            Some(host.clone()),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );
    let mut unknown = host.clone();
    unknown["datacenter"] = json!("atlantis");
    let (s, _) = m
        .call(Method::POST, "/api/v1/hosts", Some(&p.admin), Some(unknown))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let mut zero = host;
    zero["cpus"] = json!(0);
    let (s, _) = m
        .call(Method::POST, "/api/v1/hosts", Some(&p.admin), Some(zero))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    assert_eq!(
        (hosts[0]["name"].as_str(), hosts[0]["datacenter"].as_str()),
        (Some("h1"), Some("napoli"))
    );
}
