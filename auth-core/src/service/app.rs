//! What every service's `App` is made of: a bound listener, the assembled routes, the database,
//! and the serving loop. Services build their routes and hand them here; `main` and the tests run
//! the same [`App`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::config::{ConfigError, CorsSettings, ServerSettings};
use super::storage::Database;

/// How long a service's `main`, once it has stopped serving, waits for blocking tasks still
/// running (a key rescan on a hung filesystem, a password hash) before it exits anyway.
pub const BLOCKING_AT_EXIT: Duration = Duration::from_secs(1);

/// How long a shutdown whose grace period ran out still waits for the database to close.
const CLOSE_AFTER_GRACE: Duration = Duration::from_secs(1);

/// A service ready to serve: its port is bound, its database open.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    routes: super::server::Routes<BoxedFilter<(Response,)>>,
    server: ServerSettings,
    cors: CorsSettings,
    db: Option<Database>,
}

/// Binds `server.host:server.port`. A port in use is one line naming the port and the key.
pub async fn bind(server: &ServerSettings, env_prefix: &str) -> Result<TcpListener, ConfigError> {
    let addr = SocketAddr::new(server.host, server.port);
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            ConfigError(format!(
                "config error: server.port: {addr} is already in use (set server.port or {env_prefix}__SERVER__PORT)"
            ))
        } else {
            ConfigError(format!("config error: server.host: cannot listen on {addr}: {e}"))
        }
    })
}

