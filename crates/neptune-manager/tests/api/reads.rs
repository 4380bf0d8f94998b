//! Reads of VIs answered from the Manager's caches are never stale, also
//! across Managers sharing the database.

use super::*;

/// A VI's detail with its ETag, sending `If-None-Match` when given one
/// (headers and a 304: the wire itself, so raw HTTP).
pub(crate) async fn detail_with_tag(
    m: &TestManager,
    token: &str,
    id: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, String, Value) {
    let (status, tag, v, _) = read_detail(m, token, id, if_none_match, None).await;
    (status, tag, v)
}

/// A read of a VI's detail, with `If-None-Match` and `wait_ms` when given:
/// its status, ETag and body, and how long it took.
async fn read_detail(
    m: &TestManager,
    token: &str,
    id: &str,
    if_none_match: Option<&str>,
    wait_ms: Option<u64>,
) -> (StatusCode, String, Value, std::time::Duration) {
    let started = std::time::Instant::now();
    let query = wait_ms
        .map(|ms| format!("?wait_ms={ms}"))
        .unwrap_or_default();
    let mut req = m
        .http
        .get(format!("{}/api/v1/vis/{id}{query}", m.base))
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
        started.elapsed(),
    )
}

/// The people, one host, a second Manager on the same database, and
/// alice's SHOP VI (its id as text and as a `ViId`).
async fn shop_beside_a_second_manager(m: &TestManager) -> (People, TestManager, String, ViId) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 1, 64).await;
    let other = m.second().await;
    let vi = m.create_vi(&p.alice, json!({"xml": SHOP})).await;
    let id = vi["id"].as_str().unwrap().to_owned();
    let uuid: ViId = id.parse().unwrap();
    (p, other, id, uuid)
}

