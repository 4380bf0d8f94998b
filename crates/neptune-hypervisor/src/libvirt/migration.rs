//! Live migration between two hosts' libvirt daemons.
//!
//! The destination prepares first ([`LibvirtHypervisor::accept_incoming`]):
//! a qcow2 disk of the VM's exact virtual size, its seed image, its
//! networks (bridges and VXLAN segments) and room, and answers with the
//! domain XML it will run the VM under (its own disk, seed and console
//! paths). The disk is an overlay of the destination's own base of the
//! VM's template when that base holds the same bytes as the source's (both
//! are named for their content), else blank. The source then drives the
//! move through both daemons (libvirt's "managed direct" mode: the source
//! never needs to reach the destination's socket by itself): `virsh
//! migrate --live --persistent --undefinesource --copy-storage-inc --xml
//! DEST.xml` onto an overlay (only what the guest wrote over the template
//! is sent), `--copy-storage-all` onto a blank disk, with the disk copied
//! over NBD (no shared storage is assumed), watching `domjobinfo` for
//! progress. Once the VM runs there, the destination completes it
//! ([`LibvirtHypervisor::finish_incoming`]): taps shaped to the links'
//! bandwidth, readiness kept (the guest does not boot again).
//!
//! A VM accepted but never arrived leaves a record beside its console
//! (`consoles/<vm>.incoming`), so that destroying it frees the networks
//! the acceptance made.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    console, domain_xml, failed, path_str, remove_if_there, DiskRecord, LibvirtHypervisor,
};
use crate::{
    check_room, validate_vm_name, write_atomically, DiskBase, HypervisorError, Incoming,
    IncomingRequest, MigrationProgress, MigrationReport, Op, Outgoing, Result, VmSpec, VmState,
};

/// The longest a live move may take: it may copy the VM's whole disk.
pub(super) const MIGRATE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often the source asks how far a move is.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What the template field of a disk made for a VM arriving live says.
const ARRIVING: &str = "(arriving live)";

/// How often a wait for a VM to run asks libvirt itself, in case its
/// events were lost (see [`super::events`]).
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// The record of a VM accepted to arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Arrival {
    spec: VmSpec,
    ready: bool,
}

impl LibvirtHypervisor {
    fn arrival_path(&self, vm: &str) -> PathBuf {
        self.config
            .data_dir
            .join("consoles")
            .join(format!("{vm}.incoming"))
    }

    /// The spec of a VM accepted to arrive that has not, if any.
    pub(super) fn arrival_spec(&self, vm: &str) -> Option<VmSpec> {
        let bytes = std::fs::read(self.arrival_path(vm)).ok()?;
        serde_json::from_slice::<Arrival>(&bytes)
            .ok()
            .map(|a| a.spec)
    }

