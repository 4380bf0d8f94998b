//! Designs of VIs as users submit them: their validation and the quotas
//! a request is held to.

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
    let id = |vi: &Value| -> Uuid { vi["id"].as_str().unwrap().parse().unwrap() };
    carol.act(id(&small), "request").await.unwrap();
    let e = refused(carol.act(id(&big), "request").await);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded"),
        "{e:?}"
    );
    assert_eq!(e.message, "this would bring carol to 4 VMs; the quota is 3");
}
