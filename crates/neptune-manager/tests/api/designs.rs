//! Designs of VIs as users submit them: their validation and the quotas
//! a request is held to.

use super::*;

pub(crate) async fn designs_are_validated(m: &TestManager) {
    let p = m.people().await;
    let (s, v) = m.call(Method::POST, "/api/v1/vis", Some(&p.alice), Some(json!({"xml": "<topology id=\"x\"><nodes><node id=\"a\"><ram dimension=\"lots\"/></node></nodes></topology>"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["code"], "invalid_topology");
    let details: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details.contains(&"1:54: \"dimension\" of <ram>: \"lots\" is not a number"),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("missing element <hd>")),
        "{details:?}"
    );
    let (s, v) = m
        .call(Method::POST, "/api/v1/vis", Some(&p.alice), Some(json!({})))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request"))
    );
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/vis",
            Some(&p.alice),
            Some(json!({"catalogue": {"kind": "ring", "nodes": 2}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["message"].as_str().unwrap().contains("between 3 and"),
        "{v}"
    );
    // The JSON form works too, and its password stays write-only.
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
    let (s, _) = m
        .call(Method::POST, "/api/v1/users", Some(&admin), Some(json!({"name": "carol", "password": "carol-password", "role": "user", "quota": quota})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let carol = m.login("carol", "carol-password").await;
    let small = m
        .create_vi(&carol, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let big = m
        .create_vi(&carol, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let (s, _) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{}/request", small["id"].as_str().unwrap()),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{}/request", big["id"].as_str().unwrap()),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{v}"
    );
    assert_eq!(
        v["message"],
        "this would bring carol to 4 VMs; the quota is 3"
    );
}
