//! The Dynamic Security model of mosquitto, re-implemented: clients, groups, roles and ACLs,
//! the `$CONTROL/dynamic-security/v1` command protocol, and a durable `dynamic-security.json`
//! store. No networking here: the broker and the CLI build on this crate.
#![forbid(unsafe_code)]

pub mod acl;
pub mod atomic_file;
pub mod commands;
pub mod connections;
pub mod engine;
pub mod file;
#[cfg(feature = "testing")]
pub mod golden;
pub mod init;
pub mod json;
pub mod model;
pub mod password;
pub mod store;
pub mod topic;

pub use engine::{AclHandle, AclView, AuthResult, ControlResult, Dynsec, Options};
pub mod static_files;
