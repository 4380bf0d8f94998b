//! The Virtual Infrastructure lifecycle: the paper's Fig. 2 (define ->
//! request -> accept -> allocate -> run -> suspend "for future reallocation"
//! or terminate), extended with the states a production system needs while
//! long operations run and when they fail.
//!
//! ```text
//!            request           accept            deploy
//!  defined ──────────► requested ──────► accepted ───────► deploying ──► running ◄──┐
//!     ▲  ◄── withdraw ──┘  │ reject         ▲  rolled back ──┘   │  suspend│ migrate │
//!     └── revise ── rejected◄┘              │                    │         ▼         │
//!                                                      suspended ◄─ suspending   migrating
//!                                                          │ resume ─► resuming ──────┘
//!  terminate: defined/requested/rejected ─► terminated (nothing is held)
//!             accepted/running/suspended/failed ─► terminating ─► terminated
//!  fail: any operation in progress, or running ─► failed
//! ```
//!
//! Pure: [`transition`] computes; the Manager records. Operations in progress
//! (deploying, suspending, resuming, migrating, terminating) end with
//! [`Event::Succeeded`], with [`Event::RolledBack`] when a step failed and its
//! undo restored the previous state, or with [`Event::Fail`] when it could not.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The state of a Virtual Infrastructure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViState {
    Defined,
    Requested,
    Accepted,
    Rejected,
    Deploying,
    Running,
    Suspending,
    Suspended,
    Resuming,
    Migrating,
    Terminating,
    Terminated,
    Failed,
}

/// Something that happens to a Virtual Infrastructure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The owner changes the design.
    Edit,
    /// The owner asks for the VI to be allocated.
    Request,
    /// The owner takes a pending request back to edit it.
    Withdraw,
    /// An administrator accepts the request.
    Accept,
    /// An administrator rejects the request.
    Reject,
    /// The owner takes a rejected design back to edit it.
    Revise,
    /// Deployment of an accepted VI starts (again, after one rolled back).
    Deploy,
    /// An administrator gives an accepted VI's hosts and addresses back:
    /// the request waits in the queue again (after a deploy rolled back).
    Release,
    Suspend,
    Resume,
    /// Move the VI to another datacenter.
    Migrate,
    Terminate,
    /// The operation in progress finished.
    Succeeded,
    /// The operation in progress failed and its undo restored the state before it.
    RolledBack,
    /// The operation in progress failed and could not be undone, or a running VI broke.
    Fail,
}

impl Event {
    pub const ALL: [Event; 15] = [
        Event::Edit,
        Event::Request,
        Event::Withdraw,
        Event::Accept,
        Event::Reject,
        Event::Revise,
        Event::Deploy,
        Event::Release,
        Event::Suspend,
        Event::Resume,
        Event::Migrate,
        Event::Terminate,
        Event::Succeeded,
        Event::RolledBack,
        Event::Fail,
    ];

    fn verb(self) -> &'static str {
        match self {
            Event::Edit => "edit",
            Event::Request => "request",
            Event::Withdraw => "withdraw",
            Event::Accept => "accept",
            Event::Reject => "reject",
            Event::Revise => "revise",
            Event::Deploy => "deploy",
            Event::Release => "release",
            Event::Suspend => "suspend",
            Event::Resume => "resume",
            Event::Migrate => "migrate",
            Event::Terminate => "terminate",
            Event::Succeeded => "complete an operation on",
            Event::RolledBack => "roll back an operation on",
            Event::Fail => "fail",
        }
    }
}

