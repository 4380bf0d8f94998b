//! Stored JSON and damaged rows: JSON comes back as the value written, and
//! a row a store cannot have written (changed past it, with raw SQL) fails
//! the read with an error naming its table, column and row, on both
//! backends, instead of becoming a default or vanishing from a list.

use neptune_lifecycle::ViState;
use neptune_store::*;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{user, vi};

/// The database behind a store, reached with raw SQL.
pub(crate) enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    /// Runs statements separated by `;`, in one round trip.
    pub(crate) async fn batch(&self, sql: &str) {
        match self {
            Raw::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Raw::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }

    pub(crate) async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|d| d.rows_affected()),
            Raw::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|d| d.rows_affected()),
        }
    }
}

fn job(vi: ViId, steps: &str) -> JobRecord {
    JobRecord {
        id: Uuid::new_v4().into(),
        vi_id: vi,
        kind: "deploy".into(),
        state: JobState::Running,
        steps: steps.into(),
        cursor: 0,
        total: 1,
        error: None,
        owner: None,
        lease_until: 0,
        created_at: 1,
        updated_at: 1,
    }
}

/// Asserts that `result` is the corruption of `table.column` in a row
/// whose key reads `row`.
#[track_caller]
fn corrupt<T: std::fmt::Debug>(result: Result<T>, table: &str, column: &str, row: &str) {
    match result {
        Err(e @ StoreError::Corrupt { .. }) => {
            let StoreError::Corrupt {
                table: t,
                column: c,
                row: r,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*t, *c), (table, column), "{e}");
            assert!(r.contains(row), "{e} names the row {row}");
            assert!(e.to_string().contains(&format!("{table}.{column}")), "{e}");
        }
        other => panic!("expected {table}.{column} to be corrupt, got {other:?}"),
    }
}

