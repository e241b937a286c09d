//! Integration tests of todo-api: the real app on port 0, verifying against a mock issuer.

mod auth;
mod durability;
mod faults;
mod fuzz;
mod helpers;
mod logs;
mod operational;
mod todos;
