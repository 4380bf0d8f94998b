//! Benchmark driver (see README.md beside this file).
#![allow(clippy::print_stdout)]
fn main() {}
