//! Templates: registered from images of the repository, saved from a
//! running VM, their owners and visibility, and the software a node may
//! ask of one.

use super::*;

/// A template to register, from its JSON form.
fn template(body: Value) -> api::CreateTemplate {
    serde_json::from_value(body).unwrap()
}

pub(crate) async fn templates_from_images(m: &TestManager) {
    let p = m.people().await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    let images = m.dir.path().join("images");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(images.join("tiny.qcow2"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(status.success());
    let body = json!({"name": "tiny", "image": "tiny.qcow2", "os_name": "Debian", "software": [{"name": "nginx", "type": "webserver"}]});
    let e = refused(alice.create_template(&template(body.clone())).await);
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    // Created is 201 exactly: no other test pins it.
    let created: api::Template = m
        .post_exactly(
            &p.admin,
            "/api/v1/templates",
            Some(body.clone()),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        (created.format.as_str(), created.size_mib, created.disk_mib),
        ("qcow2", 64, 64)
    );
    let e = refused(admin.create_template(&template(body)).await);
    assert_eq!(e.status, StatusCode::CONFLICT);
    let list = alice.templates().await.unwrap();
    assert_eq!(list[0].software[0].name, "nginx");
    for (image, why) in [
        (
            "../../../../../../../../etc/passwd",
            "inside the image repository",
        ),
        ("missing.qcow2", "not found"),
    ] {
        let bad = template(json!({"name": "bad", "image": image}));
        let e = refused(admin.create_template(&bad).await);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{image}");
        assert!(e.message.contains(why), "{e:?}");
    }
    std::fs::write(images.join("junk.img"), b"").unwrap();
    let junk = template(json!({"name": "junk", "image": "junk.img", "disk_mib": 0}));
    let e = refused(admin.create_template(&junk).await);
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{e:?}");
}

/// A node of `name` to save as a template.
fn save(node: &str, name: &str) -> api::SaveTemplate {
    api::SaveTemplate {
        node: node.to_owned(),
        name: name.to_owned(),
        os_name: None,
    }
}

/// A VM of a running VI saved as a new template, which a new VI then uses.
pub(crate) async fn vm_saved_as_template(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let (alice, bob, admin) = (m.client(&p.alice), m.client(&p.bob), m.client(&p.admin));
    let id = m.running_vi(&p, "line", 2).await;
    let uuid: ViId = id.parse().unwrap();
    // Accepted is 202 exactly: no other test pins it.
    let job: api::Job = m
        .post_exactly(
            &p.alice,
            &format!("/api/v1/vis/{id}/templates"),
            Some(json!({"node": "node0", "name": "golden"})),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(job.kind, api::JobKind::SaveTemplate);
    let done = m.job_outcome(&p.alice, &job.id.to_string(), 10).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let v = alice.vi(uuid).await.unwrap();
    assert_eq!(v.vi.state, ViState::Running, "the VI's state is left alone");
    let templates_of = |client: &Client| {
        let client = client.clone();
        async move { client.templates().await.unwrap() }
    };
    // The saved template is Alice's alone until an administrator publishes it.
    let listed = templates_of(&alice).await;
    let golden = listed
        .iter()
        .find(|t| t.name == "golden")
        .unwrap_or_else(|| panic!("no template golden: {listed:?}"))
        .clone();
    assert_eq!(golden.disk_mib, 4096, "the node's disk size: {golden:?}");
    assert_eq!(
        (golden.owner.as_str(), golden.visibility),
        ("alice", api::Visibility::Private)
    );
    assert!(!templates_of(&bob).await.iter().any(|t| t.name == "golden"));
    assert!(templates_of(&admin)
        .await
        .iter()
        .any(|t| t.name == "golden"));
    // The image is a copy of the VM's disk in the repository.
    let image = m
        .dir
        .path()
        .join("images/saved-templates")
        .join(format!("{}.img", golden.id.uuid().simple()));
    let disk = m
        .sims
        .sim("host0")
        .disk_path(&format!("nt-{}-node0", &id.replace('-', "")[..12]));
    assert_eq!(
        std::fs::read(&image).unwrap(),
        std::fs::read(&disk).unwrap()
    );

    // Refusals: the name is taken, an unknown node, someone else's VI.
    for (who, body, want) in [
        (&alice, save("node1", "golden"), StatusCode::CONFLICT),
        (
            &alice,
            save("nope", "other"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (&bob, save("node0", "other"), StatusCode::NOT_FOUND),
    ] {
        let e = refused(who.save_template(uuid, &body).await);
        assert_eq!(e.status, want, "{e:?}");
    }

    // Bob cannot deploy from Alice's private template...
    let xml = r#"<topology id="from-golden"><nodes><node id="solo"><ram dimension="512"/><hd dimension="4"/><software_configuration template="golden"/></node></nodes></topology>"#;
    let vi = m.create_vi(&p.bob, json!({"xml": xml})).await;
    let bob_vi: ViId = vi["id"].as_str().unwrap().parse().unwrap();
    bob.act(bob_vi, "request").await.unwrap();
    let e = refused(admin.accept(bob_vi, &api::AcceptRequest::default()).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert!(
        e.message.contains("neither the VI owner's nor public"),
        "{e:?}"
    );
    // ... nor make it public; an administrator can.
    let e = refused(
        alice
            .set_template_visibility(golden.id, api::Visibility::Public)
            .await,
    );
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    // 200 exactly: no other test pins it.
    let t: api::Template = m
        .post_exactly(
            &p.admin,
            &format!("/api/v1/templates/{}/visibility", golden.id),
            Some(json!({"visibility": "public"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(t.visibility, api::Visibility::Public, "{t:?}");
    assert!(templates_of(&bob).await.iter().any(|t| t.name == "golden"));
    // Names are per owner: Alice may call her own template "debian-12" (it
    // shadows the public one for her alone), but two public templates
    // never share a name.
    alice
        .save_template(uuid, &save("node1", "debian-12"))
        .await
        .unwrap();
    let mine = loop {
        let listed = templates_of(&alice).await;
        if let Some(t) = listed
            .iter()
            .find(|t| t.name == "debian-12" && t.owner == "alice")
        {
            break t.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    let bobs = templates_of(&bob).await;
    let debian: Vec<_> = bobs.iter().filter(|t| t.name == "debian-12").collect();
    assert_eq!(debian.len(), 1, "{bobs:?}");
    assert_eq!(debian[0].visibility, api::Visibility::Public);
    let e = refused(
        admin
            .set_template_visibility(mine.id, api::Visibility::Public)
            .await,
    );
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    // Now Bob's VI made from the published template deploys.
    admin
        .accept(bob_vi, &api::AcceptRequest::default())
        .await
        .unwrap();
    let v = m.wait_detail(&p.bob, bob_vi, ViState::Deploying).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
    // Only a running VI's VMs are saved: one still defined is refused.
    let defined = m
        .create_vi(&p.bob, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let defined: ViId = defined["id"].as_str().unwrap().parse().unwrap();
    let e = refused(bob.save_template(defined, &save("node0", "early")).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert!(e.message.contains("only a running VI"), "{e:?}");
}

pub(crate) async fn software_must_be_in_the_template(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let image = m.dir.path().join("images/webby.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("64M")
        .status()
        .unwrap();
    assert!(made.success());
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    let webby = template(json!({"name": "webby", "image": "webby.qcow2",
        "software": [{"name": "nginx", "type": "package", "version": "1.22"}]}));
    admin.create_template(&webby).await.unwrap();
    let design = |software: &str| {
        json!({"topology": {"id": "web", "nodes": [
            {"id": "web", "ram": 64, "disk": 64, "interfaces": [{"name": "eth0"}],
             "software": {"template": "webby",
                "software": [{"name": software, "type": "webserver", "version": ""}]}}]}})
    };
    let apache: ViId = m
        .requested_vi(&p.alice, design("apache"))
        .await
        .parse()
        .unwrap();
    let e = refused(alice.plan(apache, None).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert_eq!(
        e.message,
        "node web asks for software \"apache\", which template \"webby\" does not carry \
         (its image has 1 packages; a node's software must be in its template)"
    );
    let nginx: ViId = m
        .requested_vi(&p.alice, design("nginx"))
        .await
        .parse()
        .unwrap();
    alice.plan(nginx, None).await.unwrap();
    // An unknown template is refused, naming it.
    let none = m
        .requested_vi(
            &p.alice,
            json!({"topology": {"id": "x", "nodes": [{"id": "n", "ram": 64, "disk": 64,
                "interfaces": [], "software": {"template": "nowhere"}}]}}),
        )
        .await;
    let none: ViId = none.parse().unwrap();
    let e = refused(admin.accept(none, &api::AcceptRequest::default()).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    assert!(e.message.contains("\"nowhere\""), "{e:?}");
}
