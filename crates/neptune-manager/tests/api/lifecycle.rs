//! A VI's life on the hosts as jobs: deploy, suspend, resume, terminate,
//! their rollbacks, hosts that do not answer, and jobs' leases.

use super::*;

pub(crate) async fn deploy_and_terminate(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 4).await;
    let (alice, bob, admin) = (m.client(&p.alice), m.client(&p.bob), m.client(&p.admin));
    let id: ViId = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "nat-backends", "nodes": 6}}),
        )
        .await
        .parse()
        .unwrap();

    // The plan preview changes nothing.
    let plan = admin.plan(id, None).await.unwrap();
    assert_eq!(plan.vms.len(), 6);
    assert_eq!(plan.datacenter, "napoli");
    for h in ["host0", "host1"] {
        let on = plan.vms.iter().filter(|v| v.host == h).count();
        assert!(on <= 4, "{h} has {on} VMs: {plan:?}");
    }
    let hosts = admin.hosts().await.unwrap();
    assert!(hosts.iter().all(|h| h.used_slots == 0));

    let v = admin
        .accept(id, &api::AcceptRequest::default())
        .await
        .unwrap();
    assert_eq!(v.vi.state, ViState::Deploying, "{v:?}");
    let job = v.jobs[0].id;
    assert_eq!(
        v.jobs[0].total, 25,
        "6 disks, 6 defines, 6 starts, 6 waits until ready, its Home Address delivered at home"
    );
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
    assert_eq!(v.vms.len(), 6);
    let j = alice.job(job).await.unwrap();
    assert_eq!((j.state, j.percent), (api::JobState::Succeeded, 100));
    assert_eq!(refused(bob.job(job).await).status, StatusCode::NOT_FOUND);
    assert_eq!(m.vms_everywhere().await.len(), 6);
    assert_eq!(m.disks_everywhere(), 6);
    // Addresses: one LAN subnet, an address per linked interface, a Home Address for the gateway.
    let addresses = v.addresses.as_ref().unwrap();
    assert_eq!(addresses.links.len(), 1, "{addresses:?}");
    assert_eq!(addresses.interfaces.len(), 6, "{addresses:?}");
    let home = addresses.home_addresses[0].address.clone();
    assert!(home.starts_with("192.0.2."), "{addresses:?}");
    assert_eq!(addresses.home_addresses[0].node, "gateway");

    // Progress as server-sent events: the stream of a finished job ends
    // with its last state (the wire format itself: raw HTTP).
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

    let v = alice.act(id, "terminate").await.unwrap();
    assert_eq!(v.vi.state, ViState::Terminating, "{v:?}");
    let v = m.wait_detail(&p.alice, id, ViState::Terminating).await;
    assert_eq!(v.vi.state, ViState::Terminated, "{v:?}");
    assert!(m.vms_everywhere().await.is_empty(), "VMs leaked");
    assert_eq!(m.disks_everywhere(), 0, "disks leaked");
    assert!(v.vms.is_empty(), "slots leaked");
    let hosts = admin.hosts().await.unwrap();
    assert!(
        hosts
            .iter()
            .all(|h| h.used_slots == 0 && h.used_ram_mib == 0),
        "{hosts:?}"
    );
    // The freed Home Address and block serve the next VI.
    let id2: ViId = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "nat-backends", "nodes": 6}}),
        )
        .await
        .parse()
        .unwrap();
    let plan2 = admin.plan(id2, None).await.unwrap();
    assert_eq!(plan2.addresses.home_addresses[0].address, home, "{plan2:?}");
}