impl ViState {
    pub const ALL: [ViState; 13] = [
        ViState::Defined,
        ViState::Requested,
        ViState::Accepted,
        ViState::Rejected,
        ViState::Deploying,
        ViState::Running,
        ViState::Suspending,
        ViState::Suspended,
        ViState::Resuming,
        ViState::Migrating,
        ViState::Terminating,
        ViState::Terminated,
        ViState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ViState::Defined => "defined",
            ViState::Requested => "requested",
            ViState::Accepted => "accepted",
            ViState::Rejected => "rejected",
            ViState::Deploying => "deploying",
            ViState::Running => "running",
            ViState::Suspending => "suspending",
            ViState::Suspended => "suspended",
            ViState::Resuming => "resuming",
            ViState::Migrating => "migrating",
            ViState::Terminating => "terminating",
            ViState::Terminated => "terminated",
            ViState::Failed => "failed",
        }
    }

    /// An operation (a job) is in progress; only its outcome moves the VI on.
    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            ViState::Deploying
                | ViState::Suspending
                | ViState::Resuming
                | ViState::Migrating
                | ViState::Terminating
        )
    }

    /// Terminated is final: nothing leaves it.
    pub fn is_final(self) -> bool {
        self == ViState::Terminated
    }

    /// The VI has VMs placed on hosts (suspended VIs free their hosts "for
    /// future reallocation").
    pub fn occupies_hosts(self) -> bool {
        matches!(
            self,
            ViState::Deploying
                | ViState::Running
                | ViState::Suspending
                | ViState::Resuming
                | ViState::Migrating
                | ViState::Terminating
                | ViState::Failed
        )
    }

    pub fn can_edit(self) -> bool {
        self.next(Event::Edit).is_ok()
    }
    pub fn can_request(self) -> bool {
        self.next(Event::Request).is_ok()
    }
    pub fn can_accept(self) -> bool {
        self.next(Event::Accept).is_ok()
    }
    pub fn can_reject(self) -> bool {
        self.next(Event::Reject).is_ok()
    }
    pub fn can_deploy(self) -> bool {
        self.next(Event::Deploy).is_ok()
    }
    pub fn can_suspend(self) -> bool {
        self.next(Event::Suspend).is_ok()
    }
    pub fn can_resume(self) -> bool {
        self.next(Event::Resume).is_ok()
    }
    pub fn can_migrate(self) -> bool {
        self.next(Event::Migrate).is_ok()
    }
    pub fn can_terminate(self) -> bool {
        self.next(Event::Terminate).is_ok()
    }

    /// The state after `event`, or why the event is refused.
    pub fn next(self, event: Event) -> Result<ViState, TransitionRefused> {
        transition(self, event)
    }
}

impl fmt::Display for ViState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot {verb} a VI that is {from}: {reason}", verb = event.verb())]
pub struct TransitionRefused {
    pub from: ViState,
    pub event: Event,
    pub reason: &'static str,
}

/// The lifecycle's transition function.
pub fn transition(from: ViState, event: Event) -> Result<ViState, TransitionRefused> {
    use Event as E;
    use ViState as S;
    let to = match (from, event) {
        (S::Defined, E::Edit) => S::Defined,
        (S::Defined, E::Request) => S::Requested,
        (S::Requested, E::Withdraw) => S::Defined,
        (S::Requested, E::Accept) => S::Accepted,
        (S::Requested, E::Reject) => S::Rejected,
        (S::Rejected, E::Revise) => S::Defined,
        (S::Accepted, E::Deploy) => S::Deploying,
        (S::Accepted, E::Release) => S::Requested,
        (S::Running, E::Suspend) => S::Suspending,
        (S::Suspended, E::Resume) => S::Resuming,
        (S::Running, E::Migrate) => S::Migrating,

        (S::Defined | S::Requested | S::Rejected, E::Terminate) => S::Terminated,
        (S::Accepted | S::Running | S::Suspended | S::Failed, E::Terminate) => S::Terminating,

        (S::Deploying, E::Succeeded) => S::Running,
        (S::Suspending, E::Succeeded) => S::Suspended,
        (S::Resuming, E::Succeeded) => S::Running,
        (S::Migrating, E::Succeeded) => S::Running,
        (S::Terminating, E::Succeeded) => S::Terminated,

        (S::Deploying, E::RolledBack) => S::Accepted,
        (S::Suspending, E::RolledBack) => S::Running,
        (S::Resuming, E::RolledBack) => S::Suspended,
        (S::Migrating, E::RolledBack) => S::Running,

        (s, E::Fail) if s.is_in_progress() || s == S::Running => S::Failed,

        (from, event) => return Err(refusal(from, event)),
    };
    Ok(to)
}

