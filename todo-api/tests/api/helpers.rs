use auth_core::service::testing::{self, Spawned};
use auth_core::settings::AuthSettings;

pub struct TestApp {
    pub app: Spawned,
    /// Kept so the directory lives as long as the app.
    #[allow(dead_code)]
    pub data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let auth = AuthSettings {
        jwks_url: Some("http://127.0.0.1:9/jwks.json".into()),
        ..AuthSettings::default()
    };
    let settings = testing::settings(data_dir.path(), None, auth);
    let app = todo_api::startup::build(settings).await.expect("build");
    TestApp {
        app: testing::spawn(app),
        data_dir,
    }
}