    /// The specs of the VMs accepted to arrive that have not, but `but`'s.
    pub(super) fn arrivals(&self, but: &str) -> Vec<VmSpec> {
        let Ok(entries) = std::fs::read_dir(self.config.data_dir.join("consoles")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let vm = name.strip_suffix(".incoming")?;
                (vm != but).then(|| self.arrival_spec(vm)).flatten()
            })
            .collect()
    }

    /// Forgets that `vm` was to arrive.
    pub(super) fn forget_arrival(&self, op: Op, vm: &str) -> Result<()> {
        remove_if_there(&self.arrival_path(vm))
            .map_err(|e| failed(op, vm, "cannot forget its arrival", &e))
    }

    pub(super) async fn outgoing_vm(&self, vm: &str) -> Result<Outgoing> {
        let op = Op::Migrate;
        validate_vm_name(vm)?;
        let Some(d) = self
            .domain(op, vm)
            .await?
            .filter(|d| d.state == VmState::Running)
        else {
            return Err(HypervisorError::NoSuchVm(vm.to_owned()));
        };
        let xml = self.virsh(op, vm, &["dumpxml", vm]).await?;
        let uuid = super::uuid_of(&xml)
            .ok_or_else(|| failed(op, vm, "cannot read its UUID", &"the domain has none"))?;
        let disk = self.disk_path(vm);
        // -U: QEMU holds the image's lock while the VM runs.
        let info = self
            .qemu_img_out(op, vm, &["info", "-U", "--output=json", path_str(&disk)])
            .await?;
        let disk_bytes = super::image_info(&info)
            .map(|(_, size)| size)
            .filter(|size| *size > 0)
            .ok_or_else(|| failed(op, vm, "cannot read its disk's size", &info.trim()))?;
        Ok(Outgoing {
            spec: d.spec,
            disk_bytes,
            uuid,
            ready: d.ready,
            base: self.disk_base(vm),
        })
    }

    /// The base `vm`'s disk is an overlay of, if it is one and the base
    /// is still here.
    fn disk_base(&self, vm: &str) -> Option<DiskBase> {
        let record = std::fs::read(self.record_path(vm))
            .ok()
            .and_then(|b| serde_json::from_slice::<DiskRecord>(&b).ok())?;
        let base = record.base?;
        self.bases_dir().join(&base).is_file().then_some(DiskBase {
            template_image: record.template_image,
            base,
        })
    }

    pub(super) async fn accept_vm(&self, request: &IncomingRequest) -> Result<Incoming> {
        let op = Op::Incoming;
        let vm = request.spec.name.as_str();
        validate_vm_name(vm)?;
        let spec = VmSpec {
            disk: path_str(&self.disk_path(vm)).to_owned(),
            ..request.spec.clone()
        };
        self.check_own_spec(&spec)?;
        // The Manager waits for the guest to resume here: the watcher of
        // events is connected long before it does.
        drop(self.events.listen());
        let mut answer = Incoming {
            vm: vm.to_owned(),
            connect: self
                .config
                .migration
                .connect
                .clone()
                .unwrap_or_else(|| self.config.uri.clone()),
            stream: self.config.migration.stream.clone(),
            definition: domain_xml(
                self.domain_type,
                &spec,
                Some(&request.uuid),
                self.config.public_bridge.as_deref(),
                &self.files_of(&spec),
            ),
            incremental: false,
        };
        // Arrived already (an earlier call's answer was lost).
        if let Some(d) = self.domain(op, vm).await? {
            let size_mib = request.disk_bytes.div_ceil(1 << 20);
            answer.incremental = matches!(
                self.arrived_disk(vm, size_mib, request.base.as_ref()).await,
                Some(Ok(true))
            );
            return if d.spec == spec {
                Ok(answer)
            } else {
                Err(HypervisorError::SpecMismatch {
                    name: vm.to_owned(),
                })
            };
        }
        answer.incremental = self.arriving_disk(op, vm, request).await?;
        self.write_seed(op, &spec).await?;
        {
            let _admitted = self.admission.lock().await;
            let all = self.domains_but_name_taken(op, &spec).await?;
            check_room(self.config.capacity, all.iter().map(|d| &d.spec), &spec)?;
            self.ensure_networks(op, &spec).await?;
        }
        remove_if_there(&self.ready_path(vm))
            .and_then(|()| console::mark(&self.console_path(vm), &format!("arrival of {vm}")))
            .map_err(|e| failed(op, vm, "cannot prepare the console", &e))?;
        let arrival = Arrival {
            spec,
            ready: request.ready,
        };
        let bytes =
            serde_json::to_vec(&arrival).map_err(|e| failed(op, vm, "cannot encode", &e))?;
        write_atomically(&self.arrival_path(vm), &bytes)
            .map_err(|e| failed(op, vm, "cannot record its arrival", &e))?;
        Ok(answer)
    }

    /// Makes `vm`'s disk for its arrival, which the move fills: an overlay
    /// of the source's base when this host holds the same bytes (or copies
    /// them from the template now), else a blank qcow2 the whole disk is
    /// copied into; either of exactly `request.disk_bytes`. Whether it is
    /// an overlay. Done when it is there from an earlier call.
    async fn arriving_disk(&self, op: Op, vm: &str, request: &IncomingRequest) -> Result<bool> {
        // A base this host holds for no disk yet is not collected meanwhile.
        let _preparing = super::Preparing::enter(&self.preparing);
        let size_mib = request.disk_bytes.div_ceil(1 << 20);
        let path = self.disk_path(vm);
        if let Some(existing) = self.arrived_disk(vm, size_mib, request.base.as_ref()).await {
            return existing;
        }
        let base = match &request.base {
            Some(want) => self.same_base(op, vm, want).await?,
            None => None,
        };
        let record = match (&base, &request.base) {
            (Some((file, _)), Some(want)) => DiskRecord {
                template_image: want.template_image.clone(),
                size_mib,
                base: file.file_name().and_then(|n| n.to_str()).map(str::to_owned),
            },
            _ => DiskRecord {
                template_image: ARRIVING.to_owned(),
                size_mib,
                base: None,
            },
        };
        let reserving = self.disks.lock().await;
        if path.is_file() {
            // Made meanwhile by a concurrent call.
            drop(reserving);
            return self
                .arrived_disk(vm, size_mib, request.base.as_ref())
                .await
                .unwrap_or_else(|| {
                    Err(HypervisorError::SpecMismatch {
                        name: vm.to_owned(),
                    })
                });
        }
        let used = self.disk_usage(vm)?.saturating_add(size_mib);
        if used > self.config.capacity.disk_mib {
            return Err(HypervisorError::NoRoom(format!(
                "{used} MiB of disks would exceed the host's {} MiB",
                self.config.capacity.disk_mib
            )));
        }
        self.write_record(op, vm, &record)?;
        drop(reserving);
        let tmp = path.with_extension("qcow2.tmp");
        let _ = std::fs::remove_file(&tmp);
        let size = request.disk_bytes.to_string();
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        // The backing format is always named: a guessed one lets a raw
        // image whose bytes look like qcow2 name any file as its backing.
        if let Some((file, format)) = &base {
            args.extend(["-b", path_str(file), "-F", format.as_str()]);
        }
        args.extend([path_str(&tmp), size.as_str()]);
        let made = self.qemu_img(op, vm, &args).await.and_then(|()| {
            std::fs::rename(&tmp, &path).map_err(|e| failed(op, vm, "cannot place the disk", &e))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(self.record_path(vm));
            return Err(e);
        }
        Ok(base.is_some())
    }

    /// What an earlier call made for `vm`'s arrival, if it made its disk:
    /// whether that is an overlay, or a mismatch when it is no disk this
    /// request could have made.
    async fn arrived_disk(
        &self,
        vm: &str,
        size_mib: u64,
        want: Option<&DiskBase>,
    ) -> Option<Result<bool>> {
        let _reserving = self.disks.lock().await;
        if !self.disk_path(vm).is_file() {
            return None;
        }
        let existing = std::fs::read(self.record_path(vm))
            .ok()
            .and_then(|b| serde_json::from_slice::<DiskRecord>(&b).ok());
        Some(match existing {
            Some(r) if r.size_mib == size_mib && r.template_image == ARRIVING => Ok(false),
            Some(r)
                if r.size_mib == size_mib
                    && want.is_some_and(|w| {
                        r.template_image == w.template_image && r.base.as_ref() == Some(&w.base)
                    }) =>
            {
                Ok(true)
            }
            _ => Err(HypervisorError::SpecMismatch {
                name: vm.to_owned(),
            }),
        })
    }

    /// This host's base of `want`'s template and its format, when it holds
    /// the same bytes as the source's; copied from the template if this
    /// host has none. `None` when the template is not here or changed
    /// since the source copied it: the move then copies the whole disk.
    async fn same_base(
        &self,
        op: Op,
        vm: &str,
        want: &DiskBase,
    ) -> Result<Option<(PathBuf, String)>> {
        if !std::path::Path::new(&want.template_image).is_file() {
            return Ok(None);
        }
        let info = self
            .qemu_img_out(
                op,
                vm,
                &["info", "-U", "--output=json", &want.template_image],
            )
            .await?;
        let Some((format, _)) = super::image_info(&info) else {
            return Ok(None);
        };
        let base = self.base_for(op, vm, &want.template_image, &format).await?;
        let same = base.file_name().and_then(|n| n.to_str()) == Some(want.base.as_str());
        Ok(same.then_some((base, format)))
    }

    pub(super) async fn migrate_vm(
        &self,
        vm: &str,
        to: &Incoming,
        progress: &(dyn Fn(MigrationProgress) + Send + Sync),
    ) -> Result<MigrationReport> {
        let op = Op::Migrate;
        validate_vm_name(vm)?;
        if to.vm != vm {
            return Err(HypervisorError::InvalidRequest(format!(
                "the destination accepted VM {:?}, not {vm:?}",
                to.vm
            )));
        }
        let Some(d) = self
            .domain(op, vm)
            .await?
            .filter(|d| d.state == VmState::Running)
        else {
            return Err(HypervisorError::NoSuchVm(vm.to_owned()));
        };
        self.terminals.forget(vm);
        let mut events = self.events.listen();
        let file = self.scratch_file(op, vm, "migrate.xml", &to.definition)?;
        let mut args = vec![
            "migrate",
            "--live",
            "--persistent",
            "--undefinesource",
            if to.incremental {
                "--copy-storage-inc"
            } else {
                "--copy-storage-all"
            },
            // The seed is read-only and remade on the destination.
            "--migrate-disks",
            "vda",
            "--xml",
            path_str(&file),
        ];
        if let Some(stream) = &to.stream {
            args.extend(["--migrateuri", stream.as_str()]);
        }
        args.extend([vm, to.connect.as_str()]);
        // QEMU keeps it for the guest's process, so it holds for the move
        // started next (see DEFAULT_MIGRATION_MAX_DOWNTIME_MS for why);
        // set again before each, as a move raises it.
        let start_limit = self.config.migration_max_downtime;
        if let Some(most) = start_limit {
            let ms = downtime_ms(most);
            self.virsh(op, vm, &["migrate-setmaxdowntime", vm, &ms])
                .await?;
        }
        let started = Instant::now();
        let moving = self.virsh_at(op, vm, &self.config.uri, &args, MIGRATE_TIMEOUT);
        let last = std::sync::Mutex::new(MigrationProgress::default());
        let report = |change: &dyn Fn(&mut MigrationProgress)| {
            let mut now = last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            change(&mut now);
            progress(*now);
        };
        // The disk's copy as the source last saw it: the destination's
        // finished job counts the memory alone.
        let disk_seen = std::sync::atomic::AtomicU64::new(0);
        let follow = async {
            let mut limit_set = start_limit;
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tick.tick().await;
                if let Ok(text) = self.virsh(op, vm, &["domjobinfo", "--rawstats", vm]).await {
                    if let Some(total) = raw_stat(&text, "disk_total") {
                        disk_seen.store(total, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Some(p) = progress_of(&text) {
                        report(&|now| {
                            now.bytes_done = p.bytes_done;
                            now.bytes_remaining = p.bytes_remaining;
                        });
                    }
                    // A guest writing its memory faster than it is sent
                    // never fits the limit: each pass over its memory past
                    // the first few raises it.
                    let raised = start_limit
                        .zip(raw_stat(&text, "memory_iteration"))
                        .map(|(start, pass)| limit_for_pass(start, pass));
                    if let Some(limit) = raised.filter(|l| Some(*l) > limit_set) {
                        let ms = downtime_ms(limit);
                        if self
                            .virsh(op, vm, &["migrate-setmaxdowntime", vm, &ms])
                            .await
                            .is_ok()
                        {
                            limit_set = Some(limit);
                        }
                    }
                }
            }
        };
        // The instant the guest pauses for the switch-over, which a look
        // at the job every PROGRESS_EVERY would miss; heard beside the
        // looks, never after one.
        let switching_over = async {
            loop {
                match events.recv().await {
                    Ok(e) if e.domain == vm && e.switching_over() => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                    _ => {}
                }
            }
            report(&|now| now.switching_over = true);
            std::future::pending::<()>().await;
        };
        let moved = tokio::select! {
            done = moving => done,
            // Neither ends: each follows the move until it does.
            () = follow => unreachable!("following a move never ends"),
            () = switching_over => unreachable!("waiting after the switch-over never ends"),
        };
        let switched = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .switching_over;
        let _ = std::fs::remove_file(&file);
        moved?;
        let total_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The destination keeps the finished job's statistics.
        let stats = self
            .virsh_at(
                op,
                vm,
                &to.connect,
                &["domjobinfo", "--completed", "--rawstats", vm],
                super::VIRSH_TIMEOUT,
            )
            .await
            .unwrap_or_default();
        let report = report_of(
            &stats,
            total_ms,
            disk_seen.load(std::sync::atomic::Ordering::Relaxed),
        );
        progress(MigrationProgress {
            bytes_done: report.bytes,
            bytes_remaining: 0,
            switching_over: switched,
        });
        // What the VM used here, but its disk (the Manager removes it once
        // the move is recorded).
        self.remove_vm_files(op, vm)?;
        self.release_ifbs(op, vm).await?;
        // Under the lock, as a save or a destroy releases them: VMs of one
        // VI leave together, and two releases of their shared link would
        // both find it unused and both delete it (the second failing).
        let admitted = self.admission.lock().await;
        self.release_networks(op, &d.spec).await?;
        drop(admitted);
        Ok(report)
    }

    /// See [`crate::Hypervisor::wait_running`]. libvirt's lifecycle event
    /// says when the guest resumes (`Resumed Migrated` for a VM arriving
    /// live) the moment it does; libvirt is asked at the start and every
    /// [`RECHECK_EVERY`], for an event lost. An event of a domain of that
    /// name is taken as this host's: names are unique among the VMs of
    /// the hosts that share a daemon.
    ///
    /// The events are heard while libvirt is asked, not after: libvirt 11
    /// answers a look at a domain arriving live only once the move's
    /// finish is done, up to a hundred milliseconds after the guest
    /// resumed (bench/migration/README.md).
    pub(super) async fn wait_vm_running(&self, vm: &str, within: Duration) -> Result<bool> {
        let op = Op::Incoming;
        validate_vm_name(vm)?;
        let until = tokio::time::Instant::now() + within;
        // Listening before looking: a resume in between is heard.
        let mut events = self.events.listen();
        loop {
            let look = self.domain(op, vm);
            tokio::pin!(look);
            let runs = loop {
                tokio::select! {
                    found = &mut look => {
                        break found?.is_some_and(|d| d.state == VmState::Running);
                    }
                    heard = hear_running(&mut events, vm) => match heard {
                        Heard::Running => return Ok(true),
                        // The look under way answers for what was lost.
                        Heard::Lost => {}
                    },
                    () = tokio::time::sleep_until(until) => return Ok(false),
                }
            };
            if runs {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(false);
            }
            let look_again = (now + RECHECK_EVERY).min(until);
            match tokio::time::timeout_at(look_again, hear_running(&mut events, vm)).await {
                Ok(Heard::Running) => return Ok(true),
                // Lost events, or time to look: libvirt is asked.
                Ok(Heard::Lost) | Err(_) => {}
            }
        }
    }

    pub(super) async fn finish_vm(&self, vm: &str) -> Result<()> {
        let op = Op::Incoming;
        validate_vm_name(vm)?;
        let Some(d) = self
            .domain(op, vm)
            .await?
            .filter(|d| d.state == VmState::Running)
        else {
            return Err(HypervisorError::NoSuchVm(vm.to_owned()));
        };
        self.shape_taps(op, &d.spec).await?;
        let ready = std::fs::read(self.arrival_path(vm))
            .ok()
            .and_then(|b| serde_json::from_slice::<Arrival>(&b).ok())
            .is_some_and(|a| a.ready);
        if ready {
            std::fs::write(self.ready_path(vm), b"arrived ready\n")
                .map_err(|e| failed(op, vm, "cannot keep its readiness", &e))?;
        }
        self.forget_arrival(op, vm)
    }
}

/// What a listener for a VM's resume heard.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    /// An event said the VM runs.
    Running,
    /// The listener fell behind: events were lost.
    Lost,
}

