//! One module per subcommand group.

pub(crate) mod topology;
