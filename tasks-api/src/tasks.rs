//! Personal tasks: the model, its storage and its routes. The owner rule ("a user sees and
//! changes only their own tasks; an admin may act on anyone's") is enforced twice: in SQL (every
//! single-task query of a non-admin carries `owner = $n`) and in the handler, through
//! [`Claims::owns_or_has_role`], so a missing check in one place cannot leak a row.

use std::sync::Arc;

use auth_core::Claims;
use auth_core::error::ApiError;
use auth_core::filters::{with_auth, within_scope};
use auth_core::service::body;
use auth_core::service::conditional::{self, Preconditions};
use auth_core::service::paging::{self, ListQuery, Page};
use auth_core::service::storage::{Database, db_rejection};
use auth_core::verify::{Auth, AuthError, AuthErrorKind};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

/// Largest JSON body accepted (32 KiB): room for the longest task the fields allow (a 200-character
/// title and a 2000-character description) with every character written as a `\uXXXX` escape,
/// an emoji as two (12 bytes), as some clients write JSON (about 27 KB).
pub const MAX_BODY: u64 = 32 * 1024;
/// The roles that may act on anyone's tasks.
pub const OVERRIDE_ROLES: &[&str] = &["admin"];

/// The scope reading routes need of a token that carries a `scope` claim.
pub const READ: &str = "tasks:read";
/// The scope writing routes need of a token that carries a `scope` claim.
pub const WRITE: &str = "tasks:write";

/// A task.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Task {
    /// Its id.
    pub id: i64,
    /// The `sub` of its owner; set from the token at creation, never from a body.
    pub owner: String,
    /// 1–200 characters, trimmed.
    pub title: String,
    /// Up to 2000 characters, kept as sent (not trimmed).
    pub description: Option<String>,
    /// RFC 3339, normalised to UTC.
    pub due: Option<String>,
    /// Whether it is done.
    pub done: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Its version, one more at every change: answered as the `ETag` (`"3"`), not in the body.
    #[serde(skip)]
    pub version: i64,
}

/// `POST /tasks` and `PUT /tasks/{id}`: the whole task (PUT resets absent optional fields).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// 1–200 characters after trimming.
    pub title: String,
    /// Up to 2000 characters, kept as sent (not trimmed).
    #[serde(default)]
    pub description: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub due: Option<String>,
    /// Default `false`.
    #[serde(default)]
    pub done: Option<bool>,
    /// Refused (even `null`): a task always belongs to the caller.
    #[serde(default, deserialize_with = "body::present")]
    #[schema(ignore)]
    owner: Option<serde::de::IgnoredAny>,
}

/// `PATCH /tasks/{id}`: any subset; `null` clears `description` or `due`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    /// 1–200 characters after trimming; not `null`.
    #[serde(default, deserialize_with = "body::not_null")]
    #[schema(nullable = false)]
    pub title: Option<String>,
    /// Up to 2000 characters, kept as sent; `null` clears it.
    #[serde(default, deserialize_with = "body::present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// RFC 3339; `null` clears it.
    #[serde(default, deserialize_with = "body::present")]
    #[schema(value_type = Option<String>)]
    pub due: Option<Option<String>>,
    /// Done or not; not `null`.
    #[serde(default, deserialize_with = "body::not_null")]
    #[schema(nullable = false)]
    pub done: Option<bool>,
    /// Refused (even `null`): a task cannot be moved to another owner.
    #[serde(default, deserialize_with = "body::present")]
    #[schema(ignore)]
    owner: Option<serde::de::IgnoredAny>,
}

/// `GET /tasks`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskPage {
    /// The tasks of this page, in id order.
    pub items: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The validated fields of a task.
struct Fields {
    title: String,
    description: Option<String>,
    due: Option<String>,
    done: bool,
}

fn owner_refused() -> ApiError {
    ApiError::bad_request("owner: cannot be set; a task belongs to the caller")
}

fn description(value: Option<&str>) -> Result<Option<String>, ApiError> {
    value
        .map(|d| body::free_text_field("description", d, 0, 2000))
        .transpose()
}

fn due(value: Option<&str>) -> Result<Option<String>, ApiError> {
    value.map(|d| body::timestamp_field("due", d)).transpose()
}

