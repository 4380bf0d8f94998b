//! Administrators change a user's quota; the next request is held to it.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{TestManager, SHOP};

pub(crate) async fn administrators_change_quotas(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 16).await;
    let (_, users) = m
        .call(Method::GET, "/api/v1/users", Some(&p.admin), None)
        .await;
    let alice = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap()
        .clone();
    let id = alice["id"].as_str().unwrap();
    let path = format!("/api/v1/users/{id}/quota");
    let mut quota = alice["quota"].clone();
    quota["vms"] = json!(2);
    let (s, v) = m
        .call(Method::PUT, &path, Some(&p.alice), Some(quota.clone()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only administrators: {v}");
    let (s, v) = m
        .call(Method::PUT, &path, Some(&p.admin), Some(quota.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["quota"], quota);
    // The shop's three VMs no longer fit.
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let vi = vi["id"].as_str().unwrap().to_owned();
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{vi}/request"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "quota_exceeded", "{v}");
    quota["vms"] = json!(3);
    let (s, _) = m
        .call(Method::PUT, &path, Some(&p.admin), Some(quota.clone()))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{vi}/request"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Refused: a negative figure, a missing one, an unknown user.
    let mut bad = quota.clone();
    bad["vcpus"] = json!(-1);
    let (s, v) = m.call(Method::PUT, &path, Some(&p.admin), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("vcpus"), "{v}");
    let (s, v) = m
        .call(Method::PUT, &path, Some(&p.admin), Some(json!({"vms": 1})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = m
        .call(
            Method::PUT,
            &format!("/api/v1/users/{}/quota", uuid::Uuid::new_v4()),
            Some(&p.admin),
            Some(quota),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
