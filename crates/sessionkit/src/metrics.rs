//! What the [`Manager`](crate::Manager) reports through the [`metrics`](https://docs.rs/metrics)
//! facade (cargo feature `metrics`; without it every function here compiles to nothing).
//!
//! The manager calls these from its existing code paths; the application installs whichever
//! recorder it likes (e.g. a Prometheus exporter). Names follow Prometheus conventions:
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `sessionkit_sessions_created_total` | counter | |
//! | `sessionkit_sessions_loaded_total` | counter | |
//! | `sessionkit_sessions_saved_total` | counter | |
//! | `sessionkit_sessions_rotated_total` | counter | |
//! | `sessionkit_sessions_destroyed_total` | counter | |
//! | `sessionkit_conflicts_retried_total` | counter | |
//! | `sessionkit_gc_removed_total` | counter | |
//! | `sessionkit_store_errors_total` | counter | `store`, `op` |
//! | `sessionkit_store_call_seconds` | histogram | `store`, `op` |
//! | `sessionkit_sessions_live` | gauge (set after each background GC pass) | |

/// Metric names, public so exporters and dashboards need not repeat the strings.
pub mod names {
    /// Sessions written for the first time.
    pub const CREATED: &str = "sessionkit_sessions_created_total";
    /// Requests that found a live stored session.
    pub const LOADED: &str = "sessionkit_sessions_loaded_total";
    /// Successful compare-and-set saves.
    pub const SAVED: &str = "sessionkit_sessions_saved_total";
    /// Successful ID rotations (login, `cycle_id`, periodic).
    pub const ROTATED: &str = "sessionkit_sessions_rotated_total";
    /// Sessions ended (logout, revoke).
    pub const DESTROYED: &str = "sessionkit_sessions_destroyed_total";
    /// Saves that lost a race and were replayed on fresh data.
    pub const CONFLICTS: &str = "sessionkit_conflicts_retried_total";
    /// Expired records removed by GC.
    pub const GC_REMOVED: &str = "sessionkit_gc_removed_total";
    /// Store calls that failed (backend error or timeout; conflicts are not errors).
    pub const STORE_ERRORS: &str = "sessionkit_store_errors_total";
    /// Store call latency in seconds.
    pub const STORE_LATENCY: &str = "sessionkit_store_call_seconds";
    /// Live sessions, as counted after each background GC pass.
    pub const LIVE: &str = "sessionkit_sessions_live";
}

#[cfg(feature = "metrics")]
mod imp {
    use super::names;
    use std::time::Duration;

    pub(crate) fn describe() {
        use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        // Describing is idempotent and cheap; done once per manager.
        describe_counter!(names::CREATED, "Sessions written for the first time");
        describe_counter!(names::LOADED, "Requests that found a live stored session");
        describe_counter!(names::SAVED, "Successful compare-and-set saves");
        describe_counter!(names::ROTATED, "Session ID rotations");
        describe_counter!(names::DESTROYED, "Sessions ended (logout, revoke)");
        describe_counter!(names::CONFLICTS, "Saves replayed after losing a race");
        describe_counter!(names::GC_REMOVED, "Expired records removed by GC");
        describe_counter!(names::STORE_ERRORS, "Failed store calls");
        describe_histogram!(names::STORE_LATENCY, Unit::Seconds, "Store call latency");
        describe_gauge!(names::LIVE, "Live sessions after the last GC pass");
    }

    pub(crate) fn count(name: &'static str, n: u64) {
        ::metrics::counter!(name).increment(n);
    }

    pub(crate) fn store_call(store: &'static str, op: &'static str, took: Duration, ok: bool) {
        ::metrics::histogram!(names::STORE_LATENCY, "store" => store, "op" => op)
            .record(took.as_secs_f64());
        if !ok {
            ::metrics::counter!(names::STORE_ERRORS, "store" => store, "op" => op).increment(1);
        }
    }

    pub(crate) fn live(n: u64) {
        ::metrics::gauge!(names::LIVE).set(n as f64);
    }

    /// The per-request metrics of one manager, registered once when it is built: looking a
    /// metric up by name and labels on every call (what the macros do) was about a tenth of a
    /// memory-store request's server time in the demo. They report to the recorder installed
    /// when the manager was built, so install it first (as one does at startup).
    pub(crate) struct Handles {
        loaded: ::metrics::Counter,
        created: ::metrics::Counter,
        saved: ::metrics::Counter,
        rotated: ::metrics::Counter,
        conflicts: ::metrics::Counter,
        /// (op, latency, errors) of the store calls a request makes; others use the macros.
        calls: Vec<(&'static str, ::metrics::Histogram, ::metrics::Counter)>,
        store: &'static str,
    }

    impl Handles {
        pub(crate) fn new(store: &'static str) -> Self {
            let calls = ["load", "save", "create", "touch", "rotate"]
                .into_iter()
                .map(|op| {
                    (
                        op,
                        ::metrics::histogram!(names::STORE_LATENCY, "store" => store, "op" => op),
                        ::metrics::counter!(names::STORE_ERRORS, "store" => store, "op" => op),
                    )
                })
                .collect();
            Self {
                loaded: ::metrics::counter!(names::LOADED),
                created: ::metrics::counter!(names::CREATED),
                saved: ::metrics::counter!(names::SAVED),
                rotated: ::metrics::counter!(names::ROTATED),
                conflicts: ::metrics::counter!(names::CONFLICTS),
                calls,
                store,
            }
        }

        pub(crate) fn loaded(&self) {
            self.loaded.increment(1);
        }
        pub(crate) fn created(&self) {
            self.created.increment(1);
        }
        pub(crate) fn saved(&self) {
            self.saved.increment(1);
        }
        pub(crate) fn rotated(&self) {
            self.rotated.increment(1);
        }
        pub(crate) fn conflict_retried(&self) {
            self.conflicts.increment(1);
        }

        pub(crate) fn store_call(&self, op: &'static str, took: Duration, ok: bool) {
            match self.calls.iter().find(|(o, _, _)| *o == op) {
                Some((_, latency, errors)) => {
                    latency.record(took.as_secs_f64());
                    if !ok {
                        errors.increment(1);
                    }
                }
                None => store_call(self.store, op, took, ok),
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    pub(crate) fn describe() {}
    pub(crate) fn count(_name: &'static str, _n: u64) {}
    pub(crate) fn live(_n: u64) {}

    pub(crate) struct Handles;

    impl Handles {
        pub(crate) fn new(_store: &'static str) -> Self {
            Self
        }
        pub(crate) fn loaded(&self) {}
        pub(crate) fn created(&self) {}
        pub(crate) fn saved(&self) {}
        pub(crate) fn rotated(&self) {}
        pub(crate) fn conflict_retried(&self) {}
        pub(crate) fn store_call(&self, _op: &'static str, _took: Duration, _ok: bool) {}
    }
}

pub(crate) use imp::{describe, live, Handles};

/// True when this build reports metrics (the `metrics` feature is on).
pub const ENABLED: bool = cfg!(feature = "metrics");

pub(crate) fn destroyed(n: u64) {
    imp::count(names::DESTROYED, n);
}
pub(crate) fn gc_removed(n: u64) {
    imp::count(names::GC_REMOVED, n);
}
