//! Typed ids of the Manager's resources. Each is a UUID underneath, and
//! the same UUID text on the wire, but a `HostId` cannot be passed where
//! a `ViId` is meant: the compiler keeps the store's arguments, the API's
//! paths and the Manager's maps apart.
//!
//! The ids are made from UUIDs the caller supplies (the Store mints them),
//! so this module stays pure.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! resource_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// The nil UUID: an id no row has (the Manager itself, as the
            /// actor of a change no user made).
            pub const fn nil() -> Self {
                Self(Uuid::nil())
            }

            /// Whether this is [`Self::nil`].
            pub const fn is_nil(self) -> bool {
                self.0.is_nil()
            }

            /// The UUID underneath, for adapters that keep it as such.
            pub const fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        // PostgreSQL keeps ids in `uuid` columns: an id binds and reads as
        // its UUID. SQLite keeps them as text, which its adapter binds
        // from `Display`; no SQLite impl exists, so an id can never be
        // bound there as a blob by mistake.
        #[cfg(feature = "postgres")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <Uuid as sqlx::Type<sqlx::Postgres>>::type_info()
            }
        }

        #[cfg(feature = "postgres")]
        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <Uuid as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        #[cfg(feature = "postgres")]
        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <Uuid as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        #[cfg(feature = "postgres")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <Uuid as sqlx::Decode<'r, sqlx::Postgres>>::decode(value).map(Self)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

resource_id!(
    /// A user's id.
    UserId
);
resource_id!(
    /// An SSH public key's id.
    SshKeyId
);
resource_id!(
    /// An API token's id (never the token itself).
    TokenId
);
resource_id!(
    /// A datacenter's id.
    DatacenterId
);
resource_id!(
    /// A host's id.
    HostId
);
resource_id!(
    /// A Virtual Infrastructure's id.
    ViId
);
resource_id!(
    /// A durable job's id.
    JobId
);
resource_id!(
    /// A template's id in the image repository.
    TemplateId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_as_the_uuid() {
        let uuid = Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let vi = ViId::from(uuid);
        assert_eq!(vi.to_string(), uuid.to_string());
        assert_eq!(serde_json::to_string(&vi).unwrap(), format!("\"{uuid}\""));
        assert_eq!(
            serde_json::from_str::<ViId>(&format!("\"{uuid}\"")).unwrap(),
            vi
        );
        assert_eq!(uuid.to_string().parse::<HostId>().unwrap().uuid(), uuid);
    }

    #[test]
    fn refuses_what_is_not_a_uuid() {
        assert!("host-1".parse::<HostId>().is_err());
        assert!(serde_json::from_str::<JobId>("\"12\"").is_err());
    }
}
