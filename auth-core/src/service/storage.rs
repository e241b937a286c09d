//! Storage: one sqlx `AnyPool` on SQLite (the default: a file under the data directory, created
//! if missing, WAL mode, bundled SQLite) or PostgreSQL (a `postgres://` URL), and migrations with
//! one set per backend. Queries use `$1`-style placeholders, which both backends accept, and
//! portable types, so one query text serves both: TEXT, and 64-bit integers (SQLite `INTEGER`,
//! PostgreSQL `BIGINT`, decoded as `i64`). Booleans are stored as integers 0/1: the Any driver
//! cannot decode SQLite's `BOOLEAN`. Timestamps are RFC 3339 TEXT.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

use super::config::DatabaseSettings;

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("database.url: unsupported scheme (use postgres:// or sqlite://)")]
    Scheme,
    /// The data directory could not be created.
    #[error("database.data_dir: cannot create {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("database: cannot connect: {0}")]
    Connect(sqlx::Error),
    /// A migration failed.
    #[error("database: migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// A PostgreSQL URL's query holds a parameter sqlx does not read. sqlx would log its value
    /// (a misspelt `password`, libpq's `sslpassword`) and go on without it; the key is named
    /// here, never the value; `None` when the name does not look like a parameter's (it may be
    /// part of a password holding a `&`).
    #[error(
        "database.url: {} (sqlx reads sslmode, sslrootcert, sslcert, sslkey, host, hostaddr, port, dbname, user, password, application_name, options, statement-cache-capacity)",
        unknown_parameter(.0.as_deref())
    )]
    Parameter(Option<String>),
    /// An in-memory SQLite database: one per pooled connection, so tables migrated on one
    /// are missing on the others, and its data goes when a connection is recycled.
    #[error(
        "database.url: an in-memory SQLite database is one per connection and is lost when the connection closes; name a file (or leave database.url unset)"
    )]
    InMemory,
}

/// A connection pool and its backend.
#[derive(Debug, Clone)]
pub struct Database {
    /// The pool; queries use `$1` placeholders.
    pub pool: AnyPool,
    /// The backend behind it.
    pub backend: Backend,
}

