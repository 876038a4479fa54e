//! db_reader: serves the `testcounter` table written by db-writer over HTTP.
//!
//! `GET /` newest rows first as text (`YYYY-mm-dd HH:MM:SS: content` lines), `GET /messages` the
//! same as JSON with keyset pagination, `GET /healthz` 200 when the database answers, else 503.
//! The database being down is a 503 per request, never a crash: the pool reconnects by itself.

mod format;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use format::PgTimestamp;

const USAGE: &str = "\
usage: db_reader <port>

Serves the testcounter table over HTTP on 0.0.0.0:<port>:
  GET /                          newest first, one 'YYYY-mm-dd HH:MM:SS: content' line per row (?limit=1..10000, default 1000)
  GET /messages?limit=&before=   JSON {\"messages\":[{\"id\",\"content\",\"date\"}],\"next_before\":id|null}
  GET /healthz                   200 when the database answers, 503 when not
environment:
  DATABASE_URL   libpq URL, e.g. postgresql://postgres@127.0.0.1:5432/testdb (required)
";

/// Requests fail fast while the database is down instead of piling up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound for one request's database work (10,000 long rows still fit comfortably).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_SIZE: usize = 16;
/// After SIGTERM, in-flight requests get this long before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

macro_rules! log {
    ($($arg:tt)*) => { eprintln!("db_reader: {}", format_args!($($arg)*)) };
}

const SQL_NEWEST: &str =
    "SELECT id::int8, content, date::timestamp FROM testcounter ORDER BY id DESC LIMIT $1";
const SQL_BEFORE: &str = "SELECT id::int8, content, date::timestamp FROM testcounter \
     WHERE id < $2::int8 ORDER BY id DESC LIMIT $1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.as_slice(), [a] if a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let port = match format::parse_port(&args) {
        Ok(port) => port,
        Err(e) => return usage_error(&e),
    };
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => return usage_error("DATABASE_URL is not set"),
    };
    // The error never echoes the URL: it may hold a password.
    let mut pg_config: tokio_postgres::Config = match url.parse() {
        Ok(c) => c,
        Err(e) => return usage_error(&format!("invalid DATABASE_URL: {e}")),
    };
    if pg_config.get_connect_timeout().is_none() {
        pg_config.connect_timeout(CONNECT_TIMEOUT);
    }
    if pg_config.get_application_name().is_none() {
        pg_config.application_name("db_reader");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(port, pg_config))
}

fn usage_error(reason: &str) -> ExitCode {
    eprint!("db_reader: {reason}\n{USAGE}");
    ExitCode::from(2)
}

fn describe(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", c.get_dbname().unwrap_or("(default)"))
}

