//! The Dynamic Security model of mosquitto, re-implemented: clients, groups, roles and ACLs,
//! the `$CONTROL/dynamic-security/v1` command protocol, and a durable `dynamic-security.json`
//! store. No networking here: the broker and the CLI build on this crate.
#![forbid(unsafe_code)]

pub mod acl;
pub mod file;
pub mod json;
pub mod model;
pub mod password;
pub mod topic;