impl Database {
    /// Opens the database `settings` name, for `service` (the SQLite file is `<data_dir>/<service>.db`).
    pub async fn connect(
        settings: &DatabaseSettings,
        service: &str,
    ) -> Result<Database, StorageError> {
        install_default_drivers();
        let url = match &settings.url {
            Some(url) => url.expose_secret().to_owned(),
            None => {
                let dir = &settings.data_dir;
                std::fs::create_dir_all(dir).map_err(|source| StorageError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
                sqlite_url(&dir.join(format!("{service}.db")))
            }
        };
        Self::connect_url(
            &url,
            settings.max_connections,
            Duration::from_secs(settings.acquire_timeout_seconds),
            settings.statement_timeout(),
        )
        .await
    }

    /// Opens a database by URL. `statement_timeout` is PostgreSQL's (`SET statement_timeout` on
    /// every connection; `None` leaves the server's own); on SQLite a write waits for the lock
    /// at most `acquire_timeout`.
    pub async fn connect_url(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
        statement_timeout: Option<Duration>,
    ) -> Result<Database, StorageError> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StorageError::Scheme);
        };
        check_url(url, backend)?;
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout);
        if backend == Backend::Sqlite {
            // A write waits for a lock at most as long as a request waits for a connection.
            let pragmas = format!(
                "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
                acquire_timeout.as_millis()
            );
            options = options.after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    conn.execute(pragmas.as_str()).await?;
                    Ok(())
                })
            });
        } else if let Some(timeout) = statement_timeout {
            // A statement the request gave up on (`server.request_timeout_seconds`) is stopped
            // by the server, rather than running on with its connection and locks.
            let set = format!("SET statement_timeout = {}", timeout.as_millis().max(1));
            options = options.after_connect(move |conn, _| {
                let set = set.clone();
                Box::pin(async move {
                    conn.execute(set.as_str()).await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await.map_err(StorageError::Connect)?;
        if backend == Backend::Sqlite {
            // WAL is a property of the file: set once, kept.
            pool.execute("PRAGMA journal_mode = WAL;")
                .await
                .map_err(StorageError::Connect)?;
            // SQLite's own word on where the data lives, whatever spelling of the URL got past
            // `check_url` (asked after the journal mode is set: a statement of this pool's
            // before it kept the file in its old mode).
            if !has_a_file(&pool).await.map_err(StorageError::Connect)? {
                pool.close().await;
                return Err(StorageError::InMemory);
            }
        }
        Ok(Database { pool, backend })
    }

    /// Runs the migrations of the pool's backend.
    pub async fn migrate(
        &self,
        sqlite: &Migrator,
        postgres: &Migrator,
    ) -> Result<(), StorageError> {
        match self.backend {
            Backend::Sqlite => sqlite.run(&self.pool).await.map_err(StorageError::Migrate),
            Backend::Postgres => {
                // Migrations, and the wait for another replica's migration lock, may take
                // longer than any request's statement: on a connection of their own without
                // `statement_timeout`, closed afterwards rather than returned to the pool.
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(StorageError::Connect)?
                    .detach();
                conn.execute("SET statement_timeout = 0")
                    .await
                    .map_err(StorageError::Connect)?;
                let migrated = postgres.run(&mut conn).await;
                let _ = sqlx::Connection::close(conn).await;
                migrated.map_err(StorageError::Migrate)
            }
        }
    }

    /// Readiness: a connection can be had and answers a query.
    ///
    /// On SQLite, reads go on under another connection's write lock (WAL), so readiness takes
    /// and releases the write lock (`BEGIN IMMEDIATE; ROLLBACK`): a file locked against writes
    /// is not ready. The transaction is sqlx's own, not a raw `BEGIN`: a check given up while it
    /// waits for the lock (`/ready`'s timeout, a client gone) cannot leave it open on a pooled
    /// connection, where later writes would join it, be acknowledged and be lost (sqlx rolls
    /// back a `BEGIN` whose caller has gone). On PostgreSQL, whether a transaction would be
    /// read-only (a standby answers `SELECT 1` as well as a primary, and every write would fail).
    pub async fn ping(&self) -> Result<(), String> {
        let outcome = match self.backend {
            Backend::Postgres => {
                match sqlx::query_scalar::<_, String>(
                    "SELECT current_setting('transaction_read_only')",
                )
                .fetch_one(&self.pool)
                .await
                {
                    Ok(read_only) if read_only == "on" => {
                        tracing::warn!("database is read-only");
                        return Err("database is read-only".to_owned());
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Backend::Sqlite => match self.pool.begin_with("BEGIN IMMEDIATE").await {
                Ok(tx) => tx.rollback().await,
                Err(e) => Err(e),
            },
        };
        outcome.map_err(|e: sqlx::Error| {
            tracing::warn!(error = %e, "database unreachable");
            "database unreachable".to_owned()
        })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A database fault as the client sees it: 503 with `Retry-After` when the database cannot be
/// reached (the fault is logged at warn), an opaque 500 otherwise (logged at error).
pub fn db_rejection(e: sqlx::Error) -> warp::Rejection {
    if is_unavailable(&e) {
        tracing::warn!(error = %e, "database unavailable");
        return warp::reject::custom(crate::error::ApiError::unavailable(
            "database unavailable",
            5,
        ));
    }
    tracing::error!(error = %e, "database error");
    warp::reject::custom(crate::error::ApiError::internal())
}

/// Whether an error means the database cannot be had right now (unreachable, pool exhausted or
/// closed, a SQLite file locked past the busy timeout, a full disk: [`sqlite_unavailable`] and
/// [`postgres_unavailable`]), as opposed to a fault in a query or a corrupt database.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                code.parse::<u32>().is_ok_and(sqlite_unavailable)
            } else {
                // A SQLSTATE (see `postgres_unavailable`). Its digits are not a SQLite code:
                // 22021 (a NUL in text) & 0xff is 5.
                postgres_unavailable(&code)
            }
        }
        _ => false,
    }
}

/// The query parameters sqlx's PostgreSQL driver reads (`sqlx-postgres`'s `parse_from_url`);
/// `options[name]` as well.
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

fn unknown_parameter(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("unknown parameter {name:?}"),
        None => "an unknown parameter, whose name is not shown (it may be part of a password)"
            .to_owned(),
    }
}

/// `text` percent-decoded, as sqlx decodes names and values (invalid UTF-8 replaced).
fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether a SQLite pool's main database is a file: in memory, or SQLite's temporary
/// database, it is one per connection and is lost with it.
async fn has_a_file(pool: &AnyPool) -> Result<bool, sqlx::Error> {
    // Every row read: a statement left part-read holds a read lock on its connection, under
    // which `PRAGMA journal_mode = WAL` quietly keeps the old mode.
    let files: Vec<String> =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_all(pool)
            .await?;
    Ok(files.first().is_some_and(|f| !f.is_empty()))
}

/// libpq's connection parameters that sqlx does not read (PostgreSQL 17's list): an unknown
/// parameter is named in the error only when it is one of these.
const LIBPQ_PARAMETERS: &[&str] = &[
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "requiressl",
    "sslnegotiation",
    "sslcompression",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// What sqlx would read from `url` other than intended: a PostgreSQL parameter it does not know
/// (it logs the value at warn level, a password's too, and ignores it), or an in-memory SQLite
/// database. A URL that does not parse is left to sqlx, whose error names no part of it.
fn check_url(url: &str, backend: Backend) -> Result<(), StorageError> {
    match backend {
        Backend::Postgres => {
            let Ok(parsed) = reqwest::Url::parse(url) else {
                return Ok(());
            };
            for (key, _) in parsed.query_pairs() {
                let known = POSTGRES_PARAMETERS.contains(&key.as_ref())
                    || (key.starts_with("options[") && key.ends_with(']'));
                if !known {
                    // Named only when it is libpq's: anything else may be the part of a
                    // password after a `&` (`password=Summer&Winter`).
                    let libpq = LIBPQ_PARAMETERS.contains(&key.as_ref());
                    return Err(StorageError::Parameter(libpq.then(|| key.into_owned())));
                }
            }
            Ok(())
        }
        Backend::Sqlite => {
            // As sqlx reads it: the URL as the url crate normalises it (spaces and control
            // characters trimmed), every leading `sqlite:` and `//` stripped, then the file name
            // (percent-decoded, opened as a URI when it is `file:…`) and its parameters. In
            // memory: `:memory:` however spelt, an empty name (SQLite's temporary database, one
            // per connection too), a `file:` URI naming memory or nothing, `mode=memory`, or the
            // `memdb` VFS. Whatever this misses, [`Database::connect_url`] asks SQLite itself.
            let normalised = reqwest::Url::parse(url).map_or_else(|_| url.to_owned(), String::from);
            let rest = normalised
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
            let name = decoded(name);
            let uri_path = name
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("file:"))
                .map(|_| &name[5..]);
            let in_memory = |pair: &str| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let key = decoded(&key.replace('+', " "));
                let value = decoded(&value.replace('+', " "));
                (key.eq_ignore_ascii_case("mode") && value.eq_ignore_ascii_case("memory"))
                    || (key.eq_ignore_ascii_case("vfs") && value.eq_ignore_ascii_case("memdb"))
            };
            let memory = name.trim().is_empty()
                || name == ":memory:"
                || uri_path.is_some_and(|path| {
                    let (path, params) = path.split_once('?').unwrap_or((path, ""));
                    path.is_empty() || path.contains(":memory:") || params.split('&').any(in_memory)
                })
                || query.split('&').any(in_memory);
            if memory {
                Err(StorageError::InMemory)
            } else {
                Ok(())
            }
        }
    }
}

/// Whether a SQLite result code (extended or primary) means the database cannot serve right
/// now, as [`postgres_unavailable`] reads PostgreSQL's: the file locked past the busy timeout
/// (SQLITE_BUSY 5, SQLITE_LOCKED 6), no memory (7), a read-only file or filesystem (8), an I/O
/// error (10), a full disk (13), or a file that cannot be opened (14; a lasting misconfiguration
/// such as an unwritable temporary directory reads so too). A corrupt file stays a fault (500,
/// logged at error): SQLITE_CORRUPT (11) and the two I/O codes that report corruption,
/// SQLITE_IOERR_DATA (a page checksum mismatch) and SQLITE_IOERR_CORRUPTFS; so do a constraint
/// (19) and a type mismatch (20).
fn sqlite_unavailable(code: u32) -> bool {
    const IOERR_DATA: u32 = 10 | (32 << 8);
    const IOERR_CORRUPTFS: u32 = 10 | (33 << 8);
    !matches!(code, IOERR_DATA | IOERR_CORRUPTFS)
        && matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14)
}

/// Whether a PostgreSQL SQLSTATE means the server cannot serve right now, so the same request
/// may succeed later: a connection exception (08), too many connections (53300), a statement
/// cancelled (57014, by `statement_timeout` here: a database too slow to answer, not a faulty
/// query), the server shutting down or starting (57P01–57P03), a read-only transaction (25006:
/// a standby, or a primary demoted by a failover), a serialization failure or a deadlock
/// (40001, 40P01: PostgreSQL's "retry the transaction"), a lock not available (55P03), a full
/// disk (53100) or no memory (53200).
fn postgres_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || matches!(
            sqlstate,
            "25006"
                | "40001"
                | "40P01"
                | "53100"
                | "53200"
                | "53300"
                | "55P03"
                | "57014"
                | "57P01"
                | "57P02"
                | "57P03"
        )
}

