//! Real Agents on 127.0.0.1:0 over the simulated hypervisor, driven
//! through `AgentClient` (and `AgentHypervisor`), plus a tiny fake Manager
//! that records registrations.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use neptune_agent::api::{self, codes, Capacity, Nic, VmSpec, VmState};
use neptune_agent::{
    AgentClient, AgentConfig, AgentHypervisor, ClientError, ManagerLink, RunningAgent,
};
use neptune_hypervisor::sim::{Fault, SimConfig, SimHypervisor};
use neptune_hypervisor::{Hypervisor, HypervisorError, NetworkJoin, Op, Segment};
use neptune_types::Secret;
use tokio::sync::oneshot;

const TOKEN: &str = "agent-token-4f1c9e";

const CAP: Capacity = Capacity {
    cpus: 8,
    ram_mib: 8192,
    disk_mib: 100_000,
    vm_slots: 4,
};

/// One Agent over one simulated host.
struct Host {
    agent: Option<RunningAgent>,
    sim: Arc<SimHypervisor>,
    stop: Option<oneshot::Sender<()>>,
}

impl Host {
    fn url(&self) -> String {
        self.agent.as_ref().unwrap().url().to_owned()
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(&self.url(), Secret::new(TOKEN)).unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.agent.take().unwrap().wait().await.unwrap();
    }
}

