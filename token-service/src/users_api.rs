//! The user routes. Admin (role `admin`, via `with_role`, and scope `users:admin` of a token that
//! carries a `scope` claim): `POST /users`, `GET /users`, `GET /users/{id}`, `DELETE /users/{id}`
//! (disables the user). Any signed-in user: `GET /users/me`, `PUT /users/me/password`. Tokens
//! must carry the audience `token-service` (`auth.audience`): admins get it by default, anyone by
//! asking for `audience=token-service`.
//!
//! A token already issued stays valid until its `exp` after a password change, and at the
//! resource services after a disable; here, every route looks the caller's account up, and a
//! disabled or deleted account's token is a 401 (see [`active`]).

use std::sync::Arc;

use auth_core::filters::{with_auth, with_role, within_scope};
use auth_core::service::body::shorten;
use auth_core::verify::{AuthError, AuthErrorKind};
use auth_core::{ApiError, Auth, Claims};
use http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::audit;
use crate::passwords::{HashError, check_policy};
use crate::startup::State;
use crate::users::{StoreError, UserView};

/// `POST /users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1 to 64 characters: letters, digits, `.`, `_`, `-`, `@`.
    pub username: String,
    /// 12 characters to 256 bytes, not the username.
    pub password: String,
    /// Default `["user"]`; each must be a role of `token.role_scopes`.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// URL paths for the `access` claim.
    #[serde(default)]
    pub access: Vec<String>,
}

/// `PUT /users/me/password`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The current password.
    pub old_password: String,
    /// The new one (same policy as on creation).
    pub new_password: String,
}

fn json_body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    auth_core::service::body::json(16 * 1024)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "user store failed");
    ApiError::internal()
}

/// The scope the admin routes need of a token that carries a `scope` claim: an admin's token
/// narrowed at sign-in (`scope=todos:read`) manages no accounts.
pub const ADMIN_SCOPE: &str = "users:admin";

/// `authenticated`'s claims, when their subject is an account that may still act: a disabled
/// (or deleted) account's live token does nothing here (401 `invalid_token`), so a leaked admin
/// token cannot outlast the disable by creating accounts of its own.
fn active(
    authenticated: impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone,
    state: State,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone {
    authenticated.and_then(move |claims: Arc<Claims>| {
        let state = state.clone();
        async move {
            match state.users.by_id(claims.subject()).await {
                Ok(Some(user)) if !user.disabled => Ok(claims),
                Ok(_) => Err(warp::reject::custom(AuthError::new(
                    AuthErrorKind::Revoked("the account is disabled or no longer exists"),
                    crate::INFO.name,
                ))),
                Err(e) => Err(warp::reject::custom(e.to_api_error())),
            }
        }
    })
}

/// The routes.
pub fn routes(state: State, auth: &Auth) -> BoxedFilter<(Response,)> {
    let st = state.clone();
    let with_state = move || {
        let s = st.clone();
        warp::any().map(move || s.clone())
    };
    let admin = || {
        active(
            within_scope(auth, ADMIN_SCOPE, with_role(auth, "admin")),
            state.clone(),
        )
    };
    let user = || active(with_auth(auth), state.clone());
    let create = warp::path!("users")
        .and(warp::post())
        .and(admin())
        .and(json_body::<CreateUser>())
        .and(with_state())
        .then(create_user);
    let list = warp::path!("users")
        .and(warp::get())
        .and(admin())
        .and(with_state())
        .then(list_users);
    let get = warp::path!("users" / UserId)
        .and(warp::get())
        .and(admin())
        .and(with_state())
        .then(get_user);
    let disable = warp::path!("users" / String)
        .and(warp::delete())
        .and(admin())
        .and(with_state())
        .then(disable_user);
    let me = warp::path!("users" / "me")
        .and(warp::get())
        .and(user())
        .and(with_state())
        .then(get_me);
    let password = warp::path!("users" / "me" / "password")
        .and(warp::put())
        .and(user())
        .and(json_body::<ChangePassword>())
        .and(with_state())
        .then(change_password);
    me.or(password)
        .unify()
        .or(create)
        .unify()
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(disable)
        .unify()
        .map(|r: Result<Response, ApiError>| r.unwrap_or_else(|e| e.into_response()))
        .boxed()
}

/// The rule for a new username, on `POST /users` and `token-service users add` alike.
pub(crate) fn check_username(username: &str) -> Result<(), ApiError> {
    let ok = !username.is_empty()
        && username.chars().count() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username: 1 to 64 characters: letters, digits, '.', '_', '-', '@'",
        ))
    }
}

