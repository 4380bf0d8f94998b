//! The store's one error type, and the mappings from sqlx's errors and
//! from lost compare-and-sets into it that both adapters share, so a
//! caller sees the same error whichever database answers.

use neptune_lifecycle::ViState;
use neptune_types::HostId;
use thiserror::Error;

use crate::records::UserRecord;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No row has that key (or the caller may not see it).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for ("user", "VI", ...).
        what: &'static str,
    },
    /// A uniqueness constraint refused the write.
    #[error("{what} already exists")]
    Duplicate {
        /// What already exists ("user", "token", ...).
        what: &'static str,
    },
    /// A compare-and-set lost: the row changed since it was read.
    #[error("{what} changed concurrently (expected {expected})")]
    Conflict {
        /// What changed ("VI", "job").
        what: &'static str,
        /// What the caller expected, and what was found instead.
        expected: String,
    },
    /// An address plan lost: part of its space is taken.
    #[error("address space {prefix} is taken")]
    AddressTaken {
        /// The prefix another plan holds.
        prefix: String,
    },
    /// A host cannot take a VM (capacity, slots, or not ready).
    #[error("host {host} has no room for VM {node}")]
    NoRoom {
        /// The host that refused.
        host: HostId,
        /// The virtual node that did not fit.
        node: String,
    },
    /// A user's quota refuses the write; the text says which part.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A record to write carries text that should be JSON and is not.
    #[error("{what} is not JSON")]
    NotJson {
        /// The field ("job steps", "template software", ...).
        what: &'static str,
        /// Where the parser gave up.
        #[source]
        source: serde_json::Error,
    },
    /// [`crate::connect`] knows no adapter for the URL's scheme.
    #[error("unsupported database URL {0:?} (expected sqlite://PATH or postgres://...)")]
    UnsupportedUrl(String),
    /// A SQLite file could not be made private to its owner.
    #[error("cannot make {path} readable by its owner only")]
    Mode {
        /// The database file (or its `-wal` or `-shm` file).
        path: String,
        /// Why `chmod` failed.
        #[source]
        source: std::io::Error,
    },
    /// A stored value cannot be what its column holds: an unknown state,
    /// malformed JSON, a missing value. Reads fail rather than guess, so a
    /// damaged row is noticed, never shown as empty.
    #[error("stored data is corrupt: {table}.{column} of the row with {row}: {problem}")]
    Corrupt {
        /// The table holding the row.
        table: &'static str,
        /// The column holding the value.
        column: &'static str,
        /// The row's key, as `column value` pairs.
        row: String,
        /// What is wrong with the value.
        problem: String,
        /// The decoder's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The database refused or failed an operation.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Bringing the schema up to date failed.
    #[error("migrating the database schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// A store operation's result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Any database error, as the operation's failure.
pub(crate) fn db(err: sqlx::Error) -> StoreError {
    StoreError::Database(err)
}

/// Maps a unique-constraint violation to [`StoreError::Duplicate`].
pub(crate) fn write_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(e) if e.is_unique_violation() => StoreError::Duplicate { what },
        _ => StoreError::Database(err),
    }
}

/// Maps a missing row to [`StoreError::NotFound`].
pub(crate) fn read_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match err {
        sqlx::Error::RowNotFound => StoreError::NotFound { what },
        other => StoreError::Database(other),
    }
}

/// Whether an insert failed because its key is taken.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// A VI compare-and-set that lost: the VI is no longer in `from`.
pub(crate) fn vi_conflict(from: ViState, found: ViState) -> StoreError {
    StoreError::Conflict {
        what: "VI",
        expected: format!("state {from}, found {found}"),
    }
}

/// A design edit that lost: the VI moved on from `version` or left `defined`.
pub(crate) fn design_conflict(version: i64, found: i64, state: ViState) -> StoreError {
    StoreError::Conflict {
        what: "VI",
        expected: format!(
            "version {version} in state defined, found version {found} in state {state}"
        ),
    }
}

/// Why a design of `user` was refused, from what their VIs hold:
/// `count` VIs of `bytes` design text (besides the one edited, if
/// `editing`).
pub(crate) fn design_quota(user: &UserRecord, count: i64, bytes: i64, editing: bool) -> StoreError {
    let what = if !editing && count >= user.quota.designs {
        format!(
            "{} holds {count} VIs; the quota is {} (terminate one to make room)",
            user.name, user.quota.designs
        )
    } else {
        format!(
            "{}'s designs take {} MiB, and this one does not fit; the quota is {} MiB",
            user.name,
            (bytes + (1 << 20) - 1) >> 20,
            user.quota.design_mib
        )
    };
    StoreError::QuotaExceeded(what)
}

/// A user who already keeps `max` SSH keys.
pub(crate) fn ssh_key_quota(max: i64) -> StoreError {
    StoreError::QuotaExceeded(format!("a user keeps at most {max} SSH keys"))
}
