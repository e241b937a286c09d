//! Todos: the model, its storage and its routes.

use std::sync::Arc;

use auth_core::Claims;
use auth_core::error::ApiError;
use auth_core::filters::{with_any_role, with_auth, with_role, within_scope};
use auth_core::service::body;
use auth_core::service::conditional::{self, Preconditions};
use auth_core::service::paging::{self, ListQuery, Page, PathId};
use auth_core::service::storage::{Database, db_rejection};
use auth_core::verify::{Auth, AuthError, AuthErrorKind};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

/// Largest JSON body accepted (16 KiB).
pub const MAX_BODY: u64 = 16 * 1024;
/// Longest title, in characters, after trimming.
pub const MAX_TITLE: usize = 200;

/// The scope reading routes need of a token that carries a `scope` claim.
pub const READ: &str = "todos:read";
/// The scope writing routes need of a token that carries a `scope` claim.
pub const WRITE: &str = "todos:write";

/// A todo of the team list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Todo {
    /// Its id.
    pub id: i64,
    /// 1–200 characters, trimmed.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
    /// The `sub` of the token that created it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Its version, one more at every change: answered as the `ETag` (`"3"`), not in the body.
    #[serde(skip)]
    pub version: i64,
}

/// `POST /todos`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTodo {
    /// 1–200 characters after trimming.
    pub title: String,
    /// Default `false`.
    #[serde(default)]
    pub done: Option<bool>,
}

/// `PATCH /todos/{id}`'s body: any subset.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TodoPatch {
    /// 1–200 characters after trimming; not `null`.
    #[serde(default, deserialize_with = "body::not_null")]
    #[schema(nullable = false)]
    pub title: Option<String>,
    /// Done or not; not `null`.
    #[serde(default, deserialize_with = "body::not_null")]
    #[schema(nullable = false)]
    pub done: Option<bool>,
}

/// `GET /todos`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TodoPage {
    /// The todos of this page, in id order.
    pub items: Vec<Todo>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn valid_title(title: &str) -> Result<String, ApiError> {
    body::text_field("title", title, 1, MAX_TITLE)
}