impl TaskInput {
    fn validate(self) -> Result<Fields, ApiError> {
        if self.owner.is_some() {
            return Err(owner_refused());
        }
        Ok(Fields {
            title: body::text_field("title", &self.title, 1, 200)?,
            description: description(self.description.as_deref())?,
            due: due(self.due.as_deref())?,
            done: self.done.unwrap_or(false),
        })
    }
}

/// The validated fields of a patch: `None` leaves a field as stored; `Some(None)` clears it.
#[derive(Debug, Default)]
struct Changes {
    title: Option<String>,
    description: Option<Option<String>>,
    due: Option<Option<String>>,
    done: Option<bool>,
}

impl TaskPatch {
    /// The patch, validated.
    fn validate(self) -> Result<Changes, ApiError> {
        if self.owner.is_some() {
            return Err(owner_refused());
        }
        Ok(Changes {
            title: self
                .title
                .map(|t| body::text_field("title", &t, 1, 200))
                .transpose()?,
            description: self
                .description
                .map(|d| description(d.as_deref()))
                .transpose()?,
            due: self.due.map(|d| due(d.as_deref())).transpose()?,
            done: self.done,
        })
    }
}

/// Whose tasks a query may see: the caller's own, or anyone's (an override role).
#[derive(Debug, Clone)]
enum Scope {
    Owner(String),
    Anyone,
}

impl Scope {
    /// The scope of a caller: admins see anyone's tasks; everyone else only their own.
    ///
    /// A `sub` no owner can hold (a NUL, over 255 bytes: [`Claims::unstorable_subject`]) is
    /// refused (401) for everyone, admins too: a query with it failed on PostgreSQL (a 500)
    /// where SQLite stored it.
    fn of(claims: &Claims) -> Result<Scope, Rejection> {
        if let Some(why) = claims.unstorable_subject() {
            return Err(warp::reject::custom(AuthError::new(
                AuthErrorKind::Malformed(why),
                crate::INFO.name,
            )));
        }
        if claims.has_any_role(OVERRIDE_ROLES) {
            return Ok(Scope::Anyone);
        }
        match claims.sub.as_deref() {
            Some(sub) if !sub.is_empty() => Ok(Scope::Owner(sub.to_owned())),
            // No scope would help: the token itself lacks what RFC 9068 requires (401).
            _ => Err(warp::reject::custom(AuthError::new(
                AuthErrorKind::Malformed("the token has no subject"),
                crate::INFO.name,
            ))),
        }
    }
}

