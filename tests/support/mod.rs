//! Shared helpers for integration tests: a stand-in Marathon, real HAProxy processes, tiny
//! HTTP backends, an `apply` fixture, a load generator, reserved ports, a kill-on-drop child
//! guard, the fluent binary driver (`sync::Sync`), the corpus loader and a runtime-update rig
//! (`runtime_rig::Rig`: Marathon, master-worker HAProxy, the binary through the master socket).
//! Each test file uses the part it needs.
#![allow(dead_code)]

pub mod backend;
pub mod cert;
pub mod corpus;
pub mod fixture;
pub mod haproxy;
pub mod load;
pub mod marathon;
pub mod mounts;
pub mod ports;
pub mod process;
pub mod rng;
pub mod runtime_rig;
pub mod socket_proxy;
pub mod sync;
pub mod workspace;
