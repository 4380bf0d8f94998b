//! Typed identifiers. A `NodeId` is never passed where a `LinkId` is meant.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Longest identifier Neptune accepts, in characters.
pub const MAX_ID_LEN: usize = 64;

fn check_id(kind: &'static str, value: &str) -> Result<(), DomainError> {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return Err(DomainError::EmptyId { kind });
    };
    if value.chars().count() > MAX_ID_LEN {
        return Err(DomainError::IdTooLong {
            kind,
            value: value.to_owned(),
            max: MAX_ID_LEN,
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(DomainError::IdCharacter {
            kind,
            value: value.to_owned(),
            bad: first,
        });
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(DomainError::IdCharacter {
            kind,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What this identifier names, for messages.
            pub const KIND: &'static str = $kind;

            /// Validates `value`: 1 to 64 letters, digits, `-`, `_` or `.`,
            /// starting with a letter or digit.
            pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                check_id($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// The id of a topology (the `id` attribute of `<topology>`).
    TopologyId,
    "topology id"
);
string_id!(
    /// The id of a virtual node, unique within its topology.
    NodeId,
    "node id"
);
string_id!(
    /// The id of a virtual link, unique within its topology.
    LinkId,
    "link id"
);
string_id!(
    /// The name of a network interface, unique within its node (`eth0`).
    InterfaceName,
    "interface name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_paper_ids() {
        assert_eq!(TopologyId::new("luigi").unwrap().as_str(), "luigi");
        assert!(NodeId::new("node0").is_ok());
        assert!(InterfaceName::new("eth0.100").is_ok());
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(
            NodeId::new(""),
            Err(DomainError::EmptyId { kind: "node id" })
        );
        assert!(matches!(
            NodeId::new("-x"),
            Err(DomainError::IdCharacter { bad: '-', .. })
        ));
        assert!(matches!(
            NodeId::new("a b"),
            Err(DomainError::IdCharacter { bad: ' ', .. })
        ));
        assert!(matches!(
            NodeId::new("a".repeat(65)),
            Err(DomainError::IdTooLong { .. })
        ));
        assert!(NodeId::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn json_validates() {
        let ok: NodeId = serde_json::from_str("\"n1\"").unwrap();
        assert_eq!(ok.as_str(), "n1");
        let err = serde_json::from_str::<NodeId>("\"n 1\"").unwrap_err();
        assert!(err.to_string().contains("node id"), "{err}");
    }
}
