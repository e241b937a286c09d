use auth_core::service::testing::{self, Spawned};
use auth_core::settings::AuthSettings;
use serde_json::Value;
use testkit::LocalIssuer;

pub struct TestApp {
    pub app: Spawned,
    pub issuer: LocalIssuer,
    _data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_on(None).await
}

/// The app with a JWKS URL nobody answers: verification keys never load.
pub async fn spawn_app_without_keys() -> TestApp {
    spawn_configured(None, Some("http://127.0.0.1:9/jwks.json".into())).await
}

/// The app, on SQLite or on the PostgreSQL database `database_url`.
pub async fn spawn_on(database_url: Option<String>) -> TestApp {
    let t = spawn_configured(database_url, None).await;
    t.app.wait_ready().await;
    t
}

async fn spawn_configured(database_url: Option<String>, jwks_url: Option<String>) -> TestApp {
    let issuer = LocalIssuer::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let auth = AuthSettings {
        issuer: Some(issuer.issuer()),
        audience: vec!["tasks-api".into()],
        jwks_url: Some(jwks_url.unwrap_or_else(|| issuer.jwks_url())),
        ..AuthSettings::default()
    };
    let settings = testing::settings(data_dir.path(), database_url, auth);
    let app = tasks_api::startup::build(settings).await.expect("build");
    TestApp {
        app: testing::spawn(app),
        issuer,
        _data_dir: data_dir,
    }
}

impl TestApp {
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.issuer.token("tasks-api", sub, roles)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self.app.client.request(
            method.parse().unwrap(),
            format!("{}{path}", self.app.address),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    pub async fn create(&self, token: &str, body: Value) -> Value {
        let res = self
            .request("POST", "/tasks", Some(token), Some(body.clone()))
            .await;
        assert_eq!(res.status(), 201, "create {body}");
        // Where the new resource is (RFC 9110 §15.3.2).
        let location = res.headers().get("location").cloned();
        let created: Value = res.json().await.unwrap();
        assert_eq!(
            location.as_ref().map(|l| l.to_str().unwrap()),
            Some(format!("/tasks/{}", created["id"]).as_str())
        );
        created
    }
}

/// Status and the body as text.
pub async fn raw(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// Status and JSON body.
pub async fn parts(res: reqwest::Response) -> (u16, Value) {
    let (status, text) = raw(res).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
