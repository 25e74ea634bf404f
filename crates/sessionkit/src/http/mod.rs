//! HTTP integration: a tower [`SessionLayer`] and (feature `axum`) an axum extractor, both over
//! the framework-free pair [`Manager::start`](crate::Manager::start) /
//! [`Manager::finish`](crate::Manager::finish).

mod layer;

#[cfg(feature = "axum")]
mod axum;

pub use crate::token::SessionHeaders;
pub use layer::{SessionLayer, SessionService};