fn row_to_task(row: &AnyRow) -> Result<Task, sqlx::Error> {
    Ok(Task {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        due: row.try_get("due")?,
        done: row.try_get::<i64, _>("done")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

const COLUMNS: &str = "id, owner, title, description, due, done, created_at, updated_at, version";

/// Which tasks a list shows.
struct ListFilter {
    /// `None`: everyone's.
    owner: Option<String>,
    done: Option<bool>,
    due_before: Option<String>,
    after: i64,
    limit: i64,
}

/// Storage of tasks.
#[derive(Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Tasks live in `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    async fn list(&self, f: &ListFilter) -> Result<Vec<Task>, sqlx::Error> {
        // Conditions are appended with their own placeholders: the values are always bound.
        let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE id > $1");
        let mut n = 1;
        let mut push = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&format!(" {clause} ${n}"));
        };
        if f.owner.is_some() {
            push(&mut sql, "AND owner =");
        }
        if f.done.is_some() {
            push(&mut sql, "AND done =");
        }
        if f.due_before.is_some() {
            push(&mut sql, "AND due IS NOT NULL AND due <");
        }
        push(&mut sql, "ORDER BY id LIMIT");
        let mut q = sqlx::query(&sql).bind(f.after);
        if let Some(owner) = &f.owner {
            q = q.bind(owner);
        }
        if let Some(done) = f.done {
            q = q.bind(i64::from(done));
        }
        if let Some(due) = &f.due_before {
            q = q.bind(due);
        }
        let rows = q.bind(f.limit + 1).fetch_all(&self.db.pool).await?;
        rows.iter().map(row_to_task).collect()
    }

    /// One task, within `scope` (the owner condition is part of the SQL for non-admins).
    async fn get(&self, id: i64, scope: &Scope) -> Result<Option<Task>, sqlx::Error> {
        let row = match scope {
            Scope::Owner(sub) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM tasks WHERE id = $1 AND owner = $2"
                ))
                .bind(id)
                .bind(sub)
                .fetch_optional(&self.db.pool)
                .await?
            }
            Scope::Anyone => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.db.pool)
                    .await?
            }
        };
        row.as_ref().map(row_to_task).transpose()
    }

    async fn insert(&self, owner: &str, f: &Fields) -> Result<Task, sqlx::Error> {
        let now = body::now_rfc3339();
        let row = sqlx::query(&format!(
            "INSERT INTO tasks (owner, title, description, due, done, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {COLUMNS}"
        ))
        .bind(owner)
        .bind(&f.title)
        .bind(&f.description)
        .bind(&f.due)
        .bind(i64::from(f.done))
        .bind(&now)
        .fetch_one(&self.db.pool)
        .await?;
        row_to_task(&row)
    }

    /// Replaces a task's fields; the owner condition travels with the id, and with
    /// `expected` (an `If-Match`) the version it must still have.
    async fn replace(
        &self,
        task: &Task,
        f: &Fields,
        expected: Option<i64>,
    ) -> Result<Option<Task>, sqlx::Error> {
        // A replacement identical to what is stored changes nothing: no new version, no new
        // `updated_at` (as Kubernetes treats a no-op update), so a client's cached copy stays valid.
        const CHANGED: &str = "(title <> $1 OR description IS DISTINCT FROM $2 \
             OR due IS DISTINCT FROM $3 OR done <> $4)";
        let row = sqlx::query(&format!(
            "UPDATE tasks SET title = $1, description = $2, due = $3, done = $4, \
             updated_at = CASE WHEN {CHANGED} THEN $5 ELSE updated_at END, \
             version = version + CASE WHEN {CHANGED} THEN 1 ELSE 0 END \
             WHERE id = $6 AND owner = $7 AND ($8 < 0 OR version = $8) RETURNING {COLUMNS}"
        ))
        .bind(&f.title)
        .bind(&f.description)
        .bind(&f.due)
        .bind(i64::from(f.done))
        .bind(body::now_rfc3339())
        .bind(task.id)
        .bind(&task.owner)
        .bind(expected.unwrap_or(-1))
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(row_to_task).transpose()
    }

    /// Applies `c` to the stored row in one statement: a field the patch leaves alone keeps what
    /// is stored at that moment, so two PATCHes of different fields at once both land (merging
    /// a copy read earlier would put back what the other one changed). A patch that changes
    /// nothing (`{}`, or every field as stored) keeps the version and `updated_at`.
    async fn patch(
        &self,
        task: &Task,
        c: &Changes,
        expected: Option<i64>,
    ) -> Result<Option<Task>, sqlx::Error> {
        const CHANGED: &str = "(COALESCE($1, title) <> title \
             OR ($2 = 1 AND $3 IS DISTINCT FROM description) \
             OR ($4 = 1 AND $5 IS DISTINCT FROM due) OR COALESCE($6, done) <> done)";
        let row = sqlx::query(&format!(
            "UPDATE tasks SET title = COALESCE($1, title), \
             description = CASE WHEN $2 = 1 THEN $3 ELSE description END, \
             due = CASE WHEN $4 = 1 THEN $5 ELSE due END, \
             done = COALESCE($6, done), \
             updated_at = CASE WHEN {CHANGED} THEN $7 ELSE updated_at END, \
             version = version + CASE WHEN {CHANGED} THEN 1 ELSE 0 END \
             WHERE id = $8 AND owner = $9 AND ($10 < 0 OR version = $10) RETURNING {COLUMNS}"
        ))
        .bind(&c.title)
        .bind(i64::from(c.description.is_some()))
        .bind(c.description.clone().flatten())
        .bind(i64::from(c.due.is_some()))
        .bind(c.due.clone().flatten())
        .bind(c.done.map(i64::from))
        .bind(body::now_rfc3339())
        .bind(task.id)
        .bind(&task.owner)
        .bind(expected.unwrap_or(-1))
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(row_to_task).transpose()
    }

    async fn delete(&self, task: &Task, expected: Option<i64>) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "DELETE FROM tasks WHERE id = $1 AND owner = $2 AND ($3 < 0 OR version = $3)",
        )
        .bind(task.id)
        .bind(&task.owner)
        .bind(expected.unwrap_or(-1))
        .execute(&self.db.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }
}

