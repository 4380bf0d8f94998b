//! Databases made by earlier versions open: the migrations they applied
//! keep their checksums, and one made by the migrator that listed its
//! files by hand (the same files, described differently) migrates and
//! reads back what it held. On PostgreSQL that reading crosses the change
//! of ids to `uuid` and JSON documents to `jsonb`.
//!
//! The conformance suite runs on such a database of each backend, once its
//! old rows are read back and removed: every check holds on an upgraded
//! database, and no extra database is made for the upgrade.

use std::borrow::Cow;
use std::str::FromStr;

use neptune_lifecycle::ViState;
use neptune_store::*;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use uuid::Uuid;

use super::damage::Raw;

/// SHA-384 of each migration as released: a database that applied one
/// refuses to open if its file changes, so none may.
const SQLITE_CHECKSUMS: [&str; 11] = [
    "6a446304f7d49bf095658f51048c175aff9615403921b1f7ba0e57918b69321237dd64efcdbb94e788873a275d2efe4c",
    "323d506cdf2a622e2db4e1688d5e623922a27c3429336df454d7374bc8753a7d11d5905d9a523b65dfcc7a1f19f4f076",
    "7e6894094626992c1fc8351d196f32168fe7c623c1aa409951c57130422a36096ab4088a28d18a9fdcc30b508c08af26",
    "d41bf483b0661acade5450ce5ce78a6cd56c03579577e01149cf9fb6a4cea7fb2effb60b8cf22492ac2aef9b932e4fe8",
    "b658eb9c0d244747336207ab2d48751bde84851bb6750a68f0367825db08aff62dbc4ecc6d9454f7c0838584a78539d6",
    "bd7cf7dccf5784f651cabcae099f3d4b1aa7029a951242c43e6f583893bb743595af684033c21864eba546fca620fb14",
    "e38c9b748e0f0fb783c79693c62fd7e1dbb01cb3a37b6edec007630a59186bb5c815dcf6aa8a9623500649906e58c2cb",
    "188083b4324d669e03c099c9440357b612a0a348c3de21d794eba2da0ae384e213dd66aeaa9d2a3eb6ec31f61f5330b5",
    "ceddafc743128e7e20d3cce808ea49a0264ba560f6deaad2c72dc5c58862cd206f0e5a09b57fff77888eec8ad86ea72e",
    "c2691cec267ed10dded9894239e1aa6b715986fd4f29c17373da95c60eed67d3566959785ab6e5b4995c420c70fa6168",
    "b0153d906823a45d7ae32f7b359a5a6d8896b4b80349236da0a97f4395c3ac7d74e2f92ca0c684fe24404ad6352ebed8",
];
const POSTGRES_CHECKSUMS: [&str; 11] = [
    "8fc6b50a2f8d2c0c2aa4306fb59e5d1be712ccff6b954a8cba8ce58a40d9cb1fdab6da255f3d648949e025b836d473c8",
    "323d506cdf2a622e2db4e1688d5e623922a27c3429336df454d7374bc8753a7d11d5905d9a523b65dfcc7a1f19f4f076",
    "7e6894094626992c1fc8351d196f32168fe7c623c1aa409951c57130422a36096ab4088a28d18a9fdcc30b508c08af26",
    "4e4212b757bf360216b2804c530a062f1f925c1c2d76c5ecf4e88af2f05935c51e2add7216ec4750d2f6f6d948c31183",
    "b658eb9c0d244747336207ab2d48751bde84851bb6750a68f0367825db08aff62dbc4ecc6d9454f7c0838584a78539d6",
    "bd7cf7dccf5784f651cabcae099f3d4b1aa7029a951242c43e6f583893bb743595af684033c21864eba546fca620fb14",
    "49c040a493167dde1ab246f6d2d9cb7013a305d30a53d5b21053415722ebb7d85a9464483070f667dbbf9a18db9c4979",
    "188083b4324d669e03c099c9440357b612a0a348c3de21d794eba2da0ae384e213dd66aeaa9d2a3eb6ec31f61f5330b5",
    "ceddafc743128e7e20d3cce808ea49a0264ba560f6deaad2c72dc5c58862cd206f0e5a09b57fff77888eec8ad86ea72e",
    "c2691cec267ed10dded9894239e1aa6b715986fd4f29c17373da95c60eed67d3566959785ab6e5b4995c420c70fa6168",
    "b0153d906823a45d7ae32f7b359a5a6d8896b4b80349236da0a97f4395c3ac7d74e2f92ca0c684fe24404ad6352ebed8",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn released_migrations_keep_their_checksums() {
    for (migrator, released) in [
        (&neptune_store::sqlite::MIGRATOR, SQLITE_CHECKSUMS),
        (&neptune_store::postgres::MIGRATOR, POSTGRES_CHECKSUMS),
    ] {
        let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        assert_eq!(versions[..11], (1..=11).collect::<Vec<_>>());
        for (m, checksum) in migrator.iter().zip(released) {
            assert_eq!(hex(&m.checksum), checksum, "migration {}", m.version);
        }
    }
}

/// The migrator the store used before migrations were embedded: the same
/// files, listed by hand with descriptions of their own.
macro_rules! hand_listed {
    ($dir:literal) => {{
        let files: [(i64, &'static str, &'static str); 11] = [
            (
                1,
                "initial",
                include_str!(concat!("../../migrations/", $dir, "/0001_initial.sql")),
            ),
            (
                2,
                "placement and jobs",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0002_placement_jobs.sql"
                )),
            ),
            (
                3,
                "addresses",
                include_str!(concat!("../../migrations/", $dir, "/0003_addresses.sql")),
            ),
            (
                4,
                "VI revisions",
                include_str!(concat!("../../migrations/", $dir, "/0004_vi_revisions.sql")),
            ),
            (
                5,
                "host uplinks",
                include_str!(concat!("../../migrations/", $dir, "/0005_uplinks.sql")),
            ),
            (
                6,
                "design quota",
                include_str!(concat!("../../migrations/", $dir, "/0006_design_quota.sql")),
            ),
            (
                7,
                "template owners",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0007_template_owners.sql"
                )),
            ),
            (
                8,
                "token scopes",
                include_str!(concat!("../../migrations/", $dir, "/0008_token_scopes.sql")),
            ),
            (
                9,
                "private address quota",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0009_private_address_quota.sql"
                )),
            ),
            (
                10,
                "SSH keys",
                include_str!(concat!("../../migrations/", $dir, "/0010_ssh_keys.sql")),
            ),
            (
                11,
                "public gateway",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0011_public_gateway.sql"
                )),
            ),
        ];
        Migrator {
            migrations: Cow::Owned(
                files
                    .into_iter()
                    .map(|(version, description, sql)| {
                        Migration::new(
                            version,
                            Cow::Borrowed(description),
                            MigrationType::Simple,
                            Cow::Borrowed(sql),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        }
    }};
}

const USER: &str = "6f1e0b8c-2d0a-4c55-9a51-6b7b8d2b9a01";
const DC: &str = "0c9a4f5e-1b2d-4e3f-8a7b-9c0d1e2f3a02";
const HOST: &str = "5b4c3d2e-1f0a-4b9c-8d7e-6f5a4b3c2d03";
const TEMPLATE: &str = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c04";
const VI: &str = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c05";
const JOB: &str = "2d3c4b5a-6f7e-4d8c-9b0a-1f2e3d4c5b06";
const TOKEN: &str = "3e4d5c6b-7a8f-4e9d-8c1b-2a3f4e5d6c07";
const KEY: &str = "4f5e6d7c-8b9a-4f0e-9d2c-3b4a5f6e7d08";

/// Rows as the store wrote them before: ids and JSON documents as text
/// (the JSON spaced, as a person or another tool might write it).
const OLD_ROWS: &str = "
INSERT INTO users (id, name, password_hash, role, quota_vms, quota_vcpus, quota_ram_mib,
    quota_public_addresses, created_at)
VALUES ('6f1e0b8c-2d0a-4c55-9a51-6b7b8d2b9a01', 'old', '$argon2id$old', 'user', 4, 8, 4096, 2, 100);
INSERT INTO tokens (id, hash, user_id, kind, scope, host, name, created_at, expires_at)
VALUES ('3e4d5c6b-7a8f-4e9d-8c1b-2a3f4e5d6c07', 'old-hash', '6f1e0b8c-2d0a-4c55-9a51-6b7b8d2b9a01',
    'api', 'agent', 'napoli/h1', 'agent', 101, NULL);
INSERT INTO ssh_keys (id, user_id, name, public_key, fingerprint, created_at)
VALUES ('4f5e6d7c-8b9a-4f0e-9d2c-3b4a5f6e7d08', '6f1e0b8c-2d0a-4c55-9a51-6b7b8d2b9a01', 'laptop',
    'ssh-ed25519 AAAA old@laptop', 'SHA256:old', 102);
INSERT INTO datacenters (id, name, created_at, home_pools, public_gateway)
VALUES ('0c9a4f5e-1b2d-4e3f-8a7b-9c0d1e2f3a02', 'napoli', 103, '203.0.113.0/24', '203.0.113.1');
INSERT INTO hosts (id, datacenter_id, name, agent_url, cpus, ram_mib, disk_mib, vm_slots, state,
    last_seen, uplink_mbps, used_vcpus, used_ram_mib, used_disk_mib, used_slots, used_uplink_mbps)
VALUES ('5b4c3d2e-1f0a-4b9c-8d7e-6f5a4b3c2d03', '0c9a4f5e-1b2d-4e3f-8a7b-9c0d1e2f3a02', 'h1',
    'http://127.0.0.1:1', 8, 8192, 100000, 4, 'ready', 104, 1000, 1, 512, 2048, 1, 10);
INSERT INTO templates (id, name, owner_id, visibility, image_path, format, size_mib, os_name,
    vcpus, ram_mib, disk_mib, software, created_at)
VALUES ('7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c04', 'saved', '6f1e0b8c-2d0a-4c55-9a51-6b7b8d2b9a01',
    'private', '/images/saved.qcow2', 'qcow2', 1024, 'Debian', 1, 512, 2048,
    '[ {\"name\": \"nginx\", \"version\": \"1.22\"} ]', 105);
INSERT INTO vis (id, owner_id, name, state, design_xml, home_datacenter_id, reject_reason,
    version, created_at, updated_at, address_plan)
VALUES ('9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c05', '6f1e0b8c-2d0a-4c55-9a51-6b7b8d2b9a01', 'web',
    'accepted', '<topology id=\"web\"/>', '0c9a4f5e-1b2d-4e3f-8a7b-9c0d1e2f3a02', NULL, 3, 106, 107,
    '{\"links\": {\"l1\": \"10.0.0.0/30\"}, \"home\": [\"203.0.113.7\"]}');
INSERT INTO vi_events (vi_id, at, from_state, to_state, actor, reason)
VALUES ('9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c05', 107, 'requested', 'accepted',
    '6f1e0b8c-2d0a-4c55-9a51-6b7b8d2b9a01', NULL);
INSERT INTO vms (vi_id, node_id, host_id, vcpus, ram_mib, disk_mib, uplink_mbps)
VALUES ('9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c05', 'n0', '5b4c3d2e-1f0a-4b9c-8d7e-6f5a4b3c2d03',
    1, 512, 2048, 10);
INSERT INTO jobs (id, vi_id, kind, state, steps, cursor, total, error, owner, lease_until,
    created_at, updated_at)
VALUES ('2d3c4b5a-6f7e-4d8c-9b0a-1f2e3d4c5b06', '9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c05', 'deploy',
    'running', '[{\"kind\": \"start\", \"vm\": \"n0\"}, {\"kind\": \"wait\"}]', 1, 2, NULL,
    'manager-a', 200, 108, 109);
INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count)
VALUES ('10.0.0.0/8', '10.0.0.0/30', 'owned', '9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c05',
    '{\"link\": \"l1\"}', 1);
INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count)
VALUES ('10.0.0.0/8', '10.0.0.0/24', 'covers', NULL, NULL, 1);
";

fn id<T: From<Uuid>>(text: &str) -> T {
    Uuid::from_str(text).unwrap().into()
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Reads every row of [`OLD_ROWS`] back through the store.
async fn old_rows_read_back(s: &dyn Store) {
    let user = s.user(id(USER)).await.unwrap();
    assert_eq!(
        (
            user.name.as_str(),
            user.role,
            user.quota.vms,
            user.quota.designs
        ),
        ("old", Role::User, 4, 100)
    );
    let (token, _) = s.user_for_token("old-hash", 150).await.unwrap();
    assert_eq!(
        token,
        TokenRecord {
            id: id(TOKEN),
            hash: "old-hash".into(),
            user_id: id(USER),
            kind: TokenKind::Api,
            scope: TokenScope::Agent {
                host: "napoli/h1".into()
            },
            name: "agent".into(),
            created_at: 101,
            expires_at: None,
        }
    );
    assert_eq!(s.ssh_keys(id(USER)).await.unwrap()[0].id, id(KEY));
    let dc = s.datacenter_by_name("napoli").await.unwrap();
    assert_eq!(
        (dc.id, dc.home_pools, dc.public_gateway),
        (
            id(DC),
            vec!["203.0.113.0/24".to_owned()],
            Some("203.0.113.1".to_owned())
        )
    );
    let hosts = s.list_hosts().await.unwrap();
    assert_eq!(
        (hosts[0].id, hosts[0].datacenter_id, hosts[0].state),
        (id(HOST), id(DC), HostState::Ready)
    );
    let template = s.template(id(TEMPLATE)).await.unwrap();
    assert_eq!(template.owner_id, Some(id(USER)));
    assert_eq!(
        value(&template.software),
        serde_json::json!([{"name": "nginx", "version": "1.22"}])
    );
    let vi = s.vi(id(VI)).await.unwrap();
    assert_eq!(
        (vi.owner_id, vi.state, vi.home_datacenter_id, vi.version),
        (id(USER), ViState::Accepted, Some(id(DC)), 3)
    );
    assert_eq!(
        value(vi.address_plan.as_deref().unwrap()),
        serde_json::json!({"links": {"l1": "10.0.0.0/30"}, "home": ["203.0.113.7"]})
    );
    assert_eq!(s.vi_stamp(id(VI)).await.unwrap().owner_id, id(USER));
    let events = s.vi_events(id(VI)).await.unwrap();
    assert_eq!(
        (events[0].actor, events[0].to_state),
        (id(USER), ViState::Accepted)
    );
    let vms = s.vms(id(VI)).await.unwrap();
    assert_eq!((vms[0].host_id, vms[0].uplink_mbps), (id(HOST), 10));
    let job = s.job(id(JOB)).await.unwrap();
    assert_eq!(
        (job.vi_id, job.state, job.cursor),
        (id(VI), JobState::Running, 1)
    );
    assert_eq!(
        value(&job.steps),
        serde_json::json!([{"kind": "start", "vm": "n0"}, {"kind": "wait"}])
    );
    let owned = s.owned_addresses().await.unwrap();
    assert_eq!(
        (owned[0].vi_id, owned[0].prefix.as_str()),
        (Some(id(VI)), "10.0.0.0/30")
    );
    assert_eq!(value(&owned[0].owner), serde_json::json!({"link": "l1"}));
    // And the upgraded database takes new writes that join the old rows.
    s.release_vms(id(VI)).await.unwrap();
    assert_eq!(s.list_hosts().await.unwrap()[0].used.slots, 0);
    let covers = [("10.0.0.0/8".to_owned(), "10.0.0.0/24".to_owned())];
    assert_eq!(s.release_addresses(id(VI), &covers).await.unwrap(), 1);
    assert!(s.owned_addresses().await.unwrap().is_empty());
}

/// Makes the SQLite database at `path` as the previous release did, with
/// [`OLD_ROWS`] in it.
pub(crate) async fn old_sqlite(path: &std::path::Path) {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    // As the store opened it: without WAL, every commit would wait for the disk.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
    hand_listed!("sqlite").run(&old).await.unwrap();
    sqlx::raw_sql(OLD_ROWS).execute(&old).await.unwrap();
    old.close().await;
}

/// Makes the empty PostgreSQL database at `url` as the previous release
/// did, with [`OLD_ROWS`] in it.
pub(crate) async fn old_postgres(url: &str) {
    let old = sqlx::PgPool::connect(url).await.unwrap();
    hand_listed!("postgres").run(&old).await.unwrap();
    sqlx::raw_sql(OLD_ROWS).execute(&old).await.unwrap();
    old.close().await;
}

/// Checks that a store opened on a database of [`old_sqlite`] or
/// [`old_postgres`] reads back every old row, then empties it for the
/// suite. On PostgreSQL the reads alone prove the conversion: the adapter
/// reads ids only as `uuid` and documents only as `jsonb`, and every such
/// column is read here.
pub(crate) async fn old_rows_survive(s: &dyn Store, raw: &Raw) {
    old_rows_read_back(s).await;
    raw.batch(
        "DELETE FROM addresses; DELETE FROM jobs; DELETE FROM vms; DELETE FROM vi_events; \
         DELETE FROM vis; DELETE FROM templates; DELETE FROM hosts; DELETE FROM datacenters; \
         DELETE FROM ssh_keys; DELETE FROM tokens; DELETE FROM users;",
    )
    .await;
}
