//! Todos: the model, its storage and its routes.

use std::sync::Arc;

use auth_core::Claims;
use auth_core::error::ApiError;
use auth_core::filters::{with_any_role, with_auth, with_role, within_scope};
use auth_core::service::body;
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
    })
}

const COLUMNS: &str = "id, title, done, created_by, created_at, updated_at";

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

    async fn update(
        &self,
        id: i64,
        title: Option<&str>,
        done: Option<bool>,
    ) -> Result<Option<Todo>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "UPDATE todos SET title = COALESCE($1, title), done = COALESCE($2, done), updated_at = $3 WHERE id = $4 RETURNING {COLUMNS}"
        ))
        .bind(title)
        .bind(done.map(i64::from))
        .bind(body::now_rfc3339())
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(row_to_todo).transpose()
    }

    async fn delete(&self, id: i64) -> Result<bool, sqlx::Error> {
        let res = sqlx::query("DELETE FROM todos WHERE id = $1")
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(res.rows_affected() > 0)
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
        .and(with_store(store.clone()))
        .and_then(get_todo);
    let patch = warp::path!("todos" / PathId)
        .map(|PathId(id)| id)
        .and(warp::patch())
        .and(within_scope(auth, WRITE, with_any_role(auth, &editors)))
        .and(body::json::<TodoPatch>(MAX_BODY))
        .and(with_store(store.clone()))
        .and_then(update_todo);
    let delete = warp::path!("todos" / PathId)
        .map(|PathId(id)| id)
        .and(warp::delete())
        .and(within_scope(auth, WRITE, with_role(auth, "admin")))
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
    responses((status = 201, body = Todo, headers(("location" = String, description = "/todos/{id}: the new todo"))), (status = 400), (status = 401), (status = 403), (status = 413)))]
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
    let location = format!("/todos/{}", todo.id);
    let created = warp::reply::with_status(warp::reply::json(&todo), StatusCode::CREATED);
    Ok(warp::reply::with_header(created, http::header::LOCATION, location).into_response())
}

/// One todo.
#[utoipa::path(get, path = "/todos/{id}", tag = "todos", security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "the todo's id")),
    responses((status = 200, body = Todo), (status = 401), (status = 403), (status = 404)))]
async fn get_todo(id: i64, _claims: Arc<Claims>, store: Store) -> Result<Response, Rejection> {
    let todo = store
        .get(id)
        .await
        .map_err(db_rejection)?
        .ok_or_else(not_found)?;
    Ok(warp::reply::json(&todo).into_response())
}

/// Changes a todo's title and/or done flag (role `editor` or `admin`).
#[utoipa::path(patch, path = "/todos/{id}", tag = "todos", security(("bearer_auth" = [])), request_body = TodoPatch,
    params(("id" = i64, Path, description = "the todo's id")),
    responses((status = 200, body = Todo), (status = 400), (status = 401), (status = 403), (status = 404), (status = 413)))]
async fn update_todo(
    id: i64,
    _claims: Arc<Claims>,
    patch: TodoPatch,
    store: Store,
) -> Result<Response, Rejection> {
    let title = patch.title.as_deref().map(valid_title).transpose()?;
    let todo = store
        .update(id, title.as_deref(), patch.done)
        .await
        .map_err(db_rejection)?
        .ok_or_else(not_found)?;
    Ok(warp::reply::json(&todo).into_response())
}

/// Deletes a todo (role `admin`).
#[utoipa::path(delete, path = "/todos/{id}", tag = "todos", security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "the todo's id")),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn delete_todo(id: i64, _claims: Arc<Claims>, store: Store) -> Result<Response, Rejection> {
    if !store.delete(id).await.map_err(db_rejection)? {
        return Err(not_found());
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