async fn start_host(root: &Path, name: &str, manager: Option<ManagerLink>) -> Host {
    let sim = Arc::new(SimHypervisor::new(SimConfig::new(root.join(name), CAP)).unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = neptune_agent::start(
        AgentConfig {
            name: name.into(),
            datacenter: "napoli".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise_url: None,
            token: Secret::new(TOKEN),
            manager,
            hypervisor: sim.clone(),
            uplink_mbps: 10_000,
        },
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .unwrap();
    Host {
        agent: Some(agent),
        sim,
        stop: Some(stop),
    }
}

fn image(dir: &Path) -> String {
    let path = dir.join("debian-12.qcow2");
    std::fs::write(&path, b"template").unwrap();
    path.display().to_string()
}

fn spec(name: &str, disk: &str) -> VmSpec {
    VmSpec {
        seed: None,
        name: name.into(),
        vcpus: 2,
        ram_mib: 1024,
        disk_mib: 2048,
        disk: disk.into(),
        nics: vec![Nic {
            bandwidth_mbps: None,
            mac: "52:54:00:12:34:56".into(),
            network: "nbr-vi1-l1".into(),
            segment: None,
        }],
    }
}

fn refused(err: &ClientError) -> (u16, &str) {
    match err {
        ClientError::Refused { status, code, .. } => (*status, code.as_str()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn auth_is_required_and_the_token_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), "h1", None).await;

    // /healthz needs no token.
    let anonymous = AgentClient::new(&host.url(), Secret::new("")).unwrap();
    assert_eq!(anonymous.health().await.unwrap().status, "ok");

    // No Authorization header at all.
    let raw = reqwest::Client::new();
    for path in ["/v1/host", "/v1/vms", "/v1/vms/a"] {
        let resp = raw
            .get(format!("{}{path}", host.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let body: api::ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.code, codes::UNAUTHENTICATED);
    }
    // Not a bearer token.
    let resp = raw
        .get(format!("{}/v1/host", host.url()))
        .header("Authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A wrong token, a prefix of the right one, a longer one.
    for wrong in ["wrong", &TOKEN[..5], &format!("{TOKEN}x")] {
        let client = AgentClient::new(&host.url(), Secret::new(wrong)).unwrap();
        let err = client.host().await.unwrap_err();
        assert_eq!(refused(&err), (401, codes::UNAUTHENTICATED));
        assert!(!err.is_retryable());
        let err = client.define(&spec("vi1-a", "d")).await.unwrap_err();
        assert_eq!(refused(&err), (401, codes::UNAUTHENTICATED));
        assert!(!err.to_string().contains(TOKEN));
    }
    assert!(host.sim.list().await.unwrap().is_empty());

    // The right token; the answer does not carry it.
    let resp = raw
        .get(format!("{}/v1/host", host.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(TOKEN));
    let info: api::HostInfo = serde_json::from_str(&text).unwrap();
    assert_eq!(info.name, "h1");
    assert_eq!(info.datacenter, "napoli");
    assert_eq!(info.capacity, CAP);
    host.stop().await;
}

#[tokio::test]
async fn full_lifecycle_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let host = start_host(dir.path(), "h1", None).await;
    let c = host.client();

    let disk = c.prepare_disk("vi1-web", &img, 2048).await.unwrap();
    assert_eq!(c.prepare_disk("vi1-web", &img, 2048).await.unwrap(), disk);
    assert!(Path::new(&disk).is_file());
    assert!(disk.starts_with(&dir.path().join("h1").display().to_string()));

    let s = spec("vi1-web", &disk);
    c.define(&s).await.unwrap();
    c.define(&s).await.unwrap();
    assert_eq!(c.vm("vi1-web").await.unwrap().state, VmState::Stopped);
    c.start("vi1-web").await.unwrap();
    c.start("vi1-web").await.unwrap();
    let vms = c.list_vms().await.unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].state, VmState::Running);
    assert_eq!(vms[0].spec, s);

    c.destroy("vi1-web").await.unwrap();
    c.destroy("vi1-web").await.unwrap();
    assert!(c.list_vms().await.unwrap().is_empty());
    assert_eq!(
        refused(&c.vm("vi1-web").await.unwrap_err()),
        (404, codes::NO_SUCH_VM)
    );
    assert!(Path::new(&disk).is_file(), "destroy keeps the disk");
    c.remove_disk("vi1-web").await.unwrap();
    c.remove_disk("vi1-web").await.unwrap();
    assert!(!Path::new(&disk).exists());
    host.stop().await;
}

/// A batch runs each operation as its own route would, answers each in
/// order, and one failing does not stop the others; through the
/// [`Hypervisor`] port the answers are the port's own results and errors.
#[tokio::test]
async fn a_batch_answers_each_operation_in_order() {
    use neptune_hypervisor::{BatchOp, BatchOut};
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let host = start_host(dir.path(), "h1", None).await;
    let c = host.client();
    let deploy: Vec<BatchOp> = ["vi1-a", "vi1-b"]
        .iter()
        .flat_map(|vm| {
            [
                BatchOp::DefineOnDisk {
                    spec: spec(vm, ""),
                    template_image: img.clone(),
                },
                BatchOp::Start { vm: (*vm).into() },
            ]
        })
        .chain([
            // Not defined: refused alone.
            BatchOp::Start {
                vm: "vi1-ghost".into(),
            },
            BatchOp::Info {
                vm: "vi1-ghost".into(),
            },
            BatchOp::PrepareDisk {
                vm: "vi1-c".into(),
                template_image: dir.path().join("missing.qcow2").display().to_string(),
                size_mib: 2048,
            },
        ])
        .collect();
    // Defines and starts of one VM are sent in order but run together:
    // each VM is defined by the first batch, started by the second.
    let results = c.batch(&deploy).await.unwrap();
    assert_eq!(results.len(), deploy.len());
    assert_eq!(results[0].ok, Some(BatchOut::Done), "{results:?}");
    assert_eq!(results[2].ok, Some(BatchOut::Done), "{results:?}");
    assert_eq!(results[4].error.as_ref().unwrap().code, codes::NO_SUCH_VM);
    assert_eq!(results[5].ok, Some(BatchOut::Info(None)));
    assert_eq!(results[6].error.as_ref().unwrap().code, codes::NO_IMAGE);
    let defined = host.sim.list().await.unwrap();
    assert_eq!(defined.len(), 2);
    // The define put the VM on the disk it prepared.
    let disk = c.prepare_disk("vi1-a", &img, 2048).await.unwrap();
    assert!(defined
        .iter()
        .any(|v| v.spec.name == "vi1-a" && v.spec.disk == disk));

    // Through the port: the hypervisor's own results and errors.
    let hv = neptune_agent::client::AgentHypervisor::connect(c.clone())
        .await
        .unwrap();
    let ops = [
        BatchOp::Start { vm: "vi1-a".into() },
        BatchOp::Start { vm: "vi1-b".into() },
        BatchOp::Info { vm: "vi1-a".into() },
        BatchOp::Destroy {
            vm: "vi1-ghost".into(),
        },
        BatchOp::Start {
            vm: "vi1-ghost".into(),
        },
    ];
    let out = hv.batch(&ops).await;
    assert!(out[0].is_ok() && out[1].is_ok(), "{out:?}");
    match &out[2] {
        Ok(BatchOut::Info(Some(info))) => assert_eq!(info.state, VmState::Running),
        other => panic!("expected the VM's info, got {other:?}"),
    }
    assert!(
        out[3].is_ok(),
        "destroying what is not there is fine: {out:?}"
    );
    assert_eq!(out[4], Err(HypervisorError::NoSuchVm("vi1-ghost".into())));
    let terminate: Vec<BatchOp> = ["vi1-a", "vi1-b"]
        .iter()
        .flat_map(|vm| [BatchOp::Destroy { vm: (*vm).into() }])
        .collect();
    assert!(hv.batch(&terminate).await.iter().all(Result::is_ok));
    let remove: Vec<BatchOp> = ["vi1-a", "vi1-b"]
        .iter()
        .map(|vm| BatchOp::RemoveDisk { vm: (*vm).into() })
        .collect();
    assert!(hv.batch(&remove).await.iter().all(Result::is_ok));
    assert!(host.sim.list().await.unwrap().is_empty());
    assert!(!Path::new(&disk).exists());

    // Refused whole: a bad name anywhere, too many operations.
    let raw = reqwest::Client::new();
    let url = format!("{}/v1/batch", host.url());
    let bad_name = serde_json::json!({"ops": [
        {"op": "start", "vm": "vi1-a"},
        {"op": "start", "vm": "../etc"}
    ]});
    let resp = raw
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&bad_name)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let too_many: Vec<serde_json::Value> = (0..=api::MAX_BATCH_OPS)
        .map(|i| serde_json::json!({"op": "info", "vm": format!("vi1-{i}")}))
        .collect();
    let resp = raw
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "ops": too_many }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: api::ErrorBody = resp.json().await.unwrap();
    assert!(body.message.contains("at most 256"), "{}", body.message);
    let unknown = serde_json::json!({"ops": [{"op": "reboot", "vm": "vi1-a"}]});
    let resp = raw
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Without the token, nothing runs.
    let resp = raw
        .post(&url)
        .json(&serde_json::json!({"ops": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    host.stop().await;
}

#[tokio::test]
async fn refusals_have_codes_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let host = start_host(dir.path(), "h1", None).await;
    let c = host.client();

    let err = c.start("ghost").await.unwrap_err();
    assert_eq!(refused(&err), (404, codes::NO_SUCH_VM));
    assert!(!err.is_retryable());

    let s = spec("vi1-a", "d");
    c.define(&s).await.unwrap();
    let changed = VmSpec { vcpus: 1, ..s };
    assert_eq!(
        refused(&c.define(&changed).await.unwrap_err()),
        (409, codes::SPEC_MISMATCH)
    );

    // Room: 8 vCPUs, 2 per VM, the first is defined.
    for n in ["vi1-b", "vi1-c", "vi1-d"] {
        c.define(&spec(n, "d")).await.unwrap();
    }
    assert_eq!(
        refused(&c.define(&spec("vi1-e", "d")).await.unwrap_err()),
        (409, codes::NO_ROOM)
    );
    assert_eq!(
        refused(
            &c.prepare_disk("vi1-a", "/no/such/image", 1)
                .await
                .unwrap_err()
        ),
        (422, codes::NO_IMAGE)
    );
    assert_eq!(
        refused(
            &c.restore(&spec("vi9-x", "d"), "/no/such/state")
                .await
                .unwrap_err()
        ),
        (422, codes::NO_SAVED_STATE)
    );
    assert_eq!(
        refused(&c.prepare_disk("vi1-a", &img, 1_000_000).await.unwrap_err()),
        (409, codes::NO_ROOM)
    );
    assert_eq!(
        refused(&c.save("ghost", "/no/such/state").await.unwrap_err()),
        (404, codes::NO_SUCH_VM)
    );
    assert_eq!(
        refused(&c.export_disk("ghost", "/tmp/x").await.unwrap_err()),
        (404, codes::NO_DISK)
    );

    // Names unfit for a path are refused before anything is sent.
    assert!(matches!(
        c.start("../etc").await,
        Err(ClientError::Invalid(HypervisorError::InvalidRequest(_)))
    ));

    // Malformed bodies, a body naming another VM, an unknown route.
    let raw = reqwest::Client::new();
    let resp = raw
        .put(format!("{}/v1/vms/vi1-z", host.url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<api::ErrorBody>().await.unwrap().code,
        codes::INVALID_REQUEST
    );
    let resp = raw
        .put(format!("{}/v1/vms/vi1-z", host.url()))
        .bearer_auth(TOKEN)
        .json(&spec("vi1-y", "d"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    for bad in [".hidden", "%2e%2e%2fetc", "%FF", "a%20b"] {
        let resp = raw
            .post(format!("{}/v1/vms/{bad}/start", host.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        assert_eq!(
            resp.json::<api::ErrorBody>().await.unwrap().code,
            codes::INVALID_REQUEST
        );
    }
    let resp = raw
        .get(format!("{}/v2/nothing", host.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<api::ErrorBody>().await.unwrap().code,
        codes::NOT_FOUND
    );
    host.stop().await;
}

#[tokio::test]
async fn injected_faults_surface_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), "h1", None).await;
    let c = host.client();
    c.define(&spec("vi1-web", "d")).await.unwrap();
    c.define(&spec("vi1-db", "d")).await.unwrap();

    host.sim
        .set_faults(vec![Fault::times(Op::Start, 2).for_vm("-db")]);
    c.start("vi1-web").await.unwrap();
    let err = c.start("vi1-db").await.unwrap_err();
    assert_eq!(refused(&err), (502, codes::HYPERVISOR_FAILED));
    assert!(err.is_retryable());

    // The same fault through the port: the variant comes back.
    let hv = AgentHypervisor::connect(host.client()).await.unwrap();
    assert_eq!(hv.capacity(), CAP);
    match hv.start("vi1-db").await {
        Err(HypervisorError::Failed { op, vm, message }) => {
            assert_eq!(op, Op::Start);
            assert_eq!(vm, "vi1-db");
            assert!(message.contains("injected"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Spent: the third call succeeds.
    hv.start("vi1-db").await.unwrap();
    assert!(hv
        .list()
        .await
        .unwrap()
        .iter()
        .all(|vm| vm.state == VmState::Running));

    // One VM through the port: as listed, and none for a VM not there.
    let db = hv.info("vi1-db").await.unwrap().unwrap();
    assert_eq!((db.state, db.ready), (VmState::Running, true));
    assert_eq!(hv.info("ghost").await.unwrap(), None);

    // Other refusals keep their variant through the port.
    assert_eq!(
        hv.start("ghost").await,
        Err(HypervisorError::NoSuchVm("ghost".into()))
    );
    let huge = VmSpec {
        vcpus: 8,
        ..spec("vi1-x", "d")
    };
    assert!(matches!(
        hv.define(&huge).await,
        Err(HypervisorError::NoRoom(m)) if m.contains("vCPU")
    ));
    host.stop().await;
}

/// `POST /v1/networks/join` through the port: the host's networks flood to
/// the peers of every join, the same join again changes nothing, and the
/// hypervisor's refusals and failures keep their variant. Without the
/// token nothing is joined.
#[tokio::test]
async fn networks_join_their_segments_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), "h1", None).await;
    let hv = AgentHypervisor::connect(host.client()).await.unwrap();
    let peer = |last: u8| std::net::SocketAddr::from(([192, 0, 2, last], 4789));
    let join = |peers: Vec<std::net::SocketAddr>| NetworkJoin {
        network: "nt-1a2b3c4d-lan".into(),
        segment: Some(Segment {
            vni: 4242,
            port: 4789,
            peers,
        }),
    };
    let plain = NetworkJoin {
        network: "nt-1a2b3c4d-dmz".into(),
        segment: None,
    };

    hv.join_segments(&[join(vec![peer(77)]), plain.clone()])
        .await
        .unwrap();
    hv.join_segments(&[join(vec![peer(78)])]).await.unwrap();
    hv.join_segments(&[join(vec![peer(78)])]).await.unwrap();
    assert_eq!(
        host.sim.segment_peers("nt-1a2b3c4d-lan"),
        Some(vec![peer(77), peer(78)])
    );
    assert_eq!(host.sim.segment_peers("nt-1a2b3c4d-dmz"), Some(vec![]));
    assert_eq!(
        host.sim.joins(),
        vec![
            vec![join(vec![peer(77)]), plain],
            vec![join(vec![peer(78)])],
            vec![join(vec![peer(78)])],
        ],
        "each call reached the host whole"
    );

    let mut bad = join(vec![]);
    bad.segment.as_mut().unwrap().vni = 0;
    assert!(matches!(
        hv.join_segments(&[bad]).await,
        Err(HypervisorError::InvalidRequest(m)) if m.contains("VXLAN")
    ));
    host.sim.add_fault(Fault::times(Op::Join, 1));
    match hv.join_segments(&[join(vec![])]).await {
        Err(HypervisorError::Failed { op, vm, message }) => {
            assert_eq!((op, vm.as_str()), (Op::Join, "nt-1a2b3c4d-lan"));
            assert!(message.contains("injected"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let calls = host.sim.joins().len();

    // Unauthenticated: refused before the host hears of it.
    let raw = reqwest::Client::new();
    let resp = raw
        .post(format!("{}/v1/networks/join", host.url()))
        .json(&api::JoinSegments {
            networks: vec![join(vec![peer(99)])],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: api::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.code, codes::UNAUTHENTICATED);
    let intruder = AgentClient::new(&host.url(), Secret::new("not-the-token")).unwrap();
    let err = intruder
        .join_segments(&[join(vec![peer(99)])])
        .await
        .unwrap_err();
    assert_eq!(refused(&err), (401, codes::UNAUTHENTICATED));
    assert_eq!(host.sim.joins().len(), calls);
    assert_eq!(
        host.sim.segment_peers("nt-1a2b3c4d-lan"),
        Some(vec![peer(77), peer(78)])
    );
    host.stop().await;
}

/// The Agent serves its own OpenAPI document, without a token as the
/// Manager serves its own: the one checked in as `openapi/agent.json`.
#[tokio::test]
async fn the_agent_serves_its_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), "h1", None).await;
    let anonymous = AgentClient::new(&host.url(), Secret::new("")).unwrap();
    let served = anonymous.openapi().await.unwrap();
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/agent.json");
    let checked_in: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    assert_eq!(served, checked_in);
    assert!(served["paths"][api::OPENAPI_PATH]["get"].is_object());
    host.stop().await;
}

#[tokio::test]
async fn unreachable_and_slow_agents_are_retryable() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let c = AgentClient::new(&format!("http://{addr}"), Secret::new(TOKEN)).unwrap();
    let err = c.list_vms().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let hv = AgentHypervisor::new(c, CAP);
    assert!(matches!(
        hv.start("vi1-a").await,
        Err(HypervisorError::Unreachable(_))
    ));

    // An operation slower than the client's timeout.
    let host = start_host(dir.path(), "h1", None).await;
    host.sim.set_delay(Op::Define, Duration::from_secs(2));
    let c = AgentClient::with_timeouts(
        &host.url(),
        Secret::new(TOKEN),
        Duration::from_secs(1),
        Duration::from_millis(200),
    )
    .unwrap();
    let t = Instant::now();
    let err = c.define(&spec("vi1-slow", "d")).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_millis(1500));
    host.stop().await;
}

#[tokio::test]
async fn save_on_one_agent_restore_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let a = start_host(dir.path(), "a", None).await;
    let b = start_host(dir.path(), "b", None).await;
    let (ca, cb) = (a.client(), b.client());
    let state = dir.path().join("states").join("vi1-web.state");
    let state = state.display().to_string();

    let disk = ca.prepare_disk("vi1-web", &img, 2048).await.unwrap();
    let s = spec("vi1-web", &disk);
    ca.define(&s).await.unwrap();
    ca.start("vi1-web").await.unwrap();
    ca.save("vi1-web", &state).await.unwrap();
    ca.save("vi1-web", &state).await.unwrap();
    assert!(ca.list_vms().await.unwrap().is_empty(), "save frees host a");
    // The disk travels through the shared repository.
    let export = dir.path().join("repo").join("vi1-web.disk");
    let export = export.display().to_string();
    ca.export_disk("vi1-web", &export).await.unwrap();
    ca.export_disk("vi1-web", &export).await.unwrap();
    ca.remove_disk("vi1-web").await.unwrap();
    assert!(
        !std::path::Path::new(&disk).exists(),
        "host a keeps no disk"
    );
    let moved = cb.prepare_disk("vi1-web", &export, 2048).await.unwrap();
    assert_ne!(moved, disk);
    let s = spec("vi1-web", &moved);

    cb.restore(&s, &state).await.unwrap();
    cb.restore(&s, &state).await.unwrap();
    let vms = cb.list_vms().await.unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].state, VmState::Running);
    assert_eq!(vms[0].spec, s);

    // Through the port, with a spec that disagrees with the running VM.
    let hv = AgentHypervisor::connect(cb.clone()).await.unwrap();
    let other = VmSpec {
        ram_mib: 4096,
        ..s.clone()
    };
    assert_eq!(
        hv.restore(&other, &state).await,
        Err(HypervisorError::SpecMismatch {
            name: "vi1-web".into()
        })
    );
    assert_eq!(
        hv.restore(&spec("vi1-db", "d"), "/no/such/state").await,
        Err(HypervisorError::NoSavedState("/no/such/state".into()))
    );
    a.stop().await;
    b.stop().await;
}

/// A VM moves live from one Agent's host to another's through the port
/// over HTTP: the source runs the move on a task of its own and the client
/// follows it; a failed move leaves the VM where it was and may be asked
/// again; a VM moved away and back moves again; an Agent that forgot its
/// move (a restart) says so as something to retry.
#[tokio::test]
async fn a_vm_moves_live_between_agents() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let a = start_host(dir.path(), "a", None).await;
    let b = start_host(dir.path(), "b", None).await;
    let (ca, cb) = (a.client(), b.client());
    let disk = ca.prepare_disk("vi1-web", &img, 2048).await.unwrap();
    ca.define(&spec("vi1-web", &disk)).await.unwrap();
    ca.start("vi1-web").await.unwrap();
    let source = AgentHypervisor::connect(ca.clone()).await.unwrap();
    let dest = AgentHypervisor::connect(cb.clone()).await.unwrap();

    let out = source.outgoing("vi1-web").await.unwrap();
    assert_eq!(out.disk_bytes, 2048 << 20);
    let request = out.incoming_request(out.spec.clone());
    let to = dest.accept_incoming(&request).await.unwrap();
    // Through both APIs: the disk is an overlay of the template both
    // hosts see, so only the overlay is to be copied.
    assert_eq!(
        out.base.as_ref().map(|b| b.template_image.as_str()),
        Some(img.as_str())
    );
    assert!(to.incremental);
    assert_eq!(
        refused(&cb.migration("vi1-web").await.unwrap_err()),
        (404, codes::NOT_FOUND),
        "no move known before one starts"
    );

    // The first move fails on the source; the VM stays there.
    a.sim.add_fault(Fault::times(Op::Migrate, 1));
    a.sim.set_delay(Op::Migrate, Duration::from_millis(300));
    assert!(matches!(
        source.migrate("vi1-web", &to, &|_| {}).await,
        Err(HypervisorError::Failed {
            op: Op::Migrate,
            ..
        })
    ));
    assert_eq!(ca.list_vms().await.unwrap().len(), 1);
    let failed = ca.migration("vi1-web").await.unwrap();
    assert_eq!(failed.state, api::MigrationState::Failed);
    assert_eq!(
        failed.error.map(|e| e.code).as_deref(),
        Some(codes::HYPERVISOR_FAILED)
    );

    // Asked again, it runs (slowly enough to be seen running) and ends.
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let report = source
        .migrate("vi1-web", &to, &move |p| log.lock().unwrap().push(p))
        .await
        .unwrap();
    assert_eq!(
        report.bytes,
        1024 << 20,
        "the memory: the disk is the base's"
    );
    let heard = heard.lock().unwrap().clone();
    assert!(heard.len() >= 2, "followed while running: {heard:?}");
    assert_eq!(heard.last().map(|p| p.bytes_remaining), Some(0));
    // The same move asked again after it succeeded: its report, no new move.
    let again = ca.migrate("vi1-web", &to).await.unwrap();
    assert_eq!(
        (again.state, again.report),
        (api::MigrationState::Succeeded, Some(report))
    );
    assert!(ca.list_vms().await.unwrap().is_empty());
    assert!(
        heard.iter().any(|p| p.switching_over),
        "the switch-over is told: {heard:?}"
    );
    // The destination answers whether it runs the VM: not yet (a
    // simulated host takes it in when it is completed), after the wait;
    // then, asked with a long wait, the moment it does.
    let asked = Instant::now();
    let arrival = cb
        .arrival("vi1-web", Duration::from_millis(200))
        .await
        .unwrap();
    assert!(!arrival.running, "{arrival:?}");
    assert!(asked.elapsed() >= Duration::from_millis(200), "it waited");
    let waiting = {
        let cb = cb.clone();
        tokio::spawn(async move {
            let asked = Instant::now();
            let a = cb.arrival("vi1-web", Duration::from_secs(10)).await;
            (a, asked.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    dest.finish_incoming("vi1-web").await.unwrap();
    let (arrival, took) = waiting.await.unwrap();
    assert_eq!(
        arrival.unwrap(),
        api::Arrival {
            vm: "vi1-web".into(),
            running: true
        }
    );
    assert!(
        took < Duration::from_secs(5),
        "answered when it ran: {took:?}"
    );
    assert!(dest.wait_running("vi1-web", Duration::ZERO).await.unwrap());
    let there = cb.vm("vi1-web").await.unwrap();
    assert!(there.ready && there.state == VmState::Running);

    // Back to `a`, then away to `b` again with the very same request: the
    // move `a` remembers succeeded before the VM came back, so this is a
    // new move, and the VM leaves `a` again.
    let home = source
        .accept_incoming(&out.incoming_request(out.spec.clone()))
        .await
        .unwrap();
    dest.migrate("vi1-web", &home, &|_| {}).await.unwrap();
    source.finish_incoming("vi1-web").await.unwrap();
    assert_eq!(ca.list_vms().await.unwrap().len(), 1);
    let to = dest.accept_incoming(&request).await.unwrap();
    source.migrate("vi1-web", &to, &|_| {}).await.unwrap();
    assert!(
        ca.list_vms().await.unwrap().is_empty(),
        "a remembered move is not taken for a new one"
    );
    dest.finish_incoming("vi1-web").await.unwrap();
    assert_eq!(cb.list_vms().await.unwrap().len(), 1);

    // Asked with a wait, the move's status comes when the move ends, not
    // when the wait does (a move of 300 ms, a wait of 10 s).
    let back = source
        .accept_incoming(&out.incoming_request(out.spec.clone()))
        .await
        .unwrap();
    b.sim.set_delay(Op::Migrate, Duration::from_millis(300));
    let started = cb.migrate("vi1-web", &back).await.unwrap();
    assert_eq!(started.state, api::MigrationState::Running);
    let asked = Instant::now();
    let mut seen = cb
        .migration_changed("vi1-web", Duration::from_secs(10))
        .await
        .unwrap();
    while seen.state == api::MigrationState::Running {
        seen = cb
            .migration_changed("vi1-web", Duration::from_secs(10))
            .await
            .unwrap();
    }
    assert_eq!(seen.state, api::MigrationState::Succeeded);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered at the end, not after the wait: {:?}",
        asked.elapsed()
    );
    source.finish_incoming("vi1-web").await.unwrap();
    let to = dest.accept_incoming(&request).await.unwrap();
    source.migrate("vi1-web", &to, &|_| {}).await.unwrap();
    dest.finish_incoming("vi1-web").await.unwrap();

    // A path and a body that disagree are refused.
    let mut wrong = to.clone();
    wrong.vm = "vi1-db".into();
    assert_eq!(
        refused(&cb.migrate("vi1-web", &wrong).await.unwrap_err()),
        (400, codes::INVALID_REQUEST)
    );
    a.stop().await;
    b.stop().await;
}

/// Clients made from one `AgentPool` share its bound on requests in
/// flight (each holds a connection, a file): twelve calls at once to a
/// slow Agent through a pool of three are never more than three at the
/// Agent, and all succeed; the same calls from clients of their own are
/// not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_bounds_the_requests_in_flight() {
    let now = Arc::new(Mutex::new((0usize, 0usize)));
    let seen = now.clone();
    let app = Router::new().route(
        "/v1/vms",
        axum::routing::get(move || {
            let seen = seen.clone();
            async move {
                {
                    let mut s = seen.lock().unwrap();
                    s.0 += 1;
                    s.1 = s.1.max(s.0);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                seen.lock().unwrap().0 -= 1;
                Json(Vec::<api::VmInfo>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let pool = neptune_agent::AgentPool::new(3).unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let c = pool.client(&url, Secret::new(TOKEN));
        calls.spawn(async move { c.list_vms().await });
    }
    while let Some(done) = calls.join_next().await {
        assert!(done.unwrap().unwrap().is_empty());
    }
    assert_eq!(now.lock().unwrap().1, 3, "at most three at once, and three");

    *now.lock().unwrap() = (0, 0);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let c = AgentClient::new(&url, Secret::new(TOKEN)).unwrap();
        calls.spawn(async move { c.list_vms().await });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap().unwrap();
    }
    assert!(
        now.lock().unwrap().1 > 3,
        "unpooled clients are not bounded"
    );
}

/// What the fake Manager saw.
#[derive(Default)]
struct Seen {
    posts: Vec<(Option<String>, api::RegisterHost, Instant)>,
    /// How many requests to refuse first (as a Manager that is down).
    refuse_first: usize,
    refused: usize,
}

async fn fake_manager(refuse_first: usize) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        refuse_first,
        ..Seen::default()
    }));
    let app = Router::new()
        .route(
            "/api/v1/hosts",
            post(
                |axum::extract::State(seen): axum::extract::State<Arc<Mutex<Seen>>>,
                 headers: HeaderMap,
                 Json(body): Json<api::RegisterHost>| async move {
                    let mut s = seen.lock().unwrap();
                    if s.refused < s.refuse_first {
                        s.refused += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    s.posts.push((auth, body, Instant::now()));
                    StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn link(addr: SocketAddr) -> ManagerLink {
    let mut link = ManagerLink::new(format!("http://{addr}/"), Secret::new("manager-token"));
    link.heartbeat = Duration::from_millis(100);
    link.max_backoff = Duration::from_millis(200);
    link
}

async fn wait_for_posts(seen: &Mutex<Seen>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().posts.len() < n {
        assert!(Instant::now() < deadline, "fewer than {n} registrations");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registers_with_the_manager_and_keeps_the_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = fake_manager(0).await;
    let host = start_host(dir.path(), "h1", Some(link(addr))).await;
    wait_for_posts(&seen, 3).await;
    {
        let s = seen.lock().unwrap();
        let (auth, body, _) = &s.posts[0];
        assert_eq!(auth.as_deref(), Some("Bearer manager-token"));
        assert_eq!(
            *body,
            api::RegisterHost {
                datacenter: "napoli".into(),
                name: "h1".into(),
                agent_url: host.url(),
                cpus: CAP.cpus,
                ram_mib: CAP.ram_mib,
                disk_mib: CAP.disk_mib,
                vm_slots: CAP.vm_slots,
                uplink_mbps: 10_000,
            }
        );
        // Heartbeats about every 100 ms, not a busy loop: the first wait
        // is a random part of the period, the second at least 90 % of it.
        let first = s.posts[0].2;
        let third = s.posts[2].2;
        assert!(third - first >= Duration::from_millis(90));
    }
    // The registered URL reaches the Agent.
    let registered = seen.lock().unwrap().posts[0].1.agent_url.clone();
    let c = AgentClient::new(&registered, Secret::new(TOKEN)).unwrap();
    assert_eq!(c.host().await.unwrap().name, "h1");

    // Once stopped, the heartbeat stops too.
    let url = host.url();
    host.stop().await;
    let stopped = Instant::now();
    assert_stopped(&url).await;
    assert_no_call_after(stopped, || {
        seen.lock().unwrap().posts.iter().map(|p| p.2).collect()
    })
    .await;
}

/// An Agent that knows several Managers sharing a database reports to
/// whichever answers: the first while it does, another as soon as it
/// stops answering (no backoff first), and back when that one fails in
/// turn.
#[tokio::test]
async fn reports_to_whichever_manager_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (first, seen_first) = fake_manager(0).await;
    let (second, seen_second) = fake_manager(0).await;
    let (gone, _) = silent_manager().await;
    let mut both = link(gone);
    both.urls = vec![
        format!("http://{gone}"),
        format!("http://{first}"),
        format!("http://{second}"),
    ];
    let host = start_host(dir.path(), "h1", Some(both)).await;
    wait_for_posts(&seen_first, 3).await;
    assert!(
        seen_second.lock().unwrap().posts.is_empty(),
        "one Manager at a time"
    );
    // The first stops answering (503s): every heartbeat goes to the
    // second from then on, at the heartbeat's pace.
    seen_first.lock().unwrap().refuse_first = usize::MAX;
    wait_for_posts(&seen_second, 3).await;
    let gaps: Vec<Duration> = {
        let s = seen_second.lock().unwrap();
        s.posts.windows(2).map(|w| w[1].2 - w[0].2).collect()
    };
    assert!(
        gaps.iter().all(|g| *g < Duration::from_secs(2)),
        "no backoff while one Manager answers: {gaps:?}"
    );
    host.stop().await;
}

#[tokio::test]
async fn keeps_trying_while_the_manager_is_down() {
    let dir = tempfile::tempdir().unwrap();
    // A Manager that answers 503 three times, then accepts.
    let (addr, seen) = fake_manager(3).await;
    let host = start_host(dir.path(), "h1", Some(link(addr))).await;
    wait_for_posts(&seen, 2).await;
    assert_eq!(seen.lock().unwrap().refused, 3);
    host.stop().await;

    // A Manager that answers nothing (its port takes each connection and
    // closes it): the Agent keeps trying, backing off (link(): 100 ms, then
    // 200 ms), serves all the while, and stops trying when it stops.
    let (gone, attempts) = silent_manager().await;
    let host = start_host(dir.path(), "h2", Some(link(gone))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while attempts.lock().unwrap().len() < 5 {
        assert!(
            Instant::now() < deadline,
            "the Agent stopped trying: {} attempts in 10 s",
            attempts.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let tries = attempts.lock().unwrap();
        for pair in tries.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(80),
                "tries {gap:?} apart, not backing off: {tries:?}"
            );
        }
    }
    assert_eq!(host.client().host().await.unwrap().name, "h2");
    let url = host.url();
    host.stop().await;
    let stopped = Instant::now();
    assert_stopped(&url).await;
    assert_no_call_after(stopped, || attempts.lock().unwrap().clone()).await;
}

/// A "Manager" whose port takes every connection and closes it at once,
/// answering nothing; returns its address and when each connection came.
async fn silent_manager() -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.lock().unwrap().push(Instant::now());
            drop(conn);
        }
    });
    (addr, attempts)
}

/// The Agent at `url` has stopped: its port takes no connection.
async fn assert_stopped(url: &str) {
    let c = AgentClient::new(url, Secret::new(TOKEN)).unwrap();
    assert!(matches!(
        c.health().await,
        Err(ClientError::Unreachable { .. })
    ));
}

/// No call reaches the Manager after `stopped`, watched over three of
/// `link()`'s longest backoffs (a call already on its way when the Agent
/// stopped may land within 50 ms).
async fn assert_no_call_after(stopped: Instant, calls: impl Fn() -> Vec<Instant>) {
    tokio::time::sleep(Duration::from_millis(600)).await;
    let late = calls()
        .into_iter()
        .filter(|&t| t > stopped + Duration::from_millis(50))
        .count();
    assert_eq!(
        late, 0,
        "the Agent kept calling the Manager after it stopped"
    );
}

#[tokio::test]
async fn stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), "h1", None).await;
    let url = host.url();
    host.stop().await;
    let c = AgentClient::new(&url, Secret::new(TOKEN)).unwrap();
    assert!(matches!(
        c.health().await,
        Err(ClientError::Unreachable { .. })
    ));

    // A bad configuration is refused before binding.
    let sim = Arc::new(SimHypervisor::new(SimConfig::new(dir.path().join("x"), CAP)).unwrap());
    let err = neptune_agent::start(
        AgentConfig {
            name: "bad name".into(),
            datacenter: "napoli".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise_url: None,
            token: Secret::new(TOKEN),
            manager: None,
            hypervisor: sim,
            uplink_mbps: 0,
        },
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, neptune_agent::AgentError::Config(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_vms_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let big = Capacity {
        cpus: 1000,
        ram_mib: 1 << 30,
        disk_mib: 1 << 30,
        vm_slots: 100,
    };
    let sim = Arc::new(SimHypervisor::new(SimConfig::new(dir.path().join("h"), big)).unwrap());
    let agent = neptune_agent::start(
        AgentConfig {
            name: "h".into(),
            datacenter: "napoli".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise_url: None,
            token: Secret::new(TOKEN),
            manager: None,
            hypervisor: sim.clone(),
            uplink_mbps: 0,
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    let c = AgentClient::new(agent.url(), Secret::new(TOKEN)).unwrap();
    let tasks: Vec<_> = (0..101)
        .map(|i| {
            let (c, img) = (c.clone(), img.clone());
            tokio::spawn(async move {
                let name = format!("vi1-n{i}");
                let disk = c.prepare_disk(&name, &img, 10).await?;
                c.define(&spec(&name, &disk)).await?;
                c.start(&name).await
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.code(), Some(codes::NO_ROOM), "{e}");
                refused += 1;
            }
        }
    }
    // 100 slots: exactly one of the 101 found no room.
    assert_eq!(refused, 1);
    let vms = c.list_vms().await.unwrap();
    assert_eq!(vms.len(), 100);
    assert!(vms.iter().all(|vm| vm.state == VmState::Running));
}

/// An Agent configured as `neptune agent --hypervisor libvirt` runs real
/// guests: a VM through the Agent API onto libvirt and back. The daemon is
/// named by `NEPTUNE_TEST_LIBVIRT_URI` (`scripts/libvirt-test-server`); in
/// CI (`CI` set) a missing libvirt is a failure, not a skip.
#[tokio::test]
async fn an_agent_over_libvirt_runs_real_guests() {
    let Ok(uri) = std::env::var("NEPTUNE_TEST_LIBVIRT_URI") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the libvirt tests: set NEPTUNE_TEST_LIBVIRT_URI"
        );
        skipped("NEPTUNE_TEST_LIBVIRT_URI is not set (scripts/libvirt-test-server starts a libvirt daemon)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&template)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let options = neptune_agent::daemon::DaemonOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        name: "lv1".into(),
        datacenter: "napoli".into(),
        advertise_url: None,
        manager_urls: Vec::new(),
        manager_token_file: None,
        token_file,
        hypervisor: neptune_agent::daemon::HypervisorKind::Libvirt,
        libvirt_uri: uri.clone(),
        kvm: Some(false),
        public_bridge: None,
        migration: Default::default(),
        migration_max_downtime: None,
        data_dir: dir.path().join("data"),
        capacity: CAP,
        uplink_mbps: 0,
        heartbeat: Duration::from_secs(5),
        sim_delays: Vec::new(),
        log_level: neptune_agent::daemon::LogLevel::INFO,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = neptune_agent::start(options.into_config().unwrap(), async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let c = AgentClient::new(agent.url(), Secret::new(TOKEN)).unwrap();
    let vm = format!("ntt{}-agent", std::process::id());
    let disk = c
        .prepare_disk(&vm, template.to_str().unwrap(), 32)
        .await
        .unwrap();
    let mut s = spec(&vm, &disk);
    s.ram_mib = 64;
    s.nics[0].network = format!("{vm}-lan");
    c.define(&s).await.unwrap();
    c.start(&vm).await.unwrap();
    let listed = c.list_vms().await.unwrap();
    let mine = listed.iter().find(|v| v.name == vm).unwrap();
    assert_eq!((mine.state, &mine.spec), (VmState::Running, &s));
    let out = std::process::Command::new("virsh")
        .args(["--quiet", "--connect", &uri, "domstate", &vm])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "running");
    c.destroy(&vm).await.unwrap();
    c.remove_disk(&vm).await.unwrap();
    assert!(c.list_vms().await.unwrap().iter().all(|v| v.name != vm));
    assert!(!Path::new(&disk).exists());
    stop.send(()).unwrap();
    agent.wait().await.unwrap();
}

/// Says that the calling test did not run, past the test harness's output
/// capture, so a plain `cargo test` shows it: the test passes without
/// proving anything. (In CI, `CI` set, a missing backend fails instead.)
fn skipped(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (passes without running; see README.md, Test)"
    );
}

/// The server and the contract (`neptune_agent_api::ROUTES`, from which
/// `openapi/agent.json` is built) agree: every documented route is served
/// and answers one of its documented statuses, and no other method is
/// served on a documented path.
#[tokio::test]
async fn the_server_serves_the_documented_routes_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), "h1", None).await;
    let raw = reqwest::Client::new();
    let methods = ["GET", "PUT", "POST", "DELETE"];
    for route in api::ROUTES {
        let url = format!("{}{}", host.url(), route.path.replace("{name}", "vi1-x"));
        for method in methods {
            let mut req = raw
                .request(method.parse().unwrap(), &url)
                .bearer_auth(TOKEN);
            if route.request.is_some() {
                // Empty: each such route refuses it as 400, documented.
                req = req.json(&serde_json::json!({}));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let documented = api::ROUTES
                .iter()
                .find(|r| r.path == route.path && r.method == method);
            match documented {
                Some(r) => {
                    assert!(
                        status == r.status || r.refusals.contains(&status),
                        "{method} {}: {status} is not documented",
                        r.path
                    );
                    if status == 404 {
                        let body: api::ErrorBody = resp.json().await.unwrap();
                        assert_ne!(body.message, "no such route", "{method} {}", r.path);
                    }
                }
                None => {
                    assert_eq!(
                        status, 405,
                        "{method} {} is served but not documented",
                        route.path
                    );
                    let body: api::ErrorBody = resp.json().await.unwrap();
                    assert_eq!(body.code, codes::METHOD_NOT_ALLOWED);
                }
            }
        }
    }
    host.stop().await;
}

/// A body too large or not declared JSON is refused with the codes the
/// Manager and the switch use, on every route that reads a body.
#[tokio::test]
async fn bodies_are_refused_with_the_shared_codes() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path(), "h1", None).await;
    let raw = reqwest::Client::new();
    let huge = format!("{{\"dest\": \"{}\"}}", "x".repeat(3 << 20));
    for route in api::ROUTES.iter().filter(|r| r.request.is_some()) {
        let url = format!("{}{}", host.url(), route.path.replace("{name}", "vi1-x"));
        let method: reqwest::Method = route.method.parse().unwrap();
        let cases = [
            (
                raw.request(method.clone(), &url)
                    .header("Content-Type", "application/json")
                    .body(huge.clone()),
                413,
                codes::PAYLOAD_TOO_LARGE,
            ),
            (
                raw.request(method.clone(), &url).body("{}"),
                415,
                codes::UNSUPPORTED_MEDIA_TYPE,
            ),
        ];
        for (req, status, code) in cases {
            let resp = req.bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(resp.status(), status, "{} {}", route.method, route.path);
            assert!(route.refusals.contains(&status), "{route:?}");
            let body: api::ErrorBody = resp.json().await.unwrap();
            assert_eq!(body.code, code, "{} {}", route.method, route.path);
        }
    }
    assert!(host.sim.list().await.unwrap().is_empty());
    host.stop().await;
}

/// Several Agents on one listener, each at its own path: each answers for
/// its own host only, as one Agent of its own would (tokens included), and
/// registers that URL with the Manager.
#[tokio::test]
async fn a_farm_serves_many_agents_on_one_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, seen) = fake_manager(0).await;
    let mut sims = Vec::new();
    let mut configs = Vec::new();
    for name in ["f1", "f2", "f3"] {
        let sim = Arc::new(SimHypervisor::new(SimConfig::new(dir.path().join(name), CAP)).unwrap());
        sims.push(sim.clone());
        configs.push(AgentConfig {
            name: name.into(),
            datacenter: "napoli".into(),
            listen: "127.0.0.1:1".parse().unwrap(),
            advertise_url: None,
            token: Secret::new(TOKEN),
            manager: Some(link(manager)),
            hypervisor: sim,
            uplink_mbps: 10_000,
        });
    }
    let mut twice = configs.clone();
    twice.push(configs[0].clone());
    assert!(
        neptune_agent::start_farm(twice, "127.0.0.1:0".parse().unwrap(), async {})
            .await
            .unwrap_err()
            .to_string()
            .contains("named twice")
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let farm = neptune_agent::start_farm(configs, "127.0.0.1:0".parse().unwrap(), async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    assert_eq!(farm.urls.len(), 3);
    let port = farm.urls[0].split('/').nth(2).unwrap().to_owned();
    for (url, name) in farm.urls.iter().zip(["f1", "f2", "f3"]) {
        assert_eq!(url, &format!("http://{port}/hosts/{name}"), "one listener");
    }
    // Each path is its host's Agent.
    let img = image(dir.path());
    let f2 = AgentClient::new(&farm.urls[1], Secret::new(TOKEN)).unwrap();
    let disk = f2.prepare_disk("vi1-web", &img, 1024).await.unwrap();
    f2.define(&spec("vi1-web", &disk)).await.unwrap();
    assert_eq!(sims[1].list().await.unwrap().len(), 1);
    assert!(sims[0].list().await.unwrap().is_empty());
    assert!(sims[2].list().await.unwrap().is_empty());
    let f1 = AgentHypervisor::connect(AgentClient::new(&farm.urls[0], Secret::new(TOKEN)).unwrap())
        .await
        .unwrap();
    assert!(f1.list().await.unwrap().is_empty());
    assert_eq!(f2.list_vms().await.unwrap()[0].name, "vi1-web");
    let wrong = AgentClient::new(&farm.urls[2], Secret::new("not-the-token")).unwrap();
    assert_eq!(
        refused(&wrong.list_vms().await.unwrap_err()),
        (401, codes::UNAUTHENTICATED)
    );
    let nobody = AgentClient::new(&format!("http://{port}/hosts/f9"), Secret::new(TOKEN)).unwrap();
    assert_eq!(refused(&nobody.list_vms().await.unwrap_err()).0, 404);
    // Every host registers its own URL.
    wait_for_posts(&seen, 6).await;
    let registered: std::collections::BTreeMap<String, String> = seen
        .lock()
        .unwrap()
        .posts
        .iter()
        .map(|(_, b, _)| (b.name.clone(), b.agent_url.clone()))
        .collect();
    assert_eq!(registered.len(), 3, "{registered:?}");
    assert_eq!(registered["f3"], farm.urls[2]);
    let _ = stop.send(());
    farm.wait().await.unwrap();
}