pub(crate) async fn json_keeps_its_value(s: &dyn Store) {
    let owner = user("json", Role::User);
    s.create_user(&owner).await.unwrap();
    let steps = r#"[{"b": 1, "a": [1, 2.5, -3], "c": {"y": null, "x": "é\"\n"}}, "two", true]"#;
    let mut v = vi(owner.id, "json");
    v.state = ViState::Requested;
    v.address_plan = Some(r#"{ "zeta": {"n": 1}, "alpha": [] }"#.into());
    s.create_vi(&v).await.unwrap();
    let stored = s.vi(v.id).await.unwrap();
    let value = |text: &str| serde_json::from_str::<Value>(text).unwrap();
    assert_eq!(
        value(stored.address_plan.as_deref().unwrap()),
        json!({"alpha": [], "zeta": {"n": 1}})
    );
    let j = job(v.id, steps);
    s.add_job(&j, ViState::Requested).await.unwrap();
    let stored = s.job(j.id).await.unwrap();
    assert_eq!(value(&stored.steps), value(steps));
    // Read as the caller's type, a document that does not fit is damage too.
    assert_eq!(stored.decode_steps::<Value>().unwrap(), value(steps));
    corrupt(
        stored.decode_steps::<Vec<String>>(),
        "jobs",
        "steps",
        &j.id.to_string(),
    );
    // What is not JSON is refused before either database sees it.
    let err = s.add_job(&job(v.id, "[1,"), ViState::Requested).await;
    assert!(
        matches!(
            err,
            Err(StoreError::NotJson {
                what: "job steps",
                ..
            })
        ),
        "{err:?}"
    );
}

pub(crate) async fn corrupt_rows_are_errors(s: &dyn Store, raw: &Raw) {
    let owner = user("damaged", Role::User);
    s.create_user(&owner).await.unwrap();
    let (a, b) = (vi(owner.id, "a"), vi(owner.id, "b"));
    s.create_vi(&a).await.unwrap();
    s.create_vi(&b).await.unwrap();
    let actor = owner.id;
    let to = |state| Transition {
        to: state,
        actor,
        at: 20,
        reject_reason: None,
        home_datacenter_id: None,
        usage: None,
    };
    s.transition_vi(b.id, ViState::Defined, &to(ViState::Requested))
        .await
        .unwrap();

    // A state no VI can be in: the VI, and every list holding it, fail.
    let done = raw
        .exec(&format!(
            "UPDATE vis SET state = 'exploded' WHERE id = '{}'",
            a.id
        ))
        .await
        .unwrap();
    assert_eq!(done, 1);
    corrupt(s.vi(a.id).await, "vis", "state", &a.id.to_string());
    assert_eq!(
        s.vi(a.id).await.unwrap_err().to_string(),
        format!(
            "stored data is corrupt: vis.state of the row with id {}: \"exploded\" is not a VI state",
            a.id
        )
    );
    corrupt(
        s.list_vis(Some(owner.id)).await,
        "vis",
        "state",
        &a.id.to_string(),
    );
    assert_eq!(s.vi(b.id).await.unwrap().state, ViState::Requested);
    raw.exec(&format!(
        "UPDATE vi_events SET to_state = 'nowhere' WHERE vi_id = '{}'",
        b.id
    ))
    .await
    .unwrap();
    corrupt(s.vi_events(b.id).await, "vi_events", "to_state", "seq");

    // An Agent's token without its host.
    let token = TokenRecord {
        id: Uuid::new_v4().into(),
        hash: "damaged-token".into(),
        user_id: owner.id,
        kind: TokenKind::Api,
        scope: TokenScope::Agent {
            host: "dc/h".into(),
        },
        name: "agent".into(),
        created_at: 1,
        expires_at: None,
    };
    s.insert_token(&token).await.unwrap();
    raw.exec("UPDATE tokens SET host = NULL WHERE hash = 'damaged-token'")
        .await
        .unwrap();
    corrupt(
        s.user_for_token("damaged-token", 2).await,
        "tokens",
        "host",
        &token.id.to_string(),
    );
    corrupt(
        s.list_tokens(owner.id, 2).await,
        "tokens",
        "host",
        &token.id.to_string(),
    );

    // An owned address without its owner.
    raw.exec(
        "INSERT INTO addresses (pool, prefix, kind, vi_id, owner, count) \
         VALUES ('damaged', '10.99.0.0/24', 'owned', NULL, NULL, 1)",
    )
    .await
    .unwrap();
    corrupt(
        s.owned_addresses().await,
        "addresses",
        "owner",
        "prefix \"10.99.0.0/24\"",
    );

    let j = job(b.id, "[]");
    s.add_job(&j, ViState::Requested).await.unwrap();
    let bad_steps = format!("UPDATE jobs SET steps = '[1,' WHERE id = '{}'", j.id);
    let bad_actor = format!(
        "UPDATE vi_events SET actor = 'not-a-uuid' WHERE vi_id = '{}'",
        b.id
    );
    match raw {
        // SQLite keeps any text: JSON and ids are checked when read.
        Raw::Sqlite(_) => {
            raw.exec(&bad_steps).await.unwrap();
            corrupt(s.job(j.id).await, "jobs", "steps", &j.id.to_string());
            corrupt(s.jobs_of_vi(b.id).await, "jobs", "steps", &j.id.to_string());
            raw.exec(&format!(
                "UPDATE vi_events SET to_state = 'requested' WHERE vi_id = '{}'",
                b.id
            ))
            .await
            .unwrap();
            raw.exec(&bad_actor).await.unwrap();
            corrupt(s.vi_events(b.id).await, "vi_events", "actor", "seq");
            raw.exec(&format!(
                "UPDATE users SET quota_vms = 'lots' WHERE id = '{}'",
                owner.id
            ))
            .await
            .unwrap();
            corrupt(
                s.user(owner.id).await,
                "users",
                "quota_vms",
                &owner.id.to_string(),
            );
        }
        // PostgreSQL's uuid and jsonb columns refuse such values outright.
        Raw::Postgres(_) => {
            assert!(raw.exec(&bad_steps).await.is_err());
            assert!(raw.exec(&bad_actor).await.is_err());
            assert_eq!(s.job(j.id).await.unwrap().steps, "[]");
        }
    }
}