/// `task` as JSON with its `ETag`, and `status`.
fn task_reply(task: &Task, status: StatusCode) -> Response {
    let mut res = warp::reply::with_status(warp::reply::json(task), status).into_response();
    res.headers_mut()
        .insert(http::header::ETAG, conditional::etag(task.version));
    res
}

/// The one 404 of a single task: for a task that does not exist, one of another user's, and a
/// malformed id alike, byte for byte (it does not echo the id).
fn not_found() -> Rejection {
    warp::reject::custom(ApiError::not_found("no such task"))
}

/// Loads the task `id` names if the caller may act on it, else the one 404.
async fn find(store: &Store, claims: &Claims, id: &str) -> Result<Task, Rejection> {
    let scope = Scope::of(claims)?;
    let id = paging::canonical_i64(id).ok_or_else(not_found)?;
    let task = store
        .get(id, &scope)
        .await
        .map_err(db_rejection)?
        .ok_or_else(not_found)?;
    // Defence in depth: the SQL already filtered, the owner rule must agree.
    if !claims.owns_or_has_role(&task.owner, OVERRIDE_ROLES) {
        return Err(not_found());
    }
    Ok(task)
}

fn with_store(
    store: Store,
) -> impl Filter<Extract = (Store,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || store.clone())
}

/// Every task route: path and method, then auth, then query or body.
pub fn routes(auth: &Auth, store: Store) -> BoxedFilter<(Response,)> {
    let list = warp::path!("tasks")
        .and(warp::get())
        .and(within_scope(auth, READ, with_auth(auth)))
        .and(paging::query())
        .and(with_store(store.clone()))
        .and_then(list_tasks);
    let create = warp::path!("tasks")
        .and(warp::post())
        .and(within_scope(auth, WRITE, with_auth(auth)))
        .and(body::json::<TaskInput>(MAX_BODY))
        .and(with_store(store.clone()))
        .and_then(create_task);
    let get = warp::path!("tasks" / String)
        .and(warp::get())
        .and(within_scope(auth, READ, with_auth(auth)))
        .and(conditional::preconditions())
        .and(with_store(store.clone()))
        .and_then(get_task);
    let put = warp::path!("tasks" / String)
        .and(warp::put())
        .and(within_scope(auth, WRITE, with_auth(auth)))
        .and(conditional::preconditions())
        .and(body::json::<TaskInput>(MAX_BODY))
        .and(with_store(store.clone()))
        .and_then(replace_task);
    let patch = warp::path!("tasks" / String)
        .and(warp::patch())
        .and(within_scope(auth, WRITE, with_auth(auth)))
        .and(conditional::preconditions())
        .and(body::json::<TaskPatch>(MAX_BODY))
        .and(with_store(store.clone()))
        .and_then(update_task);
    let delete = warp::path!("tasks" / String)
        .and(warp::delete())
        .and(within_scope(auth, WRITE, with_auth(auth)))
        .and(conditional::preconditions())
        .and(with_store(store))
        .and_then(delete_task);
    list.or(create)
        .unify()
        .or(get)
        .unify()
        .or(put)
        .unify()
        .or(patch)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

/// The caller's tasks, a page at a time; an admin may pass `owner=<sub>` or `owner=*`.
#[utoipa::path(get, path = "/tasks", tag = "tasks", security(("bearer_auth" = [])),
    params(
        ("limit" = Option<i64>, Query, description = "1–100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("done" = Option<bool>, Query, description = "only done (`true`) or open (`false`) tasks"),
        ("due_before" = Option<String>, Query, description = "only tasks due before this RFC 3339 time"),
        ("owner" = Option<String>, Query, description = "admin only: a user's `sub`, or `*` for everyone")),
    responses((status = 200, body = TaskPage), (status = 400), (status = 401), (status = 403)))]
