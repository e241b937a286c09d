use auth_core::service::testing::{self, Spawned};
use auth_core::settings::AuthSettings;

pub struct TestApp {
    pub app: Spawned,
    /// Kept so the directory lives as long as the app.
    #[allow(dead_code)]
    pub data_dir: tempfile::TempDir,
}

/// The app with a key source that is always ready (the fixtures' static public key), so
/// `/ready` depends on the database only.
pub async fn spawn_app() -> TestApp {
    let auth = AuthSettings {
        public_key: Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/keys/ec-public.pem"
            )
            .into(),
        ),
        ..AuthSettings::default()
    };
    spawn_app_with(auth).await
}

/// The app with a JWKS URL nobody answers: verification keys never load.
pub async fn spawn_app_without_keys() -> TestApp {
    spawn_app_with(AuthSettings {
        jwks_url: Some("http://127.0.0.1:9/jwks.json".into()),
        ..AuthSettings::default()
    })
    .await
}

pub async fn spawn_app_with(auth: AuthSettings) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let settings = testing::settings(data_dir.path(), None, auth);
    let app = todo_api::startup::build(settings).await.expect("build");
    TestApp {
        app: testing::spawn(app),
        data_dir,
    }
}
