//! haproxy-marathon-sync as a library: one run flows `fetch → model → render → apply`.
//! `run_once` wires the stages together; each stage lives in its own module.

pub mod apply;
pub mod config;
pub mod error;
pub mod fetch;
pub mod model;
pub mod render;
