use auth_core::service::storage::test_postgres_url;
use token_service::users::{StoreError, UserStore};

use crate::helpers::local_settings;

async fn exercise(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = local_settings(dir.path());
    settings.database.url = database_url.map(Into::into);
    let db = token_service::startup::open_database(&settings)
        .await
        .unwrap();
    let store = UserStore::new(db.clone());
    let roles = vec!["user".to_owned()];
    let alice = store
        .create("alice", "$argon2id$fake", &roles, &["/todos/*".into()])
        .await
        .unwrap();
    assert!(matches!(
        store.create("alice", "$argon2id$other", &roles, &[]).await,
        Err(StoreError::Duplicate)
    ));
    let got = store.by_username("alice").await.unwrap().unwrap();
    assert_eq!(got.id, alice.id);
    assert_eq!(got.roles, roles);
    assert_eq!(got.access, ["/todos/*"]);
    assert!(!got.disabled);
    assert!(store.by_username("nobody").await.unwrap().is_none());
    assert!(
        store
            .set_password(&alice.id, "$argon2id$new")
            .await
            .unwrap()
    );
    assert_eq!(
        store.by_id(&alice.id).await.unwrap().unwrap().password_hash,
        "$argon2id$new"
    );
    assert!(store.disable(&alice.id).await.unwrap());
    assert!(store.by_id(&alice.id).await.unwrap().unwrap().disabled);
    assert!(!store.disable("no-such-id").await.unwrap());
    store
        .create("bob", "$argon2id$b", &roles, &[])
        .await
        .unwrap();
    let names: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let created =
        token_service::users::load_fixtures(&store, &crate::helpers::fixture("users.toml"))
            .await
            .unwrap();
    assert_eq!(created, 1, "only admin is new: alice and bob exist");
    db.close().await;
}

#[tokio::test]
async fn user_store_on_sqlite() {
    exercise(None).await;
}

#[tokio::test]
async fn user_store_on_postgres() {
    if let Some(url) = test_postgres_url("token_service_user_store").await {
        exercise(Some(url)).await;
    }
}
