//! `sessionkit revoke --user NAME`: ends every session of a user.

use clap::Args;

use super::{manager, open_store, AdminResult, Failure};

/// Arguments of `sessionkit revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// Store URL.
    #[arg(long)]
    pub store: String,
    /// End every session of this user.
    #[arg(long)]
    pub user: String,
    /// Print `{"user": ..., "revoked": N}` instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `sessionkit revoke --user NAME`.
pub async fn revoke(args: RevokeArgs) -> AdminResult {
    if args.user.is_empty() {
        return Err(Failure::usage("--user must not be empty"));
    }
    let store = open_store(&args.store).await?;
    let n = manager(store)?
        .revoke_all(&args.user)
        .await
        .map_err(|e| Failure::runtime(format!("revoke: {e}")))?;
    if args.json {
        println!("{}", serde_json::json!({ "user": args.user, "revoked": n }));
    } else {
        println!("ended {n} session(s) of {}", args.user);
    }
    Ok(())
}
