//! `sessionkit stats`: counts and deadlines of a store's sessions, as text or JSON.

use clap::Args;
use serde::Serialize;
use sessionkit::now_millis;

use super::{call, for_each_record, open_store, redact, AdminResult};

/// Arguments of `sessionkit stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `stats --json` prints.
#[derive(Serialize, Debug)]
pub struct Stats {
    /// Store kind, e.g. `"sqlite"`.
    pub store: &'static str,
    /// Live sessions as the store counts them (`Store::len`).
    pub sessions: u64,
    /// Live sessions with a signed-in user.
    pub authenticated: u64,
    /// Live sessions without a user.
    pub anonymous: u64,
    /// Distinct signed-in users.
    pub users: u64,
    /// Expired records still stored, when the store can tell.
    pub expired_awaiting_gc: Option<u64>,
    /// Total bytes of session data values (keys and values) over live sessions.
    pub data_bytes: u64,
}

/// `sessionkit stats`.
pub async fn stats(args: StatsArgs) -> AdminResult {
    let store = open_store(&args.store).await?;
    let now = now_millis();
    let sessions = call("len", store.len(now)).await?;
    let expired_awaiting_gc = call("expired count", store.expired_awaiting_gc(now)).await?;
    let (mut authenticated, mut anonymous, mut data_bytes) = (0u64, 0u64, 0u64);
    let mut users = std::collections::HashSet::new();
    for_each_record(&*store, 1000, now, |_, r| {
        match &r.user {
            Some(u) => {
                authenticated += 1;
                if !users.contains(u.as_str()) {
                    users.insert(u.clone());
                }
            }
            None => anonymous += 1,
        }
        data_bytes += r
            .data
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        true
    })
    .await?;
    let s = Stats {
        store: store.kind(),
        sessions,
        authenticated,
        anonymous,
        users: users.len() as u64,
        expired_awaiting_gc,
        data_bytes,
    };
    if args.json {
        println!("{}", serde_json::to_string(&s).expect("plain struct"));
    } else {
        println!("store:               {} ({})", s.store, redact(&args.store));
        println!("live sessions:       {}", s.sessions);
        println!("  authenticated:     {}", s.authenticated);
        println!("  anonymous:         {}", s.anonymous);
        println!("distinct users:      {}", s.users);
        match s.expired_awaiting_gc {
            Some(n) => println!("expired awaiting GC: {n}"),
            None => println!(
                "expired awaiting GC: unknown (the {} store cannot tell)",
                s.store
            ),
        }
        println!("session data bytes:  {}", s.data_bytes);
    }
    Ok(())
}
