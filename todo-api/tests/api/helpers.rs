use auth_core::service::testing::{self, Spawned};
use auth_core::settings::AuthSettings;
use serde_json::{Value, json};
use testkit::LocalIssuer;

pub struct TestApp {
    pub app: Spawned,
    pub issuer: LocalIssuer,
    pub _data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}, None).await
}

/// The app with its `auth` settings adjusted and, optionally, a PostgreSQL database.
pub async fn spawn_with(
    adjust: impl FnOnce(&mut AuthSettings),
    database_url: Option<String>,
) -> TestApp {
    let issuer = LocalIssuer::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut auth = AuthSettings {
        issuer: Some(issuer.issuer()),
        audience: vec!["todo-api".into()],
        jwks_url: Some(issuer.jwks_url()),
        ..AuthSettings::default()
    };
    adjust(&mut auth);
    let settings = testing::settings(data_dir.path(), database_url, auth);
    let app = todo_api::startup::build(settings).await.expect("build");
    TestApp {
        app: testing::spawn(app),
        issuer,
        _data_dir: data_dir,
    }
}

impl TestApp {
    /// A valid token for `sub` with `roles`, audience todo-api.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.issuer.token("todo-api", sub, roles)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .app
            .client
            .request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    pub async fn create(&self, token: &str, title: &str) -> Value {
        let res = self
            .request("POST", "/todos", Some(token), Some(json!({"title": title})))
            .await;
        assert_eq!(res.status(), 201, "create {title}");
        res.json().await.unwrap()
    }
}

/// Status and JSON body.
pub async fn parts(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