async fn list_tasks(
    claims: Arc<Claims>,
    params: Vec<(String, String)>,
    store: Store,
) -> Result<Response, Rejection> {
    // Who may list what comes first (401/403), then the query's validation (400).
    let scope = Scope::of(&claims)?;
    if matches!(scope, Scope::Owner(_)) && params.iter().any(|(name, _)| name == "owner") {
        return Err(only_admins_pass_owner());
    }
    let q = ListQuery::new(params, &["limit", "cursor", "done", "due_before", "owner"])?;
    let owner = match (q.get("owner"), &scope) {
        (None, Scope::Owner(sub)) => Some(sub.clone()),
        (None, Scope::Anyone) => match claims.sub.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => Some(sub.to_owned()),
            // "The caller's tasks" of a caller without a subject: not everyone's, silently.
            None => {
                return Err(warp::reject::custom(ApiError::bad_request(
                    "owner: the token has no subject; pass owner=<sub>, or owner=* for everyone",
                )));
            }
        },
        (Some("*"), Scope::Anyone) => None,
        // An empty owner names nobody: a mistake, not an empty list.
        (Some(""), Scope::Anyone) => {
            return Err(warp::reject::custom(ApiError::bad_request(
                "owner: must be a user's sub, or * for everyone",
            )));
        }
        // No `sub` holds a NUL (PostgreSQL's TEXT cannot): a 400 rather than a failed query.
        (Some(other), Scope::Anyone) if other.contains('\0') => {
            return Err(warp::reject::custom(ApiError::bad_request(
                "owner: must not contain NUL characters",
            )));
        }
        (Some(other), Scope::Anyone) => Some(other.to_owned()),
        (Some(_), Scope::Owner(_)) => return Err(only_admins_pass_owner()),
    };
    let filter = ListFilter {
        owner,
        done: q.bool("done")?,
        due_before: q
            .get("due_before")
            .map(|d| body::timestamp_bound("due_before", d))
            .transpose()?,
        after: q.after()?,
        limit: q.limit()?,
    };
    let rows = store.list(&filter).await.map_err(db_rejection)?;
    Ok(warp::reply::json(&Page::from_rows(rows, filter.limit, |t| t.id)).into_response())
}

/// 403 for a non-admin's `owner=` parameter.
fn only_admins_pass_owner() -> Rejection {
    warp::reject::custom(AuthError::new(
        AuthErrorKind::InsufficientScope(
            "owner: only an admin may list another user's tasks".into(),
        ),
        crate::INFO.name,
    ))
}

/// Creates a task owned by the caller.
#[utoipa::path(post, path = "/tasks", tag = "tasks", security(("bearer_auth" = [])), request_body = TaskInput,
    responses((status = 201, body = Task, headers(("location" = String, description = "/tasks/{id}: the new task"), ("etag" = String, description = "the task's version, for If-Match"))), (status = 400), (status = 401), (status = 403), (status = 413)))]
async fn create_task(
    claims: Arc<Claims>,
    input: TaskInput,
    store: Store,
) -> Result<Response, Rejection> {
    let owner = match Scope::of(&claims)? {
        Scope::Owner(sub) => sub,
        // An admin's own task is still theirs; no field of the request can name another
        // owner, so a token without `sub` is the token's fault, as for anyone (401).
        Scope::Anyone => claims
            .sub
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                warp::reject::custom(AuthError::new(
                    AuthErrorKind::Malformed("the token has no subject to own the task"),
                    crate::INFO.name,
                ))
            })?,
    };
    let fields = input.validate()?;
    let task = store.insert(&owner, &fields).await.map_err(db_rejection)?;
    // RFC 9110 §15.3.2: where the new resource is (without it, the target `/tasks` is taken
    // for it).
    let mut res = task_reply(&task, StatusCode::CREATED);
    if let Ok(location) = http::HeaderValue::from_str(&format!("/tasks/{}", task.id)) {
        res.headers_mut().insert(http::header::LOCATION, location);
    }
    Ok(res)
}

