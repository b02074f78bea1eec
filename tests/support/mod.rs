//! Shared helpers for integration tests: a stand-in Marathon, real HAProxy processes, tiny
//! HTTP backends, an `apply` fixture and a load generator. Each test file uses the part it
//! needs.
#![allow(dead_code)]

pub mod backend;
pub mod corpus;
pub mod fixture;
pub mod haproxy;
pub mod load;
pub mod marathon;