/// Until `events` say `vm` runs, or lose some; never, once the watcher
/// is gone (its callers look at libvirt themselves).
async fn hear_running(
    events: &mut tokio::sync::broadcast::Receiver<super::events::Lifecycle>,
    vm: &str,
) -> Heard {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(e) if e.domain == vm && e.runs() == Some(true) => return Heard::Running,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return Heard::Lost,
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// The typed statistics of `virsh domjobinfo --rawstats`: `name: value`
/// lines.
fn raw_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name)
            .then(|| value.trim().parse::<u64>().ok())
            .flatten()
    })
}

/// How far a running move is, from its job's statistics.
fn progress_of(text: &str) -> Option<MigrationProgress> {
    Some(MigrationProgress {
        bytes_done: raw_stat(text, "data_processed")?,
        bytes_remaining: raw_stat(text, "data_remaining").unwrap_or(0),
        switching_over: false,
    })
}

/// How many passes over a moving guest's memory (QEMU's iterations, the
/// first copying all of it) keep the limit it started with: tiny idle
/// guests fit 30 ms within 4 under load (bench/migration/README.md).
const PASSES_AT_START_LIMIT: u64 = 5;

/// The most a raised limit reaches: a pause of a second stalls TCP, a
/// move that never ends holds two hosts.
const RAISED_LIMIT_CEILING: Duration = Duration::from_secs(1);

