//! The tower-sessions side of sessionkit's durable and shared store benches: the same count
//! page and the same store operations as `sessionkit-bench`'s `backends` bench, on
//! tower-sessions' SQLite, Postgres and MySQL stores (tower-sessions-sqlx-store) and its Redis store
//! (tower-sessions-redis-store). The `backends` bench starts this binary as a child process and
//! reads what it prints; it is not meant to be run by hand, though it can be:
//!
//! - `serve <sqlite|postgres|mysql|redis> <url>`: prints the bound port, then serves `/count` (adds
//!   one to a counter in the session) and `/peek` (reads it) until killed.
//! - `ops <sqlite|postgres|mysql|redis> <url> <workers> <warmup-s> <secs> <sessions>`: makes sure
//!   `<sessions>` sessions exist (ids drawn from a fixed seed, so a second run reuses them), then
//!   drives load, save and touch in turn and prints `<op> <ops> <seconds> <p50_us> <p99_us>
//!   <errors>` per operation. tower-sessions has no touch: extending a session's expiry is a
//!   save of the whole record, so "touch" is a save with a new expiry date.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use sessionkit_bench::ops::{drive, OpsPlan, SEED};
use sessionkit_bench::Rng;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;

/// Which tower-sessions store.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
    MySql,
    Redis,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" => Ok(Self::Postgres),
            "mysql" => Ok(Self::MySql),
            "redis" => Ok(Self::Redis),
            _ => Err(format!("unknown backend {s:?}")),
        }
    }
}

/// The Postgres schema the tower-sessions store uses, so it never meets a real one.
const PG_SCHEMA: &str = "skbench_tower";

async fn count(session: tower_sessions::Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("count")
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        .unwrap_or(0)
        + 1;
    session
        .insert("count", n)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(format!("{n}\n"))
}

async fn peek(session: tower_sessions::Session) -> Result<String, StatusCode> {
    let n: Option<u64> = session
        .get("count")
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(format!("{}\n", n.unwrap_or(0)))
}

/// SQLite with the same durability as sessionkit's default: WAL journal, `synchronous=FULL`.
async fn sqlite_pool(url: &str) -> sqlx::SqlitePool {
    let options = SqliteConnectOptions::from_str(url)
        .expect("sqlite URL")
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(options)
        .await
        .expect("open SQLite")
}

async fn sqlite_store(url: &str) -> tower_sessions_sqlx_store::SqliteStore {
    let store = tower_sessions_sqlx_store::SqliteStore::new(sqlite_pool(url).await);
    store.migrate().await.expect("migrate SQLite");
    store
}

async fn postgres_store(url: &str) -> tower_sessions_sqlx_store::PostgresStore {
    let pool = sqlx::PgPool::connect(url).await.expect("connect Postgres");
    let store = tower_sessions_sqlx_store::PostgresStore::new(pool)
        .with_schema_name(PG_SCHEMA)
        .expect("schema name");
    store.migrate().await.expect("migrate Postgres");
    store
}

/// The MySQL table the tower-sessions store uses (in the URL's database `test`).
const MYSQL_TABLE: &str = "skbench_tower";

async fn mysql_store(url: &str) -> tower_sessions_sqlx_store::MySqlStore {
    let pool = sqlx::MySqlPool::connect(url).await.expect("connect MySQL");
    let store = tower_sessions_sqlx_store::MySqlStore::new(pool)
        .with_schema_name("test")
        .expect("schema name")
        .with_table_name(MYSQL_TABLE)
        .expect("table name");
    store.migrate().await.expect("migrate MySQL");
    store
}

type RedisStore =
    tower_sessions_redis_store::RedisStore<tower_sessions_redis_store::fred::prelude::Pool>;

async fn redis_store(url: &str) -> RedisStore {
    use tower_sessions_redis_store::fred::prelude::*;
    let config = Config::from_url(url).expect("redis URL");
    // The pool size the crate's own example uses.
    let pool = Pool::new(config, None, None, None, 6).expect("redis pool");
    // The connection task runs on its own; its handle is not needed.
    drop(pool.connect());
    pool.wait_for_connect().await.expect("connect Redis");
    tower_sessions_redis_store::RedisStore::new(pool)
}

/// `serve`: one server thread (the driver pins the process to one core).
fn serve(backend: Backend, url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let app = build_app(backend, url).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        axum::serve(listener, app).await.unwrap();
    });
}

fn pages<S: SessionStore + Clone>(store: S) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/peek", get(peek))
        .layer(tower_sessions::SessionManagerLayer::new(store).with_secure(false))
}

async fn build_app(backend: Backend, url: &str) -> Router {
    match backend {
        Backend::Sqlite => pages(sqlite_store(url).await),
        Backend::Postgres => pages(postgres_store(url).await),
        Backend::MySql => pages(mysql_store(url).await),
        Backend::Redis => pages(redis_store(url).await),
    }
}

/// The tower-sessions half of the store-operation bench.
async fn run_ops<S: SessionStore + 'static>(store: S, plan: OpsPlan, n: usize) {
    let mut data = HashMap::new();
    for (k, v) in sessionkit_bench::VALUES {
        data.insert(k.to_owned(), serde_json::from_str(v).expect("valid JSON"));
    }
    let record = Arc::new(move |id: Id| Record {
        id,
        data: data.clone(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(30),
    });
    let store = Arc::new(store);
    let mut rng = Rng::new(SEED);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = Id((u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) as i128);
        // Reuse what an earlier run made while it has 20 minutes to live (a bench run is
        // shorter); refresh or create everything else.
        let mut r = record(id);
        let soon = time::OffsetDateTime::now_utc() + time::Duration::minutes(20);
        match store.load(&id).await.expect("load") {
            Some(old) if old.expiry_date > soon => {}
            Some(_) => store.save(&r).await.expect("save"),
            None => store.create(&mut r).await.expect("create"),
        }
        ids.push(r.id);
    }
    let ids = Arc::new(ids);
    for op in ["load", "save", "touch"] {
        let (store, ids, record) = (store.clone(), ids.clone(), record.clone());
        let out = drive(plan, n, move |i| {
            let (store, record) = (store.clone(), record.clone());
            let id = ids[i];
            async move {
                match op {
                    "load" => match store.load(&id).await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(format!("session {id} missing")),
                        Err(e) => Err(e.to_string()),
                    },
                    // No touch in tower-sessions: a longer expiry is a whole-record
                    // save, so both operations are the same call.
                    _ => store.save(&record(id)).await.map_err(|e| e.to_string()),
                }
            }
        })
        .await;
        println!("{op} {}", out.to_line());
    }
}

/// `ops`: a multi-thread runtime with one thread per worker.
fn ops(backend: Backend, url: &str, args: &[String]) {
    let (plan, n) = OpsPlan::from_args(args).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.workers.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match backend {
            Backend::Sqlite => run_ops(sqlite_store(url).await, plan, n).await,
            Backend::Postgres => run_ops(postgres_store(url).await, plan, n).await,
            Backend::MySql => run_ops(mysql_store(url).await, plan, n).await,
            Backend::Redis => run_ops(redis_store(url).await, plan, n).await,
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tower-stores-bench serve|ops <sqlite|postgres|mysql|redis> <url> [...]";
    if args.len() < 3 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let backend: Backend = args[1].parse().unwrap_or_else(|e| {
        eprintln!("{e}; {usage}");
        std::process::exit(2)
    });
    match args[0].as_str() {
        "serve" => serve(backend, &args[2]),
        "ops" if args.len() == 7 => ops(backend, &args[2], &args[3..]),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
