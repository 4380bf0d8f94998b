//! The approval workflow: a VI defined, edited, requested, accepted or
//! rejected, revised; one winner among concurrent accepts.

use super::*;

pub(crate) async fn lifecycle_with_approval(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 10).await;
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = vi["id"].as_str().unwrap().to_owned();
    assert_eq!(vi["state"], "defined");
    assert_eq!(vi["owner"], "alice");
    assert_eq!(vi["summary"]["nodes"], 3);
    assert_eq!(vi["topology"]["links"][0]["subnet"], "10.20.0.0/29");
    assert!(!vi.to_string().contains("s3cret"), "password leaked: {vi}");

    // Bob cannot see it; the admin can.
    let (s, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Accepting a defined VI is refused by the lifecycle, with the reason.
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/accept"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        v["message"],
        "cannot accept a VI that is defined: only a requested VI can be accepted"
    );

    // Edit while defined, with the version it is based on.
    let edited = SHOP.replace("bandwidth=\"1000\"", "bandwidth=\"500\"");
    let (s, v) = m
        .call(
            Method::PUT,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            Some(json!({"xml": edited, "version": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["version"].as_i64(),
            v["summary"]["bandwidth_mbps"].as_i64()
        ),
        (Some(2), Some(500))
    );
    let (s, _) = m
        .call(
            Method::PUT,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            Some(json!({"xml": SHOP, "version": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "stale version");

    // Request; only an admin accepts; the owner cannot.
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/request"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("requested"))
    );
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/accept"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let v = m
        .accept(&p.admin, &id, Some(json!({"datacenter": "napoli"})))
        .await;
    assert_eq!(v["home_datacenter"], "napoli");
    let history: Vec<(&str, &str, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    // The deploy job may already have finished (its event is Neptune's own).
    assert_eq!(
        history[..3],
        [
            ("defined", "requested", "alice"),
            ("requested", "accepted", "admin"),
            ("accepted", "deploying", "admin")
        ]
    );
    assert!(
        history[3..]
            .iter()
            .all(|e| *e == ("deploying", "running", "neptune")),
        "{history:?}"
    );

    // Editing is over once requested.
    let (s, v) = m
        .call(
            Method::PUT,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            Some(json!({"xml": SHOP, "version": 4})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Running once deployed; terminated by a job.
    let v = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(v["state"], "running", "{v}");
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/terminate"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("terminating")),
        "{v}"
    );
    let v = m.wait_vi(&p.alice, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    let (s, _) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/terminate"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "terminated is final");

    // Reject with a reason, then revise back to defined.
    let vi = m
        .create_vi(
            &p.bob,
            json!({"catalogue": {"kind": "three-tier", "nodes": 4}}),
        )
        .await;
    let id = vi["id"].as_str().unwrap();
    assert_eq!(vi["summary"]["nodes"], 4);
    m.call(
        Method::POST,
        &format!("/api/v1/vis/{id}/request"),
        Some(&p.bob),
        None,
    )
    .await;
    let (s, _) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/reject"),
            Some(&p.admin),
            Some(json!({"reason": " "})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a reason is required");
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/reject"),
            Some(&p.admin),
            Some(json!({"reason": "no budget"})),
        )
        .await;
    assert_eq!(
        (s, v["state"].as_str(), v["reject_reason"].as_str()),
        (StatusCode::OK, Some("rejected"), Some("no budget"))
    );
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/revise"),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("defined")));

    // Lists: each user their own, the admin all.
    let (_, mine) = m.call(Method::GET, "/api/v1/vis", Some(&p.bob), None).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let (_, all) = m
        .call(Method::GET, "/api/v1/vis", Some(&p.admin), None)
        .await;
    assert_eq!(all.as_array().unwrap().len(), 2);
}

pub(crate) async fn concurrent_accepts_have_one_winner(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let vi = m
        .create_vi(&p.alice, json!({"catalogue": {"kind": "star", "nodes": 3}}))
        .await;
    let id = vi["id"].as_str().unwrap().to_owned();
    m.call(
        Method::POST,
        &format!("/api/v1/vis/{id}/request"),
        Some(&p.alice),
        None,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, url, token) = (
            m.http.clone(),
            format!("{}/api/v1/vis/{id}/accept", m.base),
            p.admin.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let v = m.wait_vi(&p.admin, &id, "deploying").await;
    let accepts = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["to"] == "accepted")
        .count();
    assert_eq!(accepts, 1, "{v}");
    assert_eq!(
        v["vms"].as_array().unwrap().len(),
        3,
        "one reservation per VM: {v}"
    );
}
