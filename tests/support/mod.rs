//! Shared helpers for integration tests: a stand-in Marathon, real HAProxy processes and tiny
//! HTTP backends. Each test file uses the part it needs.
#![allow(dead_code)]

pub mod backend;
pub mod corpus;
pub mod haproxy;
pub mod marathon;
