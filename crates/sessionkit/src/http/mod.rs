//! HTTP integration: a tower [`SessionLayer`] and (feature `axum`) an axum extractor, both over
//! the framework-free pair [`Manager::start`](crate::Manager::start) /
//! [`Manager::finish`](crate::Manager::finish).

pub(crate) mod cookie;
mod layer;

#[cfg(feature = "axum")]
mod axum;

pub use cookie::SessionHeaders;
pub use layer::{SessionLayer, SessionService};
