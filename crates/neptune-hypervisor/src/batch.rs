//! Several operations on one host at once ([`Hypervisor::batch`]): a
//! deploy's disks, defines, starts and readiness checks, a terminate's
//! destroys and disk removals. Over a network that is one request for a
//! host's share of a batch instead of one per VM.
//!
//! [`Hypervisor::batch`]: crate::Hypervisor::batch

use serde::{Deserialize, Serialize};

use crate::{Hypervisor, Op, Result, VmInfo, VmSpec};

/// The most operations in one batch.
pub const MAX_BATCH_OPS: usize = 256;

/// Operations of one batch running at once on a host (as many as a job
/// ran at once before batches, one call each).
pub const BATCH_PARALLEL: usize = 16;

/// One operation of a batch: each is what its own call does, and as
/// idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOp {
    /// [`Hypervisor::prepare_disk`]; answers [`BatchOut::Disk`].
    PrepareDisk {
        vm: String,
        template_image: String,
        size_mib: u64,
    },
    /// [`Hypervisor::prepare_disk`] for `spec.name` from `template_image`
    /// at `spec.disk_mib`, then [`Hypervisor::define`] with the disk's
    /// path in place of `spec.disk`; answers [`BatchOut::Done`].
    DefineOnDisk {
        spec: VmSpec,
        template_image: String,
    },
    /// [`Hypervisor::start`]; answers [`BatchOut::Done`].
    Start { vm: String },
    /// [`Hypervisor::info`]; answers [`BatchOut::Info`].
    Info { vm: String },
    /// [`Hypervisor::destroy`]; answers [`BatchOut::Done`].
    Destroy { vm: String },
    /// [`Hypervisor::remove_disk`]; answers [`BatchOut::Done`].
    RemoveDisk { vm: String },
}

/// What one operation of a batch answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BatchOut {
    /// Done; nothing to say.
    Done,
    /// The VM's disk path.
    Disk(String),
    /// The VM as the host sees it; `null` when it is not defined there.
    Info(Option<VmInfo>),
}

impl BatchOp {
    /// The VM it concerns.
    pub fn vm(&self) -> &str {
        match self {
            BatchOp::DefineOnDisk { spec, .. } => &spec.name,
            BatchOp::PrepareDisk { vm, .. }
            | BatchOp::Start { vm }
            | BatchOp::Info { vm }
            | BatchOp::Destroy { vm }
            | BatchOp::RemoveDisk { vm } => vm,
        }
    }

    /// The operation an error names ([`Op::Define`] for an info, which
    /// never fails but for an unreachable host).
    pub fn op(&self) -> Op {
        match self {
            BatchOp::PrepareDisk { .. } => Op::PrepareDisk,
            BatchOp::DefineOnDisk { .. } | BatchOp::Info { .. } => Op::Define,
            BatchOp::Start { .. } => Op::Start,
            BatchOp::Destroy { .. } => Op::Destroy,
            BatchOp::RemoveDisk { .. } => Op::RemoveDisk,
        }
    }

    /// The template image it names, if any (an error about it names it).
    pub fn template_image(&self) -> &str {
        match self {
            BatchOp::PrepareDisk { template_image, .. }
            | BatchOp::DefineOnDisk { template_image, .. } => template_image,
            _ => "",
        }
    }

    /// Runs it on `hv`, as its own call would.
    pub async fn run<H: Hypervisor + ?Sized>(&self, hv: &H) -> Result<BatchOut> {
        Ok(match self {
            BatchOp::PrepareDisk {
                vm,
                template_image,
                size_mib,
            } => BatchOut::Disk(hv.prepare_disk(vm, template_image, *size_mib).await?),
            BatchOp::DefineOnDisk {
                spec,
                template_image,
            } => {
                let disk = hv
                    .prepare_disk(&spec.name, template_image, spec.disk_mib)
                    .await?;
                hv.define(&VmSpec {
                    disk,
                    ..spec.clone()
                })
                .await?;
                BatchOut::Done
            }
            BatchOp::Start { vm } => {
                hv.start(vm).await?;
                BatchOut::Done
            }
            BatchOp::Info { vm } => BatchOut::Info(hv.info(vm).await?),
            BatchOp::Destroy { vm } => {
                hv.destroy(vm).await?;
                BatchOut::Done
            }
            BatchOp::RemoveDisk { vm } => {
                hv.remove_disk(vm).await?;
                BatchOut::Done
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_read_as_documented_and_refuse_what_they_do_not_know() {
        let op: BatchOp = serde_json::from_str(r#"{"op": "start", "vm": "vi1-a"}"#).unwrap();
        assert_eq!(op, BatchOp::Start { vm: "vi1-a".into() });
        let op: BatchOp = serde_json::from_str(
            r#"{"op": "prepare_disk", "vm": "vi1-a", "template_image": "/t.qcow2", "size_mib": 2048}"#,
        )
        .unwrap();
        assert_eq!(
            (op.vm(), op.template_image(), op.op()),
            ("vi1-a", "/t.qcow2", Op::PrepareDisk)
        );
        for bad in [
            r#"{"op": "reboot", "vm": "vi1-a"}"#,
            r#"{"op": "start", "vm": "vi1-a", "force": true}"#,
            r#"{"op": "start"}"#,
        ] {
            assert!(serde_json::from_str::<BatchOp>(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&BatchOut::Done).unwrap(), r#""done""#);
        assert_eq!(
            serde_json::to_string(&BatchOut::Disk("/d".into())).unwrap(),
            r#"{"disk":"/d"}"#
        );
        assert_eq!(
            serde_json::to_string(&BatchOut::Info(None)).unwrap(),
            r#"{"info":null}"#
        );
    }
}