/// Reads of a VI's detail are answered from a cache of serialised bodies;
/// none may be older than a write the reader could have observed: its own
/// changes, a job's progress recorded by the job runner, and changes made
/// through another Manager sharing the database. Who may read is unchanged.
pub(crate) async fn reads_are_never_stale(m: &TestManager) {
    let (p, other, id, uuid) = shop_beside_a_second_manager(m).await;
    let alice = m.client(&p.alice);

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
        let client = m.client(token);
        async move {
            client
                .vis()
                .await
                .unwrap()
                .into_iter()
                .map(|v| (v.name, v.state))
                .collect::<Vec<_>>()
        }
    };
    let shop = alice.vi(uuid).await.unwrap().vi.name;
    assert_eq!(list(&p.alice).await, [(shop.clone(), ViState::Defined)]);
    assert_eq!(list(&p.admin).await, [(shop.clone(), ViState::Defined)]);
    assert!(list(&p.bob).await.is_empty());
    // A VI made through another Manager joins the lists kept here.
    other
        .create_vi(&p.bob, json!({"catalogue": {"kind": "star", "nodes": 3}}))
        .await;
    assert_eq!(list(&p.bob).await.len(), 1);
    assert_eq!(list(&p.admin).await.len(), 2);
    assert_eq!(list(&p.alice).await, [(shop.clone(), ViState::Defined)]);

    // A change made through another Manager shows at once here.
    other.client(&p.alice).act(uuid, "request").await.unwrap();
    let (s, requested_tag, v) = detail_with_tag(m, &p.alice, &id, Some(&tag)).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("requested"))
    );
    assert_ne!(requested_tag, tag);
    assert_eq!(list(&p.alice).await, [(shop.clone(), ViState::Requested)]);

    // The caller's own change shows at once too.
    alice.act(uuid, "withdraw").await.unwrap();
    let (_, _, v) = detail_with_tag(m, &p.alice, &id, None).await;
    assert_eq!(v["state"], "defined");
    assert_eq!(list(&p.alice).await, [(shop.clone(), ViState::Defined)]);
    alice.act(uuid, "request").await.unwrap();

    // A job's progress, written by the job runner, shows in every read
    // made after it: the detail is never behind the job read just before.
    m.sims
        .sim("host0")
        .set_delay(Op::Start, std::time::Duration::from_millis(150));
    let v = m.accept(&p.admin, &id, None).await;
    let job: JobId = v["jobs"][0]["id"].as_str().unwrap().parse().unwrap();
    let mut seen_steps = std::collections::BTreeSet::new();
    loop {
        let j = alice.job(job).await.unwrap();
        for reader in [m, &other] {
            let (s, _, v) = detail_with_tag(reader, &p.alice, &id, None).await;
            assert_eq!(s, StatusCode::OK);
            let shown = &v["jobs"][0];
            assert!(
                shown["step"].as_i64() >= Some(j.step),
                "{shown} is behind {j:?}"
            );
            if j.state == api::JobState::Succeeded {
                assert_eq!(shown["state"], "succeeded", "{v}");
                assert_eq!(v["state"], "running", "{v}");
                assert!(!v["vms"].as_array().unwrap().is_empty());
            }
            seen_steps.insert(shown["step"].as_i64().unwrap());
        }
        if j.state != api::JobState::Running {
            assert_eq!(j.state, api::JobState::Succeeded, "{j:?}");
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
    other.client(&p.alice).act(uuid, "terminate").await.unwrap();
    let (s, _, v) = detail_with_tag(m, &p.alice, &id, Some(&running_tag)).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(v["state"], "running");
    let v = m.wait_vi(&p.alice, &id, "terminating").await;
    assert_eq!(v["state"], "terminated", "{v}");
    assert!(v["vms"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["jobs"][1]["state"], "succeeded", "{v}");
    assert_eq!(list(&p.alice).await, [(shop, ViState::Terminated)]);
}

/// A long-poll of a VI's detail: `If-None-Match` naming `tag` and
/// `wait_ms`; the answer and how long it took.
async fn detail_waiting(
    m: &TestManager,
    token: &str,
    id: &str,
    tag: &str,
    wait_ms: u64,
) -> (StatusCode, String, Value, std::time::Duration) {
    read_detail(m, token, id, Some(tag), Some(wait_ms)).await
}

/// A read of a VI's detail that names the detail held and `wait_ms` waits
/// for the VI to change: it answers as soon as the owner changes it, a
/// job's progress moves it or another Manager sharing the database changes
/// it, and 304 once `wait_ms` has passed without a change.
pub(crate) async fn reads_wait_for_a_change(m: &TestManager) {
    use std::time::Duration;
    let (p, other, id, uuid) = shop_beside_a_second_manager(m).await;
    let (_, tag, _) = detail_with_tag(m, &p.alice, &id, None).await;

    // Bounded, and only for those who may see the VI.
    let (s, _, v, _) = detail_waiting(m, &p.alice, &id, &tag, 30_001).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().contains("wait_ms"), "{v}");
    let (s, _, _, took) = detail_waiting(m, &p.bob, &id, &tag, 2_000).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(took < Duration::from_millis(1_500), "{took:?}");
    // Another detail than the one held is answered at once.
    let (s, same, v, took) = detail_waiting(m, &p.alice, &id, "\"other\"", 5_000).await;
    assert_eq!(
        (s, &same, v["state"].as_str()),
        (StatusCode::OK, &tag, Some("defined"))
    );
    assert!(took < Duration::from_millis(2_500), "{took:?}");
    // Unchanged: 304 once the wait is over.
    let (s, same, _, took) = detail_waiting(m, &p.alice, &id, &tag, 400).await;
    assert_eq!((s, &same), (StatusCode::NOT_MODIFIED, &tag));
    assert!(took >= Duration::from_millis(400), "{took:?}");

    // The owner's change ends the wait.
    let ((s, requested, v, took), ()) =
        tokio::join!(detail_waiting(m, &p.alice, &id, &tag, 20_000), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            m.client(&p.alice).act(uuid, "request").await.unwrap();
        });
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("requested"))
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // So does a change made through another Manager (seen on a recheck).
    let ((s, _, v, took), ()) = tokio::join!(
        detail_waiting(m, &p.alice, &id, &requested, 20_000),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            other.client(&p.alice).act(uuid, "withdraw").await.unwrap();
        }
    );
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("defined")));
    assert!(took < Duration::from_secs(10), "{took:?}");

    // And every step of a deploy: a waiter follows the job to its end.
    // Two slow phases, each longer than a waiter lets changes settle
    // (50 ms), so at least one answer comes while the VI deploys.
    m.client(&p.alice).act(uuid, "request").await.unwrap();
    m.sims
        .sim("host0")
        .set_delay(Op::Define, Duration::from_millis(300));
    m.sims
        .sim("host0")
        .set_delay(Op::Start, Duration::from_millis(300));
    let v = m.accept(&p.admin, &id, None).await;
    assert_eq!(v["state"], "deploying", "{v}");
    let (_, mut tag, _) = detail_with_tag(m, &p.alice, &id, None).await;
    let mut answers = 0;
    // Progress is written at most every 250 ms, but a batch that took
    // longer shows as soon as it is done: some answer shows the job
    // part-way.
    let mut part_way = false;
    loop {
        let (s, next, v, _) = detail_waiting(m, &p.alice, &id, &tag, 20_000).await;
        assert_eq!(s, StatusCode::OK, "the deploy stalled: {v}");
        assert_ne!(next, tag);
        answers += 1;
        tag = next;
        if v["state"] != "deploying" {
            assert_eq!(v["state"], "running", "{v}");
            break;
        }
        let job = &v["jobs"][0];
        part_way |= job["step"].as_i64() > Some(0) && job["step"].as_i64() < job["total"].as_i64();
    }
    assert!(answers >= 2, "{answers}");
    assert!(part_way, "no answer showed the deploy's progress");
    m.sims.sim("host0").set_delays(HashMap::new());
}
