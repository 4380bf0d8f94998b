//! One conformance suite, run against both adapters: SQLite in a temporary
//! file, and PostgreSQL in a fresh database of the server named by
//! `NEPTUNE_TEST_POSTGRES_URL` (`scripts/postgres-test-server` starts one;
//! `scripts/test-all` exports it). In CI (`CI` set) a missing PostgreSQL is
//! a failure, not a skip.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // test helpers fail loudly

#[path = "conformance/damage.rs"]
mod damage;
#[path = "conformance/migrations.rs"]
mod migrations;

use std::sync::Arc;

use neptune_lifecycle::ViState;
use neptune_store::*;
use uuid::Uuid;

/// A new random id of any resource.
fn fresh<T: From<Uuid>>() -> T {
    Uuid::new_v4().into()
}

/// The nil id of any resource (an actor that is no user, an id no row has).
fn nil<T: From<Uuid>>() -> T {
    Uuid::nil().into()
}

/// A store on a database the previous release made (see `migrations`).
async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("neptune.db");
    migrations::old_sqlite(&path).await;
    let url = format!("sqlite://{}", path.display());
    (SqliteStore::connect(&url).await.unwrap(), dir)
}

/// A store on a database the previous release made (see `migrations`), or
/// `None` outside CI when no server is configured.
async fn postgres() -> Option<PostgresStore> {
    let url = postgres_database().await?;
    migrations::old_postgres(&url).await;
    Some(PostgresStore::connect(&url).await.unwrap())
}

/// The URL of a fresh, empty database on the test server, or `None`
/// outside CI when no server is configured.
async fn postgres_database() -> Option<String> {
    let Ok(base) = std::env::var("NEPTUNE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL suite: set NEPTUNE_TEST_POSTGRES_URL"
        );
        skipped(
            "NEPTUNE_TEST_POSTGRES_URL is not set (scripts/postgres-test-server starts a server)",
        );
        return None;
    };
    // A plain connection to the server's default database: a store's
    // would migrate that one.
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    let name = format!("neptune_test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    match base.rsplit_once('/') {
        Some((server, _)) => Some(format!("{server}/{name}")),
        None => panic!("bad URL {base}"),
    }
}

fn user(name: &str, role: Role) -> UserRecord {
    UserRecord {
        id: fresh(),
        name: name.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role,
        quota: Quota::default(),
        created_at: 1,
        disabled_at: None,
    }
}

fn vi(owner: UserId, name: &str) -> ViRecord {
    ViRecord {
        id: fresh(),
        owner_id: owner,
        name: name.to_owned(),
        state: ViState::Defined,
        design_xml: "<topology id=\"t\"/>".to_owned(),
        home_datacenter_id: None,
        reject_reason: None,
        version: 1,
        created_at: 10,
        updated_at: 10,
        address_plan: None,
        location_id: None,
    }
}

async fn users_and_tokens(s: &dyn Store) {
    let alice = user("alice", Role::User);
    s.create_user(&alice).await.unwrap();
    assert!(matches!(
        s.create_user(&user("alice", Role::Admin)).await,
        Err(StoreError::Duplicate { what: "user" })
    ));
    assert_eq!(s.user_by_name("alice").await.unwrap(), alice);
    assert_eq!(s.user(alice.id).await.unwrap().name, "alice");
    assert!(matches!(
        s.user(fresh()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.count_admins().await.unwrap(), 0);
    s.create_user(&user("root", Role::Admin)).await.unwrap();
    assert_eq!(s.count_admins().await.unwrap(), 1);
    assert_eq!(
        s.list_users()
            .await
            .unwrap()
            .iter()
            .map(|u| u.name.as_str())
            .collect::<Vec<_>>(),
        ["alice", "root"]
    );

    let token = TokenRecord {
        id: fresh(),
        hash: "h1".into(),
        user_id: alice.id,
        kind: TokenKind::Session,
        scope: TokenScope::User,
        name: "login".into(),
        created_at: 100,
        expires_at: Some(200),
    };
    s.insert_token(&token).await.unwrap();
    assert!(matches!(
        s.insert_token(&token).await,
        Err(StoreError::Duplicate { .. })
    ));
    let (t, u) = s.user_for_token("h1", 150).await.unwrap();
    assert_eq!((t, u.id), (token.clone(), alice.id));
    assert!(
        matches!(
            s.user_for_token("h1", 200).await,
            Err(StoreError::NotFound { .. })
        ),
        "expired"
    );
    let api = TokenRecord {
        id: fresh(),
        hash: "h2".into(),
        kind: TokenKind::Api,
        expires_at: None,
        ..token.clone()
    };
    s.insert_token(&api).await.unwrap();
    assert_eq!(
        s.user_for_token("h2", i64::MAX - 1).await.unwrap().0.kind,
        TokenKind::Api
    );
    s.delete_token("h2").await.unwrap();
    assert!(s.user_for_token("h2", 0).await.is_err());

    // Listed (unexpired only), revoked by id, by owner only when asked so.
    let agent = TokenRecord {
        id: fresh(),
        hash: "h3".into(),
        kind: TokenKind::Api,
        scope: TokenScope::Agent {
            host: "napoli/h1".into(),
        },
        created_at: 101,
        expires_at: Some(1000),
        ..token.clone()
    };
    s.insert_token(&agent).await.unwrap();
    assert_eq!(
        s.list_tokens(alice.id, 150).await.unwrap(),
        vec![token.clone(), agent.clone()]
    );
    assert_eq!(
        s.list_tokens(alice.id, 500).await.unwrap(),
        vec![agent.clone()]
    );
    assert_eq!(
        s.user_for_token("h3", 500).await.unwrap().0.scope,
        agent.scope
    );
    let root = s.user_by_name("root").await.unwrap();
    assert!(matches!(
        s.revoke_token(agent.id, Some(root.id)).await,
        Err(StoreError::NotFound { .. })
    ));
    s.revoke_token(agent.id, Some(alice.id)).await.unwrap();
    assert!(matches!(
        s.revoke_token(agent.id, None).await,
        Err(StoreError::NotFound { .. })
    ));
    // Expired tokens go; every token but one can be revoked at once.
    assert_eq!(s.delete_expired_tokens(300).await.unwrap(), 1);
    for (n, hash) in ["k1", "k2", "k3"].into_iter().enumerate() {
        s.insert_token(&TokenRecord {
            id: fresh(),
            hash: hash.into(),
            expires_at: None,
            created_at: 100 + n as i64,
            ..token.clone()
        })
        .await
        .unwrap();
    }
    assert_eq!(s.revoke_tokens_of(alice.id, Some("k2")).await.unwrap(), 2);
    assert!(s.user_for_token("k2", 0).await.is_ok());
    assert!(s.user_for_token("k1", 0).await.is_err());
    // A new password; a disabled user has no token left and none works.
    s.set_password(alice.id, "$argon2id$new").await.unwrap();
    assert_eq!(
        s.user(alice.id).await.unwrap().password_hash,
        "$argon2id$new"
    );
    let disabled = s.set_user_disabled(alice.id, Some(7)).await.unwrap();
    assert_eq!(disabled.disabled_at, Some(7));
    assert!(s.user_for_token("k2", 0).await.is_err());
    assert!(s.list_tokens(alice.id, 0).await.unwrap().is_empty());
    let enabled = s.set_user_disabled(alice.id, None).await.unwrap();
    assert_eq!(enabled.disabled_at, None);
}

async fn datacenters_and_hosts(s: &dyn Store) {
    let dc = DatacenterRecord {
        public_gateway: None,
        id: fresh(),
        name: "napoli".into(),
        created_at: 1,
        home_pools: vec![],
    };
    s.create_datacenter(&dc).await.unwrap();
    assert!(matches!(
        s.create_datacenter(&DatacenterRecord {
            public_gateway: None,
            id: fresh(),
            ..dc.clone()
        })
        .await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(s.datacenter_by_name("napoli").await.unwrap(), dc);
    let host = HostRecord {
        id: fresh(),
        datacenter_id: dc.id,
        name: "h1".into(),
        agent_url: "http://127.0.0.1:1".into(),
        cpus: 8,
        ram_mib: 16384,
        disk_mib: 100_000,
        vm_slots: 10,
        uplink_mbps: 10_000,
        state: HostState::Ready,
        last_seen: 1000,
        used: HostUsage::default(),
    };
    let stored = s.upsert_host(&host).await.unwrap();
    assert_eq!(stored, host);
    // Re-registration by name keeps the id and updates capacities.
    let again = s
        .upsert_host(&HostRecord {
            id: fresh(),
            cpus: 16,
            ..host.clone()
        })
        .await
        .unwrap();
    assert_eq!((again.id, again.cpus), (host.id, 16));
    assert_eq!(s.list_hosts().await.unwrap().len(), 1);
    assert_eq!(s.host_by_name(&host.name).await.unwrap(), again);
    assert!(matches!(
        s.host_by_name("nowhere").await,
        Err(StoreError::NotFound { what: "host" })
    ));
    assert_eq!(s.mark_unreachable(500).await.unwrap(), 0);
    assert_eq!(s.mark_unreachable(2000).await.unwrap(), 1);
    assert_eq!(
        s.list_hosts().await.unwrap()[0].state,
        HostState::Unreachable
    );
    let counted = |state, hosts| HostCount {
        datacenter_id: dc.id,
        state,
        hosts,
    };
    let counts_here = || async {
        let mut c = s.host_counts().await.unwrap();
        c.retain(|c| c.datacenter_id == dc.id);
        c
    };
    assert_eq!(counts_here().await, [counted(HostState::Unreachable, 1)]);
    // A batch of heartbeats: the known host is ready again, an unknown
    // one is not counted, and an older beat never moves last_seen back.
    assert_eq!(
        s.host_heartbeats(&[(fresh(), 1), (host.id, 3000)])
            .await
            .unwrap(),
        1
    );
    let seen = &s.list_hosts().await.unwrap()[0];
    assert_eq!((seen.state, seen.last_seen), (HostState::Ready, 3000));
    assert_eq!(counts_here().await, [counted(HostState::Ready, 1)]);
    s.upsert_host(&HostRecord {
        id: fresh(),
        name: "hz".into(),
        state: HostState::Ready,
        last_seen: 100,
        ..host.clone()
    })
    .await
    .unwrap();
    assert_eq!(s.mark_unreachable(2000).await.unwrap(), 1);
    assert_eq!(
        counts_here().await,
        [
            counted(HostState::Ready, 1),
            counted(HostState::Unreachable, 1)
        ]
    );
    assert_eq!(s.host_heartbeats(&[(host.id, 2500)]).await.unwrap(), 1);
    assert_eq!(s.list_hosts().await.unwrap()[0].last_seen, 3000);
    assert_eq!(s.host_heartbeats(&[]).await.unwrap(), 0);
    // Registrations in one transaction: answered in their order, a known
    // host keeping its id; a batch the database refuses stores none.
    let batch = [
        HostRecord {
            id: fresh(),
            name: "hy".into(),
            ..host.clone()
        },
        HostRecord {
            id: fresh(),
            cpus: 12,
            ..host.clone()
        },
        HostRecord {
            id: fresh(),
            name: "hx".into(),
            ..host.clone()
        },
    ];
    let stored = s.upsert_hosts(&batch).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|h| (h.name.as_str(), h.cpus))
            .collect::<Vec<_>>(),
        [("hy", 8), ("h1", 12), ("hx", 8)]
    );
    assert_eq!((stored[0].id, stored[1].id), (batch[0].id, host.id));
    let refused = [
        HostRecord {
            id: fresh(),
            name: "hw".into(),
            ..host.clone()
        },
        HostRecord {
            id: fresh(),
            name: "hv".into(),
            cpus: 0,
            ..host.clone()
        },
    ];
    assert!(s.upsert_hosts(&refused).await.is_err());
    assert!(s.host_by_name("hw").await.is_err());
    // A host named twice in a batch: the later registration wins.
    let twice = [
        HostRecord {
            id: fresh(),
            name: "hu".into(),
            cpus: 4,
            ..host.clone()
        },
        HostRecord {
            id: fresh(),
            name: "hu".into(),
            cpus: 6,
            ..host.clone()
        },
    ];
    let stored = s.upsert_hosts(&twice).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].cpus, 6);
    assert_eq!(s.host_by_name("hu").await.unwrap().cpus, 6);
    assert!(s.upsert_hosts(&[]).await.unwrap().is_empty());
    // The database refuses nonsense capacities.
    assert!(s
        .upsert_host(&HostRecord {
            id: fresh(),
            name: "h2".into(),
            cpus: 0,
            ..host
        })
        .await
        .is_err());
}

