//! The `neptune` binary run as users and operators run it: one test binary
//! (one build), a module per command group.

mod address;
mod crash;
mod placement;
mod topology;
mod up;
