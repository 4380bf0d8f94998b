//! The application layer: what the Manager does, one module per use case,
//! called by the thin HTTP handlers of [`crate::http`] and by `neptune up`.
//!
//! A use case takes the shared [`AppState`](crate::AppState), the
//! [`Caller`](crate::auth::Caller) it acts for and its input, checks who
//! may do it ([`access`]), moves the VI through the lifecycle state machine
//! in the store, and returns the stored records; turning them into API
//! answers is the handlers' business. Nothing here knows about HTTP.
//!
//! ```text
//! design      create and edit a VI from XML, JSON or the catalogue
//! approval    request, withdraw, revise; the plan preview; accept, reject,
//!             deploy again, release
//! placement   plan on a snapshot and commit with the store's checks (the
//!             one retry loop of accept and resume)
//! deploy      the steps that put a placed VI on its hosts; job start
//! suspend     suspend ("hosts freed for future reallocation") and resume
//! terminate   terminate
//! templates   the template a node uses; register; save a VM as a template
//! quota       what a user's VIs take against their quota
//! access      who may see and change a VI or a job
//! ```

pub mod access;
pub mod approval;
pub mod deploy;
pub mod design;
pub mod migrate;
pub mod placement;
pub mod quota;
pub mod suspend;
pub mod switches;
pub mod templates;
pub mod terminate;
