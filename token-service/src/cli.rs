//! The command line: `token-service [--config PATH] [serve]`, `users add [--admin] <username>`
//! (password on stdin or at a prompt), `users hash` (password on stdin → argon2id PHC string),
//! `keys rotate`, `keys list`, `keys prune`. Every failure is one line on stderr and a non-zero exit.

use std::io::{BufRead, IsTerminal, Write};

use auth_core::clock::{Clock, SystemClock};
use auth_core::service::app::{ConfigArg, exit_with};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::passwords::{Argon2id, Hasher, check_policy};
use crate::settings::Settings;

#[derive(Parser)]
#[command(
    name = "token-service",
    version,
    about = "Signs in users and issues signed JWTs"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user; the password is read from stdin (or a prompt).
    Add {
        /// Give the user the role `admin` (the first admin of a production deployment).
        #[arg(long)]
        admin: bool,
        /// The user name.
        username: String,
    },
    /// Read a password on stdin and print its argon2id PHC hash (for fixtures/users.toml).
    Hash,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new signing key to signing.keys_dir: published now, signing after
    /// signing.propagation_delay_seconds; the current keys retire once their tokens expired.
    Rotate,
    /// List the keys and their phases.
    List,
    /// Delete the files of signing.keys_dir's retired keys (never those of signing.key_files).
    Prune,
}

/// The whole `main`.
pub fn main() {
    let cli = Cli::parse();
    let config = cli.config.config.as_deref();
    let check_keys = !matches!(cli.command, Some(Command::Keys { .. }));
    let settings = Settings::load_with(config, check_keys).unwrap_or_else(|e| exit_with(e));
    auth_core::service::telemetry::init(&settings.log, settings.environment);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit_with(format!("cannot start the runtime: {e}")));
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(async move {
            let app = crate::startup::build(settings)
                .await
                .unwrap_or_else(|e| exit_with(format!("{e:#}")));
            app.run_until_stopped().await;
        }),
        Command::Users {
            command: UsersCommand::Hash,
        } => {
            let password = read_password().unwrap_or_else(|e| exit_with(e));
            check_policy("password", "", &password).unwrap_or_else(|e| exit_with(e));
            let hasher = Argon2id::new(&settings.users).unwrap_or_else(|e| exit_with(e));
            let hash = hasher
                .hash(password.as_bytes())
                .unwrap_or_else(|e| exit_with(e));
            println!("{hash}");
        }
        Command::Users {
            command: UsersCommand::Add { admin, username },
        } => runtime.block_on(async move {
            let password = read_password().unwrap_or_else(|e| exit_with(e));
            let view = add_user(&settings, &username, password, admin)
                .await
                .unwrap_or_else(|e| exit_with(format!("{e:#}")));
            println!(
                "created user {} ({}) with roles {}",
                view.username,
                view.id,
                view.roles.join(",")
            );
        }),
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let r = crate::keys::rotate(&settings, SystemClock.now())
                .unwrap_or_else(|e| exit_with(format!("{e:#}")));
            println!(
                "new key {} written to {}; published now, signing from {}",
                r.kid,
                r.path.display(),
                crate::keys::format_time(r.activate_at)
            );
            for (kid, at) in r.retiring {
                println!("key {kid} retires at {}", crate::keys::format_time(at));
            }
        }
        Command::Keys {
            command: KeysCommand::Prune,
        } => {
            let pruned = crate::keys::prune(&settings, SystemClock.now())
                .unwrap_or_else(|e| exit_with(format!("{e:#}")));
            if pruned.is_empty() {
                println!("no retired key to delete");
            }
            for p in pruned {
                println!(
                    "deleted key {} ({}), retired at {}",
                    p.kid,
                    p.path.display(),
                    crate::keys::format_time(p.retired_at)
                );
            }
        }
        Command::Keys {
            command: KeysCommand::List,
        } => {
            for line in crate::keys::list(&settings, SystemClock.now()) {
                println!("{line}");
            }
        }
    }
    // A blocking task still running (a key rescan on a hung network filesystem, a hash) does
    // not hold the exit: dropping the runtime would wait for it without limit.
    runtime.shutdown_timeout(auth_core::service::app::BLOCKING_AT_EXIT);
}

/// `users add`: creates a user (role `admin` with `admin`, else `user`) in the configured database.
pub async fn add_user(
    settings: &Settings,
    username: &str,
    password: String,
    admin: bool,
) -> anyhow::Result<crate::users::UserView> {
    // The API's rule: a name with a space or a control character could never sign in (`/token`
    // trims the name it is given).
    crate::users_api::check_username(username)
        .map_err(|e| anyhow::anyhow!("users add: {}", e.message))?;
    check_policy("password", username, &password).map_err(anyhow::Error::msg)?;
    let db = crate::startup::open_database(settings).await?;
    let store = crate::users::UserStore::new(db.clone());
    let hasher = std::sync::Arc::new(Argon2id::new(&settings.users)?);
    let passwords = crate::passwords::Passwords::new(hasher, 1, 0)?;
    let hash = passwords.hash(&SecretString::from(password)).await?;
    let roles = vec![if admin { "admin" } else { "user" }.to_owned()];
    let result = store.create(username, &hash, &roles, &[]).await;
    db.close().await;
    let user = match result {
        Ok(u) => u,
        Err(crate::users::StoreError::Duplicate) => {
            anyhow::bail!("users add: {username} already exists")
        }
        Err(e) => return Err(e.into()),
    };
    crate::audit!(event = "user_create", outcome = "success", actor = "cli", username = %user.username, id = %user.id, roles = ?user.roles);
    Ok((&user).into())
}

/// One line from stdin (a prompt on stderr when stdin is a terminal), without its line ending.
fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (input is visible; pipe it on stdin to avoid that): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line)
        .to_owned();
    if password.is_empty() {
        return Err("no password on stdin".into());
    }
    Ok(password)
}
