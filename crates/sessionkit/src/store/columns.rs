//! The columns a SQL store keeps beside a record's encoded payload, computed from the record in
//! one place, so that every statement of every SQL store (create, save, rotate, the test hook)
//! stores the same values for the same record.
//!
//! The payload is the whole record ([`Record::encode`]); the other columns are copies of its
//! fields that SQL must see: deadlines for expiry and GC, the user for the user index, the
//! version for compare-and-set, and whether the row is a rotation alias.

use crate::id::Key;
use crate::record::{Millis, Record};

/// One record's row, ready to bind.
pub(crate) struct Columns<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) version: i64,
    pub(crate) created: Millis,
    pub(crate) last_access: Millis,
    pub(crate) expires_at: Millis,
    pub(crate) absolute_expires_at: Millis,
    pub(crate) user: Option<&'a str>,
    pub(crate) alias: bool,
    pub(crate) payload: Vec<u8>,
}

impl<'a> Columns<'a> {
    /// The row of `record` stored under `key`.
    pub(crate) fn of(key: &'a Key, record: &'a Record) -> Self {
        Self {
            key: &key.0[..],
            version: record.version as i64,
            created: record.created,
            last_access: record.last_access,
            expires_at: record.expires_at,
            absolute_expires_at: record.absolute_expires_at,
            user: record.user.as_deref(),
            alias: record.successor().is_some(),
            payload: record.encode(key),
        }
    }
}
