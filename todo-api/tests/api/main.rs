//! Integration tests of todo-api: the real app on port 0.

mod helpers;
mod operational;
