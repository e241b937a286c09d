use auth_core::service::testing;

use crate::helpers::{spawn_app, spawn_app_without_keys};

#[tokio::test]
async fn answers_the_operational_routes_with_default_settings() {
    let t = spawn_app().await;
    testing::assert_operational_routes(&t.app).await;
}

#[tokio::test]
async fn health_at_once_ready_503_while_the_keys_cannot_load() {
    let t = spawn_app_without_keys().await;
    testing::assert_ready_waits_for_the_keys(&t.app).await;
}

#[tokio::test]
async fn ready_is_503_without_the_database() {
    let t = spawn_app().await;
    testing::assert_ready_fails_without_the_database(&t.app).await;
}

#[test]
fn verifier_settings_are_refused_before_the_port_is_taken() {
    testing::assert_verifier_settings_refused_first(
        env!("CARGO_BIN_EXE_tasks-api").as_ref(),
        tasks_api::INFO.env_prefix,
    );
}

#[test]
fn production_refuses_unsafe_config_with_one_line() {
    testing::assert_production_refusals(
        env!("CARGO_BIN_EXE_tasks-api").as_ref(),
        tasks_api::INFO.env_prefix,
        "auth.issuer",
    );
}
