//! Rows into records, once for both adapters.
//!
//! An adapter says how its database reads one cell ([`Cells`]: SQLite
//! keeps ids and JSON as text, PostgreSQL as `uuid` and `jsonb`); the
//! decoders here turn rows into records. Every value is checked: an
//! unknown state, an id that is not a UUID, JSON that does not parse or a
//! missing value fails the read with [`StoreError::Corrupt`], naming the
//! table, the column and the row, instead of becoming a default. A list
//! with one damaged row fails whole, so damage is seen, not hidden.
//!
//! The column lists the decoders read, and the one query fragment both
//! adapters send unchanged, live here too, beside what reads their rows.

use neptune_lifecycle::ViState;
use uuid::Uuid;

use crate::records::*;
use crate::{Result, StoreError};

/// Every row of `rows` decoded as it arrives, for the lists that grow with
/// the domain (hosts, VIs): the rows are never all held beside their
/// records. On SQLite each row is a copy of its values in SQLite's heap:
/// the 30 000 rows of `GET /hosts`, read whole before being decoded, took
/// 21 MiB there, and the allocator kept some of it after.
pub(crate) async fn each_row<R, T>(
    mut rows: impl futures_util::Stream<Item = sqlx::Result<R>> + Unpin,
    decode: impl Fn(&R) -> Result<T>,
) -> Result<Vec<T>> {
    use futures_util::TryStreamExt as _;
    let mut records = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(crate::error::db)? {
        records.push(decode(&row)?);
    }
    Ok(records)
}

/// Why one cell could not be read.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The database's own decoding failed (or the column is not selected).
    Read(sqlx::Error),
    /// The value was read but is not what the column holds.
    Invalid(String, Option<Box<dyn std::error::Error + Send + Sync>>),
}

impl From<sqlx::Error> for Fault {
    fn from(err: sqlx::Error) -> Fault {
        Fault::Read(err)
    }
}

/// How an adapter's rows give up their cells; `None` is SQL `NULL`.
pub(crate) trait Cells {
    fn text(&self, column: &str) -> Result<Option<String>, Fault>;
    fn int(&self, column: &str) -> Result<Option<i64>, Fault>;
    fn uuid(&self, column: &str) -> Result<Option<Uuid>, Fault>;
    /// A JSON document, as compact JSON text.
    fn json(&self, column: &str) -> Result<Option<String>, Fault>;
}

/// A row that the database gave as a JSON object (SQLite's `json_object`,
/// PostgreSQL's `json_agg` of rows): reads that fold several tables' rows
/// into one statement decode them with the same decoders.
pub(crate) struct JsonRow(pub(crate) serde_json::Map<String, serde_json::Value>);

impl JsonRow {
    /// The objects of a JSON array of rows, as `table`'s rows.
    pub(crate) fn all(table: &'static str, array: Option<String>) -> Result<Vec<JsonRow>> {
        let Some(array) = array else {
            return Ok(Vec::new());
        };
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&array)
            .map_err(|e| StoreError::Corrupt {
                table,
                column: "*",
                row: "every row read together".to_owned(),
                problem: "the rows are not a JSON array of objects".to_owned(),
                source: Some(e.into()),
            })?;
        Ok(rows.into_iter().map(JsonRow).collect())
    }

    fn get(&self, column: &str) -> Result<Option<&serde_json::Value>, Fault> {
        match self.0.get(column) {
            None => Err(Fault::Invalid(
                format!("no column {column:?} was read"),
                None,
            )),
            Some(serde_json::Value::Null) => Ok(None),
            Some(value) => Ok(Some(value)),
        }
    }

    /// The value of a column as a sort key: text or a number.
    pub(crate) fn key(&self, column: &str) -> (i64, String) {
        match self.0.get(column) {
            Some(serde_json::Value::Number(n)) => (n.as_i64().unwrap_or_default(), String::new()),
            Some(serde_json::Value::String(s)) => (0, s.clone()),
            _ => (0, String::new()),
        }
    }
}