async fn templates(s: &dyn Store) {
    let t = TemplateRecord {
        id: fresh(),
        name: "debian-12".into(),
        owner_id: None,
        visibility: Visibility::Public,
        image_path: "/var/lib/neptune/images/debian-12.qcow2".into(),
        format: "qcow2".into(),
        size_mib: 2048,
        os_name: "Debian".into(),
        vcpus: 1,
        ram_mib: 512,
        disk_mib: 4096,
        software: "[]".into(),
        created_at: 5,
    };
    s.create_template(&t).await.unwrap();
    assert!(matches!(
        s.create_template(&t).await,
        Err(StoreError::Duplicate { .. })
    ));
    let (ann, ben) = (user("ann", Role::User), user("ben", Role::User));
    s.create_user(&ann).await.unwrap();
    s.create_user(&ben).await.unwrap();
    assert_eq!(s.template_for(ann.id, "debian-12").await.unwrap(), t);
    assert_eq!(s.template(t.id).await.unwrap(), t);
    // Ann's own "debian-12" is hers alone and comes first for her.
    let mine = TemplateRecord {
        id: fresh(),
        owner_id: Some(ann.id),
        visibility: Visibility::Private,
        ..t.clone()
    };
    s.create_template(&mine).await.unwrap();
    assert_eq!(s.template_for(ann.id, "debian-12").await.unwrap(), mine);
    assert_eq!(s.template_for(ben.id, "debian-12").await.unwrap(), t);
    // Names are unique per owner...
    assert!(matches!(
        s.create_template(&TemplateRecord {
            id: fresh(),
            ..mine.clone()
        })
        .await,
        Err(StoreError::Duplicate { .. })
    ));
    // ... and among public templates.
    assert!(matches!(
        s.set_template_visibility(mine.id, Visibility::Public).await,
        Err(StoreError::Duplicate { .. })
    ));
    let other = TemplateRecord {
        id: fresh(),
        name: "tools".into(),
        ..mine.clone()
    };
    s.create_template(&other).await.unwrap();
    assert!(matches!(
        s.template_for(ben.id, "tools").await,
        Err(StoreError::NotFound { .. })
    ));
    let public = s
        .set_template_visibility(other.id, Visibility::Public)
        .await
        .unwrap();
    assert_eq!(public.visibility, Visibility::Public);
    assert_eq!(s.template_for(ben.id, "tools").await.unwrap(), public);
    assert_eq!(s.list_templates().await.unwrap().len(), 3);
    assert!(matches!(
        s.set_template_visibility(fresh(), Visibility::Public).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn vi_lifecycle(s: &dyn Store) {
    let owner = user("owner", Role::User);
    let admin = user("boss", Role::Admin);
    s.create_user(&owner).await.unwrap();
    s.create_user(&admin).await.unwrap();
    let v = vi(owner.id, "shop");
    s.create_vi(&v).await.unwrap();
    assert_eq!(s.vi(v.id).await.unwrap(), v);
    let other = vi(admin.id, "lab");
    s.create_vi(&other).await.unwrap();
    assert_eq!(s.list_vis(Some(owner.id)).await.unwrap(), vec![v.clone()]);
    assert_eq!(s.list_vis(None).await.unwrap().len(), 2);

    // Edits are compare-and-set on the version.
    let edited = s
        .update_vi_design(v.id, 1, "shop2", "<topology id=\"u\"/>", 20)
        .await
        .unwrap();
    assert_eq!((edited.name.as_str(), edited.version), ("shop2", 2));
    assert!(matches!(
        s.update_vi_design(v.id, 1, "x", "y", 21).await,
        Err(StoreError::Conflict { .. })
    ));

    let change = |to, actor| Transition {
        to,
        actor,
        at: 30,
        reject_reason: None,
        home_datacenter_id: None,
        usage: None,
    };
    let requested = s
        .transition_vi(
            v.id,
            ViState::Defined,
            &change(ViState::Requested, owner.id),
        )
        .await
        .unwrap();
    assert_eq!(
        (requested.state, requested.version),
        (ViState::Requested, 3)
    );
    // Edits only while defined.
    assert!(matches!(
        s.update_vi_design(v.id, 3, "x", "y", 31).await,
        Err(StoreError::Conflict { .. })
    ));
    // The loser of a race on the same state gets a conflict.
    let lost = s
        .transition_vi(
            v.id,
            ViState::Defined,
            &change(ViState::Requested, owner.id),
        )
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict { .. })), "{lost:?}");
    let rejected = s
        .transition_vi(
            v.id,
            ViState::Requested,
            &Transition {
                reject_reason: Some("too big".into()),
                ..change(ViState::Rejected, admin.id)
            },
        )
        .await
        .unwrap();
    assert_eq!(rejected.reject_reason.as_deref(), Some("too big"));
    let events = s.vi_events(v.id).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.from_state, e.to_state))
            .collect::<Vec<_>>(),
        [
            (ViState::Defined, ViState::Requested),
            (ViState::Requested, ViState::Rejected)
        ]
    );
    assert_eq!(events[1].actor, admin.id);
    assert_eq!(events[1].reason.as_deref(), Some("too big"));
    assert!(matches!(
        s.vi(fresh()).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Many concurrent compare-and-set transitions of one VI: exactly one wins.
async fn concurrent_transitions(s: Arc<dyn Store>) {
    let owner = user("racer", Role::User);
    s.create_user(&owner).await.unwrap();
    let v = vi(owner.id, "race");
    s.create_vi(&v).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let change = Transition {
                to: ViState::Requested,
                actor: owner.id,
                at: 1,
                reject_reason: None,
                home_datacenter_id: None,
                usage: None,
            };
            s.transition_vi(v.id, ViState::Defined, &change)
                .await
                .is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(s.vi_events(v.id).await.unwrap().len(), 1);
}

/// A user and a datacenter of their own, for one test.
async fn owner_and_datacenter(
    s: &dyn Store,
    user_name: &str,
    dc: &str,
) -> (UserRecord, DatacenterRecord) {
    let owner = user(user_name, Role::User);
    s.create_user(&owner).await.unwrap();
    let dc = DatacenterRecord {
        public_gateway: None,
        id: fresh(),
        name: dc.into(),
        created_at: 1,
        home_pools: vec![],
    };
    s.create_datacenter(&dc).await.unwrap();
    (owner, dc)
}

fn host(dc: DatacenterId, name: &str, cpus: i64, ram_mib: i64, slots: i64) -> HostRecord {
    HostRecord {
        id: fresh(),
        datacenter_id: dc,
        name: name.to_owned(),
        agent_url: "http://127.0.0.1:1".into(),
        cpus,
        ram_mib,
        disk_mib: 1_000_000,
        vm_slots: slots,
        uplink_mbps: 0,
        state: HostState::Ready,
        last_seen: 1,
        used: HostUsage::default(),
    }
}

fn vm(vi: ViId, node: &str, host: HostId, vcpus: i64, ram_mib: i64) -> VmRecord {
    VmRecord {
        vi_id: vi,
        node_id: node.to_owned(),
        host_id: host,
        vcpus,
        ram_mib,
        disk_mib: 1024,
        uplink_mbps: 0,
    }
}

fn to(state: ViState, actor: UserId) -> Transition {
    Transition {
        to: state,
        actor,
        at: 50,
        reject_reason: None,
        home_datacenter_id: None,
        usage: None,
    }
}

async fn placement_reservations(s: &dyn Store) {
    let (owner, dc) = owner_and_datacenter(s, "placer", "dc-place").await;
    let h1 = s.upsert_host(&host(dc.id, "p1", 4, 4096, 2)).await.unwrap();
    let h2 = s.upsert_host(&host(dc.id, "p2", 4, 4096, 8)).await.unwrap();
    let mut v = vi(owner.id, "placed");
    v.state = ViState::Requested;
    s.create_vi(&v).await.unwrap();

    // A VM that does not fit fails the whole commit: state and usage unchanged.
    let too_big = [vm(v.id, "a", h1.id, 2, 1024), vm(v.id, "b", h1.id, 4, 1024)];
    let err = s
        .transition_with_placement(
            v.id,
            ViState::Requested,
            &to(ViState::Accepted, owner.id),
            &Reservation {
                vms: too_big.to_vec(),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(err, Err(StoreError::NoRoom { ref node, .. }) if node == "b"),
        "{err:?}"
    );
    assert_eq!(s.vi(v.id).await.unwrap().state, ViState::Requested);
    assert!(s.vms(v.id).await.unwrap().is_empty());
    assert_eq!(
        s.list_hosts()
            .await
            .unwrap()
            .iter()
            .find(|h| h.id == h1.id)
            .unwrap()
            .used,
        HostUsage::default()
    );
    // The VM-slot limit counts too.
    let three = [
        vm(v.id, "a", h1.id, 1, 10),
        vm(v.id, "b", h1.id, 1, 10),
        vm(v.id, "c", h1.id, 1, 10),
    ];
    let err = s
        .transition_with_placement(
            v.id,
            ViState::Requested,
            &to(ViState::Accepted, owner.id),
            &Reservation {
                vms: three.to_vec(),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(err, Err(StoreError::NoRoom { .. })), "{err:?}");

    let fits = [vm(v.id, "a", h1.id, 2, 1024), vm(v.id, "b", h2.id, 4, 4096)];
    let accepted = s
        .transition_with_placement(
            v.id,
            ViState::Requested,
            &to(ViState::Accepted, owner.id),
            &Reservation {
                vms: fits.to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(accepted.state, ViState::Accepted);
    assert_eq!(s.vms(v.id).await.unwrap(), fits.to_vec());
    let used: Vec<HostUsage> = {
        let hosts = s.list_hosts().await.unwrap();
        [h1.id, h2.id]
            .iter()
            .map(|id| hosts.iter().find(|h| h.id == *id).unwrap().used)
            .collect()
    };
    assert_eq!(
        used[0],
        HostUsage {
            vcpus: 2,
            ram_mib: 1024,
            disk_mib: 1024,
            slots: 1,
            uplink_mbps: 0,
        }
    );
    assert_eq!(
        used[1],
        HostUsage {
            vcpus: 4,
            ram_mib: 4096,
            disk_mib: 1024,
            slots: 1,
            uplink_mbps: 0,
        }
    );
    // Re-registration of a host keeps its usage.
    let again = s.upsert_host(&host(dc.id, "p1", 4, 4096, 2)).await.unwrap();
    assert_eq!(again.used.slots, 1);

    assert_eq!(s.release_vms(v.id).await.unwrap(), 2);
    assert_eq!(s.release_vms(v.id).await.unwrap(), 0, "idempotent");
    assert!(s
        .list_hosts()
        .await
        .unwrap()
        .iter()
        .all(|h| h.used == HostUsage::default()));
}

/// What a user's VIs take is summed from what each recorded, over the
/// states that count, but for the VI being checked; those that recorded
/// nothing are named.
/// The shortlist an automatic placement reads: ready hosts of the
/// datacenter with a free slot, most vCPUs then RAM free first, limited.
async fn roomiest_hosts_first(s: &dyn Store) {
    let (owner, dc) = owner_and_datacenter(s, "roomer", "dc-roomy").await;
    let (_, other) = owner_and_datacenter(s, "roomer2", "dc-other").await;
    let small = s
        .upsert_host(&host(dc.id, "r-small", 8, 8192, 4))
        .await
        .unwrap();
    let wide = s
        .upsert_host(&host(dc.id, "r-wide", 16, 4096, 4))
        .await
        .unwrap();
    let deep = s
        .upsert_host(&host(dc.id, "r-deep", 16, 65536, 4))
        .await
        .unwrap();
    let full = s
        .upsert_host(&host(dc.id, "r-full", 64, 65536, 1))
        .await
        .unwrap();
    s.upsert_host(&host(other.id, "r-elsewhere", 128, 65536, 4))
        .await
        .unwrap();
    // "r-full" takes a VM in its one slot; "r-deep" one of 12 vCPUs.
    let mut v = vi(owner.id, "roomy");
    v.state = ViState::Requested;
    s.create_vi(&v).await.unwrap();
    s.transition_with_placement(
        v.id,
        ViState::Requested,
        &to(ViState::Accepted, owner.id),
        &Reservation {
            vms: vec![
                vm(v.id, "a", full.id, 1, 10),
                vm(v.id, "b", deep.id, 12, 10),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let names = |hosts: Vec<HostRecord>| hosts.into_iter().map(|h| h.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.roomiest_hosts(dc.id, 10).await.unwrap()),
        ["r-wide", "r-small", "r-deep"]
    );
    assert_eq!(
        names(s.roomiest_hosts(dc.id, 2).await.unwrap()),
        ["r-wide", "r-small"]
    );
    // Unreachable hosts are not shortlisted.
    s.mark_unreachable(i64::MAX).await.unwrap();
    assert!(s.roomiest_hosts(dc.id, 10).await.unwrap().is_empty());
    s.host_heartbeats(&[(small.id, 5), (wide.id, 5)])
        .await
        .unwrap();
    assert_eq!(
        names(s.roomiest_hosts(dc.id, 10).await.unwrap()),
        ["r-wide", "r-small"]
    );
}

async fn quota_usage_sums(s: &dyn Store) {
    let dave = user("dave", Role::User);
    s.create_user(&dave).await.unwrap();
    let usage = |n: i64| ViUsage {
        vms: n,
        vcpus: 2 * n,
        ram_mib: 512 * n,
        public_addresses: 1,
        private_addresses: 8 * n,
    };
    let mut ids = Vec::new();
    for (i, state) in [
        ViState::Requested,
        ViState::Running,
        ViState::Defined,
        ViState::Terminated,
        ViState::Suspended,
        ViState::Requested,
    ]
    .into_iter()
    .enumerate()
    {
        let mut v = vi(dave.id, &format!("u{i}"));
        v.state = state;
        s.create_vi(&v).await.unwrap();
        // The last one recorded nothing.
        if i < 5 {
            s.set_vi_usage(v.id, &usage(i as i64 + 1)).await.unwrap();
        }
        ids.push(v.id);
    }
    // Counted: requested (1), running (2), suspended (5); not defined (3)
    // or terminated (4); the sixth recorded nothing.
    let (sum, missing) = s.quota_usage(dave.id, nil()).await.unwrap();
    assert_eq!(
        sum,
        ViUsage {
            vms: 8,
            vcpus: 16,
            ram_mib: 4096,
            public_addresses: 3,
            private_addresses: 64,
        }
    );
    assert_eq!(missing, vec![ids[5]]);
    let (sum, missing) = s.quota_usage(dave.id, ids[1]).await.unwrap();
    assert_eq!(sum.vms, 6, "all but the one checked");
    assert_eq!(missing, vec![ids[5]]);
    let (sum, missing) = s.quota_usage(dave.id, ids[5]).await.unwrap();
    assert_eq!((sum.vms, missing), (8, vec![]));
    assert!(matches!(
        s.set_vi_usage(fresh(), &usage(1)).await,
        Err(StoreError::NotFound { .. })
    ));
    let (sum, _) = s.quota_usage(fresh(), nil()).await.unwrap();
    assert_eq!(sum, ViUsage::default(), "no VI, nothing used");
    // A change that records usage records it with itself: the sixth,
    // withdrawn and requested again with its usage, counts at once.
    let back = Transition {
        usage: None,
        ..to(ViState::Defined, dave.id)
    };
    s.transition_vi(ids[5], ViState::Requested, &back)
        .await
        .unwrap();
    let again = Transition {
        usage: Some(usage(10)),
        ..to(ViState::Requested, dave.id)
    };
    s.transition_vi(ids[5], ViState::Defined, &again)
        .await
        .unwrap();
    let (sum, missing) = s.quota_usage(dave.id, nil()).await.unwrap();
    assert_eq!((sum.vms, sum.private_addresses, missing), (18, 144, vec![]));
    // One without usage keeps what was recorded.
    s.transition_vi(ids[5], ViState::Requested, &back)
        .await
        .unwrap();
    s.transition_vi(ids[5], ViState::Defined, &to(ViState::Requested, dave.id))
        .await
        .unwrap();
    assert_eq!(s.quota_usage(dave.id, nil()).await.unwrap().0.vms, 18);

    // The design quota counts every VI but the terminated one, defined
    // ones included, with their design text.
    let text = vi(dave.id, "x").design_xml.len() as i64;
    assert_eq!(
        s.design_holdings(dave.id).await.unwrap(),
        DesignHoldings {
            designs: 5,
            bytes: 5 * text,
        }
    );
    assert_eq!(
        s.design_holdings(fresh()).await.unwrap(),
        DesignHoldings::default(),
        "no VI, no design"
    );
}

/// An administrator changes a user's quota; it is kept whole.
async fn user_quotas(s: &dyn Store) {
    let carol = user("carol", Role::User);
    s.create_user(&carol).await.unwrap();
    let quota = Quota {
        vms: 500,
        vcpus: 1000,
        ram_mib: 1 << 22,
        public_addresses: 3,
        designs: 7,
        design_mib: 9,
        private_addresses: 65536,
    };
    assert_eq!(
        s.set_user_quota(carol.id, &quota).await.unwrap().quota,
        quota
    );
    assert_eq!(s.user(carol.id).await.unwrap().quota, quota);
    assert!(matches!(
        s.set_user_quota(fresh(), &quota).await,
        Err(StoreError::NotFound { what: "user" })
    ));
}

fn usage_of(hosts: &[HostRecord], id: HostId) -> HostUsage {
    hosts.iter().find(|h| h.id == id).unwrap().used
}

/// A migration: target slots reserved beside the VMs' own, then either
/// committed (the VMs take them, their old slots are freed, the VI is
/// located) or released; terminating frees both.
async fn migration_moves(s: &dyn Store) {
    let (owner, dc) = owner_and_datacenter(s, "mover", "dc-from").await;
    let other = DatacenterRecord {
        public_gateway: None,
        id: fresh(),
        name: "dc-to".into(),
        created_at: 1,
        home_pools: vec![],
    };
    s.create_datacenter(&other).await.unwrap();
    let a = s
        .upsert_host(&host(dc.id, "from-1", 8, 8192, 4))
        .await
        .unwrap();
    let b = s
        .upsert_host(&host(other.id, "to-1", 8, 8192, 4))
        .await
        .unwrap();
    let small = s
        .upsert_host(&host(other.id, "to-2", 1, 512, 1))
        .await
        .unwrap();
    let mut v = vi(owner.id, "moving");
    v.state = ViState::Requested;
    s.create_vi(&v).await.unwrap();
    let here = [vm(v.id, "x", a.id, 2, 1024), vm(v.id, "y", a.id, 1, 512)];
    s.transition_with_placement(
        v.id,
        ViState::Requested,
        &to(ViState::Accepted, owner.id),
        &Reservation {
            vms: here.to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.transition_vi(v.id, ViState::Accepted, &to(ViState::Running, owner.id))
        .await
        .unwrap();
    assert_eq!(s.vi(v.id).await.unwrap().location_id, None);

    // A target without room fails the whole start: no move, no usage.
    let there = [
        vm(v.id, "x", b.id, 2, 1024),
        vm(v.id, "y", small.id, 2, 512),
    ];
    let err = s
        .transition_with_placement(
            v.id,
            ViState::Running,
            &to(ViState::Migrating, owner.id),
            &Reservation {
                moves: there.to_vec(),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(err, Err(StoreError::NoRoom { ref node, .. }) if node == "y"),
        "{err:?}"
    );
    assert!(s.vm_moves(v.id).await.unwrap().is_empty());
    assert_eq!(
        usage_of(&s.list_hosts().await.unwrap(), b.id),
        HostUsage::default()
    );

    let there = [vm(v.id, "x", b.id, 2, 1024), vm(v.id, "y", b.id, 1, 512)];
    let start = |moves: Vec<VmRecord>| Reservation {
        moves,
        ..Default::default()
    };
    s.transition_with_placement(
        v.id,
        ViState::Running,
        &to(ViState::Migrating, owner.id),
        &start(there.to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(s.vm_moves(v.id).await.unwrap(), there.to_vec());
    assert_eq!(
        s.vms(v.id).await.unwrap(),
        here.to_vec(),
        "the VMs keep their slots"
    );
    parts_are_the_reads(s, v.id, dc.id, owner.id).await;
    let hosts = s.list_hosts().await.unwrap();
    assert_eq!(usage_of(&hosts, a.id).slots, 2);
    assert_eq!(usage_of(&hosts, b.id).slots, 2);
    assert_eq!(usage_of(&hosts, b.id).vcpus, 3);

    // Undone: the target slots go, the VMs keep theirs.
    assert_eq!(s.release_vm_moves(v.id).await.unwrap(), 2);
    assert_eq!(s.release_vm_moves(v.id).await.unwrap(), 0, "idempotent");
    let hosts = s.list_hosts().await.unwrap();
    assert_eq!(usage_of(&hosts, b.id), HostUsage::default());
    assert_eq!(usage_of(&hosts, a.id).slots, 2);
    assert_eq!(s.vms(v.id).await.unwrap(), here.to_vec());

    // Again, committed this time.
    s.transition_vi(v.id, ViState::Migrating, &to(ViState::Running, owner.id))
        .await
        .unwrap();
    s.transition_with_placement(
        v.id,
        ViState::Running,
        &to(ViState::Migrating, owner.id),
        &start(there.to_vec()),
    )
    .await
    .unwrap();
    let before = s.vi_stamp(v.id).await.unwrap().revision;
    assert_eq!(s.commit_vm_moves(v.id, Some(other.id)).await.unwrap(), 2);
    assert!(
        s.vi_stamp(v.id).await.unwrap().revision > before,
        "the VI's views change"
    );
    assert_eq!(
        s.commit_vm_moves(v.id, Some(other.id)).await.unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(s.vms(v.id).await.unwrap(), there.to_vec());
    assert!(s.vm_moves(v.id).await.unwrap().is_empty());
    assert_eq!(s.vi(v.id).await.unwrap().location_id, Some(other.id));
    let hosts = s.list_hosts().await.unwrap();
    assert_eq!(usage_of(&hosts, a.id), HostUsage::default());
    assert_eq!(usage_of(&hosts, b.id).slots, 2);
    assert_eq!(usage_of(&hosts, b.id).ram_mib, 1536);

    // Home again, by location alone.
    s.set_vi_location(v.id, None).await.unwrap();
    assert_eq!(s.vi(v.id).await.unwrap().location_id, None);
    assert!(matches!(
        s.set_vi_location(fresh(), None).await,
        Err(StoreError::NotFound { .. })
    ));

    // Terminating a VI caught mid-move frees both its slots and its moves.
    s.transition_with_placement(
        v.id,
        ViState::Migrating,
        &to(ViState::Failed, owner.id),
        &start(vec![vm(v.id, "x", a.id, 2, 1024)]),
    )
    .await
    .unwrap();
    assert_eq!(s.release_vms(v.id).await.unwrap(), 3);
    assert!(s
        .list_hosts()
        .await
        .unwrap()
        .iter()
        .filter(|h| [a.id, b.id, small.id].contains(&h.id))
        .all(|h| h.used == HostUsage::default()));
}

/// [`Store::vi_parts`] reads in one statement what the reads of a VI's
/// events, VMs, moves, migration request and jobs read one by one, in
/// their order; `vi` is migrating, and is given jobs (one with a JSON
/// step list holding text to escape, created in an order their ids do
/// not sort in) and a migration request here.
async fn parts_are_the_reads(s: &dyn Store, vi: ViId, dc: DatacenterId, owner: UserId) {
    let job = |created_at: i64, id: u128, steps: &str| JobRecord {
        id: Uuid::from_u128(id).into(),
        vi_id: vi,
        kind: "save-template".into(),
        state: JobState::Running,
        steps: steps.into(),
        cursor: 1,
        total: 2,
        error: Some("a \"quoted\" error".into()),
        owner: Some("manager-a".into()),
        lease_until: 9_007_199_254_740_993,
        created_at,
        updated_at: created_at,
    };
    let jobs = [
        job(5, 0xff, r#"[{"step":"é \" \\ ok"},2]"#),
        job(5, 0x01, "[]"),
        job(3, 0x80, "{}"),
    ];
    for j in &jobs {
        s.add_job(j, ViState::Migrating).await.unwrap();
    }
    let request = MigrationRequestRecord {
        vi_id: vi,
        datacenter_id: dc,
        requested_by: owner,
        requested_at: 42,
    };
    s.request_migration(&request).await.unwrap();

    let parts = s.vi_parts(vi).await.unwrap();
    assert_eq!(parts.events, s.vi_events(vi).await.unwrap());
    assert!(parts.events.len() >= 3, "{:?}", parts.events);
    assert_eq!(parts.vms, s.vms(vi).await.unwrap());
    assert_eq!(parts.moves, s.vm_moves(vi).await.unwrap());
    assert_eq!(parts.vms.len(), 2);
    assert_eq!(parts.moves.len(), 2);
    assert_eq!(parts.migration_request, Some(request));
    assert_eq!(parts.jobs, s.jobs_of_vi(vi).await.unwrap());
    let order: Vec<_> = parts.jobs.iter().map(|j| j.id).collect();
    assert_eq!(
        order,
        [jobs[2].id, jobs[1].id, jobs[0].id],
        "by creation, then id"
    );
    assert_eq!(parts.jobs[2], jobs[0], "read as written");

    // A job that succeeded past its last step comes without its steps;
    // one that succeeded short of it (never written so) keeps them.
    let done = |id: u128, cursor: i64| JobRecord {
        state: JobState::Succeeded,
        cursor,
        created_at: 9 + cursor,
        ..job(0, id, r#"[{"step":"long"}]"#)
    };
    let (finished, short) = (done(0x0f, 2), done(0x0e, 1));
    s.add_job(&finished, ViState::Migrating).await.unwrap();
    s.add_job(&short, ViState::Migrating).await.unwrap();
    let parts = s.vi_parts(vi).await.unwrap();
    assert_eq!(parts.jobs.len(), 5);
    assert_eq!(parts.jobs[3], short, "short of its last step");
    assert_eq!(
        parts.jobs[4],
        JobRecord {
            steps: "[]".into(),
            ..finished.clone()
        },
        "past its last step"
    );
    let read = s.jobs_of_vi(vi).await.unwrap();
    assert_eq!(read[4], finished, "the job's own read keeps its steps");
    assert_eq!(parts.jobs[..4], read[..4]);

    assert!(s.delete_migration_request(vi).await.unwrap());
    let none = s.vi_parts(fresh()).await.unwrap();
    assert_eq!(none, ViParts::default(), "a VI with no rows has no parts");
}

/// Switch registrations, the per-address generation counter (concurrent
/// callers never share a number) and owners' migration requests.
async fn switches_and_generations(s: Arc<dyn Store>) {
    let (owner, dc) = owner_and_datacenter(s.as_ref(), "switcher", "dc-switch").await;
    let ess = SwitchRecord {
        datacenter_id: dc.id,
        url: "http://192.0.2.10:7400".into(),
        key_file: "/etc/neptune/ess.key".into(),
        care_of: "198.18.1.2".into(),
        port: "dc-public".into(),
        via: None,
        updated_at: 5,
    };
    s.set_switch(&ess).await.unwrap();
    assert_eq!(s.switches().await.unwrap(), vec![ess.clone()]);
    let moved = SwitchRecord {
        url: "http://192.0.2.11:7400".into(),
        via: Some("10.0.0.1".into()),
        updated_at: 6,
        ..ess.clone()
    };
    s.set_switch(&moved).await.unwrap();
    assert_eq!(s.switches().await.unwrap(), vec![moved]);
    s.delete_switch(dc.id).await.unwrap();
    assert!(s.switches().await.unwrap().is_empty());
    assert!(matches!(
        s.delete_switch(dc.id).await,
        Err(StoreError::NotFound { .. })
    ));

    assert_eq!(s.next_generation("203.0.113.9", 0).await.unwrap(), 1);
    assert_eq!(s.next_generation("203.0.113.9", 0).await.unwrap(), 2);
    assert_eq!(
        s.next_generation("203.0.113.8", 0).await.unwrap(),
        1,
        "per address"
    );
    assert_eq!(
        s.next_generation("203.0.113.9", 40).await.unwrap(),
        41,
        "past a switch's"
    );
    assert_eq!(
        s.next_generation("203.0.113.9", 3).await.unwrap(),
        42,
        "never back"
    );
    let handles = (0..16).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.next_generation("203.0.113.7", 0).await.unwrap() })
    });
    let mut got = futures_join(handles).await;
    got.sort_unstable();
    assert_eq!(got, (1..=16).collect::<Vec<i64>>());

    let mut v = vi(owner.id, "asks");
    v.state = ViState::Running;
    s.create_vi(&v).await.unwrap();
    let request = MigrationRequestRecord {
        vi_id: v.id,
        datacenter_id: dc.id,
        requested_by: owner.id,
        requested_at: 7,
    };
    assert_eq!(s.migration_request(v.id).await.unwrap(), None);
    let before = s.vi_stamp(v.id).await.unwrap().revision;
    s.request_migration(&request).await.unwrap();
    assert!(s.vi_stamp(v.id).await.unwrap().revision > before);
    assert!(matches!(
        s.request_migration(&request).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(
        s.migration_request(v.id).await.unwrap(),
        Some(request.clone())
    );
    assert_eq!(s.migration_requests().await.unwrap(), vec![request]);
    assert!(s.delete_migration_request(v.id).await.unwrap());
    assert!(!s.delete_migration_request(v.id).await.unwrap());
    assert!(s.migration_requests().await.unwrap().is_empty());
}

/// Concurrent commits competing for the last slots: the database lets
/// exactly as many in as fit.
async fn concurrent_reservations(s: Arc<dyn Store>) {
    let (owner, dc) = owner_and_datacenter(s.as_ref(), "crowd", "dc-crowd").await;
    let h = s
        .upsert_host(&host(dc.id, "crowded", 64, 65536, 5))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = vi(owner.id, &format!("c{i}"));
            v.state = ViState::Requested;
            s.create_vi(&v).await.unwrap();
            let vms = [vm(v.id, "only", h.id, 1, 100)];
            s.transition_with_placement(
                v.id,
                ViState::Requested,
                &to(ViState::Accepted, owner.id),
                &Reservation {
                    vms: vms.to_vec(),
                    ..Default::default()
                },
            )
            .await
            .is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 5);
    let hosts = s.list_hosts().await.unwrap();
    assert_eq!(hosts.iter().find(|x| x.id == h.id).unwrap().used.slots, 5);
}

/// Accepts and releases of VIs spread over the same hosts, in parallel,
/// their VMs listed in opposite host orders: all succeed (PostgreSQL would
/// abort one of two transactions that lock the same hosts in opposite
/// orders), and the usage is exactly what stays reserved.
async fn crossing_reservations_and_releases(s: Arc<dyn Store>) {
    let (owner, dc) = owner_and_datacenter(s.as_ref(), "crossing", "dc-crossing").await;
    let mut hosts = Vec::new();
    for i in 0..4 {
        let h = host(dc.id, &format!("x{i}"), 1024, 1 << 20, 1024);
        hosts.push(s.upsert_host(&h).await.unwrap().id);
    }
    let spread = |vi: ViId, reverse: bool| {
        let mut vms: Vec<VmRecord> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| vm(vi, &format!("n{i}"), *h, 1, 10))
            .collect();
        if reverse {
            vms.reverse();
        }
        vms
    };
    let accept = |s: Arc<dyn Store>, vi: ViId, vms: Vec<VmRecord>| async move {
        s.transition_with_placement(
            vi,
            ViState::Requested,
            &to(ViState::Accepted, nil()),
            &Reservation {
                vms,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
    };
    let mut old = Vec::new();
    for i in 0..8 {
        let mut v = vi(owner.id, &format!("old{i}"));
        v.state = ViState::Requested;
        s.create_vi(&v).await.unwrap();
        accept(s.clone(), v.id, spread(v.id, i % 2 == 0))
            .await
            .unwrap();
        old.push(v.id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in old.into_iter().enumerate() {
        let s2 = s.clone();
        tasks.spawn(async move { s2.release_vms(id).await.map(|_| ()) });
        let mut v = vi(owner.id, &format!("new{i}"));
        v.state = ViState::Requested;
        s.create_vi(&v).await.unwrap();
        tasks.spawn(accept(s.clone(), v.id, spread(v.id, i % 2 == 1)));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let used: i64 = s
        .list_hosts()
        .await
        .unwrap()
        .iter()
        .filter(|h| hosts.contains(&h.id))
        .map(|h| h.used.slots)
        .sum();
    assert_eq!(used, 8 * 4, "exactly the new VIs' VMs are reserved");
}

/// A host's uplink is reserved like its other resources: a reservation
/// that would exceed it fails whole; a host without a registered uplink
/// (0) does not limit bandwidth.
async fn uplink_reservations(s: &dyn Store) {
    let (owner, dc) = owner_and_datacenter(s, "uplinker", "dc-uplink").await;
    let narrow = s
        .upsert_host(&HostRecord {
            uplink_mbps: 100,
            ..host(dc.id, "u1", 16, 65536, 16)
        })
        .await
        .unwrap();
    let open = s
        .upsert_host(&host(dc.id, "u2", 16, 65536, 16))
        .await
        .unwrap();
    let with_uplink = |vi: ViId, node: &str, h: HostId, mbps: i64| VmRecord {
        uplink_mbps: mbps,
        ..vm(vi, node, h, 1, 10)
    };
    let reserve = |vms: Vec<VmRecord>| async move {
        let mut v = vi(owner.id, "up");
        v.state = ViState::Requested;
        s.create_vi(&v).await.unwrap();
        let vms: Vec<VmRecord> = vms
            .into_iter()
            .map(|m| VmRecord { vi_id: v.id, ..m })
            .collect();
        s.transition_with_placement(
            v.id,
            ViState::Requested,
            &to(ViState::Accepted, owner.id),
            &Reservation {
                vms,
                ..Default::default()
            },
        )
        .await
        .map(|r| r.id)
    };
    let nil = nil();
    let err = reserve(vec![
        with_uplink(nil, "a", narrow.id, 60),
        with_uplink(nil, "b", narrow.id, 50),
    ])
    .await;
    assert!(
        matches!(err, Err(StoreError::NoRoom { ref node, .. }) if node == "b"),
        "{err:?}"
    );
    let first = reserve(vec![
        with_uplink(nil, "a", narrow.id, 60),
        with_uplink(nil, "b", narrow.id, 40),
        with_uplink(nil, "c", open.id, 5000),
    ])
    .await
    .unwrap();
    let usage = |id: HostId| async move {
        s.list_hosts()
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.id == id)
            .unwrap()
            .used
            .uplink_mbps
    };
    assert_eq!((usage(narrow.id).await, usage(open.id).await), (100, 5000));
    assert_eq!(s.vms(first).await.unwrap()[0].uplink_mbps, 60);
    // Full: even 1 Mbit/s more is refused; re-registering keeps the usage.
    assert!(reserve(vec![with_uplink(nil, "d", narrow.id, 1)])
        .await
        .is_err());
    let again = s
        .upsert_host(&HostRecord {
            uplink_mbps: 100,
            ..host(dc.id, "u1", 16, 65536, 16)
        })
        .await
        .unwrap();
    assert_eq!(again.used.uplink_mbps, 100);
    s.release_vms(first).await.unwrap();
    assert_eq!((usage(narrow.id).await, usage(open.id).await), (0, 0));
}

async fn durable_jobs(s: &dyn Store) {
    let owner = user("jobber", Role::User);
    s.create_user(&owner).await.unwrap();
    let mut v = vi(owner.id, "jobbed");
    v.state = ViState::Accepted;
    s.create_vi(&v).await.unwrap();
    let job = JobRecord {
        id: fresh(),
        vi_id: v.id,
        kind: "deploy".into(),
        state: JobState::Running,
        steps: "[1,2,3]".into(),
        cursor: 0,
        total: 3,
        error: None,
        owner: None,
        lease_until: 0,
        created_at: 60,
        updated_at: 60,
    };
    let deploying = s
        .start_job(&job, ViState::Accepted, &to(ViState::Deploying, owner.id))
        .await
        .unwrap();
    assert_eq!(deploying.state, ViState::Deploying);
    assert!(s
        .start_job(
            &JobRecord {
                id: fresh(),
                ..job.clone()
            },
            ViState::Accepted,
            &to(ViState::Deploying, owner.id)
        )
        .await
        .is_err());
    assert_eq!(s.job(job.id).await.unwrap(), job);
    assert_eq!(
        s.unfinished_jobs()
            .await
            .unwrap()
            .iter()
            .filter(|j| j.id == job.id)
            .count(),
        1
    );

    // Leases: one owner at a time until the lease runs out.
    assert!(s.claim_job(job.id, "m1", 100, 200).await.unwrap());
    assert!(!s.claim_job(job.id, "m2", 150, 250).await.unwrap());
    assert!(
        s.claim_job(job.id, "m1", 150, 300).await.unwrap(),
        "renewal"
    );
    assert!(
        s.claim_job(job.id, "m2", 301, 400).await.unwrap(),
        "expired lease is taken over"
    );

    // Progress is compare-and-set.
    let j = s
        .update_job(
            job.id,
            (JobState::Running, 0),
            JobState::Running,
            1,
            None,
            70,
        )
        .await
        .unwrap();
    assert_eq!(j.cursor, 1);
    assert!(matches!(
        s.update_job(
            job.id,
            (JobState::Running, 0),
            JobState::Running,
            1,
            None,
            71
        )
        .await,
        Err(StoreError::Conflict { .. })
    ));
    let j = s
        .update_job(
            job.id,
            (JobState::Running, 1),
            JobState::RollingBack,
            1,
            Some("boom"),
            72,
        )
        .await
        .unwrap();
    assert_eq!(
        (j.state, j.error.as_deref()),
        (JobState::RollingBack, Some("boom"))
    );
    let j = s
        .update_job(
            job.id,
            (JobState::RollingBack, 1),
            JobState::RollingBack,
            0,
            None,
            73,
        )
        .await
        .unwrap();
    assert_eq!(j.error.as_deref(), Some("boom"), "the first error is kept");
    // A finish is a compare-and-set on the cursor too.
    assert!(matches!(
        s.finish_job(
            job.id,
            (JobState::RollingBack, 1),
            JobState::RolledBack,
            0,
            None,
            ViState::Deploying,
            &to(ViState::Accepted, owner.id),
        )
        .await,
        Err(StoreError::Conflict { .. })
    ));
    let back = s
        .finish_job(
            job.id,
            (JobState::RollingBack, 0),
            JobState::RolledBack,
            0,
            None,
            ViState::Deploying,
            &to(ViState::Accepted, owner.id),
        )
        .await
        .unwrap();
    assert_eq!(back.state, ViState::Accepted);
    let j = s.job(job.id).await.unwrap();
    assert_eq!((j.state, j.owner), (JobState::RolledBack, None));
    assert!(s
        .unfinished_jobs()
        .await
        .unwrap()
        .iter()
        .all(|u| u.id != job.id));
    assert_eq!(s.jobs_of_vi(v.id).await.unwrap().len(), 1);
    // Finishing twice is refused.
    assert!(s
        .finish_job(
            job.id,
            (JobState::RollingBack, 0),
            JobState::RolledBack,
            0,
            None,
            ViState::Deploying,
            &to(ViState::Accepted, owner.id)
        )
        .await
        .is_err());
}

fn owned(pool: &str, prefix: &str) -> AddressRow {
    AddressRow {
        pool: pool.into(),
        prefix: prefix.into(),
        owner: Some(format!("{{\"block\":\"{prefix}\"}}")),
    }
}

fn covers(pool: &str, prefix: &str) -> AddressRow {
    AddressRow {
        pool: pool.into(),
        prefix: prefix.into(),
        owner: None,
    }
}

/// The address table refuses overlapping commits whatever snapshot they
/// came from: an owned prefix where anything is, a cover where a prefix is owned.
async fn address_uniqueness(s: &dyn Store) {
    let owner = user("addr", Role::User);
    s.create_user(&owner).await.unwrap();
    let p = "10.0.0.0/8";
    let accept = |vi: &ViRecord, rows: Vec<AddressRow>| {
        let vi = vi.id;
        let reservation = Reservation {
            addresses: rows,
            address_plan: Some("{}".into()),
            ..Default::default()
        };
        async move {
            s.transition_with_placement(
                vi,
                ViState::Requested,
                &to(ViState::Accepted, owner.id),
                &reservation,
            )
            .await
        }
    };
    let mut a = vi(owner.id, "a");
    a.state = ViState::Requested;
    let mut b = vi(owner.id, "b");
    b.state = ViState::Requested;
    let mut c = vi(owner.id, "c");
    c.state = ViState::Requested;
    for v in [&a, &b, &c] {
        s.create_vi(v).await.unwrap();
    }
    // a takes 10.0.0.0/29 (covered by 10.0.0.0/28 .. within the pool).
    let rows_a = vec![covers(p, "10.0.0.0/28"), owned(p, "10.0.0.0/29")];
    let va = accept(&a, rows_a).await.unwrap();
    assert_eq!(va.address_plan.as_deref(), Some("{}"));
    assert_eq!(
        s.vi(a.id).await.unwrap().address_plan.as_deref(),
        Some("{}")
    );
    // b wants 10.0.0.0/28, which contains a's block: its owned insert hits a's cover.
    let err = accept(&b, vec![owned(p, "10.0.0.0/28")]).await;
    assert!(
        matches!(err, Err(StoreError::AddressTaken { .. })),
        "{err:?}"
    );
    assert_eq!(
        s.vi(b.id).await.unwrap().state,
        ViState::Requested,
        "nothing of b was committed"
    );
    // c wants 10.0.0.4/30, inside a's block: its cover of the /29 hits a's owned row.
    let err = accept(
        &c,
        vec![
            covers(p, "10.0.0.0/28"),
            covers(p, "10.0.0.0/29"),
            owned(p, "10.0.0.4/30"),
        ],
    )
    .await;
    assert!(
        matches!(err, Err(StoreError::AddressTaken { .. })),
        "{err:?}"
    );
    // A disjoint block next to it shares the /28 cover.
    accept(&c, vec![covers(p, "10.0.0.0/28"), owned(p, "10.0.0.8/29")])
        .await
        .unwrap();
    let owned_rows = s.owned_addresses().await.unwrap();
    assert_eq!(owned_rows.len(), 2);
    assert!(owned_rows
        .iter()
        .any(|o| o.prefix == "10.0.0.0/29" && o.vi_id == Some(a.id)));
    // One VI's rows: its own only.
    let of_a = s.owned_addresses_of(a.id).await.unwrap();
    assert_eq!(of_a.len(), 1);
    assert_eq!(
        (of_a[0].prefix.as_str(), of_a[0].vi_id),
        ("10.0.0.0/29", Some(a.id))
    );
    assert_eq!(
        s.owned_addresses_of(c.id).await.unwrap()[0].prefix,
        "10.0.0.8/29"
    );
    // Releasing a keeps c's cover alive; releasing twice changes nothing.
    assert_eq!(
        s.release_addresses(a.id, &[(p.into(), "10.0.0.0/28".into())])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.release_addresses(a.id, &[(p.into(), "10.0.0.0/28".into())])
            .await
            .unwrap(),
        0
    );
    // Now b's /28 still collides with c's cover...
    let err = accept(&b, vec![owned(p, "10.0.0.0/28")]).await;
    assert!(
        matches!(err, Err(StoreError::AddressTaken { .. })),
        "{err:?}"
    );
    // ...until c is released too.
    s.release_addresses(c.id, &[(p.into(), "10.0.0.0/28".into())])
        .await
        .unwrap();
    accept(&b, vec![owned(p, "10.0.0.0/28")]).await.unwrap();
}

/// Terminates (and accepts) of VIs sharing covering prefixes, each VI
/// listing its covers in its own order, run at once: none fails. Rows are
/// locked in one global order (a VI's own order deadlocked PostgreSQL:
/// "deadlock detected", the VIs left `failed` with their addresses held).
/// Afterwards nothing of theirs is left in the address table.
async fn crossing_address_releases(s: Arc<dyn Store>) {
    let owner = user("crossing-addresses", Role::User);
    s.create_user(&owner).await.unwrap();
    let p = "10.0.0.0/8";
    // Eight VIs, each a /29 of 10.9.0.0/26, under covers they share.
    let layout = |i: usize| {
        let own = format!("10.9.0.{}/29", i * 8);
        let mut shared: Vec<String> = vec![
            "10.9.0.0/16".into(),
            "10.9.0.0/24".into(),
            "10.9.0.0/25".into(),
            "10.9.0.0/26".into(),
            format!("10.9.0.{}/27", (i / 4) * 32),
            format!("10.9.0.{}/28", (i / 2) * 16),
        ];
        let n = shared.len();
        shared.rotate_left(i % n);
        if i % 2 == 1 {
            shared.reverse();
        }
        (own, shared)
    };
    for round in 0..3 {
        let mut vis = Vec::new();
        for i in 0..8 {
            let mut v = vi(owner.id, &format!("cross{round}-{i}"));
            v.state = ViState::Requested;
            s.create_vi(&v).await.unwrap();
            vis.push(v.id);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in vis.iter().copied().enumerate() {
            let s2 = s.clone();
            let (own, shared) = layout(i);
            tasks.spawn(async move {
                let mut rows: Vec<AddressRow> = shared.iter().map(|c| covers(p, c)).collect();
                rows.push(owned(p, &own));
                s2.transition_with_placement(
                    id,
                    ViState::Requested,
                    &to(ViState::Accepted, nil()),
                    &Reservation {
                        addresses: rows,
                        address_plan: Some("{}".into()),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in vis.iter().copied().enumerate() {
            let s2 = s.clone();
            let (_, mut shared) = layout(i);
            shared.reverse();
            tasks.spawn(async move {
                let covers: Vec<(String, String)> =
                    shared.into_iter().map(|c| (p.to_owned(), c)).collect();
                s2.release_addresses(id, &covers).await.map(|_| ())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let left = s.owned_addresses().await.unwrap();
        assert!(
            left.iter().all(|r| !r.prefix.starts_with("10.9.")),
            "round {round}: {left:?}"
        );
        // Every cover went with its last owner: the whole /16 is free.
        let mut probe = vi(owner.id, &format!("probe{round}"));
        probe.state = ViState::Requested;
        s.create_vi(&probe).await.unwrap();
        s.transition_with_placement(
            probe.id,
            ViState::Requested,
            &to(ViState::Accepted, nil()),
            &Reservation {
                addresses: vec![owned(p, "10.9.0.0/16")],
                address_plan: Some("{}".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        s.release_addresses(probe.id, &[]).await.unwrap();
    }
}

/// Every write of what a VI's readers see grows its revision, whichever
/// method makes it; reads and failed writes do not, nor do other VIs' writes.
async fn vi_revisions(s: &dyn Store) {
    let (owner, dc) = owner_and_datacenter(s, "revised", "dc-revisions").await;
    let h = s.upsert_host(&host(dc.id, "r1", 8, 8192, 8)).await.unwrap();
    let v = vi(owner.id, "watched");
    let other = vi(owner.id, "bystander");
    s.create_vi(&v).await.unwrap();
    s.create_vi(&other).await.unwrap();
    assert!(matches!(
        s.vi_stamp(fresh()).await,
        Err(StoreError::NotFound { what: "VI" })
    ));
    let first = s.vi_stamp(v.id).await.unwrap();
    assert_eq!(first.owner_id, owner.id);
    let other_first = s.vi_stamp(other.id).await.unwrap();

    let before = s.vi_list_stamp(Some(owner.id)).await.unwrap();
    assert_eq!(before.count, 2);
    let all = s.vi_list_stamp(None).await.unwrap();
    assert!(all.count >= 2 && all.revisions >= before.revisions);
    let mut last = (first.revision, before);
    async fn grew(
        s: &dyn Store,
        vi: ViId,
        owner: UserId,
        last: &mut (i64, ViListStamp),
        what: &str,
    ) {
        let stamp = s.vi_stamp(vi).await.unwrap();
        let list = s.vi_list_stamp(Some(owner)).await.unwrap();
        assert!(stamp.revision > last.0, "{what} did not grow the revision");
        assert_ne!(list, last.1, "{what} did not change the list's stamp");
        *last = (stamp.revision, list);
    }
    async fn unchanged(s: &dyn Store, vi: ViId, owner: UserId, last: &(i64, ViListStamp)) {
        assert_eq!(s.vi_stamp(vi).await.unwrap().revision, last.0);
        assert_eq!(s.vi_list_stamp(Some(owner)).await.unwrap(), last.1);
    }
    s.update_vi_design(v.id, 1, "watched", "<topology id=\"u\"/>", 20)
        .await
        .unwrap();
    grew(s, v.id, owner.id, &mut last, "a design edit").await;
    s.transition_vi(v.id, ViState::Defined, &to(ViState::Requested, owner.id))
        .await
        .unwrap();
    grew(s, v.id, owner.id, &mut last, "a transition").await;

    // Reads and refused writes leave it alone.
    s.vi(v.id).await.unwrap();
    s.vms(v.id).await.unwrap();
    s.vi_events(v.id).await.unwrap();
    assert!(s
        .transition_vi(v.id, ViState::Defined, &to(ViState::Requested, owner.id))
        .await
        .is_err());
    unchanged(s, v.id, owner.id, &last).await;

    s.transition_with_placement(
        v.id,
        ViState::Requested,
        &to(ViState::Accepted, owner.id),
        &Reservation {
            vms: vec![vm(v.id, "a", h.id, 1, 512), vm(v.id, "b", h.id, 1, 512)],
            address_plan: Some("{}".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    grew(s, v.id, owner.id, &mut last, "a placement").await;
    let job = JobRecord {
        id: fresh(),
        vi_id: v.id,
        kind: "deploy".into(),
        state: JobState::Running,
        steps: "[1,2]".into(),
        cursor: 0,
        total: 2,
        error: None,
        owner: None,
        lease_until: 0,
        created_at: 60,
        updated_at: 60,
    };
    s.start_job(&job, ViState::Accepted, &to(ViState::Deploying, owner.id))
        .await
        .unwrap();
    grew(s, v.id, owner.id, &mut last, "starting a job").await;
    // A lease is not shown to readers: taking and renewing it leaves
    // the revision alone.
    assert!(s.claim_job(job.id, "m1", 100, 200).await.unwrap());
    assert!(s.claim_job(job.id, "m1", 150, 250).await.unwrap());
    unchanged(s, v.id, owner.id, &last).await;
    s.update_job(
        job.id,
        (JobState::Running, 0),
        JobState::Running,
        1,
        None,
        70,
    )
    .await
    .unwrap();
    grew(s, v.id, owner.id, &mut last, "a job's progress").await;
    // The end writes the cursor that progress kept in memory reached.
    s.finish_job(
        job.id,
        (JobState::Running, 1),
        JobState::Succeeded,
        2,
        None,
        ViState::Deploying,
        &to(ViState::Running, nil()),
    )
    .await
    .unwrap();
    assert_eq!(s.job(job.id).await.unwrap().cursor, 2);
    grew(s, v.id, owner.id, &mut last, "finishing a job").await;
    // A side job (saving a template) leaves the VI row alone, yet shows in its detail.
    s.add_job(
        &JobRecord {
            id: fresh(),
            kind: "save_template".into(),
            ..job.clone()
        },
        ViState::Running,
    )
    .await
    .unwrap();
    grew(s, v.id, owner.id, &mut last, "a side job").await;
    assert_eq!(s.release_vms(v.id).await.unwrap(), 2);
    grew(s, v.id, owner.id, &mut last, "releasing the placement").await;
    assert_eq!(s.release_vms(v.id).await.unwrap(), 0);
    unchanged(s, v.id, owner.id, &last).await;

    assert_eq!(s.vi_stamp(other.id).await.unwrap(), other_first);

    // A new VI changes its owner's list and everyone's, not other owners'.
    let stranger = user("stranger", Role::User);
    s.create_user(&stranger).await.unwrap();
    let strangers = s.vi_list_stamp(Some(stranger.id)).await.unwrap();
    assert_eq!(
        strangers,
        ViListStamp {
            count: 0,
            revisions: 0
        }
    );
    let all = s.vi_list_stamp(None).await.unwrap();
    s.create_vi(&vi(owner.id, "third")).await.unwrap();
    let mine = s.vi_list_stamp(Some(owner.id)).await.unwrap();
    assert_eq!(
        (mine.count, mine.revisions),
        (last.1.count + 1, last.1.revisions)
    );
    assert_eq!(s.vi_list_stamp(Some(stranger.id)).await.unwrap(), strangers);
    let now = s.vi_list_stamp(None).await.unwrap();
    assert_eq!((now.count, now.revisions), (all.count + 1, all.revisions));
}

/// A resume reserves hosts and creates its job in one commit; a side job
/// (saving a template) leaves its VI's state alone.
async fn resume_reservations_and_side_jobs(s: &dyn Store) {
    let (owner, dc) = owner_and_datacenter(s, "resumer", "dc-resume").await;
    let h = s.upsert_host(&host(dc.id, "r1", 4, 4096, 4)).await.unwrap();
    let mut v = vi(owner.id, "resumed");
    v.state = ViState::Suspended;
    v.address_plan = Some("{\"kept\":true}".into());
    s.create_vi(&v).await.unwrap();
    let job = |kind: &str| JobRecord {
        id: fresh(),
        vi_id: v.id,
        kind: kind.into(),
        state: JobState::Running,
        steps: "[]".into(),
        cursor: 0,
        total: 0,
        error: None,
        owner: None,
        lease_until: 0,
        created_at: 5,
        updated_at: 5,
    };
    // No room: neither the transition, nor the VMs, nor the job.
    let refused = job("resume");
    let err = s
        .transition_with_placement(
            v.id,
            ViState::Suspended,
            &to(ViState::Resuming, owner.id),
            &Reservation {
                vms: vec![vm(v.id, "a", h.id, 8, 10)],
                job: Some(refused.clone()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(err, Err(StoreError::NoRoom { .. })), "{err:?}");
    assert!(matches!(
        s.job(refused.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.vi(v.id).await.unwrap().state, ViState::Suspended);

    let resume = job("resume");
    let resuming = s
        .transition_with_placement(
            v.id,
            ViState::Suspended,
            &to(ViState::Resuming, owner.id),
            &Reservation {
                vms: vec![vm(v.id, "a", h.id, 2, 10)],
                job: Some(resume.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(resuming.state, ViState::Resuming);
    assert_eq!(
        resuming.address_plan.as_deref(),
        Some("{\"kept\":true}"),
        "a reservation without an address plan keeps the VI's"
    );
    assert_eq!(s.job(resume.id).await.unwrap(), resume);
    assert_eq!(s.vms(v.id).await.unwrap().len(), 1);

    // A side job needs its VI in the given state, and changes nothing of it.
    let side = job("save_template");
    let err = s.add_job(&side, ViState::Running).await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    assert!(matches!(
        s.job(side.id).await,
        Err(StoreError::NotFound { .. })
    ));
    s.add_job(&side, ViState::Resuming).await.unwrap();
    assert_eq!(s.job(side.id).await.unwrap(), side);
    let after = s.vi(v.id).await.unwrap();
    assert_eq!(
        (after.state, after.version),
        (resuming.state, resuming.version)
    );
}

/// The design quota is checked with the write: concurrent creates never
/// pass it together, terminated VIs do not count, edits keep to the bytes.
async fn design_quota(s: Arc<dyn Store>) {
    let mut owner = user("designer", Role::User);
    owner.quota.designs = 3;
    owner.quota.design_mib = 1;
    s.create_user(&owner).await.unwrap();
    let creates = (0..10).map(|i| {
        let s = s.clone();
        let record = vi(owner.id, &format!("d{i}"));
        tokio::spawn(async move { s.create_vi(&record).await })
    });
    let mut made = Vec::new();
    for result in futures_join(creates).await {
        match result {
            Ok(()) => made.push(()),
            Err(StoreError::QuotaExceeded(what)) => assert_eq!(
                what,
                "designer holds 3 VIs; the quota is 3 (terminate one to make room)"
            ),
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(made.len(), 3);
    let held = s.list_vis(Some(owner.id)).await.unwrap();
    assert_eq!(held.len(), 3);
    // A terminated VI makes room.
    s.transition_vi(
        held[0].id,
        ViState::Defined,
        &to(ViState::Terminated, owner.id),
    )
    .await
    .unwrap();
    let mut big = vi(owner.id, "big");
    big.design_xml = "x".repeat(1 << 20);
    assert!(matches!(
        s.create_vi(&big).await,
        Err(StoreError::QuotaExceeded(_))
    ));
    // Bytes, not characters: half a mebi-character of 'é' is a whole MiB.
    let mut wide = vi(owner.id, "wide");
    wide.design_xml = "é".repeat(1 << 19);
    assert!(matches!(
        s.create_vi(&wide).await,
        Err(StoreError::QuotaExceeded(_))
    ));
    s.create_vi(&vi(owner.id, "small")).await.unwrap();
    // An edit is held to the bytes too; within them it goes through.
    let edited = &held[1];
    let err = s
        .update_vi_design(edited.id, edited.version, "e", &"x".repeat(1 << 20), 20)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::QuotaExceeded(m) if m.ends_with("the quota is 1 MiB")),
        "{err}"
    );
    let fits = s
        .update_vi_design(edited.id, edited.version, "e", &"x".repeat(1 << 19), 20)
        .await
        .unwrap();
    assert_eq!(fits.version, edited.version + 1);
    // A stale version is a conflict, not a quota.
    assert!(matches!(
        s.update_vi_design(edited.id, edited.version, "e", "<t/>", 21)
            .await,
        Err(StoreError::Conflict { .. })
    ));
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn ssh_keys(s: &dyn Store) {
    let ann = user("ann-keys", Role::User);
    let ben = user("ben-keys", Role::User);
    s.create_user(&ann).await.unwrap();
    s.create_user(&ben).await.unwrap();
    let key = |owner: UserId, n: u8| SshKeyRecord {
        id: fresh(),
        user_id: owner,
        name: format!("key{n}"),
        public_key: format!("ssh-ed25519 AAAA{n} ann@laptop"),
        fingerprint: format!("SHA256:{n}"),
        created_at: i64::from(n),
    };
    let first = key(ann.id, 1);
    s.add_ssh_key(&first, 2).await.unwrap();
    // The same key again is refused; Ben may have it too.
    let again = SshKeyRecord {
        id: fresh(),
        ..first.clone()
    };
    assert!(matches!(
        s.add_ssh_key(&again, 2).await,
        Err(StoreError::Duplicate { .. })
    ));
    s.add_ssh_key(
        &SshKeyRecord {
            id: fresh(),
            user_id: ben.id,
            ..first.clone()
        },
        2,
    )
    .await
    .unwrap();
    let second = key(ann.id, 2);
    s.add_ssh_key(&second, 2).await.unwrap();
    // At most two.
    assert!(matches!(
        s.add_ssh_key(&key(ann.id, 3), 2).await,
        Err(StoreError::QuotaExceeded(_))
    ));
    assert_eq!(
        s.ssh_keys(ann.id).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    // Only its owner deletes a key.
    assert!(matches!(
        s.delete_ssh_key(ben.id, first.id).await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete_ssh_key(ann.id, first.id).await.unwrap();
    assert_eq!(s.ssh_keys(ann.id).await.unwrap(), vec![second]);
    assert_eq!(s.ssh_keys(ben.id).await.unwrap().len(), 1);
}

/// Every conformance check, in one database the previous release made;
/// `raw` reaches it past the store, to remove the old rows first and to
/// damage rows last.
async fn suite(s: Arc<dyn Store>, raw: damage::Raw) {
    migrations::old_rows_survive(s.as_ref(), &raw).await;
    users_and_tokens(s.as_ref()).await;
    ssh_keys(s.as_ref()).await;
    datacenters_and_hosts(s.as_ref()).await;
    templates(s.as_ref()).await;
    vi_lifecycle(s.as_ref()).await;
    placement_reservations(s.as_ref()).await;
    address_uniqueness(s.as_ref()).await;
    durable_jobs(s.as_ref()).await;
    resume_reservations_and_side_jobs(s.as_ref()).await;
    vi_revisions(s.as_ref()).await;
    concurrent_reservations(s.clone()).await;
    crossing_reservations_and_releases(s.clone()).await;
    crossing_address_releases(s.clone()).await;
    uplink_reservations(s.as_ref()).await;
    roomiest_hosts_first(s.as_ref()).await;
    design_quota(s.clone()).await;
    concurrent_transitions(s.clone()).await;
    migration_moves(s.as_ref()).await;
    user_quotas(s.as_ref()).await;
    quota_usage_sums(s.as_ref()).await;
    switches_and_generations(s.clone()).await;
    damage::json_keeps_its_value(s.as_ref()).await;
    damage::corrupt_rows_are_errors(s.as_ref(), &raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_conforms() {
    let (store, _dir) = sqlite().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    let raw = damage::Raw::Sqlite(store.pool().clone());
    suite(Arc::new(store), raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conforms() {
    if let Some(store) = postgres().await {
        assert_eq!(store.backend(), Backend::Postgres);
        let raw = damage::Raw::Postgres(store.pool().clone());
        suite(Arc::new(store), raw).await;
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.db").display());
    let s = connect(&url).await.unwrap();
    s.create_user(&user("kept", Role::User)).await.unwrap();
    s.close().await;
    let s = connect(&url).await.unwrap();
    assert_eq!(s.user_by_name("kept").await.unwrap().name, "kept");
}

#[tokio::test]
async fn an_in_memory_database_keeps_its_data_while_open() {
    let s = connect("sqlite::memory:").await.unwrap();
    assert_eq!(s.backend(), Backend::Sqlite);
    s.create_user(&user("fleeting", Role::User)).await.unwrap();
    assert_eq!(s.list_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn database_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    // A database an older version left world-readable.
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    s.create_user(&user("someone", Role::User)).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
}

#[tokio::test]
async fn unsupported_url_is_named() {
    let err = connect("mysql://x").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported database URL \"mysql://x\" (expected sqlite://PATH or postgres://...)"
    );
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

/// Two Managers on one database: a token one of them verified (and keeps)
/// is refused by it within a second of being revoked through the other,
/// and so is every token of a user disabled through the other.
async fn revocations_reach_the_other_manager(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let alice = user("epoch-alice", Role::User);
    a.create_user(&alice).await.unwrap();
    let token = |hash: &str| TokenRecord {
        id: fresh(),
        hash: hash.into(),
        user_id: alice.id,
        kind: TokenKind::Api,
        scope: TokenScope::User,
        name: hash.into(),
        created_at: 1,
        expires_at: None,
    };
    let (t1, t2) = (token("e1"), token("e2"));
    a.insert_token(&t1).await.unwrap();
    a.insert_token(&t2).await.unwrap();
    for hash in ["e1", "e2"] {
        assert_eq!(b.user_for_token(hash, 2).await.unwrap().1.id, alice.id);
    }
    // Revoked through A: A refuses it at once, B within its epoch check.
    a.revoke_token(t1.id, Some(alice.id)).await.unwrap();
    assert!(a.user_for_token("e1", 2).await.is_err());
    let refused = |s: Arc<dyn Store>, hash: &'static str| async move {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
        loop {
            if s.user_for_token(hash, 2).await.is_err() {
                return true;
            }
            if std::time::Instant::now() > until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert!(
        refused(b.clone(), "e1").await,
        "B still accepts a revoked token"
    );
    assert_eq!(b.user_for_token("e2", 2).await.unwrap().0.id, t2.id);
    // A disabled user: every token of theirs, on both.
    a.set_user_disabled(alice.id, Some(3)).await.unwrap();
    assert!(a.user_for_token("e2", 3).await.is_err());
    assert!(
        refused(b.clone(), "e2").await,
        "B still accepts a disabled user's token"
    );
}

/// The sweep of expired tokens leaves the epoch alone (what the Managers
/// keep is not forgotten every few seconds), and a revocation of a token
/// that has not expired yet advances it. `epoch` reads it.
async fn only_live_tokens_advance_the_epoch<F>(s: Arc<dyn Store>, epoch: impl Fn() -> F)
where
    F: std::future::Future<Output = i64>,
{
    let carol = user("epoch-carol", Role::User);
    s.create_user(&carol).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let token = |hash: &str, expires_at| TokenRecord {
        id: fresh(),
        hash: hash.into(),
        user_id: carol.id,
        kind: TokenKind::Session,
        scope: TokenScope::User,
        name: hash.into(),
        created_at: 1,
        expires_at: Some(expires_at),
    };
    s.insert_token(&token("old", now - 60_000)).await.unwrap();
    let live = token("live", now + 3_600_000);
    s.insert_token(&live).await.unwrap();
    let before = epoch().await;
    assert_eq!(s.delete_expired_tokens(now).await.unwrap(), 1);
    assert_eq!(epoch().await, before, "a sweep of expired tokens");
    s.revoke_token(live.id, Some(carol.id)).await.unwrap();
    assert!(epoch().await > before, "a live token revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_revocations_reach_the_other_manager() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.db").display());
    let a = Arc::new(SqliteStore::connect(&url).await.unwrap());
    let b = SqliteStore::connect(&url).await.unwrap();
    revocations_reach_the_other_manager(a.clone(), Arc::new(b)).await;
    let pool = a.pool().clone();
    only_live_tokens_advance_the_epoch(a, || async {
        sqlx::query_scalar("SELECT epoch FROM auth_epoch")
            .fetch_one(&pool)
            .await
            .unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_revocations_reach_the_other_manager() {
    if let Some(url) = postgres_database().await {
        let a = Arc::new(PostgresStore::connect(&url).await.unwrap());
        let b = PostgresStore::connect(&url).await.unwrap();
        revocations_reach_the_other_manager(a.clone(), Arc::new(b)).await;
        let pool = a.pool().clone();
        only_live_tokens_advance_the_epoch(a, || async {
            sqlx::query_scalar("SELECT epoch FROM auth_epoch")
                .fetch_one(&pool)
                .await
                .unwrap()
        })
        .await;
    }
}
