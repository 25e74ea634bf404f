//! `sessionkit gc`: one full garbage-collection pass over a store.

use clap::Args;

use super::{manager, open_store, AdminResult, Failure};

/// Arguments of `sessionkit gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// Print `{"removed": N}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `sessionkit gc`: one full pass.
pub async fn gc(args: GcArgs) -> AdminResult {
    let store = open_store(&args.store).await?;
    let removed = manager(store)?
        .gc_once()
        .await
        .map_err(|e| Failure::runtime(format!("gc: {e}")))?;
    if args.json {
        println!("{}", serde_json::json!({ "removed": removed }));
    } else {
        println!("removed {removed} expired record(s)");
    }
    Ok(())
}
