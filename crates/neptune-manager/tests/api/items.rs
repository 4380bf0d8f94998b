//! One host, one template, one user read by its key, as the console's
//! pages read them; and what a user holds of their quota.

use super::*;

pub(crate) async fn single_items_are_read_by_key(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 8).await;
    let (alice, bob, admin) = (m.client(&p.alice), m.client(&p.bob), m.client(&p.admin));

    // Hosts: administrators only; a missing one is named.
    let h = admin.host("host0").await.unwrap();
    assert_eq!(
        (h.name.as_str(), h.datacenter.as_str()),
        ("host0", "napoli")
    );
    assert_eq!(h.id, admin.hosts().await.unwrap()[0].id);
    let e = refused(admin.host("nowhere").await);
    assert_eq!(
        (e.status, e.code.as_str(), e.message.as_str()),
        (StatusCode::NOT_FOUND, "not_found", "host nowhere not found")
    );
    let e = refused(alice.host("host0").await);
    assert_eq!(e.status, StatusCode::FORBIDDEN);

    // Templates: a public one for everyone, a private one for its owner
    // and administrators; to anyone else it is missing, as an unknown id.
    let public = alice.templates().await.unwrap()[0].clone();
    let t = alice.template(public.id).await.unwrap();
    assert_eq!((t.id, t.name.as_str()), (public.id, "debian-12"));
    assert_eq!(t.owner, public.owner);
    let image = m.dir.path().join("images/private.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success());
    let private = admin
        .create_template(
            &serde_json::from_value(json!({"name": "secret", "image": "private.qcow2",
                "visibility": "private"}))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(admin.template(private.id).await.unwrap().name, "secret");
    let hidden = refused(alice.template(private.id).await);
    let unknown_id: neptune_types::TemplateId = Uuid::new_v4().into();
    let unknown = refused(alice.template(unknown_id).await);
    assert_eq!(
        (hidden.status, hidden.message),
        (
            StatusCode::NOT_FOUND,
            format!("template {} not found", private.id)
        )
    );
    assert_eq!(
        (unknown.status, unknown.message),
        (
            StatusCode::NOT_FOUND,
            format!("template {unknown_id} not found")
        )
    );
    let (s, v) = m
        .call(
            Method::GET,
            "/api/v1/templates/nonsense",
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Users: by name or id; themselves, or anyone for administrators. A
    // user asking for another is refused before anything is looked up, so
    // names cannot be probed.
    let me = alice.me().await.unwrap();
    for key in ["alice".to_owned(), me.id.to_string()] {
        let u = alice.user(&key).await.unwrap();
        assert_eq!((u.id, u.name.as_str()), (me.id, "alice"), "{key}");
        assert!(u.usage.is_some(), "{key}: {u:?}");
        assert_eq!(admin.user(&key).await.unwrap().id, me.id, "{key}");
    }
    for key in ["bob", "nobody"] {
        let e = refused(alice.user(key).await);
        assert_eq!(e.status, StatusCode::FORBIDDEN, "{key}");
    }
    let bob_id = bob.me().await.unwrap().id;
    let e = refused(alice.user(&bob_id.to_string()).await);
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    // A key that is a user's id names that user, even for an administrator
    // whose own name it is.
    let mut named_like = new_user(&bob_id.to_string(), "named-like-password", None);
    named_like.role = api::Role::Admin;
    admin.create_user(&named_like).await.unwrap();
    let twin = m.client(&m.login(&bob_id.to_string(), "named-like-password").await);
    let twin_id = twin.me().await.unwrap().id;
    assert_eq!(twin.user(&bob_id.to_string()).await.unwrap().id, bob_id);
    assert_eq!(twin.user(&twin_id.to_string()).await.unwrap().id, twin_id);
    let e = refused(admin.user("nobody").await);
    assert_eq!(
        (e.status, e.message.as_str()),
        (StatusCode::NOT_FOUND, "user nobody not found")
    );
    let stranger = Uuid::new_v4().to_string();
    let e = refused(admin.user(&stranger).await);
    assert_eq!(
        (e.status, e.message),
        (StatusCode::NOT_FOUND, format!("user {stranger} not found"))
    );
    // Lists leave the usage out: it takes reads of every VI of each user.
    assert!(admin
        .users()
        .await
        .unwrap()
        .iter()
        .all(|u| u.usage.is_none()));
}

pub(crate) async fn quota_usage_is_reported(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 16).await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    let usage = |u: api::User| u.usage.unwrap();
    assert_eq!(
        usage(alice.me().await.unwrap()),
        api::QuotaUsage {
            vms: 0,
            vcpus: 0,
            ram_mib: 0,
            public_addresses: 0,
            designs: 0,
            design_mib: 0,
            design_bytes: 0,
            private_addresses: 0,
        }
    );

    // A design takes of the design quota at once, and of the rest once
    // requested.
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = vi["id"].as_str().unwrap().to_owned();
    let defined = usage(alice.me().await.unwrap());
    assert_eq!((defined.designs, defined.design_mib), (1, 1), "{defined:?}");
    assert!(defined.design_bytes > 0, "{defined:?}");
    assert_eq!((defined.vms, defined.private_addresses), (0, 0));
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/request"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let summary = &v["summary"];
    let requested = usage(alice.me().await.unwrap());
    assert_eq!(
        (
            requested.vms,
            requested.vcpus,
            requested.ram_mib,
            requested.public_addresses
        ),
        (
            summary["nodes"].as_i64().unwrap(),
            summary["vcpus"].as_i64().unwrap(),
            summary["ram_mib"].as_i64().unwrap(),
            summary["entry_points"].as_i64().unwrap()
        ),
        "{requested:?} {summary}"
    );
    assert!(requested.private_addresses > 0, "{requested:?}");
    assert_eq!(requested.design_bytes, defined.design_bytes);

    // Once accepted, the private addresses are those of the committed
    // plan: all the private pool holds, as alice's is the only VI.
    m.accept(&p.admin, &id, None).await;
    m.wait_vi(&p.alice, &id, "deploying").await;
    let accepted = usage(alice.me().await.unwrap());
    let (s, pools) = m
        .call(Method::GET, "/api/v1/address-pools", Some(&p.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{pools}");
    let private_used: i64 = pools
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "private")
        .map(|p| p["used"].as_i64().unwrap())
        .sum();
    assert_eq!(accepted.private_addresses, private_used, "{pools}");
    assert_eq!(usage(admin.user("alice").await.unwrap()), accepted);

    // The figures are those the quota is checked with: a quota of exactly
    // the private addresses held refuses a second copy of the design.
    let mut quota = alice.me().await.unwrap().quota;
    quota.private_addresses = accepted.private_addresses;
    let me = alice.me().await.unwrap();
    admin.set_user_quota(me.id, &quota).await.unwrap();
    let again = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let (s, v) = m
        .post(
            &p.alice,
            &format!("/api/v1/vis/{}/request", again["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("private addresses"),
        "{v}"
    );
    let two = usage(alice.me().await.unwrap());
    assert_eq!(
        (two.designs, two.design_bytes, two.vms),
        (2, 2 * defined.design_bytes, accepted.vms)
    );
}
