//! A VI's life on the hosts as jobs: deploy, suspend, resume, terminate,
//! their rollbacks, hosts that do not answer, and jobs' leases.

use super::*;

pub(crate) async fn deploy_and_terminate(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 4).await;
    let id = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "nat-backends", "nodes": 6}}),
        )
        .await;

    // The plan preview changes nothing.
    let (s, plan) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}/plan"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["vms"].as_array().unwrap().len(), 6);
    assert_eq!(plan["datacenter"], "napoli");
    for h in ["host0", "host1"] {
        let on = plan["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["host"] == h)
            .count();
        assert!(on <= 4, "{h} has {on} VMs: {plan}");
    }
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    assert!(hosts
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["used_slots"] == 0));

    let v = m.accept(&p.admin, &id, None).await;
    let job = v["jobs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        v["jobs"][0]["total"], 24,
        "6 disks, 6 defines, 6 starts, 6 waits until ready"
    );
    let v = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["vms"].as_array().unwrap().len(), 6);
    let (_, j) = m
        .call(
            Method::GET,
            &format!("/api/v1/jobs/{job}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(
        (j["state"].as_str(), j["percent"].as_u64()),
        (Some("succeeded"), Some(100))
    );
    let (s, _) = m
        .call(
            Method::GET,
            &format!("/api/v1/jobs/{job}"),
            Some(&p.bob),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(m.vms_everywhere().await.len(), 6);
    assert_eq!(m.disks_everywhere(), 6);
    // Addresses: one LAN subnet, an address per linked interface, a Home Address for the gateway.
    let addresses = &v["addresses"];
    assert_eq!(
        addresses["links"].as_array().unwrap().len(),
        1,
        "{addresses}"
    );
    assert_eq!(
        addresses["interfaces"].as_array().unwrap().len(),
        6,
        "{addresses}"
    );
    let home = addresses["home_addresses"][0]["address"].as_str().unwrap();
    assert!(home.starts_with("192.0.2."), "{addresses}");
    assert_eq!(addresses["home_addresses"][0]["node"], "gateway");

    // Progress as server-sent events: the stream of a finished job ends with its last state.
    let text = m
        .http
        .get(format!("{}/api/v1/jobs/{job}/events", m.base))
        .bearer_auth(&p.alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("\"state\":\"succeeded\""), "{text}");

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
    assert!(m.vms_everywhere().await.is_empty(), "VMs leaked");
    assert_eq!(m.disks_everywhere(), 0, "disks leaked");
    assert!(v["vms"].as_array().unwrap().is_empty(), "slots leaked");
    let (_, hosts) = m
        .call(Method::GET, "/api/v1/hosts", Some(&p.admin), None)
        .await;
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["used_slots"] == 0 && h["used_ram_mib"] == 0),
        "{hosts}"
    );
    // The freed Home Address and block serve the next VI.
    let id2 = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "nat-backends", "nodes": 6}}),
        )
        .await;
    let (_, plan2) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id2}/plan"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(
        plan2["addresses"]["home_addresses"][0]["address"], home,
        "{plan2}"
    );
}

pub(crate) async fn failed_deploy_rolls_back(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let id = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "cluster", "nodes": 3}}),
        )
        .await;
    // The last VM never starts: the two started, all defined and all disks are undone.
    m.sims
        .sim("host0")
        .add_fault(Fault::always(Op::Start).for_vm("worker2"));
    let (s, v) = m
        .call(
            Method::POST,
            &format!("/api/v1/vis/{id}/accept"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(v["state"], "accepted", "rolled back to accepted: {v}");
    let job = &v["jobs"][0];
    assert_eq!(job["state"], "rolled_back");
    assert!(
        job["error"].as_str().unwrap().contains("start nt-"),
        "{job}"
    );
    assert!(m.vms_everywhere().await.is_empty());
    assert_eq!(m.disks_everywhere(), 0);
    // Accepting again is refused; deploying again, on the hosts it holds, is
    // the way forward.
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/deploy"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "administrators only: {v}");
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/deploy"), None)
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("deploying")),
        "{v}"
    );
    let v = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(v["state"], "accepted", "the fault is still there: {v}");
    // Or back to the queue: hosts and addresses freed, planned anew.
    assert_eq!(m.used_slots(&p.admin).await, 3);
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/release"), None)
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("requested")),
        "{v}"
    );
    assert_eq!(v["addresses"], Value::Null, "{v}");
    assert_eq!(m.used_slots(&p.admin).await, 0);
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/deploy"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    m.sims.sim("host0").set_faults(Vec::new());
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(v["state"], "running", "{v}");
    // Terminating frees its reserved slots.
    m.call(
        Method::POST,
        &format!("/api/v1/vis/{id}/terminate"),
        Some(&p.alice),
        None,
    )
    .await;
    let v = m.wait_vi(&p.alice, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    assert!(v["vms"].as_array().unwrap().is_empty());
    assert_eq!(m.used_slots(&p.admin).await, 0);
}

