//! Wiring: database, verifier, routes, the serving loop.

use auth_core::service::app::{App, Parts};
use auth_core::service::config::Settings;
use auth_core::service::ops::BearerSecurity;
use utoipa::OpenApi;

use crate::INFO;
use crate::todos::{self, Store, TodosApi};

pub(crate) static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The OpenAPI document of this service.
#[derive(OpenApi)]
#[openapi(info(title = "todo-api"), modifiers(&BearerSecurity))]
pub struct ApiDoc;

/// Builds the app `settings` describe: binds the port, opens and migrates the database, builds
/// the verifier and the routes.
pub async fn build(settings: Settings) -> anyhow::Result<App> {
    let parts = Parts::prepare(&settings, &INFO, &SQLITE, &POSTGRES).await?;
    let mut doc = ApiDoc::openapi();
    doc.merge(TodosApi::openapi());
    let api = todos::routes(&parts.auth, Store::new(parts.db.clone()));
    Ok(parts.into_app(settings, doc, api)?)
}
