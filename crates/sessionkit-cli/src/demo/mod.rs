//! The demo web app behind `sessionkit serve`: a visit counter, login/logout, "who am I", and
//! the user's active sessions, all on one [`Manager`](sessionkit::Manager), on axum or
//! actix-web ([`Framework`]) with the same HTTP contract. It is written down in `docs/HTTP.md`
//! at the repository root (the tests depend on it): every response of a session carries
//! `X-CSRF-Token`, refusals included; a POST without the matching token (form field
//! `csrf_token` or header `X-CSRF-Token`) is refused with 403; probes and 404s are outside the
//! session layer and never create a session.
//!
//! [`pages`] holds everything the pages do, once; [`axum`] and [`actix`] are thin adapters
//! from each framework's requests to those functions and back.

pub mod actix;
pub mod axum;
pub mod pages;

pub use self::axum::{app, app_with};
pub use pages::fmt_time;

/// Settings of the demo beyond the manager's.
#[derive(Clone, Copy, Debug, Default)]
pub struct DemoOptions {
    /// Take the client's address from the last `X-Forwarded-For` entry, the one the proxy in
    /// front appended (behind a proxy that sets it); otherwise the peer address is used and
    /// the header ignored, since any client can send it.
    pub trust_forwarded_for: bool,
}

/// The web framework the demo runs on (`serve --framework`); both serve the same contract.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Framework {
    /// axum, through the tower `SessionLayer`.
    #[default]
    Axum,
    /// actix-web, through `SessionMiddleware`.
    Actix,
}
