//! Helpers shared by the integration tests. Each test crate takes what it needs.

pub mod backend;
pub mod haproxy;