/// Creates a user.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    security(("bearer_auth" = [])),
    responses(
        (status = 201, body = UserView, headers(("location" = String, description = "/users/{id}: the new user"))),
        (status = 400, description = "A field is invalid; the message names it"),
        (status = 401, description = "No valid token, or the account is disabled or no longer exists"),
        (status = 403, description = "Not an admin"),
        (status = 409, description = "The username exists"),
        (status = 503, description = "temporarily_unavailable: users.max_queued_hashes requests already wait for a password hash; see Retry-After"),
    ))]
async fn create_user(
    admin: Arc<Claims>,
    body: CreateUser,
    state: State,
) -> Result<Response, ApiError> {
    check_username(&body.username)?;
    check_policy("password", &body.username, &body.password).map_err(ApiError::bad_request)?;
    let roles = body.roles.unwrap_or_else(|| vec!["user".into()]);
    if roles.is_empty() {
        return Err(ApiError::bad_request("roles: at least one role"));
    }
    if let Some(bad) = roles
        .iter()
        .find(|r| !state.settings.token.role_scopes.contains_key(*r))
    {
        return Err(ApiError::bad_request(format!(
            "roles: unknown role {:?}",
            shorten(bad, 64)
        )));
    }
    if let Some(bad) = body
        .access
        .iter()
        .find(|p| !auth_core::filters::valid_grant(p))
    {
        return Err(ApiError::bad_request(format!(
            "access: {:?} is not a path written as the services compare it (starting with '/', \
             no query, trailing '/', empty or dot segment; '/*' at the end for everything below)",
            shorten(bad, 64)
        )));
    }
    let hash = match state
        .passwords
        .hash(&SecretString::from(body.password))
        .await
    {
        Ok(hash) => hash,
        Err(HashError::Busy(busy)) => {
            audit!(event = "user_create", outcome = "shed", reason = "hash_queue_full", actor = admin.username.as_deref().unwrap_or(""), username = %body.username);
            return Err(busy.into());
        }
        Err(HashError::Failed(e)) => return Err(internal(e)),
    };
    let user = match state
        .users
        .create(&body.username, &hash, &roles, &body.access)
        .await
    {
        Ok(u) => u,
        Err(StoreError::Duplicate) => {
            audit!(event = "user_create", outcome = "conflict", actor = admin.username.as_deref().unwrap_or(""), username = %body.username);
            return Err(ApiError::conflict("username: already exists"));
        }
        Err(e) => return Err(e.to_api_error()),
    };
    audit!(event = "user_create", outcome = "success", actor = admin.username.as_deref().unwrap_or(""),
        username = %user.username, id = %user.id, roles = ?user.roles);
    let created = warp::reply::with_status(
        warp::reply::json(&UserView::from(&user)),
        StatusCode::CREATED,
    );
    // The id is a UUID: nothing in it needs escaping in a header or a path.
    let location = format!("/users/{}", user.id);
    Ok(warp::reply::with_header(created, http::header::LOCATION, location).into_response())
}

/// Lists the users.
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer_auth" = [])),
    responses(
        (status = 200, body = [UserView]),
        (status = 401, description = "No valid token, or the account is disabled or no longer exists"),
        (status = 403, description = "Not an admin"),
    ))]
async fn list_users(_admin: Arc<Claims>, state: State) -> Result<Response, ApiError> {
    let users = state.users.list().await.map_err(|e| e.to_api_error())?;
    let views: Vec<UserView> = users.iter().map(UserView::from).collect();
    Ok(warp::reply::json(&views).into_response())
}

/// A user id in `GET /users/{id}`: any segment but `me`, which is `GET /users/me`'s alone (a
/// signed-in user's refusal there stays that route's, never an admin route's).
struct UserId(String);

impl std::str::FromStr for UserId {
    type Err = ();

    fn from_str(segment: &str) -> Result<Self, ()> {
        (segment != "me")
            .then(|| UserId(segment.to_owned()))
            .ok_or(())
    }
}

/// One user, disabled or not (the `Location` of `POST /users`).
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer_auth" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = UserView),
        (status = 401, description = "No valid token, or the account is disabled or no longer exists"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such user"),
    ))]
async fn get_user(
    UserId(id): UserId,
    _admin: Arc<Claims>,
    state: State,
) -> Result<Response, ApiError> {
    let user = state
        .users
        .by_id(&id)
        .await
        .map_err(|e| e.to_api_error())?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(warp::reply::json(&UserView::from(&user)).into_response())
}

/// Disables a user: sign-in and these routes refuse it from now on (its tokens already issued
/// still verify at the resource services until `exp`).
#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer_auth" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Disabled"),
        (status = 401, description = "No valid token, or the account is disabled or no longer exists"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such user"),
    ))]