impl App {
    /// Assembles a service: `api` (the service's own routes) and `ops` (the operational routes),
    /// one rejection handler, CORS outermost. `doc`, the service's OpenAPI document, gives a
    /// 405 its `Allow` header ([`super::allow`]).
    pub fn new(
        listener: TcpListener,
        api: BoxedFilter<(Response,)>,
        ops: BoxedFilter<(Response,)>,
        doc: &utoipa::openapi::OpenApi,
        server: ServerSettings,
        cors: &CorsSettings,
        db: Option<Database>,
    ) -> io::Result<App> {
        let addr = listener.local_addr()?;
        let allow = std::sync::Arc::new(super::allow::AllowTable::from_openapi(doc));
        let routes = warp::path::full()
            .and(
                ops.or(api)
                    .unify()
                    .recover(crate::error::handle_rejection)
                    .unify(),
            )
            .map(move |path: warp::path::FullPath, mut res: Response| {
                if res.status() == http::StatusCode::METHOD_NOT_ALLOWED {
                    match allow.allow(path.as_str()) {
                        Some(methods) => {
                            res.headers_mut().insert(http::header::ALLOW, methods);
                        }
                        // A route's path filter took a path no documented route has (a
                        // `{kid}` without its `.pem`): no resource is there, whatever the
                        // method, and a 405 would owe an `Allow` it cannot give.
                        None => {
                            return crate::error::error_response(
                                http::StatusCode::NOT_FOUND,
                                "not_found",
                                "no such route",
                            );
                        }
                    }
                }
                res
            })
            .boxed();
        let routes = super::cors::wrap(routes, cors);
        Ok(App {
            listener,
            addr,
            routes,
            server,
            cors: cors.clone(),
            db,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The service's database.
    pub fn database(&self) -> Option<&Database> {
        self.db.as_ref()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGINT or SIGTERM, lets in-flight requests finish, closes the database.
    /// From the signal on, `/ready` answers 503, and the service goes on accepting for
    /// `server.shutdown_delay_seconds` first (a load balancer takes it out of rotation before
    /// its listener closes). A second Ctrl-C (SIGINT) ends the process at once.
    pub async fn run_until_stopped(self) {
        #[cfg(unix)]
        super::server::raise_open_files_limit(self.server.max_connections);
        let delay = Duration::from_secs(self.server.shutdown_delay_seconds);
        let (first, stopped) = tokio::sync::oneshot::channel();
        match super::server::StopSignals::register() {
            Ok(signals) => {
                tokio::spawn(super::server::watch_stop_signals(signals, first));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for stop signals; only SIGKILL stops this process");
                // Never sent, never dropped: the service serves on.
                std::mem::forget(first);
            }
        }
        self.run_until(async move {
            let _ = stopped.await;
            super::ops::mark_stopping();
            if !delay.is_zero() {
                tracing::info!(
                    delay_seconds = delay.as_secs(),
                    "/ready answers 503; serving on for server.shutdown_delay_seconds before closing the listener"
                );
                tokio::time::sleep(delay).await;
            }
        })
        .await;
    }

    /// Serves until `shutdown` resolves (tests), then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(addr = %self.addr, "listening");
        let finished = super::server::serve(
            self.listener,
            self.routes,
            self.server,
            &self.cors,
            shutdown,
        )
        .await;
        if let Some(db) = self.db {
            // The pool's close waits for every connection lent out. After the grace period
            // the requests still holding one (a stuck query) are abandoned, not awaited: the
            // process stops about `server.shutdown_delay_seconds` plus
            // `server.shutdown_timeout_seconds` after the signal, as orchestrators' own grace
            // periods expect, not at the request timeout.
            if finished {
                db.close().await;
            } else if tokio::time::timeout(CLOSE_AFTER_GRACE, db.close())
                .await
                .is_err()
            {
                tracing::warn!(
                    "database connections still in use after the shutdown timeout; stopping without them"
                );
            }
        }
        tracing::info!("stopped");
    }
}

/// The `--config PATH` option every service binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// A TOML configuration file (default: config/SERVICE.toml when it exists).
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

/// Prints a configuration or startup error as one line on stderr and exits non-zero.
pub fn exit_with(error: impl std::fmt::Display) -> ! {
    eprintln!("{error}");
    std::process::exit(2)
}

/// The whole `main` of a resource service: `--config`, settings, telemetry, build, serve until a
/// stop signal. Every failure is one line on stderr and a non-zero exit.
pub fn run_service<F, Fut>(
    info: super::config::ServiceInfo,
    local_auth: serde_json::Value,
    build: F,
) where
    F: FnOnce(super::config::Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<App>>,
{
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArg,
    }
    let cli = Cli::parse();
    let settings = super::config::Settings::load(&info, cli.config.config.as_deref(), local_auth)
        .unwrap_or_else(|e| exit_with(e));
    super::telemetry::init(&settings.log, settings.environment);
    super::telemetry::record_build_info(info.name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit_with(format!("cannot start the runtime: {e}")));
    runtime.block_on(async move {
        let app = build(settings)
            .await
            .unwrap_or_else(|e| exit_with(format!("{e:#}")));
        app.run_until_stopped().await;
    });
    // Blocking tasks still running do not hold the exit (dropping the runtime waits for them
    // without limit).
    runtime.shutdown_timeout(BLOCKING_AT_EXIT);
}

/// What a resource service's `build` starts from: the bound listener, the migrated database and
/// the verifier its `auth` settings describe.
pub struct Parts {
    /// Bound to `server.host:server.port`.
    pub listener: TcpListener,
    /// Opened and migrated.
    pub db: Database,
    /// The verifier, realm = the service's name.
    pub auth: crate::verify::Auth,
}

impl Parts {
    /// Builds the verifier, then binds, opens and migrates the database (`sqlite` or `postgres`
    /// migrations by backend). The `auth` settings the verifier refuses are a config error (one
    /// line naming the key) before the port is taken or the database touched.
    pub async fn prepare(
        settings: &super::config::Settings,
        info: &super::config::ServiceInfo,
        sqlite: &sqlx::migrate::Migrator,
        postgres: &sqlx::migrate::Migrator,
    ) -> anyhow::Result<Parts> {
        super::telemetry::record_build_info(info.name);
        let auth = crate::verify::Auth::new(&settings.auth, info.name)
            .map_err(|e| super::config::ConfigError(format!("config error: {e}")))?;
        let listener = bind(&settings.server, info.env_prefix).await?;
        let db = Database::connect(&settings.database, info.name).await?;
        db.migrate(sqlite, postgres).await?;
        Ok(Parts { listener, db, auth })
    }

    /// The resource service's `App`: its own `api` routes plus `/whoami` and the operational
    /// routes, the OpenAPI document `doc` completed with theirs.
    pub fn into_app(
        self,
        settings: super::config::Settings,
        mut doc: utoipa::openapi::OpenApi,
        api: BoxedFilter<(Response,)>,
    ) -> io::Result<App> {
        use utoipa::OpenApi as _;
        doc.merge(super::ops::OpsApi::openapi());
        doc.merge(super::ops::WhoAmIApi::openapi());
        super::ops::document_shared_answers(&mut doc);
        let ops = super::ops::routes(self.ready_checks(), doc.clone());
        let api = super::ops::whoami(&self.auth).or(api).unify().boxed();
        App::new(
            self.listener,
            api,
            ops,
            &doc,
            settings.server,
            &settings.cors,
            Some(self.db),
        )
    }

    /// `/ready`'s checks: the database answers, the verification keys are loaded.
    pub fn ready_checks(&self) -> Vec<super::ops::ReadyCheck> {
        let db = self.db.clone();
        let auth = self.auth.clone();
        vec![
            super::ops::ready_check(move || {
                let db = db.clone();
                async move { db.ping().await }
            }),
            super::ops::ready_check(move || {
                let ready = auth.is_ready();
                async move {
                    if ready {
                        Ok(())
                    } else {
                        Err("verification keys not loaded".to_owned())
                    }
                }
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use warp::Reply as _;

    use super::*;

    /// A request that holds a database connection past the grace period (a stuck query) does
    /// not hold the process: `run_until` returns about `server.shutdown_timeout_seconds` after
    /// the signal. It used to wait for the pool's close, i.e. for the request timeout.
    #[tokio::test]
    async fn a_request_stuck_on_a_database_connection_does_not_hold_the_shutdown() {
        let logs = super::super::telemetry::LogCapture::install();
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::storage::sqlite_url(&dir.path().join("stuck.db"));
        let db = Database::connect_url(&url, 1, Duration::from_secs(5), None)
            .await
            .unwrap();
        let entered = Arc::new(tokio::sync::Notify::new());
        let api = {
            let (pool, entered) = (db.pool.clone(), entered.clone());
            warp::path!("stuck")
                .then(move || {
                    let (pool, entered) = (pool.clone(), entered.clone());
                    async move {
                        let _held = pool.acquire().await.unwrap();
                        entered.notify_one();
                        std::future::pending::<()>().await;
                        warp::reply().into_response()
                    }
                })
                .boxed()
        };
        let ops = warp::path!("health")
            .map(|| warp::reply().into_response())
            .boxed();
        let server = ServerSettings {
            shutdown_timeout_seconds: 1,
            request_timeout_seconds: 3600,
            ..ServerSettings::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let doc = utoipa::openapi::OpenApiBuilder::new().build();
        let cors = CorsSettings::default();
        let app = App::new(listener, api, ops, &doc, server, &cors, Some(db)).unwrap();
        let url = format!("http://{}/stuck", app.addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let request = tokio::spawn(reqwest::get(url));
        entered.notified().await;
        stop.send(()).unwrap();
        // The grace period (1 s) and the close's own bound (1 s), with room to spare.
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("run_until waited for the stuck request")
            .unwrap();
        request.abort();
        // The request the service gave up on is logged as the service's doing, not as a
        // client's 499, once its connection goes (every chance, no wall-clock wait).
        let mut line = None;
        for _ in 0..10_000 {
            line = logs
                .contents()
                .lines()
                .find(|l| l.contains("path=/stuck"))
                .map(str::to_owned);
            if line.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let line = line.expect("no access line for the request given up on");
        assert!(
            line.contains("status=503") && line.contains("the service stopped"),
            "{line}"
        );
    }
}
