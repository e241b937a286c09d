//! Integration tests of token-service: the real app on port 0.

mod fuzz;
mod helpers;
mod logs;
mod operational;
mod rotation;
mod storage;
mod token;
mod users;
mod wellknown;
