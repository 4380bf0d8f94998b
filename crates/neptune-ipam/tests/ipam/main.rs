//! Integration tests of the address planner, in one test binary.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod examples;
mod properties;
mod support;
