//! Templates: registered from images of the repository, saved from a
//! running VM, their owners and visibility.

use super::*;

pub(crate) async fn templates_from_images(m: &TestManager) {
    let p = m.people().await;
    let images = m.dir.path().join("images");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(images.join("tiny.qcow2"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(status.success());
    let body = json!({"name": "tiny", "image": "tiny.qcow2", "os_name": "Debian", "software": [{"name": "nginx", "type": "webserver"}]});
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.alice),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (
            v["format"].as_str(),
            v["size_mib"].as_i64(),
            v["disk_mib"].as_i64()
        ),
        (Some("qcow2"), Some(64), Some(64))
    );
    let (s, _) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.admin),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, list) = m
        .call(Method::GET, "/api/v1/templates", Some(&p.alice), None)
        .await;
    assert_eq!(list[0]["software"][0]["name"], "nginx");
    for (image, why) in [
        (
            "../../../../../../../../etc/passwd",
            "inside the image repository",
        ),
        ("missing.qcow2", "not found"),
    ] {
        let (s, v) = m
            .call(
                Method::POST,
                "/api/v1/templates",
                Some(&p.admin),
                Some(json!({"name": "bad", "image": image})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{image}");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }
    std::fs::write(images.join("junk.img"), b"").unwrap();
    let (s, v) = m
        .call(
            Method::POST,
            "/api/v1/templates",
            Some(&p.admin),
            Some(json!({"name": "junk", "image": "junk.img", "disk_mib": 0})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

/// A VM of a running VI saved as a new template, which a new VI then uses.
pub(crate) async fn vm_saved_as_template(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let id = m.running_vi(&p, "line", 2).await;
    let path = format!("/api/v1/vis/{id}/templates");
    let (s, job) = m
        .post(
            &p.alice,
            &path,
            Some(json!({"node": "node0", "name": "golden"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "save_template");
    let done = m
        .job_outcome(&p.alice, job["id"].as_str().unwrap(), 10)
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(v["state"], "running", "the VI's state is left alone");
    let templates_of = |token: String| async move {
        let (_, list) = m
            .call(Method::GET, "/api/v1/templates", Some(&token), None)
            .await;
        list.as_array().unwrap().clone()
    };
    // The saved template is Alice's alone until an administrator publishes it.
    let listed = templates_of(p.alice.clone()).await;
    let golden = listed
        .iter()
        .find(|t| t["name"] == "golden")
        .unwrap_or_else(|| panic!("no template golden: {listed:?}"))
        .clone();
    assert_eq!(golden["disk_mib"], 4096, "the node's disk size: {golden}");
    assert_eq!(
        (golden["owner"].as_str(), golden["visibility"].as_str()),
        (Some("alice"), Some("private"))
    );
    assert!(!templates_of(p.bob.clone())
        .await
        .iter()
        .any(|t| t["name"] == "golden"));
    assert!(templates_of(p.admin.clone())
        .await
        .iter()
        .any(|t| t["name"] == "golden"));
    // The image is a copy of the VM's disk in the repository.
    let image = m.dir.path().join("images/saved-templates").join(format!(
        "{}.img",
        golden["id"].as_str().unwrap().replace('-', "")
    ));
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
        (
            &p.alice,
            json!({"node": "node1", "name": "golden"}),
            StatusCode::CONFLICT,
        ),
        (
            &p.alice,
            json!({"node": "nope", "name": "other"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &p.bob,
            json!({"node": "node0", "name": "other"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (s, v) = m.post(who, &path, Some(body)).await;
        assert_eq!(s, want, "{v}");
    }

    // Bob cannot deploy from Alice's private template...
    let xml = r#"<topology id="from-golden"><nodes><node id="solo"><ram dimension="512"/><hd dimension="4"/><software_configuration template="golden"/></node></nodes></topology>"#;
    let vi = m.create_vi(&p.bob, json!({"xml": xml})).await;
    let bob_vi = vi["id"].as_str().unwrap().to_owned();
    m.post(&p.bob, &format!("/api/v1/vis/{bob_vi}/request"), None)
        .await;
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{bob_vi}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("neither the VI owner's nor public"),
        "{v}"
    );
    // ... nor make it public; an administrator can.
    let golden_id = golden["id"].as_str().unwrap();
    let visibility = format!("/api/v1/templates/{golden_id}/visibility");
    let (s, _) = m
        .post(&p.alice, &visibility, Some(json!({"visibility": "public"})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, t) = m
        .post(&p.admin, &visibility, Some(json!({"visibility": "public"})))
        .await;
    assert_eq!(
        (s, t["visibility"].as_str()),
        (StatusCode::OK, Some("public")),
        "{t}"
    );
    assert!(templates_of(p.bob.clone())
        .await
        .iter()
        .any(|t| t["name"] == "golden"));
    // Names are per owner: Alice may call her own template "debian-12" (it
    // shadows the public one for her alone), but two public templates
    // never share a name.
    let (s, job) = m
        .post(
            &p.alice,
            &path,
            Some(json!({"node": "node1", "name": "debian-12"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let mine = loop {
        let listed = templates_of(p.alice.clone()).await;
        if let Some(t) = listed
            .iter()
            .find(|t| t["name"] == "debian-12" && t["owner"] == "alice")
        {
            break t.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    let bobs = templates_of(p.bob.clone()).await;
    let debian: Vec<_> = bobs.iter().filter(|t| t["name"] == "debian-12").collect();
    assert_eq!(debian.len(), 1, "{bobs:?}");
    assert_eq!(debian[0]["visibility"], "public");
    let (s, v) = m
        .post(
            &p.admin,
            &format!(
                "/api/v1/templates/{}/visibility",
                mine["id"].as_str().unwrap()
            ),
            Some(json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Now Bob's VI made from the published template deploys.
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{bob_vi}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = m.wait_vi(&p.bob, &bob_vi, "deploying").await;
    assert_eq!(v["state"], "running", "{v}");
    // Only a running VI's VMs are saved: one still defined is refused.
    let defined = m
        .create_vi(&p.bob, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let (s, v) = m
        .post(
            &p.bob,
            &format!("/api/v1/vis/{}/templates", defined["id"].as_str().unwrap()),
            Some(json!({"node": "node0", "name": "early"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("only a running VI"),
        "{v}"
    );
}