/// A host whose Agent does not answer for a while (restarting, or
/// registering again after a Manager restart) is waited for: the deploy
/// finishes instead of rolling back.
pub(crate) async fn a_host_that_does_not_answer_is_waited_for(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let id = m
        .requested_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    m.sims.down.lock().unwrap().insert("host0".to_owned());
    let (s, v) = m
        .post(&p.admin, &format!("/api/v1/vis/{id}/accept"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Three tries of a step take well under a second; the host stays down
    // for two.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (_, v) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(v["state"], "deploying", "still waiting for the host: {v}");
    m.sims.down.lock().unwrap().clear();
    let v = m.wait_vi(&p.alice, &id, "deploying").await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(m.vms_everywhere().await.len(), 2);
}

/// The VI's newest job.
fn last_job(vi: &Value) -> &Value {
    vi["jobs"].as_array().unwrap().last().unwrap()
}

/// Suspend frees the hosts "for future reallocation"; resume places the VI
/// again (refused, changing nothing, while there is no room), with the
/// same addresses; terminate removes what a suspend saved.
pub(crate) async fn suspend_and_resume(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 4).await;
    let id = m.running_vi(&p, "nat-backends", 6).await;
    let (_, before) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(m.used_slots(&p.admin).await, 6);

    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/suspend"), None)
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("suspending")),
        "{v}"
    );
    let v = m.wait_vi(&p.alice, &id, "suspending").await;
    assert_eq!(v["state"], "suspended", "{v}");
    assert_eq!(last_job(&v)["kind"], "suspend");
    assert_eq!(last_job(&v)["state"], "succeeded");
    assert!(v["vms"].as_array().unwrap().is_empty(), "hosts freed: {v}");
    assert_eq!(m.used_slots(&p.admin).await, 0);
    assert!(m.vms_everywhere().await.is_empty(), "no VM left on a host");
    assert_eq!(m.disks_everywhere(), 0, "no disk left on a host");
    let saved = m.saved_files(&id);
    assert_eq!(saved.len(), 12, "a state and a disk per VM: {saved:?}");
    assert_eq!(v["addresses"], before["addresses"], "addresses are kept");

    // Another VI takes the room meanwhile: resuming is refused, nothing changes.
    let other = m.running_vi(&p, "cluster", 3).await;
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/resume"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (_, still) = m
        .call(
            Method::GET,
            &format!("/api/v1/vis/{id}"),
            Some(&p.alice),
            None,
        )
        .await;
    assert_eq!(still["state"], "suspended");
    assert_eq!(m.used_slots(&p.admin).await, 3);
    assert_eq!(m.saved_files(&id).len(), 12);

    let (s, _) = m
        .post(&p.alice, &format!("/api/v1/vis/{other}/terminate"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    m.wait_vi(&p.alice, &other, "terminating").await;
    let (s, v) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/resume"), None)
        .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("resuming")),
        "{v}"
    );
    let v = m.wait_vi(&p.alice, &id, "resuming").await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(last_job(&v)["kind"], "resume");
    assert_eq!(v["vms"].as_array().unwrap().len(), 6);
    assert_eq!(m.used_slots(&p.admin).await, 6);
    assert_eq!(v["addresses"], before["addresses"], "addresses are kept");
    let vms = m.vms_everywhere().await;
    assert_eq!(vms.len(), 6, "{vms:?}");
    assert_eq!(m.disks_everywhere(), 6);
    assert!(
        m.saved_files(&id).is_empty(),
        "saved files removed after resume"
    );

    // Suspend again, then terminate the suspended VI: nothing is left.
    m.post(&p.alice, &format!("/api/v1/vis/{id}/suspend"), None)
        .await;
    let v = m.wait_vi(&p.alice, &id, "suspending").await;
    assert_eq!(v["state"], "suspended", "{v}");
    assert_eq!(m.saved_files(&id).len(), 12);
    let (s, _) = m
        .post(&p.alice, &format!("/api/v1/vis/{id}/terminate"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let v = m.wait_vi(&p.alice, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    assert!(m.saved_files(&id).is_empty(), "saved files leaked");
    assert!(m.vms_everywhere().await.is_empty());
    assert_eq!(m.disks_everywhere(), 0);
    assert_eq!(m.used_slots(&p.admin).await, 0);
}

/// A failed suspend puts every VM back as it was; a failed resume frees the
/// hosts it reserved and keeps what was saved, so it can be tried again.
pub(crate) async fn failed_suspend_and_resume_roll_back(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let id = m.running_vi(&p, "cluster", 3).await;
    let sim = m.sims.sim("host0");
    sim.add_fault(Fault::always(Op::ExportDisk).for_vm("worker2"));
    m.post(&p.alice, &format!("/api/v1/vis/{id}/suspend"), None)
        .await;
    let v = m.wait_vi(&p.alice, &id, "suspending").await;
    assert_eq!(v["state"], "running", "rolled back: {v}");
    let job = &last_job(&v);
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("suspend"), Some("rolled_back")),
        "{job}"
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("export disk of nt-"),
        "{job}"
    );
    let running = sim.list().await.unwrap();
    assert_eq!(running.len(), 3, "every VM is back");
    assert!(running
        .iter()
        .all(|v| v.state == neptune_hypervisor::VmState::Running));
    assert_eq!(m.disks_everywhere(), 3);
    assert_eq!(m.used_slots(&p.admin).await, 3);
    assert!(
        m.saved_files(&id).is_empty(),
        "nothing saved is left: {:?}",
        m.saved_files(&id)
    );

    sim.set_faults(Vec::new());
    m.post(&p.alice, &format!("/api/v1/vis/{id}/suspend"), None)
        .await;
    let v = m.wait_vi(&p.alice, &id, "suspending").await;
    assert_eq!(v["state"], "suspended", "{v}");

    sim.add_fault(Fault::always(Op::Restore).for_vm("head"));
    m.post(&p.alice, &format!("/api/v1/vis/{id}/resume"), None)
        .await;
    let v = m.wait_vi(&p.alice, &id, "resuming").await;
    assert_eq!(v["state"], "suspended", "rolled back: {v}");
    assert_eq!(last_job(&v)["state"], "rolled_back");
    assert!(m.vms_everywhere().await.is_empty());
    assert_eq!(m.disks_everywhere(), 0);
    assert_eq!(
        m.used_slots(&p.admin).await,
        0,
        "the reserved hosts are freed"
    );
    assert_eq!(m.saved_files(&id).len(), 6, "what was saved is kept");

    sim.set_faults(Vec::new());
    m.post(&p.alice, &format!("/api/v1/vis/{id}/resume"), None)
        .await;
    let v = m.wait_vi(&p.alice, &id, "resuming").await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(m.vms_everywhere().await.len(), 3);
}

/// A batch that outlasts a job's lease keeps its job: the Manager running
/// it renews the lease meanwhile, and a second Manager looking for jobs
/// whose Manager died leaves it alone (it used to take it over and run the
/// batch again, failing the job with "job changed concurrently").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_batch_keeps_its_lease() {
    let m = start(Db::Sqlite).await.unwrap();
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 8).await;
    let _other = m.second_with(true).await;
    let batch = neptune_manager::jobs::LEASE + std::time::Duration::from_secs(2);
    m.sims.sim("host0").set_delay(Op::Start, batch);
    let id = m
        .requested_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await;
    let accepted = m.accept(&p.admin, &id, None).await;
    let job = accepted["jobs"][0]["id"].as_str().unwrap().to_owned();
    let v = m.wait_vi_for(&p.alice, &id, "deploying", 1200).await;
    let j = m.job_outcome(&p.alice, &job, 5).await;
    assert_eq!(
        (v["state"].as_str(), j["state"].as_str(), &j["error"]),
        (Some("running"), Some("succeeded"), &Value::Null),
        "{v}\n{j}"
    );
    assert_eq!(
        m.sims.sim("host0").calls(Op::Start),
        2,
        "each VM started once: the batch ran once"
    );
}