fn refusal(from: ViState, event: Event) -> TransitionRefused {
    use Event as E;
    use ViState as S;
    let reason = match (from, event) {
        (S::Terminated, _) => "a terminated VI is final",
        (s, E::Terminate) if s.is_in_progress() => {
            "wait until the operation in progress finishes or fails"
        }
        (s, E::Succeeded | E::RolledBack | E::Fail) if !s.is_in_progress() => {
            "no operation is in progress"
        }
        (S::Terminating, E::RolledBack) => "termination is never undone; it is retried or fails",
        (_, E::Edit) => "only a defined VI can be edited (withdraw or revise it first)",
        (_, E::Request) => "only a defined VI can be requested",
        (_, E::Withdraw) => "only a requested VI can be withdrawn",
        (_, E::Accept) => "only a requested VI can be accepted",
        (_, E::Reject) => "only a requested VI can be rejected",
        (_, E::Revise) => "only a rejected VI can be revised",
        (_, E::Deploy) => "only an accepted VI can be deployed",
        (_, E::Release) => "only an accepted VI can be released",
        (_, E::Suspend) => "only a running VI can be suspended",
        (_, E::Resume) => "only a suspended VI can be resumed",
        (_, E::Migrate) => "only a running VI can be migrated",
        _ => "the lifecycle does not allow it",
    };
    TransitionRefused {
        from,
        event,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};

    use proptest::prelude::*;

    use super::*;

    fn reachable_from(start: ViState) -> BTreeSet<ViState> {
        let mut seen = BTreeSet::from([start]);
        let mut queue = VecDeque::from([start]);
        while let Some(s) = queue.pop_front() {
            for e in Event::ALL {
                if let Ok(t) = transition(s, e) {
                    if seen.insert(t) {
                        queue.push_back(t);
                    }
                }
            }
        }
        seen
    }

    #[test]
    fn paper_happy_path() {
        let mut s = ViState::Defined;
        for e in [
            Event::Request,
            Event::Accept,
            Event::Deploy,
            Event::Succeeded,
        ] {
            s = s.next(e).unwrap();
        }
        assert_eq!(s, ViState::Running);
        s = s
            .next(Event::Suspend)
            .unwrap()
            .next(Event::Succeeded)
            .unwrap();
        assert_eq!(s, ViState::Suspended);
        assert!(
            !s.occupies_hosts(),
            "suspended frees hosts for future reallocation"
        );
        s = s
            .next(Event::Resume)
            .unwrap()
            .next(Event::Succeeded)
            .unwrap();
        assert_eq!(s, ViState::Running);
        s = s
            .next(Event::Terminate)
            .unwrap()
            .next(Event::Succeeded)
            .unwrap();
        assert_eq!(s, ViState::Terminated);
    }

    #[test]
    fn refusals_explain() {
        let err = ViState::Running.next(Event::Accept).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot accept a VI that is running: only a requested VI can be accepted"
        );
        let err = ViState::Terminated.next(Event::Terminate).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot terminate a VI that is terminated: a terminated VI is final"
        );
        let err = ViState::Deploying.next(Event::Terminate).unwrap_err();
        assert!(err.reason.contains("wait"), "{err}");
    }

    #[test]
    fn predicates_match_transitions() {
        for s in ViState::ALL {
            assert_eq!(s.can_accept(), s == ViState::Requested);
            assert_eq!(s.can_edit(), s == ViState::Defined);
            assert_eq!(s.can_resume(), s == ViState::Suspended);
            assert_eq!(
                s.can_terminate(),
                !s.is_in_progress() && !s.is_final(),
                "{s}"
            );
        }
    }

    #[test]
    fn every_state_reaches_terminated() {
        for s in ViState::ALL {
            assert!(
                reachable_from(s).contains(&ViState::Terminated),
                "{s} cannot reach terminated"
            );
        }
    }

    #[test]
    fn terminated_is_final() {
        for e in Event::ALL {
            assert!(transition(ViState::Terminated, e).is_err());
        }
        assert_eq!(
            reachable_from(ViState::Terminated),
            BTreeSet::from([ViState::Terminated])
        );
    }

    #[test]
    fn every_state_is_reachable_from_defined() {
        assert_eq!(reachable_from(ViState::Defined).len(), ViState::ALL.len());
    }

    #[test]
    fn json_names() {
        assert_eq!(
            serde_json::to_string(&ViState::Suspended).unwrap(),
            "\"suspended\""
        );
        assert_eq!(
            serde_json::to_string(&Event::RolledBack).unwrap(),
            "\"rolled_back\""
        );
    }

    fn event() -> impl Strategy<Value = Event> {
        proptest::sample::select(Event::ALL.to_vec())
    }

    proptest! {
        /// Whatever happens, a VI never runs or deploys without having been
        /// accepted since it was last defined.
        #[test]
        fn nothing_runs_without_acceptance(events in proptest::collection::vec(event(), 0..60)) {
            let mut state = ViState::Defined;
            let mut accepted = false;
            for e in events {
                let Ok(next) = transition(state, e) else { continue };
                if next == ViState::Accepted {
                    accepted = true;
                }
                if matches!(next, ViState::Defined | ViState::Rejected) {
                    accepted = false;
                }
                if next.occupies_hosts() || next == ViState::Suspended {
                    prop_assert!(accepted, "{state} -{e:?}-> {next} without acceptance");
                }
                state = next;
            }
        }

        /// Refusals leave nothing half-done: a refused event names the state it came from.
        #[test]
        fn refusals_are_total(s in proptest::sample::select(ViState::ALL.to_vec()), e in event()) {
            match transition(s, e) {
                Ok(_) => {}
                Err(r) => {
                    prop_assert_eq!(r.from, s);
                    prop_assert_eq!(r.event, e);
                    prop_assert!(!r.reason.is_empty());
                }
            }
        }
    }
}
