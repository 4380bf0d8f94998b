//! libvirt's lifecycle events, heard the moment they happen: the adapter
//! keeps one `virsh event --loop --event lifecycle` running on its
//! connection (started by the first caller that needs it, started again
//! a second after it ends) and hands each line it prints to whoever
//! listens. A live move needs two instants no poll catches in time: the
//! source guest pausing for the switch-over, and the guest resuming on
//! the destination; each costs a poller a `virsh` call (tens of
//! milliseconds on a busy host) plus half its period.
//!
//! Events only make callers earlier, never right: a listener that lags,
//! or a watcher that is not connected yet, loses events, so every caller
//! also asks libvirt itself, at its start and now and then.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How many events a listener may fall behind before it lags.
const BACKLOG: usize = 256;

/// How long the watcher waits before running `virsh event` again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// One lifecycle event of a domain, as `virsh event` prints it:
/// `event 'lifecycle' for domain 'vm1': Resumed Migrated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lifecycle {
    pub(super) domain: String,
    /// `Started`, `Suspended`, `Resumed`, `Stopped`, ...
    pub(super) event: String,
    /// `Booted`, `Migrated`, `Post-copy`, ... (may be empty).
    pub(super) detail: String,
}

impl Lifecycle {
    /// Reads a line of `virsh event` (with or without `--timestamp`).
    pub(super) fn parse(line: &str) -> Option<Self> {
        const MARK: &str = "event 'lifecycle' for domain '";
        let rest = &line[line.find(MARK)? + MARK.len()..];
        let (domain, what) = rest.split_once("': ")?;
        let what = what.trim();
        let (event, detail) = what.split_once(' ').unwrap_or((what, ""));
        Some(Lifecycle {
            domain: domain.to_owned(),
            event: event.to_owned(),
            detail: detail.trim().to_owned(),
        })
    }

    /// Whether the guest runs after this event; `None` when the event
    /// does not say (defined, undefined). A domain started for an
    /// incoming move (`Started Migrated`) is paused until it resumes.
    pub(super) fn runs(&self) -> Option<bool> {
        match self.event.as_str() {
            "Resumed" => Some(true),
            "Started" => Some(self.detail != "Migrated"),
            "Suspended" | "Stopped" | "Shutdown" | "Crashed" | "PMSuspended" => Some(false),
            _ => None,
        }
    }

    /// Whether the guest paused for the switch-over of a move away: it
    /// runs next on the destination.
    pub(super) fn switching_over(&self) -> bool {
        self.event == "Suspended" && matches!(self.detail.as_str(), "Migrated" | "Post-copy")
    }
}

/// The watcher of one connection's events.
#[derive(Debug)]
pub(super) struct Events {
    uri: String,
    sender: broadcast::Sender<Lifecycle>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl Events {
    pub(super) fn new(uri: &str) -> Self {
        Events {
            uri: uri.to_owned(),
            sender: broadcast::channel(BACKLOG).0,
            watcher: Mutex::new(None),
        }
    }

    /// Every event from now on (once the watcher runs: see the module's
    /// note). Starts the watcher if it does not run.
    pub(super) fn listen(&self) -> broadcast::Receiver<Lifecycle> {
        let receiver = self.sender.subscribe();
        let mut watcher = self
            .watcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Without a runtime (a synchronous caller) there is nothing to
        // run it on: the caller's own checks do.
        if watcher.is_none() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                *watcher = Some(runtime.spawn(watch(self.uri.clone(), self.sender.clone())));
            }
        }
        receiver
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let watcher = self
            .watcher
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(task) = watcher.take() {
            // Dropping the task's future kills its virsh (kill_on_drop).
            task.abort();
        }
    }
}

/// Runs `virsh event` on `uri` for good, sending what it prints.
async fn watch(uri: String, sender: broadcast::Sender<Lifecycle>) {
    loop {
        let child = Command::new("virsh")
            .args(["--quiet", "--connect", &uri])
            .args(["event", "--loop", "--event", "lifecycle"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        // virsh that cannot run leaves callers to their own checks.
        if let Ok(mut child) = child {
            if let Some(out) = child.stdout.take() {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(event) = Lifecycle::parse(&line) {
                        // No listener is fine: nobody waits.
                        let _ = sender.send(event);
                    }
                }
            }
            let _ = child.kill().await;
        }
        tokio::time::sleep(RESTART_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virsh_event_lines_are_read() {
        let e =
            Lifecycle::parse("event 'lifecycle' for domain 'nt-1-gw': Resumed Migrated").unwrap();
        assert_eq!(
            e,
            Lifecycle {
                domain: "nt-1-gw".into(),
                event: "Resumed".into(),
                detail: "Migrated".into()
            }
        );
        assert_eq!(e.runs(), Some(true));
        let stamped = Lifecycle::parse(
            "2026-12-06 14:42:16.225+0000: event 'lifecycle' for domain 'vm': Started Migrated",
        )
        .unwrap();
        assert_eq!(stamped.domain, "vm");
        assert_eq!(stamped.runs(), Some(false), "paused until it resumes");
        let shut = Lifecycle::parse(
            "event 'lifecycle' for domain 'vm': Shutdown Finished after host request",
        )
        .unwrap();
        assert_eq!(shut.detail, "Finished after host request");
        assert_eq!(shut.runs(), Some(false));
        assert_eq!(
            Lifecycle::parse("event 'lifecycle' for domain 'vm': Defined Added")
                .unwrap()
                .runs(),
            None
        );
        assert!(
            Lifecycle::parse("event 'lifecycle' for domain 'vm': Suspended Migrated")
                .unwrap()
                .switching_over()
        );
        assert!(
            !Lifecycle::parse("event 'lifecycle' for domain 'vm': Suspended Paused")
                .unwrap()
                .switching_over(),
            "a pause by hand is no move"
        );
        assert_eq!(Lifecycle::parse("event 'reboot' for domain 'vm'"), None);
        assert_eq!(Lifecycle::parse(""), None);
    }
}
