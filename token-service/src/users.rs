//! Users, stored with sqlx on SQLite or PostgreSQL (table `users`). Roles and access grants are
//! JSON arrays in TEXT columns; `disabled` is 0/1. A disabled user cannot sign in; tokens already
//! issued stay valid until their `exp` (short lifetimes are the mitigation).

use auth_core::service::storage::Database;
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// A stored user. The hash never leaves this type's owner (its `Debug` leaves it out).
#[derive(Clone)]
pub struct User {
    /// Stable id (a UUID), the tokens' `sub`.
    pub id: String,
    /// Unique user name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Roles (`user`, `admin`).
    pub roles: Vec<String>,
    /// URL paths for the `access` claim.
    pub access: Vec<String>,
    /// Whether sign-in is refused.
    pub disabled: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// What the API shows of a user.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    /// Stable id, the tokens' `sub`.
    pub id: String,
    /// User name.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// URL paths granted in the `access` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<String>,
    /// Whether sign-in is refused.
    pub disabled: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            roles: u.roles.clone(),
            access: u.access.clone(),
            disabled: u.disabled,
            created_at: u.created_at.clone(),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The username is taken.
    #[error("username already exists")]
    Duplicate,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// The client's answer for a failed store call: 503 `temporarily_unavailable` with
    /// `Retry-After` when the database cannot be had right now (unreachable, its pool exhausted,
    /// a statement past `database.statement_timeout_seconds`, a full disk:
    /// [`auth_core::service::storage::is_unavailable`]), as every service answers it;
    /// an opaque 500 otherwise. Logged either way (never with the query's values).
    pub fn to_api_error(&self) -> auth_core::ApiError {
        match self {
            StoreError::Database(e) if auth_core::service::storage::is_unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                auth_core::ApiError::unavailable("database unavailable", 5)
            }
            e => {
                tracing::error!(error = %e, "user store failed");
                auth_core::ApiError::internal()
            }
        }
    }
}

/// The users table.
#[derive(Debug, Clone)]
pub struct UserStore {
    db: Database,
}

const COLUMNS: &str = "id, username, password_hash, roles, access, disabled, created_at";

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::keys::format_time(now)
}

impl UserStore {
    /// Over an opened, migrated database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
        let json = |col: &str| -> Result<Vec<String>, sqlx::Error> {
            let text: String = row.try_get(col)?;
            serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        };
        Ok(User {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            password_hash: row.try_get("password_hash")?,
            roles: json("roles")?,
            access: json("access")?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
            created_at: row.try_get("created_at")?,
        })
    }

    /// Creates a user; [`StoreError::Duplicate`] when the name is taken.
    pub async fn create(
        &self,
        username: &str,
        password_hash: &str,
        roles: &[String],
        access: &[String],
    ) -> Result<User, StoreError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            roles: roles.to_vec(),
            access: access.to_vec(),
            disabled: false,
            created_at: now_rfc3339(),
        };
        let res = sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, access, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $6)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(serde_json::to_string(&user.roles).unwrap_or_default())
        .bind(serde_json::to_string(&user.access).unwrap_or_default())
        .bind(&user.created_at)
        .execute(&self.db.pool)
        .await;
        match res {
            Ok(_) => Ok(user),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    /// The user named `username`.
    pub async fn by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(Self::from_row).transpose()?)
    }

    /// The user with this id.
    pub async fn by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.as_ref().map(Self::from_row).transpose()?)
    }

    /// Every user, by name.
    pub async fn list(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM users ORDER BY username"))
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(Self::from_row).collect::<Result<_, _>>()?)
    }

    /// Disables a user; `false` when there is no such user.
    pub async fn disable(&self, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("UPDATE users SET disabled = 1, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_rfc3339())
            .execute(&self.db.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Replaces a user's password hash.
    pub async fn set_password(&self, id: &str, password_hash: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(password_hash)
            .bind(now_rfc3339())
            .execute(&self.db.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Replaces a user's password hash only if it is still `old` (a sign-in's rehash must never
    /// undo a password change that landed meanwhile). Whether it was replaced.
    pub async fn upgrade_password_hash(
        &self,
        id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE users SET password_hash = $3, updated_at = $4 WHERE id = $1 AND password_hash = $2",
        )
        .bind(id)
        .bind(old)
        .bind(new)
        .bind(now_rfc3339())
        .execute(&self.db.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }
}

/// One user of `fixtures/users.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureUser {
    /// User name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<String>,
    /// `access` grants.
    #[serde(default)]
    pub access: Vec<String>,
}

/// `fixtures/users.toml`: `[[users]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    /// The users.
    pub users: Vec<FixtureUser>,
}

/// Creates the users of a fixtures file that do not exist yet (local environment only).
/// Returns how many were created.
pub async fn load_fixtures(store: &UserStore, path: &std::path::Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("users.fixtures_file: cannot read {}", path.display()))?;
    let file: FixtureFile = toml::from_str(&text)
        .with_context(|| format!("users.fixtures_file: {}", path.display()))?;
    let mut created = 0;
    for u in file.users {
        match store
            .create(&u.username, &u.password_hash, &u.roles, &u.access)
            .await
        {
            Ok(_) => created += 1,
            Err(StoreError::Duplicate) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created)
}