impl Cells for JsonRow {
    fn text(&self, column: &str) -> Result<Option<String>, Fault> {
        match self.get(column)? {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Fault::Invalid(format!("{other} is not text"), None)),
        }
    }

    fn int(&self, column: &str) -> Result<Option<i64>, Fault> {
        match self.get(column)? {
            None => Ok(None),
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| Fault::Invalid(format!("{n} is not a 64-bit integer"), None)),
            Some(other) => Err(Fault::Invalid(format!("{other} is not a number"), None)),
        }
    }

    fn uuid(&self, column: &str) -> Result<Option<Uuid>, Fault> {
        self.text(column)?.map(parse_uuid).transpose()
    }

    fn json(&self, column: &str) -> Result<Option<String>, Fault> {
        match self.get(column)? {
            None => Ok(None),
            // SQLite keeps JSON as text; PostgreSQL's jsonb arrives nested.
            Some(serde_json::Value::String(s)) => check_json(s.clone()).map(Some),
            Some(other) => Ok(Some(other.to_string())),
        }
    }
}

/// Parses a UUID kept as text.
pub(crate) fn parse_uuid(text: String) -> Result<Uuid, Fault> {
    Uuid::parse_str(&text)
        .map_err(|e| Fault::Invalid(format!("{text:?} is not a UUID"), Some(e.into())))
}

/// Checks JSON kept as text.
pub(crate) fn check_json(text: String) -> Result<String, Fault> {
    match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
        Ok(_) => Ok(text),
        Err(e) => Err(Fault::Invalid(
            "the value is not JSON".to_owned(),
            Some(e.into()),
        )),
    }
}

/// Reads a record's JSON document as the caller's type: a document that
/// does not fit is damage to that row, named like any other.
pub(crate) fn document<T: serde::de::DeserializeOwned>(
    table: &'static str,
    column: &'static str,
    row: impl FnOnce() -> String,
    text: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        table,
        column,
        row: row(),
        problem: format!("the document is not a {}", std::any::type_name::<T>()),
        source: Some(e.into()),
    })
}

/// Checks JSON about to be written: what one backend would refuse, neither keeps.
pub(crate) fn json_param<'a>(what: &'static str, text: &'a str) -> Result<&'a str> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| text)
        .map_err(|source| StoreError::NotJson { what, source })
}

/// One row of `table`, whose key columns name it in errors.
pub(crate) struct Stored<'r, R> {
    row: &'r R,
    table: &'static str,
    key: &'static [&'static str],
}