fn row_to_todo(row: &AnyRow) -> Result<Todo, sqlx::Error> {
    Ok(Todo {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        done: row.try_get::<i64, _>("done")? != 0,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

const COLUMNS: &str = "id, title, done, created_by, created_at, updated_at, version";

/// Storage of todos.
#[derive(Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Todos live in `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    async fn list(
        &self,
        after: i64,
        limit: i64,
        done: Option<bool>,
    ) -> Result<Vec<Todo>, sqlx::Error> {
        let rows =
            match done {
                None => {
                    sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM todos WHERE id > $1 ORDER BY id LIMIT $2"
                    ))
                    .bind(after)
                    .bind(limit + 1)
                    .fetch_all(&self.db.pool)
                    .await?
                }
                Some(done) => sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM todos WHERE id > $1 AND done = $2 ORDER BY id LIMIT $3"
                ))
                .bind(after)
                .bind(i64::from(done))
                .bind(limit + 1)
                .fetch_all(&self.db.pool)
                .await?,
            };
        rows.iter().map(row_to_todo).collect()
    }

    async fn get(&self, id: i64) -> Result<Option<Todo>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM todos WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(row_to_todo).transpose()
    }

    async fn insert(&self, title: &str, done: bool, created_by: &str) -> Result<Todo, sqlx::Error> {
        let now = body::now_rfc3339();
        let row = sqlx::query(&format!(
            "INSERT INTO todos (title, done, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING {COLUMNS}"
        ))
        .bind(title)
        .bind(i64::from(done))
        .bind(created_by)
        .bind(&now)
        .fetch_one(&self.db.pool)
        .await?;
        row_to_todo(&row)
    }

    /// Changes a todo in one statement; with `expected` (an `If-Match`), only from that
    /// version.
    async fn update(
        &self,
        id: i64,
        title: Option<&str>,
        done: Option<bool>,
        expected: Option<i64>,
    ) -> Result<Option<Todo>, sqlx::Error> {
        // A patch that changes nothing (`{}`, or every field as stored) keeps the version and
        // `updated_at`, as Kubernetes treats a no-op update: a client's cached copy stays valid.
        const CHANGED: &str = "(COALESCE($1, title) <> title OR COALESCE($2, done) <> done)";
        let row = sqlx::query(&format!(
            "UPDATE todos SET title = COALESCE($1, title), done = COALESCE($2, done), \
             updated_at = CASE WHEN {CHANGED} THEN $3 ELSE updated_at END, \
             version = version + CASE WHEN {CHANGED} THEN 1 ELSE 0 END \
             WHERE id = $4 AND ($5 < 0 OR version = $5) RETURNING {COLUMNS}"
        ))
        .bind(title)
        .bind(done.map(i64::from))
        .bind(body::now_rfc3339())
        .bind(id)
        .bind(expected.unwrap_or(-1))
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(row_to_todo).transpose()
    }

    async fn delete(&self, id: i64, expected: Option<i64>) -> Result<bool, sqlx::Error> {
        let res = sqlx::query("DELETE FROM todos WHERE id = $1 AND ($2 < 0 OR version = $2)")
            .bind(id)
            .bind(expected.unwrap_or(-1))
            .execute(&self.db.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The version the preconditions (`If-Match`, `If-None-Match`) let a change of todo `id`
    /// go ahead from: `None` without them (no read); else as [`Preconditions::expected`]
    /// judges the todo's current version (the 412), or the 404 if there is no todo.
    async fn expected(&self, id: i64, condition: &Preconditions) -> Result<Option<i64>, Rejection> {
        if condition.is_empty() {
            return Ok(None);
        }
        let todo = self
            .get(id)
            .await
            .map_err(db_rejection)?
            .ok_or_else(not_found)?;
        condition.expected(todo.version, "todo")
    }
}

fn not_found() -> Rejection {
    warp::reject::custom(ApiError::not_found("no such todo"))
}

fn with_store(
    store: Store,
) -> impl Filter<Extract = (Store,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || store.clone())
}

/// Every todo route. Path and method filters come first, then auth, then the body or query: an
/// unknown route is 404 and a wrong method 405 whatever the token, and 401/403 come before
/// validation.
pub fn routes(auth: &Auth, store: Store) -> BoxedFilter<(Response,)> {
    let editors = ["editor", "admin"];
    let list = warp::path!("todos")
        .and(warp::get())
        .and(within_scope(auth, READ, with_auth(auth)))
        .and(paging::query())
        .and(with_store(store.clone()))
        .and_then(list_todos);
    let create = warp::path!("todos")
        .and(warp::post())
        .and(within_scope(auth, WRITE, with_any_role(auth, &editors)))
        .and(body::json::<NewTodo>(MAX_BODY))
        .and(with_store(store.clone()))
        .and_then(create_todo);
    let get = warp::path!("todos" / PathId)
        .map(|PathId(id)| id)
        .and(warp::get())
        .and(within_scope(auth, READ, with_auth(auth)))
        .and(conditional::preconditions())
        .and(with_store(store.clone()))
        .and_then(get_todo);
    let patch = warp::path!("todos" / PathId)
        .map(|PathId(id)| id)
        .and(warp::patch())
        .and(within_scope(auth, WRITE, with_any_role(auth, &editors)))
        .and(conditional::preconditions())
        .and(body::json::<TodoPatch>(MAX_BODY))
        .and(with_store(store.clone()))
        .and_then(update_todo);
    let delete = warp::path!("todos" / PathId)
        .map(|PathId(id)| id)
        .and(warp::delete())
        .and(within_scope(auth, WRITE, with_role(auth, "admin")))
        .and(conditional::preconditions())
        .and(with_store(store))
        .and_then(delete_todo);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(patch)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

/// Lists todos, oldest first, a page at a time.
#[utoipa::path(get, path = "/todos", tag = "todos", security(("bearer_auth" = [])),
    params(
        ("limit" = Option<i64>, Query, description = "1–100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("done" = Option<bool>, Query, description = "only done (`true`) or open (`false`) todos")),
    responses((status = 200, body = TodoPage), (status = 400), (status = 401), (status = 403), (status = 503)))]
async fn list_todos(
    _claims: Arc<Claims>,
    params: Vec<(String, String)>,
    store: Store,
) -> Result<Response, Rejection> {
    let q = ListQuery::new(params, &["limit", "cursor", "done"])?;
    let (limit, after, done) = (q.limit()?, q.after()?, q.bool("done")?);
    let rows = store.list(after, limit, done).await.map_err(db_rejection)?;
    let page = Page::from_rows(rows, limit, |t| t.id);
    Ok(warp::reply::json(&page).into_response())
}

/// Creates a todo (role `editor` or `admin`).
#[utoipa::path(post, path = "/todos", tag = "todos", security(("bearer_auth" = [])), request_body = NewTodo,
    responses((status = 201, body = Todo, headers(("location" = String, description = "/todos/{id}: the new todo"), ("etag" = String, description = "the todo's version, for If-Match"))), (status = 400), (status = 401), (status = 403), (status = 413)))]
