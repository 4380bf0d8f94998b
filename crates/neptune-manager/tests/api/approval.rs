//! The approval workflow: a VI defined, edited, requested, accepted or
//! rejected, revised; one winner among concurrent accepts.

use super::*;

/// A design in the paper's XML dialect, editing version `version`.
fn xml_edit(xml: &str, version: i64) -> api::ViDesign {
    api::ViDesign {
        name: None,
        source: api::DesignSource::Xml(xml.to_owned()),
        version: Some(version),
    }
}

pub(crate) async fn lifecycle_with_approval(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 10).await;
    let (alice, bob, admin) = (m.client(&p.alice), m.client(&p.bob), m.client(&p.admin));
    // As sent on the wire: the OS password must appear nowhere in it.
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id: ViId = vi["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(vi["state"], "defined");
    assert_eq!(vi["owner"], "alice");
    assert_eq!(vi["summary"]["nodes"], 3);
    assert_eq!(vi["topology"]["links"][0]["subnet"], "10.20.0.0/29");
    assert!(!vi.to_string().contains("s3cret"), "password leaked: {vi}");

    // Bob cannot see it; the admin can.
    let e = refused(bob.vi(id).await);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    admin.vi(id).await.unwrap();

    // Accepting a defined VI is refused by the lifecycle, with the reason.
    let e = refused(admin.accept(id, &api::AcceptRequest::default()).await);
    assert_eq!(e.status, StatusCode::CONFLICT);
    assert_eq!(
        e.message,
        "cannot accept a VI that is defined: only a requested VI can be accepted"
    );

    // Edit while defined, with the version it is based on.
    let edited = SHOP.replace("bandwidth=\"1000\"", "bandwidth=\"500\"");
    let v = alice.edit_vi(id, &xml_edit(&edited, 1)).await.unwrap();
    assert_eq!((v.vi.version, v.vi.summary.bandwidth_mbps), (2, 500));
    let e = refused(alice.edit_vi(id, &xml_edit(SHOP, 1)).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "stale version");

    // Request; only an admin accepts; the owner cannot.
    let v = alice.act(id, "request").await.unwrap();
    assert_eq!(v.vi.state, ViState::Requested);
    let e = refused(alice.accept(id, &api::AcceptRequest::default()).await);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let v = admin
        .accept(
            id,
            &api::AcceptRequest {
                datacenter: Some("napoli".to_owned()),
                placement: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(v.vi.state, ViState::Deploying, "{v:?}");
    assert_eq!(v.vi.home_datacenter.as_deref(), Some("napoli"));
    let history: Vec<(ViState, ViState, &str)> = v
        .events
        .iter()
        .map(|e| (e.from, e.to, e.actor.as_str()))
        .collect();
    // The deploy job may already have finished (its event is Neptune's own).
    use ViState::{Accepted, Defined, Deploying, Requested, Running};
    assert_eq!(
        history[..3],
        [
            (Defined, Requested, "alice"),
            (Requested, Accepted, "admin"),
            (Accepted, Deploying, "admin")
        ]
    );
    assert!(
        history[3..]
            .iter()
            .all(|e| *e == (Deploying, Running, "neptune")),
        "{history:?}"
    );

    // Editing is over once requested.
    let e = refused(alice.edit_vi(id, &xml_edit(SHOP, 4)).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");

    // Running once deployed; terminated by a job.
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
    let v = alice.act(id, "terminate").await.unwrap();
    assert_eq!(v.vi.state, ViState::Terminating, "{v:?}");
    let v = m.wait_detail(&p.alice, id, ViState::Terminating).await;
    assert_eq!(v.vi.state, ViState::Terminated, "{v:?}");
    let e = refused(alice.act(id, "terminate").await);
    assert_eq!(e.status, StatusCode::CONFLICT, "terminated is final");

    // Reject with a reason, then revise back to defined.
    let vi = m
        .create_vi(
            &p.bob,
            json!({"catalogue": {"kind": "three-tier", "nodes": 4}}),
        )
        .await;
    let id: ViId = vi["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(vi["summary"]["nodes"], 4);
    bob.act(id, "request").await.unwrap();
    let e = refused(admin.reject(id, " ").await);
    assert_eq!(
        e.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reason is required"
    );
    let v = admin.reject(id, "no budget").await.unwrap();
    assert_eq!(
        (v.vi.state, v.vi.reject_reason.as_deref()),
        (ViState::Rejected, Some("no budget"))
    );
    let v = bob.act(id, "revise").await.unwrap();
    assert_eq!(v.vi.state, ViState::Defined);

    // Lists: each user their own, the admin all.
    assert_eq!(bob.vis().await.unwrap().len(), 1);
    assert_eq!(admin.vis().await.unwrap().len(), 2);
}

pub(crate) async fn concurrent_accepts_have_one_winner(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let vi = m
        .create_vi(&p.alice, json!({"catalogue": {"kind": "star", "nodes": 3}}))
        .await;
    let id: ViId = vi["id"].as_str().unwrap().parse().unwrap();
    m.client(&p.alice).act(id, "request").await.unwrap();
    let admin = m.client(&p.admin);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            admin
                .accept(id, &api::AcceptRequest::default())
                .await
                .map(|_| ())
                .map_err(|e| refused::<()>(Err(e)).status)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| *o == Ok(()) || *o == Err(StatusCode::CONFLICT)),
        "{outcomes:?}"
    );
    let v = m.wait_detail(&p.admin, id, ViState::Deploying).await;
    let accepts = v
        .events
        .iter()
        .filter(|e| e.to == ViState::Accepted)
        .count();
    assert_eq!(accepts, 1, "{v:?}");
    assert_eq!(v.vms.len(), 3, "one reservation per VM: {v:?}");
}