impl<'r, R: Cells> Stored<'r, R> {
    pub(crate) fn new(row: &'r R, table: &'static str, key: &'static [&'static str]) -> Self {
        Stored { row, table, key }
    }

    /// The row's key, as well as it can be read.
    fn describe(&self) -> String {
        if self.key.is_empty() {
            return "no key (a count or a sum)".to_owned();
        }
        let cell = |column: &str| {
            if let Ok(Some(u)) = self.row.uuid(column) {
                return u.to_string();
            }
            if let Ok(Some(i)) = self.row.int(column) {
                return i.to_string();
            }
            match self.row.text(column) {
                Ok(Some(t)) => format!("{t:?}"),
                Ok(None) => "NULL".to_owned(),
                Err(_) => "?".to_owned(),
            }
        };
        self.key
            .iter()
            .map(|column| format!("{column} {}", cell(column)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn corrupt(
        &self,
        column: &'static str,
        problem: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            column,
            row: self.describe(),
            problem,
            source,
        }
    }

    fn fail(&self, column: &'static str, fault: Fault) -> StoreError {
        match fault {
            // A value of the wrong type (SQLite keeps any type in any
            // column) is damage; a column the query did not select is ours.
            Fault::Read(err @ sqlx::Error::ColumnDecode { .. }) => self.corrupt(
                column,
                "the value has the wrong type".to_owned(),
                Some(err.into()),
            ),
            Fault::Read(err) => StoreError::Database(err),
            Fault::Invalid(problem, source) => self.corrupt(column, problem, source),
        }
    }

    fn required<T>(&self, column: &'static str, value: Result<Option<T>, Fault>) -> Result<T> {
        match value {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(self.corrupt(column, "the value is NULL".to_owned(), None)),
            Err(fault) => Err(self.fail(column, fault)),
        }
    }

    fn optional<T>(
        &self,
        column: &'static str,
        value: Result<Option<T>, Fault>,
    ) -> Result<Option<T>> {
        value.map_err(|fault| self.fail(column, fault))
    }

    pub(crate) fn text(&self, column: &'static str) -> Result<String> {
        self.required(column, self.row.text(column))
    }

    pub(crate) fn opt_text(&self, column: &'static str) -> Result<Option<String>> {
        self.optional(column, self.row.text(column))
    }

    pub(crate) fn int(&self, column: &'static str) -> Result<i64> {
        self.required(column, self.row.int(column))
    }

    pub(crate) fn opt_int(&self, column: &'static str) -> Result<Option<i64>> {
        self.optional(column, self.row.int(column))
    }

    /// A UUID column, as the typed id of what it names.
    pub(crate) fn uuid<T: From<Uuid>>(&self, column: &'static str) -> Result<T> {
        self.required(column, self.row.uuid(column)).map(T::from)
    }

    pub(crate) fn opt_uuid<T: From<Uuid>>(&self, column: &'static str) -> Result<Option<T>> {
        Ok(self.optional(column, self.row.uuid(column))?.map(T::from))
    }

    pub(crate) fn json(&self, column: &'static str) -> Result<String> {
        self.required(column, self.row.json(column))
    }

    pub(crate) fn opt_json(&self, column: &'static str) -> Result<Option<String>> {
        self.optional(column, self.row.json(column))
    }

    /// A text column holding one of an enum's names.
    pub(crate) fn name<T>(
        &self,
        column: &'static str,
        kind: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T> {
        let text = self.text(column)?;
        parse(&text).ok_or_else(|| self.corrupt(column, format!("{text:?} is not a {kind}"), None))
    }

    fn vi_state(&self, column: &'static str) -> Result<ViState> {
        self.name(column, "VI state", |s| {
            ViState::ALL.into_iter().find(|v| v.as_str() == s)
        })
    }
}

/// A token's columns, named apart from a user's that a join also reads.
pub(crate) const TOKEN_COLUMNS: &str =
    "t.id AS token_id, t.hash, t.user_id, t.kind, t.scope, t.host, \
     t.name AS token_name, t.created_at AS token_created_at, t.expires_at";

pub(crate) const VI_COLUMNS: &str =
    "id, owner_id, name, state, design_xml, home_datacenter_id, reject_reason, \
     version, created_at, updated_at, address_plan, location_id";

/// The query listing VIs in the order they were made: every VI, or
/// (`by_owner`) those of the owner bound as `$1`.
pub(crate) fn list_vis_sql(by_owner: bool) -> String {
    let only = if by_owner { " WHERE owner_id = $1" } else { "" };
    format!("SELECT {VI_COLUMNS} FROM vis{only} ORDER BY created_at, id")
}

/// The columns of `vi_events`, `vms` (and `vm_moves`) and
/// `migration_requests`, for the reads that name them one by one.
pub(crate) const EVENT_COLUMNS: &str = "seq, vi_id, at, from_state, to_state, actor, reason";
pub(crate) const VM_COLUMNS: &str =
    "vi_id, node_id, host_id, vcpus, ram_mib, disk_mib, uplink_mbps";
pub(crate) const MIGRATION_REQUEST_COLUMNS: &str =
    "vi_id, datacenter_id, requested_by, requested_at";

/// A VI's parts from its rows of each table, in the order they are shown.
pub(crate) fn vi_parts(
    events: &[JsonRow],
    vms: &[JsonRow],
    moves: &[JsonRow],
    requests: &[JsonRow],
    jobs: &[JsonRow],
) -> Result<ViParts> {
    Ok(ViParts {
        events: events.iter().map(vi_event).collect::<Result<_>>()?,
        vms: vms.iter().map(vm).collect::<Result<_>>()?,
        moves: moves
            .iter()
            .map(|r| vm_of(r, "vm_moves"))
            .collect::<Result<_>>()?,
        migration_request: requests.first().map(migration_request).transpose()?,
        jobs: jobs.iter().map(job).collect::<Result<_>>()?,
    })
}

pub(crate) const JOB_COLUMNS: &str =
    "id, vi_id, kind, state, steps, cursor, total, error, owner, lease_until, created_at, updated_at";

/// A job's steps as [`crate::Store::vi_parts`] reads them: an empty array
/// once the job has succeeded past its last step, whose detail names no
/// step. A deploy's steps are tens of KiB, and a VI's detail is built at
/// every change of the VI. The same in both databases' SQL but for the
/// type of the empty array, which `empty` writes (`'[]'`, `'[]'::jsonb`).
pub(crate) fn shown_steps(empty: &str) -> String {
    format!("CASE WHEN state = 'succeeded' AND cursor >= total THEN {empty} ELSE steps END")
}

pub(crate) fn user<R: Cells>(row: &R) -> Result<UserRecord> {
    let r = Stored::new(row, "users", &["id"]);
    Ok(UserRecord {
        id: r.uuid("id")?,
        name: r.text("name")?,
        password_hash: r.text("password_hash")?,
        role: r.name("role", "role", Role::parse)?,
        quota: Quota {
            vms: r.int("quota_vms")?,
            vcpus: r.int("quota_vcpus")?,
            ram_mib: r.int("quota_ram_mib")?,
            public_addresses: r.int("quota_public_addresses")?,
            designs: r.int("quota_designs")?,
            design_mib: r.int("quota_design_mib")?,
            private_addresses: r.int("quota_private_addresses")?,
        },
        created_at: r.int("created_at")?,
        disabled_at: r.opt_int("disabled_at")?,
    })
}

/// A token read with [`TOKEN_COLUMNS`].
pub(crate) fn token<R: Cells>(row: &R) -> Result<TokenRecord> {
    let r = Stored::new(row, "tokens", &["token_id"]);
    let scope = match r.text("scope")?.as_str() {
        "user" => TokenScope::User,
        "agent" => match r.opt_text("host")? {
            Some(host) => TokenScope::Agent { host },
            None => {
                return Err(r.corrupt(
                    "host",
                    "the value is NULL in an Agent's token".to_owned(),
                    None,
                ))
            }
        },
        other => return Err(r.corrupt("scope", format!("{other:?} is not a token scope"), None)),
    };
    Ok(TokenRecord {
        id: r.uuid("token_id")?,
        hash: r.text("hash")?,
        user_id: r.uuid("user_id")?,
        kind: r.name("kind", "token kind", TokenKind::parse)?,
        scope,
        name: r.text("token_name")?,
        created_at: r.int("token_created_at")?,
        expires_at: r.opt_int("expires_at")?,
    })
}

pub(crate) fn ssh_key<R: Cells>(row: &R) -> Result<SshKeyRecord> {
    let r = Stored::new(row, "ssh_keys", &["id"]);
    Ok(SshKeyRecord {
        id: r.uuid("id")?,
        user_id: r.uuid("user_id")?,
        name: r.text("name")?,
        public_key: r.text("public_key")?,
        fingerprint: r.text("fingerprint")?,
        created_at: r.int("created_at")?,
    })
}

pub(crate) fn datacenter<R: Cells>(row: &R) -> Result<DatacenterRecord> {
    let r = Stored::new(row, "datacenters", &["id"]);
    Ok(DatacenterRecord {
        id: r.uuid("id")?,
        name: r.text("name")?,
        created_at: r.int("created_at")?,
        // Comma-separated prefixes; none is the empty text.
        home_pools: r
            .text("home_pools")?
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        public_gateway: r.opt_text("public_gateway")?,
    })
}

pub(crate) fn host_count<R: Cells>(row: &R) -> Result<HostCount> {
    let r = Stored::new(row, "hosts", &["datacenter_id", "state"]);
    Ok(HostCount {
        datacenter_id: r.uuid("datacenter_id")?,
        state: r.name("state", "host state", HostState::parse)?,
        hosts: r.int("hosts")?,
    })
}

pub(crate) fn host<R: Cells>(row: &R) -> Result<HostRecord> {
    let r = Stored::new(row, "hosts", &["id"]);
    Ok(HostRecord {
        id: r.uuid("id")?,
        datacenter_id: r.uuid("datacenter_id")?,
        name: r.text("name")?,
        agent_url: r.text("agent_url")?,
        cpus: r.int("cpus")?,
        ram_mib: r.int("ram_mib")?,
        disk_mib: r.int("disk_mib")?,
        vm_slots: r.int("vm_slots")?,
        uplink_mbps: r.int("uplink_mbps")?,
        state: r.name("state", "host state", HostState::parse)?,
        last_seen: r.int("last_seen")?,
        used: HostUsage {
            vcpus: r.int("used_vcpus")?,
            ram_mib: r.int("used_ram_mib")?,
            disk_mib: r.int("used_disk_mib")?,
            slots: r.int("used_slots")?,
            uplink_mbps: r.int("used_uplink_mbps")?,
        },
    })
}

pub(crate) fn template<R: Cells>(row: &R) -> Result<TemplateRecord> {
    let r = Stored::new(row, "templates", &["id"]);
    Ok(TemplateRecord {
        id: r.uuid("id")?,
        name: r.text("name")?,
        owner_id: r.opt_uuid("owner_id")?,
        visibility: r.name("visibility", "template visibility", Visibility::parse)?,
        image_path: r.text("image_path")?,
        format: r.text("format")?,
        size_mib: r.int("size_mib")?,
        os_name: r.text("os_name")?,
        vcpus: r.int("vcpus")?,
        ram_mib: r.int("ram_mib")?,
        disk_mib: r.int("disk_mib")?,
        software: r.json("software")?,
        created_at: r.int("created_at")?,
    })
}

/// A VI read with [`VI_COLUMNS`].
pub(crate) fn vi<R: Cells>(row: &R) -> Result<ViRecord> {
    let r = Stored::new(row, "vis", &["id"]);
    Ok(ViRecord {
        id: r.uuid("id")?,
        owner_id: r.uuid("owner_id")?,
        name: r.text("name")?,
        state: r.vi_state("state")?,
        design_xml: r.text("design_xml")?,
        home_datacenter_id: r.opt_uuid("home_datacenter_id")?,
        reject_reason: r.opt_text("reject_reason")?,
        version: r.int("version")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
        address_plan: r.opt_json("address_plan")?,
        location_id: r.opt_uuid("location_id")?,
    })
}

pub(crate) fn vi_stamp<R: Cells>(row: &R) -> Result<ViStamp> {
    let r = Stored::new(row, "vis", &["owner_id"]);
    Ok(ViStamp {
        owner_id: r.uuid("owner_id")?,
        revision: r.int("revision")?,
    })
}

pub(crate) fn vi_event<R: Cells>(row: &R) -> Result<ViEventRecord> {
    let r = Stored::new(row, "vi_events", &["seq"]);
    Ok(ViEventRecord {
        vi_id: r.uuid("vi_id")?,
        at: r.int("at")?,
        from_state: r.vi_state("from_state")?,
        to_state: r.vi_state("to_state")?,
        actor: r.uuid("actor")?,
        reason: r.opt_text("reason")?,
    })
}

pub(crate) fn vm<R: Cells>(row: &R) -> Result<VmRecord> {
    vm_of(row, "vms")
}

/// A VM slot read from `table` (`vms` or `vm_moves`, which have one shape).
pub(crate) fn vm_of<R: Cells>(row: &R, table: &'static str) -> Result<VmRecord> {
    let r = Stored::new(row, table, &["vi_id", "node_id"]);
    Ok(VmRecord {
        vi_id: r.uuid("vi_id")?,
        node_id: r.text("node_id")?,
        host_id: r.uuid("host_id")?,
        vcpus: r.int("vcpus")?,
        ram_mib: r.int("ram_mib")?,
        disk_mib: r.int("disk_mib")?,
        uplink_mbps: r.int("uplink_mbps")?,
    })
}

/// A host's room read with [`crate::batch::ROOM`].
pub(crate) fn room<R: Cells>(row: &R) -> Result<crate::batch::Room> {
    let r = Stored::new(row, "hosts", &[]);
    Ok(crate::batch::Room {
        ready: r.int("ready")? == 1,
        cpus: r.int("cpus")?,
        ram_mib: r.int("ram_mib")?,
        disk_mib: r.int("disk_mib")?,
        vm_slots: r.int("vm_slots")?,
        uplink_mbps: r.int("uplink_mbps")?,
        used_vcpus: r.int("used_vcpus")?,
        used_ram_mib: r.int("used_ram_mib")?,
        used_disk_mib: r.int("used_disk_mib")?,
        used_slots: r.int("used_slots")?,
        used_uplink_mbps: r.int("used_uplink_mbps")?,
    })
}

/// A job read with [`JOB_COLUMNS`].
pub(crate) fn job<R: Cells>(row: &R) -> Result<JobRecord> {
    let r = Stored::new(row, "jobs", &["id"]);
    Ok(JobRecord {
        id: r.uuid("id")?,
        vi_id: r.uuid("vi_id")?,
        kind: r.text("kind")?,
        state: r.name("state", "job state", JobState::parse)?,
        steps: r.json("steps")?,
        cursor: r.int("cursor")?,
        total: r.int("total")?,
        error: r.opt_text("error")?,
        owner: r.opt_text("owner")?,
        lease_until: r.int("lease_until")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// An `owned` row of the address table: it always has an owner.
pub(crate) fn owned_address<R: Cells>(row: &R) -> Result<OwnedAddress> {
    let r = Stored::new(row, "addresses", &["pool", "prefix"]);
    Ok(OwnedAddress {
        pool: r.text("pool")?,
        prefix: r.text("prefix")?,
        vi_id: r.opt_uuid("vi_id")?,
        owner: r.json("owner")?,
    })
}

/// A count or sum of a query's one row, named by `column`.
pub(crate) fn number<R: Cells>(row: &R, table: &'static str, column: &'static str) -> Result<i64> {
    Stored::new(row, table, &[]).int(column)
}

/// Bytes of design text that the owner bound at `owner` holds in VIs not
/// terminated, besides the VI bound at `except` if any: summed from the
/// holdings index, never from the designs themselves.
pub(crate) fn design_bytes(owner: &str, except: Option<&str>) -> String {
    let except = except.map_or(String::new(), |e| format!(" AND id <> {e}"));
    format!(
        "(SELECT CAST(COALESCE(SUM(design_bytes), 0) AS BIGINT) FROM vis \
         WHERE owner_id = {owner} AND state <> 'terminated'{except})"
    )
}

/// What a design weighs against its owner's design quota: its bytes.
pub(crate) fn design_size(design_xml: &str) -> i64 {
    i64::try_from(design_xml.len()).unwrap_or(i64::MAX)
}

/// A switch read from the `switches` table.
pub(crate) fn switch<R: Cells>(row: &R) -> Result<SwitchRecord> {
    let r = Stored::new(row, "switches", &["datacenter_id"]);
    Ok(SwitchRecord {
        datacenter_id: r.uuid("datacenter_id")?,
        url: r.text("url")?,
        key_file: r.text("key_file")?,
        care_of: r.text("care_of")?,
        port: r.text("port")?,
        via: r.opt_text("via")?,
        updated_at: r.int("updated_at")?,
    })
}

/// A request read from the `migration_requests` table.
pub(crate) fn migration_request<R: Cells>(row: &R) -> Result<MigrationRequestRecord> {
    let r = Stored::new(row, "migration_requests", &["vi_id"]);
    Ok(MigrationRequestRecord {
        vi_id: r.uuid("vi_id")?,
        datacenter_id: r.uuid("datacenter_id")?,
        requested_by: r.uuid("requested_by")?,
        requested_at: r.int("requested_at")?,
    })
}

/// The `id` of a `vis` row.
pub(crate) fn vi_id<R: Cells>(row: &R) -> Result<ViId> {
    Stored::new(row, "vis", &["id"]).uuid("id")
}
