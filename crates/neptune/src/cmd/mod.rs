//! One module per subcommand group.

pub(crate) mod address;
pub(crate) mod agent;
pub(crate) mod client;
pub(crate) mod placement;
pub(crate) mod switch;
pub(crate) mod topology;
pub(crate) mod up;
