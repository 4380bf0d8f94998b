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
    /// Kernel tunnel device kind (only with the kernel data plane).
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
        if let Some(kind) = self.device_kind {
            // Silently ignoring it would run a switch on another wire than
            // the operator asked for, which its peers cannot decapsulate.
            let DataPlaneConfig::Kernel(k) = &mut c.data_plane else {
                anyhow::bail!(
                    "--device-kind applies only to the kernel data plane, and this switch's is {} \
                     (add --data-plane kernel, or drop --device-kind; the userspace plane's wire is \
                     `data_plane.wire` in the configuration file)",
                    c.data_plane.kind()
                );
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SwitchArgs,
    }

    fn config(extra: &[&str]) -> anyhow::Result<SwitchConfig> {
        let base = [
            "neptune-switchd",
            "--listen",
            "127.0.0.1:7400",
            "--state-file",
            "/tmp/t.json",
            "--key-file",
            "/tmp/k",
            "--care-of",
            "198.18.1.2",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(extra))?;
        cli.args.into_config()
    }

    #[test]
    fn device_kind_applies_to_the_kernel_plane_and_is_refused_elsewhere() {
        let kernel = config(&["--data-plane", "kernel", "--device-kind", "ipip"]).unwrap();
        assert!(matches!(
            kernel.data_plane,
            DataPlaneConfig::Kernel(KernelConfig {
                device_kind: TunnelDeviceKind::Ipip,
                ..
            })
        ));
        for (extra, kind) in [
            (&["--device-kind", "ipip"][..], "simulated"),
            (
                &["--data-plane", "userspace", "--device-kind", "vxlan-gpe"][..],
                "userspace",
            ),
        ] {
            let e = config(extra).unwrap_err().to_string();
            assert!(
                e.contains("--device-kind applies only to the kernel data plane")
                    && e.contains(&format!("this switch's is {kind}")),
                "{extra:?}: {e}"
            );
        }

        // A kernel plane from the configuration file takes the flag too.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ess.json");
        std::fs::write(
            &file,
            r#"{"listen":"127.0.0.1:7400","state_file":"/tmp/t.json","key_file":"/tmp/k",
                "care_of":"198.18.1.2","data_plane":{"kind":"kernel","device":"gpe9"}}"#,
        )
        .unwrap();
        let from_file = Cli::try_parse_from([
            "neptune-switchd",
            "--config",
            file.to_str().unwrap(),
            "--device-kind",
            "ipip",
        ])
        .unwrap()
        .args
        .into_config()
        .unwrap();
        match from_file.data_plane {
            DataPlaneConfig::Kernel(k) => {
                assert_eq!(
                    (k.device_kind, k.device.as_str()),
                    (TunnelDeviceKind::Ipip, "gpe9")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