/// One task (its owner or an admin).
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "the task's id"), ("If-Match" = Option<String>, Header, description = "answer only at this version (the ETag), else 412"), ("If-None-Match" = Option<String>, Header, description = "the ETag of the copy the client holds: 304 while the task is still at that version")),
    responses((status = 200, body = Task, headers(("etag" = String, description = "the task's version, for If-Match"))), (status = 304, description = "Not modified: the task is at a version If-None-Match names"), (status = 400), (status = 401), (status = 403), (status = 404), (status = 412, description = "If-Match names another version")))]
async fn get_task(
    id: String,
    claims: Arc<Claims>,
    condition: Preconditions,
    store: Store,
) -> Result<Response, Rejection> {
    let task = find(&store, &claims, &id).await?;
    if condition.not_modified(task.version, "task")? {
        return Ok(conditional::not_modified(task.version));
    }
    Ok(task_reply(&task, StatusCode::OK))
}

/// Replaces a task: `title` required, absent optional fields reset.
#[utoipa::path(put, path = "/tasks/{id}", tag = "tasks", security(("bearer_auth" = [])), request_body = TaskInput,
    params(("id" = i64, Path, description = "the task's id"), ("If-Match" = Option<String>, Header, description = "go ahead only from this version (the ETag), or * for any"), ("If-None-Match" = Option<String>, Header, description = "go ahead only if the task is not at this version (* for any: never)")),
    responses((status = 200, body = Task, headers(("etag" = String, description = "the task's version, for If-Match"))), (status = 400), (status = 401), (status = 403), (status = 404), (status = 412, description = "If-Match names another version, or If-None-Match the current one")))]
async fn replace_task(
    id: String,
    claims: Arc<Claims>,
    condition: Preconditions,
    input: TaskInput,
    store: Store,
) -> Result<Response, Rejection> {
    let task = find(&store, &claims, &id).await?;
    let expected = condition.expected(task.version, "task")?;
    let fields = input.validate()?;
    let task = store
        .replace(&task, &fields, expected)
        .await
        .map_err(db_rejection)?
        .ok_or_else(|| conditional::changed_or_gone(expected, "task", not_found))?;
    Ok(task_reply(&task, StatusCode::OK))
}

/// Changes any subset of a task's fields.
#[utoipa::path(patch, path = "/tasks/{id}", tag = "tasks", security(("bearer_auth" = [])), request_body = TaskPatch,
    params(("id" = i64, Path, description = "the task's id"), ("If-Match" = Option<String>, Header, description = "go ahead only from this version (the ETag), or * for any"), ("If-None-Match" = Option<String>, Header, description = "go ahead only if the task is not at this version (* for any: never)")),
    responses((status = 200, body = Task, headers(("etag" = String, description = "the task's version, for If-Match"))), (status = 400), (status = 401), (status = 403), (status = 404), (status = 412, description = "If-Match names another version, or If-None-Match the current one")))]
async fn update_task(
    id: String,
    claims: Arc<Claims>,
    condition: Preconditions,
    patch: TaskPatch,
    store: Store,
) -> Result<Response, Rejection> {
    let task = find(&store, &claims, &id).await?;
    let expected = condition.expected(task.version, "task")?;
    let changes = patch.validate()?;
    let task = store
        .patch(&task, &changes, expected)
        .await
        .map_err(db_rejection)?
        .ok_or_else(|| conditional::changed_or_gone(expected, "task", not_found))?;
    Ok(task_reply(&task, StatusCode::OK))
}

/// Deletes a task.
#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks", security(("bearer_auth" = [])),
    params(("id" = i64, Path, description = "the task's id"), ("If-Match" = Option<String>, Header, description = "go ahead only from this version (the ETag), or * for any"), ("If-None-Match" = Option<String>, Header, description = "go ahead only if the task is not at this version (* for any: never)")),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 412, description = "If-Match names another version, or If-None-Match the current one")))]