async fn disable_user(id: String, admin: Arc<Claims>, state: State) -> Result<Response, ApiError> {
    if !state
        .users
        .disable(&id)
        .await
        .map_err(|e| e.to_api_error())?
    {
        return Err(ApiError::not_found("no such user"));
    }
    audit!(event = "user_disable", outcome = "success", actor = admin.username.as_deref().unwrap_or(""), id = %id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The signed-in user.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer_auth" = [])),
    responses(
        (status = 200, body = UserView),
        (status = 401, description = "No valid token, or the account is disabled or no longer exists"),
    ))]
async fn get_me(claims: Arc<Claims>, state: State) -> Result<Response, ApiError> {
    let user = state
        .users
        .by_id(claims.subject())
        .await
        .map_err(|e| e.to_api_error())?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(warp::reply::json(&UserView::from(&user)).into_response())
}

/// Changes the signed-in user's password.
#[utoipa::path(put, path = "/users/me/password", tag = "users", request_body = ChangePassword,
    security(("bearer_auth" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "A field is invalid or old_password is wrong; the message names the field"),
        (status = 409, description = "conflict: the password was changed by another request while this one ran"),
        (status = 429, description = "Too many wrong old passwords"),
        (status = 503, description = "temporarily_unavailable: users.max_queued_hashes requests already wait for a password check; see Retry-After"),
        (status = 401, description = "No valid token, or the account is disabled or no longer exists"),
    ))]
async fn change_password(
    claims: Arc<Claims>,
    body: ChangePassword,
    state: State,
) -> Result<Response, ApiError> {
    let user = state
        .users
        .by_id(claims.subject())
        .await
        .map_err(|e| e.to_api_error())?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    // Guessing the current password here counts against the same per-user throttle as
    // sign-ins: a stolen token must not give unthrottled guesses.
    let mut attempt = match state.throttle.begin(&user.username, None) {
        Ok(attempt) => attempt,
        Err(refused) => {
            audit!(event = "password_change", outcome = "throttled", username = %user.username);
            return Err(ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many failed attempts; try again later",
            )
            .with_retry_after(refused.retry()));
        }
    };
    let old = SecretString::from(body.old_password);
    let permit = match state.passwords.permit().await {
        Ok(permit) => permit,
        Err(busy) => {
            attempt.shed();
            audit!(event = "password_change", outcome = "shed", reason = "hash_queue_full", username = %user.username);
            return Err(busy.into());
        }
    };
    // One turn for the check of the old password and the hash of the new one: a change whose
    // old password was checked is never refused for a full queue.
    attempt.hashing();
    let checked = state
        .passwords
        .verify_keeping(permit, &old, Some(&user.password_hash))
        .await;
    let Some((right, permit)) = checked else {
        attempt.abandoned();
        tracing::error!("password verification failed");
        return Err(ApiError::internal());
    };
    if !right {
        // No address is counted here (the caller holds a token): never overtaken.
        let _ = attempt.finish(false);
        audit!(event = "password_change", outcome = "failure", username = %user.username);
        return Err(ApiError::bad_request("old_password: incorrect"));
    }
    let _ = attempt.finish(true);
    check_policy("new_password", &user.username, &body.new_password)
        .map_err(ApiError::bad_request)?;
    let hash = state
        .passwords
        .hash_with(permit, &SecretString::from(body.new_password))
        .await
        .map_err(internal)?;
    // Only over a hash of the password just checked: a change that landed meanwhile (the
    // user's own, made in a hurry after a leak) is never undone by one that was checked
    // against the password it replaced. A sign-in's rehash of the same password (new argon2
    // parameters) also writes the hash: the old password still verifies against it, and the
    // change goes on over it.
    let mut expected = user.password_hash;
    for _ in 0..3 {
        let replaced = state
            .users
            .upgrade_password_hash(&user.id, &expected, &hash)
            .await
            .map_err(|e| e.to_api_error())?;
        if replaced {
            audit!(event = "password_change", outcome = "success", username = %user.username);
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let current = state
            .users
            .by_id(&user.id)
            .await
            .map_err(|e| e.to_api_error())?
            .ok_or_else(|| ApiError::not_found("no such user"))?;
        let permit = state.passwords.permit().await.map_err(ApiError::from)?;
        match state
            .passwords
            .verify_with(permit, &old, Some(&current.password_hash))
            .await
        {
            Some(true) => expected = current.password_hash,
            Some(false) => break,
            None => {
                tracing::error!("password verification failed");
                return Err(ApiError::internal());
            }
        }
    }
    audit!(event = "password_change", outcome = "conflict", username = %user.username);
    Err(ApiError::conflict(
        "the password was changed while this request ran; try again with the current password",
    ))
}

/// For the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create_user,
        list_users,
        get_user,
        disable_user,
        get_me,
        change_password
    ),
    components(schemas(CreateUser, ChangePassword, UserView))
)]
pub struct UsersApi;
