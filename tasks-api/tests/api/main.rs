//! Integration tests of tasks-api: the real app on port 0, verifying against a mock issuer.

mod fuzz;
mod helpers;
mod matrix;
mod operational;
mod tasks;