pub(crate) async fn failed_deploy_rolls_back(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    let id: ViId = m
        .requested_vi(
            &p.alice,
            json!({"catalogue": {"kind": "cluster", "nodes": 3}}),
        )
        .await
        .parse()
        .unwrap();
    // The last VM never starts: the two started, all defined and all disks are undone.
    m.sims
        .sim("host0")
        .add_fault(Fault::always(Op::Start).for_vm("worker2"));
    admin
        .accept(id, &api::AcceptRequest::default())
        .await
        .unwrap();
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(
        v.vi.state,
        ViState::Accepted,
        "rolled back to accepted: {v:?}"
    );
    let job = &v.jobs[0];
    assert_eq!(job.state, api::JobState::RolledBack);
    assert!(
        job.error.as_deref().unwrap().contains("start nt-"),
        "{job:?}"
    );
    assert!(m.vms_everywhere().await.is_empty());
    assert_eq!(m.disks_everywhere(), 0);
    // Accepting again is refused; deploying again, on the hosts it holds, is
    // the way forward.
    let e = refused(admin.accept(id, &api::AcceptRequest::default()).await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    let e = refused(alice.act(id, "deploy").await);
    assert_eq!(
        e.status,
        StatusCode::FORBIDDEN,
        "administrators only: {e:?}"
    );
    // Deploy and release answer 200 exactly: no other test pins it.
    let deploy = format!("/api/v1/vis/{id}/deploy");
    let v: api::ViDetail = m
        .post_exactly(&p.admin, &deploy, None, StatusCode::OK)
        .await;
    assert_eq!(v.vi.state, ViState::Deploying, "{v:?}");
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(
        v.vi.state,
        ViState::Accepted,
        "the fault is still there: {v:?}"
    );
    // Or back to the queue: hosts and addresses freed, planned anew.
    assert_eq!(m.used_slots(&p.admin).await, 3);
    let release = format!("/api/v1/vis/{id}/release");
    let v: api::ViDetail = m
        .post_exactly(&p.admin, &release, None, StatusCode::OK)
        .await;
    assert_eq!(v.vi.state, ViState::Requested, "{v:?}");
    assert_eq!(v.addresses, None, "{v:?}");
    assert_eq!(m.used_slots(&p.admin).await, 0);
    let e = refused(admin.act(id, "deploy").await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    m.sims.sim("host0").set_faults(Vec::new());
    admin
        .accept(id, &api::AcceptRequest::default())
        .await
        .unwrap();
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
    // Terminating frees its reserved slots.
    alice.act(id, "terminate").await.unwrap();
    let v = m.wait_detail(&p.alice, id, ViState::Terminating).await;
    assert_eq!(v.vi.state, ViState::Terminated, "{v:?}");
    assert!(v.vms.is_empty());
    assert_eq!(m.used_slots(&p.admin).await, 0);
}

/// A host whose Agent does not answer for a while (restarting, or
/// registering again after a Manager restart) is waited for: the deploy
/// finishes instead of rolling back.
pub(crate) async fn a_host_that_does_not_answer_is_waited_for(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 10).await;
    let (alice, admin) = (m.client(&p.alice), m.client(&p.admin));
    let id: ViId = m
        .requested_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await
        .parse()
        .unwrap();
    m.sims.down.lock().unwrap().insert("host0".to_owned());
    admin
        .accept(id, &api::AcceptRequest::default())
        .await
        .unwrap();
    // Three tries of a step take well under a second; the host stays down
    // for two.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let v = alice.vi(id).await.unwrap();
    assert_eq!(
        v.vi.state,
        ViState::Deploying,
        "still waiting for the host: {v:?}"
    );
    m.sims.down.lock().unwrap().clear();
    let v = m.wait_detail(&p.alice, id, ViState::Deploying).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
    assert_eq!(m.vms_everywhere().await.len(), 2);
}

/// The VI's newest job.
fn last_job(vi: &api::ViDetail) -> &api::Job {
    vi.jobs.last().unwrap()
}

/// Suspend frees the hosts "for future reallocation"; resume places the VI
/// again (refused, changing nothing, while there is no room), with the
/// same addresses; terminate removes what a suspend saved.
pub(crate) async fn suspend_and_resume(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 2, 4).await;
    let alice = m.client(&p.alice);
    let id = m.running_vi(&p, "nat-backends", 6).await;
    let uuid: ViId = id.parse().unwrap();
    let before = alice.vi(uuid).await.unwrap();
    assert_eq!(m.used_slots(&p.admin).await, 6);

    let v = alice.act(uuid, "suspend").await.unwrap();
    assert_eq!(v.vi.state, ViState::Suspending, "{v:?}");
    let v = m.wait_detail(&p.alice, uuid, ViState::Suspending).await;
    assert_eq!(v.vi.state, ViState::Suspended, "{v:?}");
    assert_eq!(last_job(&v).kind, api::JobKind::Suspend);
    assert_eq!(last_job(&v).state, api::JobState::Succeeded);
    assert!(v.vms.is_empty(), "hosts freed: {v:?}");
    assert_eq!(m.used_slots(&p.admin).await, 0);
    assert!(m.vms_everywhere().await.is_empty(), "no VM left on a host");
    assert_eq!(m.disks_everywhere(), 0, "no disk left on a host");
    let saved = m.saved_files(&id);
    assert_eq!(saved.len(), 12, "a state and a disk per VM: {saved:?}");
    assert_eq!(v.addresses, before.addresses, "addresses are kept");

    // Another VI takes the room meanwhile: resuming is refused, nothing changes.
    let other: ViId = m.running_vi(&p, "cluster", 3).await.parse().unwrap();
    let e = refused(alice.act(uuid, "resume").await);
    assert_eq!(e.status, StatusCode::CONFLICT, "{e:?}");
    let still = alice.vi(uuid).await.unwrap();
    assert_eq!(still.vi.state, ViState::Suspended);
    assert_eq!(m.used_slots(&p.admin).await, 3);
    assert_eq!(m.saved_files(&id).len(), 12);

    alice.act(other, "terminate").await.unwrap();
    m.wait_detail(&p.alice, other, ViState::Terminating).await;
    let v = alice.act(uuid, "resume").await.unwrap();
    assert_eq!(v.vi.state, ViState::Resuming, "{v:?}");
    let v = m.wait_detail(&p.alice, uuid, ViState::Resuming).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
    assert_eq!(last_job(&v).kind, api::JobKind::Resume);
    assert_eq!(v.vms.len(), 6);
    assert_eq!(m.used_slots(&p.admin).await, 6);
    assert_eq!(v.addresses, before.addresses, "addresses are kept");
    let vms = m.vms_everywhere().await;
    assert_eq!(vms.len(), 6, "{vms:?}");
    assert_eq!(m.disks_everywhere(), 6);
    assert!(
        m.saved_files(&id).is_empty(),
        "saved files removed after resume"
    );

    // Suspend again, then terminate the suspended VI: nothing is left.
    alice.act(uuid, "suspend").await.unwrap();
    let v = m.wait_detail(&p.alice, uuid, ViState::Suspending).await;
    assert_eq!(v.vi.state, ViState::Suspended, "{v:?}");
    assert_eq!(m.saved_files(&id).len(), 12);
    alice.act(uuid, "terminate").await.unwrap();
    let v = m.wait_detail(&p.alice, uuid, ViState::Terminating).await;
    assert_eq!(v.vi.state, ViState::Terminated, "{v:?}");
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
    let alice = m.client(&p.alice);
    let id = m.running_vi(&p, "cluster", 3).await;
    let uuid: ViId = id.parse().unwrap();
    let sim = m.sims.sim("host0");
    sim.add_fault(Fault::always(Op::ExportDisk).for_vm("worker2"));
    alice.act(uuid, "suspend").await.unwrap();
    let v = m.wait_detail(&p.alice, uuid, ViState::Suspending).await;
    assert_eq!(v.vi.state, ViState::Running, "rolled back: {v:?}");
    let job = last_job(&v);
    assert_eq!(
        (job.kind, job.state),
        (api::JobKind::Suspend, api::JobState::RolledBack),
        "{job:?}"
    );
    assert!(
        job.error.as_deref().unwrap().contains("export disk of nt-"),
        "{job:?}"
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
    alice.act(uuid, "suspend").await.unwrap();
    let v = m.wait_detail(&p.alice, uuid, ViState::Suspending).await;
    assert_eq!(v.vi.state, ViState::Suspended, "{v:?}");

    sim.add_fault(Fault::always(Op::Restore).for_vm("head"));
    alice.act(uuid, "resume").await.unwrap();
    let v = m.wait_detail(&p.alice, uuid, ViState::Resuming).await;
    assert_eq!(v.vi.state, ViState::Suspended, "rolled back: {v:?}");
    assert_eq!(last_job(&v).state, api::JobState::RolledBack);
    assert!(m.vms_everywhere().await.is_empty());
    assert_eq!(m.disks_everywhere(), 0);
    assert_eq!(
        m.used_slots(&p.admin).await,
        0,
        "the reserved hosts are freed"
    );
    assert_eq!(m.saved_files(&id).len(), 6, "what was saved is kept");

    sim.set_faults(Vec::new());
    alice.act(uuid, "resume").await.unwrap();
    let v = m.wait_detail(&p.alice, uuid, ViState::Resuming).await;
    assert_eq!(v.vi.state, ViState::Running, "{v:?}");
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

/// An acceptance is stored with its deploy job; the Manager that accepted
/// then moves the VI to `deploying`. One that dies in between leaves an
/// `accepted` VI with a job: another Manager takes the job over, moves the
/// VI on and deploys it (here an empty deploy: the window, not the steps,
/// is what is tested).
pub(crate) async fn an_acceptance_whose_manager_died_is_deployed(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 4).await;
    let id: ViId = m
        .requested_vi(&p.alice, json!({"catalogue": {"kind": "line", "nodes": 2}}))
        .await
        .parse()
        .unwrap();
    let store = neptune_store::connect(&m.url).await.unwrap();
    let job = neptune_manager::jobs::new_job(id, api::JobKind::Deploy, &[]).unwrap();
    store
        .transition_with_placement(
            id,
            ViState::Requested,
            &neptune_store::Transition {
                to: ViState::Accepted,
                actor: neptune_types::UserId::nil(),
                at: neptune_manager::now_ms(),
                reject_reason: None,
                home_datacenter_id: None,
                usage: None,
            },
            &neptune_store::Reservation {
                job: Some(job.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.vi(id).await.unwrap().state, ViState::Accepted);
    let _other = m.second_with(true).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let vi = store.vi(id).await.unwrap();
        if vi.state == ViState::Running {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the VI stayed {:?}",
            vi.state
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let states: Vec<ViState> = store
        .vi_events(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.to_state)
        .collect();
    assert!(
        states.ends_with(&[ViState::Accepted, ViState::Deploying, ViState::Running]),
        "{states:?}"
    );
    assert_eq!(
        store.job(job.id).await.unwrap().state,
        neptune_store::JobState::Succeeded
    );
    store.close().await;
}