/// A `sqlite://` URL for a file, created if missing. The path is made absolute (its directory
/// as the system names it, when it exists: a URL folds `..` away) and percent-encoded: sqlx
/// splits the URL at the first `?`, decodes `%XX`, and reads a relative path's first
/// directory as a host, so `data_dir` values holding `?`, `#`, `%` or a space opened another
/// file or none.
pub fn sqlite_url(path: &Path) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
    const RESERVED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'?').add(b'#').add(b'"');
    let absolute = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir.canonicalize().ok().map(|dir| dir.join(name)),
        _ => None,
    }
    .or_else(|| std::path::absolute(path).ok())
    .unwrap_or_else(|| path.to_path_buf());
    let encoded = percent_encode(absolute.as_os_str().as_encoded_bytes(), RESERVED);
    format!("sqlite://{encoded}?mode=rwc")
}

/// For tests: a fresh, empty PostgreSQL database on the server of `TEST_DATABASE_URL`, or `None`
/// (with a [`report_skip`] line saying the PostgreSQL test is skipped) when it is not set.
///
/// Once the variable is set, a server that cannot be reached or a database that cannot be made
/// fails the test (a panic naming the cause): a test that quietly checks nothing would be counted
/// as passing.
///
/// Test databases are not dropped by the test that made one (it may still hold connections);
/// instead each call drops those made more than [`STALE_TEST_DATABASE`] ago, so a machine that
/// runs the suite over and over keeps a bounded number.
pub async fn test_postgres_url(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("TEST_DATABASE_URL") else {
        report_skip(test, "TEST_DATABASE_URL is not set (a PostgreSQL test)");
        return None;
    };
    install_default_drivers();
    let name = format!("t_{}", uuid_like());
    let (prefix, _) = reqwest::Url::parse(&base)
        .ok()
        .filter(|url| url.host_str().is_some() && url.path().len() > 1)
        .and_then(|_| base.rsplit_once('/'))
        .expect("TEST_DATABASE_URL is set but is not postgres://[user@]host[:port]/database");
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but cannot be reached: {e}"));
    drop_stale_test_databases(&admin).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but CREATE DATABASE failed: {e}"));
    admin.close().await;
    Some(format!("{prefix}/{name}"))
}

