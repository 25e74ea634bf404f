//! `sessionkit list`: the sessions of a store (or of one user), metadata only.

use std::io::Write;

use clap::Args;
use serde::Serialize;
use sessionkit::{now_millis, Key, Millis, Record};

use super::{call, for_each_record, open_store, AdminResult};
use crate::demo::fmt_time;

/// Arguments of `sessionkit list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// Only the sessions of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// At most this many sessions (0 = all).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of `list` (metadata only: never the session ID, which the store does not have).
#[derive(Serialize, Debug)]
pub struct Row {
    /// The first 16 hex digits of the key hash (what `Manager::revoke` calls a handle).
    pub key: String,
    /// The signed-in user, if any.
    pub user: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created: Millis,
    /// Last use, Unix milliseconds.
    pub last_seen: Millis,
    /// Idle expiry, Unix milliseconds.
    pub expires: Millis,
    /// Record version (number of saves).
    pub version: u64,
    /// Number of data values.
    pub values: usize,
}

impl Row {
    fn of(key: &Key, r: &Record) -> Self {
        Row {
            key: key.short(),
            user: r.user.clone(),
            created: r.created,
            last_seen: r.last_access,
            expires: r.expires_at,
            version: r.version,
            values: r.data.len(),
        }
    }
}

/// `sessionkit list`.
pub async fn list(args: ListArgs) -> AdminResult {
    let store = open_store(&args.store).await?;
    let now = now_millis();
    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    let mut rows = Vec::new();
    match &args.user {
        Some(user) => {
            let mut list = call("sessions_of", store.sessions_of(user, now)).await?;
            list.sort_by_key(|(_, r)| r.created);
            rows.extend(list.iter().take(limit).map(|(k, r)| Row::of(k, r)));
        }
        None => {
            for_each_record(&*store, limit.min(1000), now, |k, r| {
                rows.push(Row::of(k, r));
                rows.len() < limit
            })
            .await?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&rows).expect("plain struct"));
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<16}  {:<20}  {:<23}  {:<23}  {:<23}",
        "KEY", "USER", "CREATED", "LAST SEEN", "EXPIRES"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<16}  {:<20}  {:<23}  {:<23}  {:<23}",
            r.key,
            r.user.as_deref().unwrap_or("-"),
            fmt_time(r.created),
            fmt_time(r.last_seen),
            fmt_time(r.expires)
        );
    }
    let _ = writeln!(out, "{} session(s)", rows.len());
    Ok(())
}
