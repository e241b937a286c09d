use auth_core::service::testing::{self, Spawned};
use auth_core::settings::AuthSettings;

pub struct TestApp {
    pub app: Spawned,
    pub _data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let public_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/keys/ec-public.pem"
    );
    let auth = AuthSettings {
        public_key: Some(public_key.into()),
        ..AuthSettings::default()
    };
    let settings = testing::settings(data_dir.path(), None, auth);
    let app = tasks_api::startup::build(settings).await.expect("build");
    TestApp {
        app: testing::spawn(app),
        _data_dir: data_dir,
    }
}
