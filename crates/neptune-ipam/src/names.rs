//! Names the planner uses that the rest of Neptune does not define (yet):
//! the identity of a Virtual Infrastructure and of a datacenter.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest VI or datacenter name accepted, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// Why a text could not be a [`ViId`] or a [`DatacenterName`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong { kind: &'static str, value: String },
    #[error("{kind} {value:?} contains a space or control character")]
    Character { kind: &'static str, value: String },
}

fn check(kind: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            value: value.to_owned(),
        });
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NameError::Character {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What this name names, for messages.
            pub const KIND: &'static str = $kind;

            /// Accepts 1 to 128 characters without spaces or control characters.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check($kind, &value)?;
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
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
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

name!(
    /// The identity of a Virtual Infrastructure in the domain: the owner of
    /// its addresses (the Manager's VI id, or the topology id in the CLI).
    ViId,
    "VI id"
);
name!(
    /// The name of a datacenter of the Service Switching domain.
    DatacenterName,
    "datacenter name"
);

impl From<&neptune_types::TopologyId> for ViId {
    /// A topology id is always a valid VI id (the CLI plans a topology as
    /// the VI of the same name).
    fn from(id: &neptune_types::TopologyId) -> Self {
        Self(id.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(ViId::new("luigi").unwrap().as_str(), "luigi");
        assert_eq!(ViId::new(""), Err(NameError::Empty { kind: "VI id" }));
        assert!(matches!(
            DatacenterName::new("a b"),
            Err(NameError::Character { .. })
        ));
        assert!(matches!(
            ViId::new("x".repeat(129)),
            Err(NameError::TooLong { .. })
        ));
        let err = serde_json::from_str::<ViId>("\"\"").unwrap_err();
        assert!(err.to_string().contains("VI id"), "{err}");
    }
}