async fn serve(port: u16, pg_config: tokio_postgres::Config) -> ExitCode {
    let target = describe(&pg_config);
    // NoTls: the database is on the same host (loopback or a Unix socket); see docs/db-reader.md.
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        // Fast: a connection the server closed (restart) is detected as closed and replaced.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = match Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            log!("cannot create the connection pool: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown_signal();
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => l,
        Err(e) => {
            log!("cannot listen on 0.0.0.0:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The database need not be up yet: connections are made on demand.
    log!("listening on 0.0.0.0:{port}, database {target}");
    let app = Router::new()
        .route("/", get(text))
        .route("/messages", get(messages))
        .route("/healthz", get(healthz))
        .with_state(pool.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    pool.close();
    match result {
        Ok(()) => {
            log!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGTERM/SIGINT handlers now (before the port is open, so no early signal is lost
/// to the default action) and returns a future that resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers =
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
    async move {
        let (mut term, mut int) = match handlers {
            Ok(h) => h,
            Err(e) => {
                log!("cannot install signal handlers ({e}); SIGTERM will kill without a graceful shutdown");
                return std::future::pending().await;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log!("{name}: finishing in-flight requests");
        tokio::spawn(async {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            log!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; exiting");
            std::process::exit(0);
        });
    }
}

enum AppError {
    BadRequest(String),
    /// The database cannot be reached, is shutting down, or timed out: retrying later may work.
    Unavailable(String),
    /// The database answered with an error that retrying will not fix (schema, permissions).
    QueryFailed(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
        match self {
            AppError::BadRequest(reason) => (
                StatusCode::BAD_REQUEST,
                plain,
                format!("bad request: {reason}\n"),
            )
                .into_response(),
            AppError::Unavailable(reason) => {
                log!("database unavailable: {reason}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    plain,
                    "database unavailable\n",
                )
                    .into_response()
            }
            AppError::QueryFailed(reason) => {
                log!("query failed: {reason}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    plain,
                    "database query failed\n",
                )
                    .into_response()
            }
        }
    }
}

impl From<PoolError> for AppError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Timeout(_) => {
                AppError::Unavailable("timed out getting a connection".to_string())
            }
            PoolError::Backend(e) => AppError::Unavailable(with_causes(&e)),
            other => AppError::Unavailable(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        // No SQLSTATE means an I/O or protocol failure (e.g. the server went away mid-query).
        // Classes 08 (connection), 53 (resources), 57 (shutdown, starting up) are transient too.
        let transient = match e.code() {
            None => true,
            Some(code) => ["08", "53", "57"]
                .iter()
                .any(|class| code.code().starts_with(class)),
        };
        if transient || e.is_closed() {
            AppError::Unavailable(with_causes(&e))
        } else {
            AppError::QueryFailed(with_causes(&e))
        }
    }
}

/// tokio-postgres keeps the useful part ("Connection refused", the server's message) in the
/// error's source chain; logs show all of it on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

struct Message {
    id: i64,
    content: String,
    date: PgTimestamp,
}

/// Newest rows first. A missing table (the writer has not created it yet) reads as empty.
async fn fetch(pool: &Pool, limit: i64, before: Option<i64>) -> Result<Vec<Message>, AppError> {
    let work = async {
        let client = pool.get().await?;
        let result = match before {
            None => match client.prepare_cached(SQL_NEWEST).await {
                Ok(stmt) => client.query(&stmt, &[&limit]).await,
                Err(e) => Err(e),
            },
            Some(before) => match client.prepare_cached(SQL_BEFORE).await {
                Ok(stmt) => client.query(&stmt, &[&limit, &before]).await,
                Err(e) => Err(e),
            },
        };
        let rows = match result {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Vec::new()),
            Err(e) => return Err(AppError::from(e)),
        };
        rows.iter()
            .map(|row| {
                // try_get, not get: a surprising schema must give an error response, not a panic.
                Ok(Message {
                    id: row.try_get(0)?,
                    content: row.try_get(1)?,
                    date: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| {
                AppError::QueryFailed(format!("unexpected testcounter row: {}", with_causes(&e)))
            })
    };
    match tokio::time::timeout(QUERY_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(AppError::Unavailable(format!(
            "query timed out after {QUERY_TIMEOUT:?}"
        ))),
    }
}

type Params = Query<HashMap<String, String>>;

async fn text(State(pool): State<Pool>, Query(params): Params) -> Result<Response, AppError> {
    let limit = format::parse_limit(
        params.get("limit").map(String::as_str),
        format::DEFAULT_TEXT_LIMIT,
    )
    .map_err(AppError::BadRequest)?;
    let rows = fetch(&pool, limit, None).await?;
    let mut body = String::with_capacity(rows.iter().map(|m| m.content.len() + 22).sum());
    for m in &rows {
        format::push_line(&mut body, m.date, &m.content);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

#[derive(Serialize)]
struct JsonMessage {
    id: i64,
    content: String,
    date: String,
}

#[derive(Serialize)]
struct Page {
    messages: Vec<JsonMessage>,
    next_before: Option<i64>,
}

async fn messages(State(pool): State<Pool>, Query(params): Params) -> Result<Json<Page>, AppError> {
    let limit = format::parse_limit(
        params.get("limit").map(String::as_str),
        format::DEFAULT_JSON_LIMIT,
    )
    .map_err(AppError::BadRequest)?;
    let before = format::parse_before(params.get("before").map(String::as_str))
        .map_err(AppError::BadRequest)?;
    // One row more than asked tells whether another page exists.
    let mut rows = fetch(&pool, limit + 1, before).await?;
    let next_before = format::paginate(&mut rows, limit as usize, |m| m.id);
    let messages = rows
        .into_iter()
        .map(|m| JsonMessage {
            id: m.id,
            date: format::iso_date(m.date),
            content: m.content,
        })
        .collect();
    Ok(Json(Page {
        messages,
        next_before,
    }))
}

async fn healthz(State(pool): State<Pool>) -> Result<&'static str, AppError> {
    let check = async {
        let client = pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok::<_, AppError>(())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT + POOL_WAIT_TIMEOUT, check).await {
        Ok(Ok(())) => Ok("ok\n"),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(AppError::Unavailable("health check timed out".to_string())),
    }
}