async fn delete_task(
    id: String,
    claims: Arc<Claims>,
    condition: Preconditions,
    store: Store,
) -> Result<Response, Rejection> {
    let task = find(&store, &claims, &id).await?;
    let expected = condition.expected(task.version, "task")?;
    if !store.delete(&task, expected).await.map_err(db_rejection)? {
        return Err(conditional::changed_or_gone(expected, "task", not_found));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The OpenAPI description of the task routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_tasks,
        create_task,
        get_task,
        replace_task,
        update_task,
        delete_task
    ),
    components(schemas(Task, TaskInput, TaskPatch, TaskPage))
)]
pub struct TasksApi;

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated SQLite store in `dir`.
    async fn sqlite_store(dir: &std::path::Path) -> Store {
        let settings = auth_core::service::config::DatabaseSettings {
            data_dir: dir.to_path_buf(),
            ..Default::default()
        };
        let db = Database::connect(&settings, "tasks-api").await.unwrap();
        db.migrate(&crate::startup::SQLITE, &crate::startup::POSTGRES)
            .await
            .unwrap();
        Store::new(db)
    }

    /// The SQL alone keeps another user's row out, whatever a handler forgets.
    #[tokio::test]
    async fn a_non_admin_scope_cannot_load_another_users_task() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        let fields = Fields {
            title: "a".into(),
            description: None,
            due: None,
            done: false,
        };
        let task = store.insert("alice", &fields).await.unwrap();
        let bob = Scope::Owner("bob".into());
        assert!(store.get(task.id, &bob).await.unwrap().is_none());
        assert!(
            store
                .get(task.id, &Scope::Owner("alice".into()))
                .await
                .unwrap()
                .is_some()
        );
        assert!(store.get(task.id, &Scope::Anyone).await.unwrap().is_some());
    }

    /// A PATCH changes only its own fields in the row as stored when it lands, not in a copy
    /// read before: a change made in between (another PATCH, a PUT) survives it.
    #[tokio::test]
    async fn a_patch_keeps_what_changed_since_the_task_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        let read_before = store
            .insert(
                "alice",
                &Fields {
                    title: "a".into(),
                    description: Some("d".into()),
                    due: None,
                    done: false,
                },
            )
            .await
            .unwrap();
        let set_description = Changes {
            description: Some(Some("new".into())),
            ..Changes::default()
        };
        store
            .patch(&read_before, &set_description, None)
            .await
            .unwrap();
        let set_done = Changes {
            done: Some(true),
            ..Changes::default()
        };
        let task = store
            .patch(&read_before, &set_done, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (task.description.as_deref(), task.done, task.title.as_str()),
            (Some("new"), true, "a")
        );
        let clear = Changes {
            description: Some(None),
            due: Some(Some("2030-01-01T00:00:00Z".into())),
            ..Changes::default()
        };
        let task = store
            .patch(&read_before, &clear, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (task.description, task.due.as_deref(), task.done),
            (None, Some("2030-01-01T00:00:00Z"), true)
        );
    }

    /// A conditional change goes ahead only from the version it names, checked by its own
    /// statement: one that slipped in after the read makes it match nothing (the 412), not
    /// overwrite it.
    #[tokio::test]
    async fn a_change_from_a_stale_version_matches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        let fields = |title: &str| Fields {
            title: title.into(),
            description: None,
            due: None,
            done: false,
        };
        let read = store.insert("alice", &fields("a")).await.unwrap();
        assert_eq!(read.version, 1);
        let other = store
            .replace(&read, &fields("b"), Some(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((other.version, other.title.as_str()), (2, "b"));
        assert!(
            store
                .replace(&read, &fields("c"), Some(1))
                .await
                .unwrap()
                .is_none()
        );
        let done = Changes {
            done: Some(true),
            ..Changes::default()
        };
        assert!(store.patch(&read, &done, Some(1)).await.unwrap().is_none());
        assert!(!store.delete(&read, Some(1)).await.unwrap());
        let now = store.get(read.id, &Scope::Anyone).await.unwrap().unwrap();
        assert_eq!((now.version, now.title.as_str(), now.done), (2, "b", false));
        // Unconditional changes still go ahead, and count.
        let patched = store.patch(&read, &done, None).await.unwrap().unwrap();
        assert_eq!(patched.version, 3);
        assert!(store.delete(&read, Some(3)).await.unwrap());
    }
}