/// For tests: a line `SKIPPED: <test>: <why>` on the test binary's stdout, written past libtest's
/// output capture (which would hide it for a test that returns normally). `cargo xtask test`
/// counts such lines as skipped, not passed, and lists them in its summary.
pub fn report_skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(format!("SKIPPED: {test}: {why}\n").as_bytes());
}

/// How old a test database must be before another test drops it.
pub const STALE_TEST_DATABASE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Drops the test databases (`t_<pid>_<nanos>_<n>`) made more than [`STALE_TEST_DATABASE`] ago.
/// Best effort: a database still in use, or dropped by a concurrent test, is left to the next.
async fn drop_stale_test_databases(admin: &sqlx::AnyPool) {
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 't\\_%'",
    )
    .fetch_all(admin)
    .await
    else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    for name in names {
        if test_database_is_stale(&name, now) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(admin)
                .await;
        }
    }
}

/// Whether `name` is a test database made more than [`STALE_TEST_DATABASE`] before `now`
/// (nanoseconds since the epoch). Any other name is never stale.
fn test_database_is_stale(name: &str, now: u128) -> bool {
    let mut parts = name.split('_');
    let (Some("t"), Some(pid), Some(nanos), Some(n), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(pid) && digits(n)) {
        return false;
    }
    nanos
        .parse::<u128>()
        .is_ok_and(|made| now.saturating_sub(made) > STALE_TEST_DATABASE.as_nanos())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    static SQLITE: Migrator = sqlx::migrate!("./tests/migrations/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("./tests/migrations/postgres");

    async fn roundtrip(db: &Database) {
        db.migrate(&SQLITE, &POSTGRES).await.unwrap();
        let text = "it's \"quoted\" -- ; DROP TABLE notes; \u{1F600}";
        sqlx::query("INSERT INTO notes (body, done) VALUES ($1, $2)")
            .bind(text)
            .bind(1_i64)
            .execute(&db.pool)
            .await
            .unwrap();
        let (body, done): (String, i64) = sqlx::query_as("SELECT body, done FROM notes")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(body, text);
        assert_eq!(done, 1);
        db.ping().await.unwrap();
    }

    /// The SQLite file lands in the configured directory whatever its name: `?`, `%`, `#` and
    /// spaces made sqlx read another path (or a query string) out of the URL, and `..` was
    /// folded away.
    #[tokio::test]
    async fn the_sqlite_file_lands_in_any_directory_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a?b", "50%41", "sp ace#x", "new/../dot"] {
            let settings = DatabaseSettings {
                data_dir: dir.path().join(name),
                ..DatabaseSettings::default()
            };
            let db = Database::connect(&settings, "demo")
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            db.close().await;
            let file = dir.path().join(name).join("demo.db");
            assert!(file.exists(), "{name}: no {}", file.display());
        }
        assert!(!dir.path().join("50A").exists());
    }

    #[tokio::test]
    async fn sqlite_file_is_created_in_wal_mode_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            data_dir: dir.path().join("nested/data"),
            ..DatabaseSettings::default()
        };
        let db = Database::connect(&settings, "demo").await.unwrap();
        assert_eq!(db.backend, Backend::Sqlite);
        assert!(dir.path().join("nested/data/demo.db").exists());
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        roundtrip(&db).await;
        // Migrations are idempotent.
        db.migrate(&SQLITE, &POSTGRES).await.unwrap();
        db.close().await;
        assert!(db.ping().await.is_err(), "a closed pool is not ready");
    }

    /// A SQLite database that cannot take a write for want of room, or because its file is
    /// read-only, is unavailable (503, as PostgreSQL's 53100 and 25006 are), not a faulty query
    /// (500); a constraint is still a fault.
    #[tokio::test]
    async fn a_full_or_read_only_sqlite_database_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            data_dir: dir.path().to_owned(),
            ..DatabaseSettings::default()
        };
        let db = Database::connect(&settings, "demo").await.unwrap();
        db.migrate(&SQLITE, &POSTGRES).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        let full = sqlx::query("INSERT INTO notes (body, done) VALUES ($1, 0)")
            .bind("x".repeat(64 * 1024))
            .execute(&mut *conn)
            .await
            .unwrap_err();
        let sqlx::Error::Database(e) = &full else {
            panic!("{full:?}");
        };
        assert_eq!(e.code().as_deref(), Some("13"), "SQLITE_FULL: {full}");
        assert!(is_unavailable(&full), "{full}");
        let fault = sqlx::query("INSERT INTO notes (body, done) VALUES (NULL, 0)")
            .execute(&mut *conn)
            .await
            .unwrap_err();
        assert!(!is_unavailable(&fault), "a constraint: {fault}");
        drop(conn);
        db.close().await;

        let url = format!("sqlite://{}?mode=ro", dir.path().join("demo.db").display());
        let ro = Database::connect_url(&url, 1, Duration::from_secs(5), None)
            .await
            .unwrap();
        let refused = sqlx::query("INSERT INTO notes (body, done) VALUES ('x', 0)")
            .execute(&ro.pool)
            .await
            .unwrap_err();
        let sqlx::Error::Database(e) = &refused else {
            panic!("{refused:?}");
        };
        assert_eq!(
            e.code().map(|c| c.parse::<u32>().unwrap() & 0xff),
            Some(8),
            "SQLITE_READONLY: {refused}"
        );
        assert!(is_unavailable(&refused), "{refused}");
        ro.close().await;
    }

    #[test]
    fn sqlite_codes_that_mean_unavailable() {
        // Busy, locked (and SQLITE_BUSY_SNAPSHOT 517), no memory, read-only, I/O (and
        // SQLITE_IOERR_FSYNC 1034), full, cannot open.
        for code in [5, 517, 6, 7, 8, 10, 1034, 13, 14] {
            assert!(sqlite_unavailable(code), "{code}");
        }
        // Corrupt (and SQLITE_IOERR_DATA 8202, SQLITE_IOERR_CORRUPTFS 8458), constraint
        // (and SQLITE_CONSTRAINT_UNIQUE 2067), mismatch, a generic error.
        for code in [11, 8202, 8458, 19, 2067, 20, 1] {
            assert!(!sqlite_unavailable(code), "{code}");
        }
    }

    #[test]
    fn postgres_sqlstates_that_mean_unavailable() {
        for code in [
            "08000", "08006", "08001", "53300", "57014", "57P01", "57P03", "25006", "40001",
            "40P01", "55P03", "53100", "53200",
        ] {
            assert!(postgres_unavailable(code), "{code}");
        }
        for code in ["22021", "23505", "42P01", "XX000", "00005"] {
            assert!(!postgres_unavailable(code), "{code}");
        }
    }

    /// sqlx logs the value of a PostgreSQL URL parameter it does not read (a misspelt
    /// `password`, libpq's `sslpassword`) and goes on without it: such a URL is refused, naming
    /// the key and never the value, before sqlx reads it.
    #[tokio::test]
    async fn a_postgres_url_parameter_sqlx_ignores_is_refused_by_name() {
        for url in [
            "postgres://app@127.0.0.1:1/app?sslpassword=Leak-Me",
            "postgres://app@127.0.0.1:1/app?sslmode=disable&connect_timeout=5",
        ] {
            let err = Database::connect_url(url, 1, Duration::from_secs(1), None)
                .await
                .unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, StorageError::Parameter(_)),
                "{url}: {message}"
            );
            assert!(
                message.starts_with("database.url: unknown parameter \""),
                "{message}"
            );
            assert!(!message.contains("Leak-Me"), "{message}");
        }
        // A password holding `&` splits into a "parameter" that is part of it: not named, even
        // when it looks like a name.
        for url in [
            "postgres://app@127.0.0.1:1/app?password=Xy7&Qp9!Leak-Me",
            "postgres://app@127.0.0.1:1/app?password=Summer2024&LeakMe",
            "postgres://app@127.0.0.1:1/app?sslmode=disable&pasword=Leak-Me",
        ] {
            let message = check_url(url, Backend::Postgres).unwrap_err().to_string();
            assert!(
                message.starts_with("database.url: an unknown parameter, whose name is not shown"),
                "{message}"
            );
            assert!(!message.contains("Leak"), "{message}");
        }
        for url in [
            "postgres://app:pw@db/app",
            "postgres://app@db/app?sslmode=require&application_name=x&options[search_path]=s",
            "postgresql://db/app?host=/run/postgresql&port=5433&statement-cache-capacity=10",
            "not a url",
        ] {
            assert!(check_url(url, Backend::Postgres).is_ok(), "{url}");
        }
    }

    /// An in-memory SQLite database is one per pooled connection (sqlx's Any driver reads the
    /// URL again for each): tables migrated on one are missing on the others.
    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_refused() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite:",
            "sqlite://",
            "sqlite:///tmp/a.db?mode=memory",
            "sqlite:a.db?cache=shared&mode=memory",
            "sqlite:file::memory:?cache=shared",
            "sqlite:%3Amemory%3A",
            "sqlite:a.db?mode=%6Demory",
            "sqlite:file:a.db%3Fmode=memory",
            "sqlite::memory:\n",
            "sqlite:sqlite::memory:",
            "sqlite:file:",
            "sqlite:file:?cache=shared",
            "sqlite:a.db?vfs=memdb",
        ] {
            let err = Database::connect_url(url, 2, Duration::from_secs(1), None)
                .await
                .unwrap_err();
            assert!(matches!(err, StorageError::InMemory), "{url}: {err}");
            assert!(err.to_string().starts_with("database.url: "), "{err}");
        }
        for url in [
            "sqlite:///tmp/a.db",
            "sqlite:a.db?mode=rwc",
            "sqlite://memory.db",
            "sqlite:file:a.db?mode=rwc",
        ] {
            assert!(check_url(url, Backend::Sqlite).is_ok(), "{url}");
        }
    }

    /// SQLite's own answer backs the URL check: a pool on memory has no file, one on a file has.
    #[tokio::test]
    async fn sqlite_says_whether_a_pool_has_a_file() {
        install_default_drivers();
        let memory = AnyPool::connect("sqlite::memory:").await.unwrap();
        assert!(!has_a_file(&memory).await.unwrap());
        let temporary = AnyPool::connect("sqlite:").await.unwrap();
        assert!(!has_a_file(&temporary).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let file = AnyPool::connect(&sqlite_url(&dir.path().join("a.db")))
            .await
            .unwrap();
        assert!(has_a_file(&file).await.unwrap());
    }

    /// A read-only PostgreSQL (a standby, a primary demoted by a failover) answers `SELECT 1`
    /// but fails every write: not ready, and a write refused for it is a 503, not a 500.
    #[tokio::test]
    async fn a_read_only_postgres_is_not_ready_and_its_refusals_are_unavailable() {
        let Some(url) =
            test_postgres_url("a_read_only_postgres_is_not_ready_and_its_refusals_are_unavailable")
                .await
        else {
            return;
        };
        let db = Database::connect_url(&url, 1, Duration::from_secs(5), None)
            .await
            .unwrap();
        db.migrate(&SQLITE, &POSTGRES).await.unwrap();
        db.ping().await.unwrap();
        db.close().await;
        let read_only = Database::connect_url(
            &format!("{url}?options[default_transaction_read_only]=on"),
            1,
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap();
        assert_eq!(read_only.ping().await.unwrap_err(), "database is read-only");
        let err = sqlx::query("INSERT INTO notes (body, done) VALUES ('x', 0)")
            .execute(&read_only.pool)
            .await
            .unwrap_err();
        let sqlx::Error::Database(e) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(e.code().as_deref(), Some("25006"), "{err}");
        assert!(is_unavailable(&err), "{err}");
        read_only.close().await;
    }

    /// PostgreSQL over TLS: sqlx is built with it (`sslmode=require` failed with "built
    /// without TLS support", so production could only reach a remote server in clear).
    #[tokio::test]
    async fn postgres_connects_over_tls() {
        let Some(url) = test_postgres_url("postgres_connects_over_tls").await else {
            return;
        };
        let plain = Database::connect_url(&url, 1, Duration::from_secs(5), None)
            .await
            .unwrap();
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&plain.pool)
            .await
            .unwrap();
        plain.close().await;
        if ssl != "on" {
            // Still telling: refused by the server's lack of TLS, not by sqlx's build.
            let err = Database::connect_url(
                &format!("{url}?sslmode=require"),
                1,
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap_err();
            assert!(!err.to_string().contains("without TLS support"), "{err}");
            report_skip(
                "postgres_connects_over_tls",
                "the PostgreSQL server of TEST_DATABASE_URL has ssl = off: only sqlx's TLS build was checked",
            );
            return;
        }
        let db = Database::connect_url(
            &format!("{url}?sslmode=require"),
            1,
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap();
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert!(encrypted);
        db.close().await;
    }

    /// A query PostgreSQL refuses for its data is a fault of the query (500), not an outage
    /// (503): SQLSTATE 22021 (a NUL in text) once read as SQLITE_BUSY.
    #[tokio::test]
    async fn postgres_data_errors_are_not_unavailable() {
        let Some(url) = test_postgres_url("postgres_data_errors_are_not_unavailable").await else {
            return;
        };
        let db = Database::connect_url(&url, 1, Duration::from_secs(5), None)
            .await
            .unwrap();
        let err = sqlx::query("SELECT $1::text")
            .bind("a\0b")
            .execute(&db.pool)
            .await
            .unwrap_err();
        let sqlx::Error::Database(e) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(e.code().as_deref(), Some("22021"), "{err}");
        assert!(!is_unavailable(&err), "{err}");
        db.close().await;
        let closed = sqlx::query("SELECT 1").execute(&db.pool).await.unwrap_err();
        assert!(is_unavailable(&closed), "{closed}");
    }

    /// A statement that runs past `statement_timeout` is cancelled by the server and reads as
    /// an outage (503), not a faulty query; the pool goes on serving.
    #[tokio::test]
    async fn postgres_statements_stop_at_the_statement_timeout() {
        let Some(url) =
            test_postgres_url("postgres_statements_stop_at_the_statement_timeout").await
        else {
            return;
        };
        let db = Database::connect_url(
            &url,
            2,
            Duration::from_secs(5),
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap();
        for _ in 0..2 {
            // Without the timeout this sleeps for a minute and succeeds.
            let err = sqlx::query("SELECT pg_sleep(60)")
                .execute(&db.pool)
                .await
                .unwrap_err();
            let sqlx::Error::Database(e) = &err else {
                panic!("{err:?}");
            };
            assert_eq!(e.code().as_deref(), Some("57014"), "{err}");
            assert!(is_unavailable(&err), "{err}");
        }
        let timeout: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(timeout, "50ms");
        // Migrations run without it: one that takes longer than the timeout completes.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1_slow.sql"), "SELECT pg_sleep(0.2);").unwrap();
        let slow = Migrator::new(dir.path()).await.unwrap();
        db.migrate(&SQLITE, &slow).await.unwrap();
        let timeout: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(timeout, "50ms", "the pool's connections keep theirs");
        db.close().await;
    }

    #[tokio::test]
    async fn postgres_migrates_and_roundtrips() {
        let Some(url) = test_postgres_url("postgres_migrates_and_roundtrips").await else {
            return;
        };
        let db = Database::connect_url(&url, 2, Duration::from_secs(5), None)
            .await
            .unwrap();
        assert_eq!(db.backend, Backend::Postgres);
        roundtrip(&db).await;
    }

    #[test]
    fn only_old_test_databases_are_stale() {
        let hour = STALE_TEST_DATABASE.as_nanos();
        let now = 10 * hour;
        let made = |ago: u128| format!("t_123_{}_0", now - ago);
        assert!(test_database_is_stale(&made(hour + 1), now));
        assert!(!test_database_is_stale(&made(hour - 1), now));
        assert!(!test_database_is_stale(&made(0), now));
        for other in [
            "test",
            "postgres",
            "t_x_1_0",
            "t_1_1",
            "t_1_1_1_1",
            "tt_1_1_1",
            "t__1_0",
        ] {
            assert!(!test_database_is_stale(other, now), "{other}");
        }
    }

    /// A test database from long ago is dropped when the next one is made; a recent one stays.
    #[tokio::test]
    async fn postgres_stale_test_databases_are_dropped() {
        let Some(url) = test_postgres_url("postgres_stale_test_databases_are_dropped").await else {
            return;
        };
        let admin = sqlx::AnyPool::connect(&std::env::var("TEST_DATABASE_URL").unwrap())
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let old = format!("t_1_{}_0", now - 2 * STALE_TEST_DATABASE.as_nanos());
        sqlx::query(&format!("CREATE DATABASE {old}"))
            .execute(&admin)
            .await
            .unwrap();
        let exists = |name: String| {
            let admin = admin.clone();
            async move {
                sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT COUNT(*) FROM pg_database WHERE datname = '{name}'"
                ))
                .fetch_one(&admin)
                .await
                .unwrap()
                    == 1
            }
        };
        assert!(exists(old.clone()).await);
        let fresh = test_postgres_url("postgres_stale_test_databases_are_dropped (2)")
            .await
            .unwrap();
        assert!(!exists(old).await, "the stale database was dropped");
        let recent = url.rsplit_once('/').unwrap().1.to_owned();
        assert!(exists(recent).await, "a recent one stays");
        let newest = fresh.rsplit_once('/').unwrap().1.to_owned();
        assert!(exists(newest).await);
    }

    #[tokio::test]
    async fn postgres_outage_fails_the_ping_and_recovers() {
        let Some(url) = test_postgres_url("postgres_outage_fails_the_ping_and_recovers").await
        else {
            return;
        };
        let proxy = crate::service::testing::TcpProxy::start(
            crate::service::testing::TcpProxy::upstream_of(&url),
        )
        .await;
        let db = Database::connect_url(&proxy.proxied_url(&url), 2, Duration::from_secs(1), None)
            .await
            .unwrap();
        db.ping().await.unwrap();
        proxy.cut();
        assert!(
            db.ping().await.is_err(),
            "ping must fail while the connection is cut"
        );
        proxy.restore();
        let mut recovered = false;
        for _ in 0..20 {
            if db.ping().await.is_ok() {
                recovered = true;
                break;
            }
        }
        assert!(recovered, "the pool reconnects once the database is back");
    }
}