async fn create_todo(
    claims: Arc<Claims>,
    new: NewTodo,
    store: Store,
) -> Result<Response, Rejection> {
    // `created_by` records who created it: a token without the `sub` RFC 9068 requires has no
    // one to record, and more roles would not help (401, as tasks-api answers it). Nor does one
    // whose `sub` no creator can hold (a NUL, over 255 bytes), which PostgreSQL cannot store
    // (the insert failed there, a 500).
    let malformed = |why: &'static str| {
        warp::reject::custom(AuthError::new(
            AuthErrorKind::Malformed(why),
            crate::INFO.name,
        ))
    };
    if let Some(why) = claims.unstorable_subject() {
        return Err(malformed(why));
    }
    let creator = match claims.sub.as_deref() {
        Some(sub) if !sub.is_empty() => sub,
        _ => {
            return Err(malformed(
                "the token has no subject to record as the todo's creator",
            ));
        }
    };
    let title = valid_title(&new.title)?;
    let todo = store
        .insert(&title, new.done.unwrap_or(false), creator)
        .await
        .map_err(db_rejection)?;
    // RFC 9110 §15.3.2: where the new resource is (without it, the target `/todos` is taken
    // for it).
    let mut res = todo_reply(&todo, StatusCode::CREATED);
    if let Ok(location) = http::HeaderValue::from_str(&format!("/todos/{}", todo.id)) {
        res.headers_mut().insert(http::header::LOCATION, location);
    }
    Ok(res)
}

/// `todo` as JSON with its `ETag`, and `status`.
fn todo_reply(todo: &Todo, status: StatusCode) -> Response {
    let mut res = warp::reply::with_status(warp::reply::json(todo), status).into_response();
    res.headers_mut()
        .insert(http::header::ETAG, conditional::etag(todo.version));
    res
}

/// One todo.
#[utoipa::path(get, path = "/todos/{id}", tag = "todos", security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "the todo's id"), ("If-Match" = Option<String>, Header, description = "answer only at this version (the ETag), else 412"), ("If-None-Match" = Option<String>, Header, description = "the ETag of the copy the client holds: 304 while the todo is still at that version")),
    responses((status = 200, body = Todo, headers(("etag" = String, description = "the todo's version, for If-Match"))), (status = 304, description = "Not modified: the todo is at a version If-None-Match names"), (status = 400), (status = 401), (status = 403), (status = 404), (status = 412, description = "If-Match names another version")))]
async fn get_todo(
    id: i64,
    _claims: Arc<Claims>,
    condition: Preconditions,
    store: Store,
) -> Result<Response, Rejection> {
    let todo = store
        .get(id)
        .await
        .map_err(db_rejection)?
        .ok_or_else(not_found)?;
    if condition.not_modified(todo.version, "todo")? {
        return Ok(conditional::not_modified(todo.version));
    }
    Ok(todo_reply(&todo, StatusCode::OK))
}