/// The maximum downtime for pass `pass` of a move that started at
/// `start`: `start` for the first [`PASSES_AT_START_LIMIT`], then doubled
/// at each pass, up to [`RAISED_LIMIT_CEILING`] (never below `start`). A
/// guest that writes its memory faster than it is sent leaves more than
/// fits the limit after every pass, and is never paused unless the limit
/// grows; Nova raises it in steps over time for the same reason, by
/// passes here, as the disk's copy comes first and may take long.
fn limit_for_pass(start: Duration, pass: u64) -> Duration {
    let over = pass.saturating_sub(PASSES_AT_START_LIMIT);
    if over == 0 {
        return start;
    }
    let factor = 1u32 << over.min(16);
    start
        .saturating_mul(factor)
        .min(RAISED_LIMIT_CEILING)
        .max(start)
}

/// A maximum downtime as `virsh migrate-setmaxdowntime` takes it: whole
/// milliseconds, rounded up, at least 1 (at 0 a busy guest would never be
/// paused, and its move never end).
fn downtime_ms(most: Duration) -> String {
    most.as_micros().div_ceil(1000).max(1).to_string()
}

/// How a finished move went, from the destination's statistics of its
/// job; `total_ms` as the source timed it when the destination does not
/// say, and the disk's bytes as the source saw them (`disk_seen`) when
/// the destination counted none: the disk is copied by the source's
/// mirror, which only the source's job counts.
fn report_of(text: &str, total_ms: u64, disk_seen: u64) -> MigrationReport {
    let disk = match raw_stat(text, "disk_processed") {
        Some(counted) if counted > 0 => 0,
        _ => disk_seen,
    };
    MigrationReport {
        total_ms: raw_stat(text, "time_elapsed").unwrap_or(total_ms),
        downtime_ms: raw_stat(text, "downtime").unwrap_or(0),
        bytes: raw_stat(text, "data_processed")
            .unwrap_or(0)
            .saturating_add(disk),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_statistics_are_read() {
        let running = "type: 2\noperation: 5\ntime_elapsed: 412\ndata_total: 300\ndata_processed: 120\ndata_remaining: 180\n";
        assert_eq!(
            progress_of(running),
            Some(MigrationProgress {
                bytes_done: 120,
                bytes_remaining: 180,
                switching_over: false,
            })
        );
        assert_eq!(progress_of("type: 0\n"), None, "no job, no progress");
        // As libvirt's destination tells a finished move: memory only.
        let done = "type: 3\ntime_elapsed: 648\ndowntime: 217\ndata_processed: 93000000\ndisk_processed: 0\n";
        assert_eq!(
            report_of(done, 9999, 1_572_864),
            MigrationReport {
                total_ms: 648,
                downtime_ms: 217,
                bytes: 94_572_864
            },
            "the disk as the source saw it is added"
        );
        let counted = "type: 3\ndata_processed: 93000000\ndisk_processed: 1000\n";
        assert_eq!(
            report_of(counted, 9999, 1_572_864).bytes,
            93_000_000,
            "counted once"
        );
        assert_eq!(report_of("", 700, 0).total_ms, 700);
    }

    #[test]
    fn the_limit_grows_with_passes_past_the_first_few() {
        let ms = Duration::from_millis;
        let limits: Vec<_> = (0..=13).map(|pass| limit_for_pass(ms(30), pass)).collect();
        assert_eq!(
            limits,
            [
                ms(30),
                ms(30),
                ms(30),
                ms(30),
                ms(30),
                ms(30),
                ms(60),
                ms(120),
                ms(240),
                ms(480),
                ms(960),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        assert_eq!(limit_for_pass(ms(30), u64::MAX), ms(1000), "no overflow");
        assert_eq!(
            limit_for_pass(ms(5000), 9),
            ms(5000),
            "a limit above the ceiling is kept"
        );
        assert_eq!(limit_for_pass(ms(700), 6), ms(1000));
    }

    #[test]
    fn maximum_downtimes_are_whole_milliseconds() {
        assert_eq!(downtime_ms(Duration::from_millis(50)), "50");
        assert_eq!(downtime_ms(Duration::from_micros(30_001)), "31");
        assert_eq!(downtime_ms(Duration::ZERO), "1");
        assert_eq!(downtime_ms(Duration::from_secs(2)), "2000");
    }

    // Paused time: the waits that must not end pass at once.
    #[tokio::test(start_paused = true)]
    async fn a_resume_is_heard_for_its_vm_and_a_lag_is_told() {
        use super::super::events::Lifecycle;
        let event = |domain: &str, line: &str| {
            Lifecycle::parse(&format!("event 'lifecycle' for domain '{domain}': {line}")).unwrap()
        };
        let (tx, mut rx) = tokio::sync::broadcast::channel(4);
        tx.send(event("vm1", "Started Migrated")).unwrap();
        tx.send(event("vm2", "Resumed Migrated")).unwrap();
        tx.send(event("vm1", "Resumed Migrated")).unwrap();
        assert_eq!(hear_running(&mut rx, "vm1").await, Heard::Running);
        // Nothing more for vm1: still listening.
        tx.send(event("vm1", "Suspended Migrated")).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), hear_running(&mut rx, "vm1"))
                .await
                .is_err(),
            "a pause is no resume"
        );
        // Five events into a backlog of four: the listener lost one.
        for _ in 0..5 {
            tx.send(event("vm2", "Resumed Migrated")).unwrap();
        }
        assert_eq!(hear_running(&mut rx, "vm1").await, Heard::Lost);
        assert_eq!(
            tokio::time::timeout(Duration::from_millis(20), hear_running(&mut rx, "vm1"))
                .await
                .ok(),
            None,
            "after the lag, the rest is read again"
        );
        // The watcher gone: never an answer, the caller looks itself.
        drop(tx);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), hear_running(&mut rx, "vm1"))
                .await
                .is_err()
        );
    }
}
