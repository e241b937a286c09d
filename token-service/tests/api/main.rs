//! Integration tests of token-service: the real app on port 0.

mod helpers;
mod operational;
