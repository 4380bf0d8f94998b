use thiserror::Error;

/// Why a value could not become one of Neptune's domain types.
///
/// Messages name the problem and the offending text; callers add where the
/// text came from (file, line, column or API field).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("{kind} must not be empty")]
    EmptyId { kind: &'static str },
    #[error("{kind} {value:?} is longer than {max} characters")]
    IdTooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error(
        "{kind} {value:?} contains {bad:?}; use letters, digits, '-', '_' and '.', starting with a letter or digit"
    )]
    IdCharacter {
        kind: &'static str,
        value: String,
        bad: char,
    },
    #[error("{value:?} is not a MAC address (expected six hex pairs such as 52:54:00:12:34:56)")]
    MacSyntax { value: String },
    #[error("MAC address {value} is a multicast address (the low bit of its first octet is set)")]
    MacMulticast { value: String },
    #[error("{value:?} is not a number")]
    NotANumber { value: String },
    #[error("{value:?} is not a whole number")]
    NotAnInteger { value: String },
    #[error("{value:?} is negative")]
    Negative { value: String },
    #[error("{value:?} is too large")]
    TooLarge { value: String },
}
