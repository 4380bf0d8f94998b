//! Reads of VIs answered from the Manager's caches are never stale, also
//! across Managers sharing the database.

use super::*;

/// A VI's detail with its ETag, sending `If-None-Match` when given one.
pub(crate) async fn detail_with_tag(
    m: &TestManager,
    token: &str,
    id: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, String, Value) {
    let mut req = m
        .http
        .get(format!("{}/api/v1/vis/{id}", m.base))
        .bearer_auth(token);
    if let Some(tag) = if_none_match {
        req = req.header("If-None-Match", tag);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let tag = resp
        .headers()
        .get("etag")
        .map(|t| t.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    (
        status,
        tag,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Reads of a VI's detail are answered from a cache of serialised bodies;
/// none may be older than a write the reader could have observed: its own
/// changes, a job's progress recorded by the job runner, and changes made
/// through another Manager sharing the database. Who may read is unchanged.
pub(crate) async fn reads_are_never_stale(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 64).await;
    let other = m.second().await;
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = vi["id"].as_str().unwrap().to_owned();

    let (s, tag, v) = detail_with_tag(m, &p.alice, &id, None).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("defined")));
    assert!(tag.starts_with('"') && tag.len() > 2, "{tag}");
    let (s, again, v) = detail_with_tag(m, &p.alice, &id, Some(&tag)).await;
    assert_eq!(
        (s, &again, &v),
        (StatusCode::NOT_MODIFIED, &tag, &Value::Null)
    );
    // The kept body is served only to those who may see the VI.
    let (s, _, v) = detail_with_tag(m, &p.bob, &id, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _, _) = detail_with_tag(m, &p.bob, &id, Some(&tag)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, admin_tag, _) = detail_with_tag(m, &p.admin, &id, None).await;
    assert_eq!((s, &admin_tag), (StatusCode::OK, &tag));
    let list = |token: &str| {
        let token = token.to_owned();
        async move {
            let (s, v) = m.call(Method::GET, "/api/v1/vis", Some(&token), None).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v.as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_owned(),
                        v["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let shop = vi["name"].as_str().unwrap().to_owned();
    assert_eq!(list(&p.alice).await, [(shop.clone(), "defined".to_owned())]);
    assert_eq!(list(&p.admin).await, [(shop.clone(), "defined".to_owned())]);
    assert!(list(&p.bob).await.is_empty());
    // A VI made through another Manager joins the lists kept here.
    other
        .create_vi(&p.bob, json!({"catalogue": {"kind": "star", "nodes": 3}}))
        .await;
    assert_eq!(list(&p.bob).await.len(), 1);
    assert_eq!(list(&p.admin).await.len(), 2);
    assert_eq!(list(&p.alice).await, [(shop.clone(), "defined".to_owned())]);

    // A change made through another Manager shows at once here.
    let (s, v) = other
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/request"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, requested_tag, v) = detail_with_tag(m, &p.alice, &id, Some(&tag)).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("requested"))
    );
    assert_ne!(requested_tag, tag);
    assert_eq!(
        list(&p.alice).await,
        [(shop.clone(), "requested".to_owned())]
    );

    // The caller's own change shows at once too.
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/withdraw"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, _, v) = detail_with_tag(m, &p.alice, &id, None).await;
    assert_eq!(v["state"], "defined");
    assert_eq!(list(&p.alice).await, [(shop.clone(), "defined".to_owned())]);
    m.call(
        Method::POST,
        &format!("/api/v1/vis/{id}/request"),
        Some(&p.alice),
        None,
    )
    .await;

    // A job's progress, written by the job runner, shows in every read
    // made after it: the detail is never behind the job read just before.
    m.sims
        .sim("host0")
        .set_delay(Op::Start, std::time::Duration::from_millis(150));
    let v = m.accept(&p.admin, &id, None).await;
    let job = v["jobs"][0]["id"].as_str().unwrap().to_owned();
    let mut seen_steps = std::collections::BTreeSet::new();
    loop {
        let (_, j) = m
            .call(
                Method::GET,
                &format!("/api/v1/jobs/{job}"),
                Some(&p.alice),
                None,
            )
            .await;
        for reader in [m, &other] {
            let (s, _, v) = detail_with_tag(reader, &p.alice, &id, None).await;
            assert_eq!(s, StatusCode::OK);
            let shown = &v["jobs"][0];
            assert!(
                shown["step"].as_i64() >= j["step"].as_i64(),
                "{shown} is behind {j}"
            );
            if j["state"] == "succeeded" {
                assert_eq!(shown["state"], "succeeded", "{v}");
                assert_eq!(v["state"], "running", "{v}");
                assert!(!v["vms"].as_array().unwrap().is_empty());
            }
            seen_steps.insert(shown["step"].as_i64().unwrap());
        }
        if j["state"] != "running" {
            assert_eq!(j["state"], "succeeded", "{j}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        seen_steps.len() >= 2,
        "no read during the deploy: {seen_steps:?}"
    );

    // Terminating through the other Manager: its job runs there, and the
    // first Manager's reads follow.
    m.sims.sim("host0").set_delays(HashMap::new());
    let (_, running_tag, _) = detail_with_tag(m, &p.alice, &id, None).await;
    let (s, v) = other
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/terminate"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = detail_with_tag(m, &p.alice, &id, Some(&running_tag)).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(v["state"], "running");
    let v = m.wait_vi(&p.alice, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    assert!(v["vms"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["jobs"][1]["state"], "succeeded", "{v}");
    assert_eq!(list(&p.alice).await, [(shop, "terminated".to_owned())]);
}
