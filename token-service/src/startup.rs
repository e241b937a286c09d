//! Wiring: signing keys, database, users, the verifier of the service's own routes, routes, the
//! serving loop. `main` and the tests build the same app.

use std::sync::Arc;

use auth_core::Auth;
use auth_core::clock::{Clock, SystemClock};
use auth_core::service::app::{self, App};
use auth_core::service::config::Environment;
use auth_core::service::ops::{self, BearerSecurity, OpsApi};
use auth_core::service::storage::Database;
use auth_core::source::KeyProvider;
use utoipa::OpenApi;
use warp::Filter;

use crate::INFO;
use crate::keys::KeyStore;
use crate::passwords::{Argon2id, Hasher, Passwords};
use crate::settings::Settings;
use crate::throttle::Throttle;
use crate::users::UserStore;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The OpenAPI document of this service.
#[derive(OpenApi)]
#[openapi(info(title = "token-service"), modifiers(&BearerSecurity))]
pub struct ApiDoc;

/// The OpenAPI document: every route, the operational ones included.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(OpsApi::openapi());
    doc.merge(crate::token::TokenApi::openapi());
    doc.merge(crate::wellknown::WellKnownApi::openapi());
    doc.merge(crate::users_api::UsersApi::openapi());
    ops::document_shared_answers(&mut doc);
    doc
}

/// What every handler shares.
#[derive(Clone)]
pub struct State {
    /// The settings.
    pub settings: Arc<Settings>,
    /// The signing keys.
    pub keys: Arc<KeyStore>,
    /// The users table.
    pub users: UserStore,
    /// Hashing.
    pub passwords: Passwords,
    /// Sign-in throttling.
    pub throttle: Arc<Throttle>,
    /// The clock tokens and key phases are judged by.
    pub clock: Arc<dyn Clock>,
    /// `throttle.trusted_proxies`, parsed.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
}

/// What tests inject.
#[derive(Clone)]
pub struct Deps {
    /// The clock (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// The password hasher (default: argon2id with `users.argon2_*`).
    pub hasher: Option<Arc<dyn Hasher>>,
}

impl Default for Deps {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            hasher: None,
        }
    }
}

/// A built app and its shared state (tests reach the key store and the throttle through it).
pub struct Built {
    /// The app.
    pub app: App,
    /// Its state.
    pub state: State,
}

/// Builds the app `settings` describe.
pub async fn build(settings: Settings) -> anyhow::Result<App> {
    Ok(build_with(settings, Deps::default()).await?.app)
}

/// Opens the database `settings` name and runs token-service's migrations.
pub async fn open_database(settings: &Settings) -> anyhow::Result<Database> {
    let db = Database::connect(&settings.database, INFO.name).await?;
    db.migrate(&SQLITE, &POSTGRES).await?;
    Ok(db)
}

/// Builds the app with injected dependencies.
pub async fn build_with(settings: Settings, deps: Deps) -> anyhow::Result<Built> {
    auth_core::service::telemetry::record_build_info(INFO.name);
    let production = settings.environment == Environment::Production;
    let keys = KeyStore::open(&settings.signing, production, deps.clock.clone())?;
    let listener = app::bind(&settings.server, INFO.env_prefix).await?;
    let db = open_database(&settings).await?;
    let users = UserStore::new(db.clone());
    let hasher: Arc<dyn Hasher> = match deps.hasher {
        Some(h) => h,
        None => Arc::new(Argon2id::new(&settings.users)?),
    };
    let passwords = Passwords::new(
        hasher,
        settings.users.max_concurrent_hashes,
        settings.users.max_queued_hashes,
    )?;
    if !production && let Some(path) = &settings.users.fixtures_file {
        let created = crate::users::load_fixtures(&users, path).await?;
        tracing::info!(created, file = %path.display(), "fixture users loaded (dev only)");
        if !settings.server.host.is_loopback() {
            // Docker users bind 0.0.0.0 for local work, so this is not refused; but the fixture
            // users' published passwords sign in from any machine that reaches the port.
            tracing::warn!(
                host = %settings.server.host,
                "local environment on a non-loopback server.host: the fixture users (with their published passwords) can sign in from the network; set server.host = \"127.0.0.1\" or environment = \"production\""
            );
        }
    }
    let provider: Arc<dyn KeyProvider> = keys.clone();
    let auth = Auth::from_key_provider(&settings.auth, INFO.name, deps.clock.clone(), provider)
        .map_err(|e| anyhow::anyhow!("config error: {e}"))?;
    keys.spawn_watcher();
    let state = State {
        trusted_proxies: Arc::new(settings.throttle.proxies()),
        throttle: Arc::new(Throttle::new(&settings.throttle, deps.clock.clone())),
        settings: Arc::new(settings),
        keys: keys.clone(),
        users,
        passwords,
        clock: deps.clock,
    };

    let api = crate::token::route(state.clone())
        .or(crate::wellknown::routes(state.clone()))
        .unify()
        .or(crate::users_api::routes(state.clone(), &auth))
        .unify()
        .boxed();
    let db_check = db.clone();
    let keys_check = keys.clone();
    let checks = vec![
        ops::ready_check(move || {
            let db = db_check.clone();
            async move { db.ping().await }
        }),
        ops::ready_check(move || {
            let ok = keys_check.signer().is_some();
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("no active signing key".to_owned())
                }
            }
        }),
    ];
    let doc = openapi();
    let ops = ops::routes(checks, doc.clone());
    let app = App::new(
        listener,
        api,
        ops,
        &doc,
        state.settings.server.clone(),
        &state.settings.cors,
        Some(db),
    )?;
    Ok(Built { app, state })
}
