//! Wiring: database, verifier, routes, the serving loop.

use auth_core::service::app::{App, Parts};
use auth_core::service::config::Settings;
use auth_core::service::ops::{self, BearerSecurity, OpsApi};
use utoipa::OpenApi;
use warp::Filter;

use crate::INFO;
use crate::todos::{self, Store, TodosApi};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The OpenAPI document of this service.
#[derive(OpenApi)]
#[openapi(info(title = "todo-api"), modifiers(&BearerSecurity))]
pub struct ApiDoc;

/// Builds the app `settings` describe: binds the port, opens and migrates the database, builds
/// the verifier and the routes.
pub async fn build(settings: Settings) -> anyhow::Result<App> {
    let parts = Parts::prepare(&settings, &INFO, &SQLITE, &POSTGRES).await?;
    let mut doc = ApiDoc::openapi();
    doc.merge(OpsApi::openapi());
    doc.merge(ops::WhoAmIApi::openapi());
    doc.merge(TodosApi::openapi());
    let ops = ops::routes(parts.ready_checks(), doc);
    let store = Store::new(parts.db.clone());
    let api = ops::whoami(&parts.auth)
        .or(todos::routes(&parts.auth, store))
        .unify()
        .boxed();
    Ok(App::new(
        parts.listener,
        api,
        ops,
        settings.server,
        &settings.cors,
        Some(parts.db),
    )?)
}
