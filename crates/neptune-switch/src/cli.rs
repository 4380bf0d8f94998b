//! Command-line arguments of the switch daemon, shared by `neptune switch`
//! and `neptune-switchd`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{
    DataPlaneConfig, KernelConfig, SwitchConfig, TunnelDeviceKind, UserspaceConfig,
};
use crate::prefix::Ipv4Prefix;

/// Which data plane (flag form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlaneFlag {
    /// Records bindings only.
    Simulated,
    /// Kernel lightweight tunnels.
    Kernel,
    /// TUN + raw IP-in-IP.
    Userspace,
}

/// Tunnel device kind (flag form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKindFlag {
    /// VXLAN-GPE external.
    VxlanGpe,
    /// ipip external.
    Ipip,
}

/// `neptune switch`: run an Edge Service Switch.
///
/// Either `--config FILE` (JSON), or flags; flags override the file.
#[derive(Debug, Clone, clap::Args)]
pub struct SwitchArgs {
    /// JSON configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Name for logs.
    #[arg(long)]
    pub name: Option<String>,
    /// Control API address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where the table is persisted.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// File with the switch's HMAC key (hex).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// This switch's Care-of Address (tunnel endpoint).
    #[arg(long)]
    pub care_of: Option<Ipv4Addr>,
    /// A home prefix (repeatable).
    #[arg(long = "home-prefix")]
    pub home_prefixes: Vec<Ipv4Prefix>,
    /// A peer switch's Care-of Address (repeatable).
    #[arg(long = "peer")]
    pub peers: Vec<Ipv4Addr>,
    /// Data plane.
    #[arg(long, value_enum)]
    pub data_plane: Option<PlaneFlag>,
    /// Kernel tunnel device kind.
    #[arg(long, value_enum)]
    pub device_kind: Option<DeviceKindFlag>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    pub log_level: tracing::Level,
}

impl SwitchArgs {
    /// The configuration these arguments describe.
    pub fn into_config(self) -> anyhow::Result<SwitchConfig> {
        let mut c = match &self.config {
            Some(path) => SwitchConfig::from_file(path)?,
            None => SwitchConfig {
                name: "ess".into(),
                listen: self
                    .listen
                    .ok_or_else(|| anyhow::anyhow!("--listen or --config is required"))?,
                state_file: self
                    .state_file
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--state-file or --config is required"))?,
                key_file: self
                    .key_file
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("--key-file or --config is required"))?,
                care_of: self
                    .care_of
                    .ok_or_else(|| anyhow::anyhow!("--care-of or --config is required"))?,
                home_prefixes: Vec::new(),
                peers: Vec::new(),
                data_plane: DataPlaneConfig::Simulated,
                max_clock_skew_secs: 30,
                reconcile_secs: 5,
            },
        };
        if let Some(n) = self.name {
            c.name = n;
        }
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(s) = self.state_file {
            c.state_file = s;
        }
        if let Some(k) = self.key_file {
            c.key_file = k;
        }
        if let Some(a) = self.care_of {
            c.care_of = a;
        }
        if !self.home_prefixes.is_empty() {
            c.home_prefixes = self.home_prefixes;
        }
        if !self.peers.is_empty() {
            c.peers = self.peers;
        }
        if let Some(p) = self.data_plane {
            c.data_plane = match p {
                PlaneFlag::Simulated => DataPlaneConfig::Simulated,
                PlaneFlag::Kernel => DataPlaneConfig::Kernel(KernelConfig::default()),
                PlaneFlag::Userspace => DataPlaneConfig::Userspace(UserspaceConfig::default()),
            };
        }
        if let (Some(kind), DataPlaneConfig::Kernel(k)) = (self.device_kind, &mut c.data_plane) {
            k.device_kind = match kind {
                DeviceKindFlag::VxlanGpe => TunnelDeviceKind::VxlanGpe,
                DeviceKindFlag::Ipip => TunnelDeviceKind::Ipip,
            };
        }
        c.check()?;
        Ok(c)
    }
}

/// Parses the configuration, sets up logging and runs the switch.
pub fn run(args: SwitchArgs) -> anyhow::Result<()> {
    let level = args.log_level;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .try_init();
    let config = args.into_config()?;
    crate::run_blocking(config)
}

/// [`run`], with the error chain printed once and mapped to an exit code.
pub fn main(args: SwitchArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("neptune switch: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