/// Changes a todo's title and/or done flag (role `editor` or `admin`).
#[utoipa::path(patch, path = "/todos/{id}", tag = "todos", security(("bearer_auth" = [])), request_body = TodoPatch,
    params(("id" = i64, Path, description = "the todo's id"), ("If-Match" = Option<String>, Header, description = "go ahead only from this version (the ETag), or * for any"), ("If-None-Match" = Option<String>, Header, description = "go ahead only if the todo is not at this version (* for any: never)")),
    responses((status = 200, body = Todo, headers(("etag" = String, description = "the todo's version, for If-Match"))), (status = 400), (status = 401), (status = 403), (status = 404), (status = 412, description = "If-Match names another version, or If-None-Match the current one"), (status = 413)))]
async fn update_todo(
    id: i64,
    _claims: Arc<Claims>,
    condition: Preconditions,
    patch: TodoPatch,
    store: Store,
) -> Result<Response, Rejection> {
    // The precondition before the body (RFC 9110 §13.2.1), as tasks-api orders them.
    let expected = store.expected(id, &condition).await?;
    let title = patch.title.as_deref().map(valid_title).transpose()?;
    let todo = store
        .update(id, title.as_deref(), patch.done, expected)
        .await
        .map_err(db_rejection)?
        .ok_or_else(|| conditional::changed_or_gone(expected, "todo", not_found))?;
    Ok(todo_reply(&todo, StatusCode::OK))
}

/// Deletes a todo (role `admin`).
#[utoipa::path(delete, path = "/todos/{id}", tag = "todos", security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "the todo's id"), ("If-Match" = Option<String>, Header, description = "go ahead only from this version (the ETag), or * for any"), ("If-None-Match" = Option<String>, Header, description = "go ahead only if the todo is not at this version (* for any: never)")),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 412, description = "If-Match names another version, or If-None-Match the current one")))]
async fn delete_todo(
    id: i64,
    _claims: Arc<Claims>,
    condition: Preconditions,
    store: Store,
) -> Result<Response, Rejection> {
    let expected = store.expected(id, &condition).await?;
    if !store.delete(id, expected).await.map_err(db_rejection)? {
        return Err(conditional::changed_or_gone(expected, "todo", not_found));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The OpenAPI description of the todo routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_todos, create_todo, get_todo, update_todo, delete_todo),
    components(schemas(Todo, NewTodo, TodoPatch, TodoPage))
)]
pub struct TodosApi;

#[cfg(test)]
mod tests {
    use super::*;

    /// A conditional change goes ahead only from the version it names, checked by its own
    /// statement: one that slipped in after the handler read the version makes it match
    /// nothing (the 412), not overwrite it.
    #[tokio::test]
    async fn a_change_from_a_stale_version_matches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let settings = auth_core::service::config::DatabaseSettings {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let db = Database::connect(&settings, "todo-api").await.unwrap();
        db.migrate(&crate::startup::SQLITE, &crate::startup::POSTGRES)
            .await
            .unwrap();
        let store = Store::new(db);
        let todo = store.insert("a", false, "ed").await.unwrap();
        assert_eq!(todo.version, 1);
        let other = store
            .update(todo.id, Some("b"), None, Some(1))
            .await
            .unwrap();
        assert_eq!(other.map(|t| t.version), Some(2));
        assert!(
            store
                .update(todo.id, Some("c"), None, Some(1))
                .await
                .unwrap()
                .is_none()
        );
        assert!(!store.delete(todo.id, Some(1)).await.unwrap());
        let now = store.get(todo.id).await.unwrap().unwrap();
        assert_eq!((now.version, now.title.as_str()), (2, "b"));
        let done = store.update(todo.id, None, Some(true), None).await.unwrap();
        assert_eq!(
            done.map(|t| t.version),
            Some(3),
            "unconditional changes count too"
        );
        assert!(store.delete(todo.id, Some(3)).await.unwrap());
    }
}
