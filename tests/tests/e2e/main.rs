//! The end-to-end tests, one module per area, in ONE test binary: each test binary links the
//! whole broker, CLI and test support, so one binary instead of one per file is what keeps CI's
//! link time down. `cargo test -p dynsec-tests --test e2e MODULE::` runs one area.
//!
//! `fuzz_corpus` stays a binary of its own: the fuzz entry points it replays install a panic
//! hook that aborts the process (as a fuzzer needs), which would take every other test with it.

mod admin_surface;
mod broker_api_mosquitto21;
mod broker_auth_matrix;
mod broker_defects;
mod broker_dynsec_acl;
mod broker_kicks;
mod broker_malformed;
mod broker_mqtt;
mod client_limits;
mod cluster;
mod config_examples;
mod console_browser;
mod console_http_api;
mod console_rest;
mod ctrl_additions;
mod ctrl_against_broker;
mod ctrl_batch;
mod ctrl_compare;
mod ctrl_init;
mod ctrl_mosquitto21;
mod ctrl_passwd;
mod ctrl_signal;
mod ctrl_tls;
mod dollar_topics;
mod dynsec_dollar_placeholders;
mod dynsec_file_interop;
mod dynsec_migrate;
mod dynsec_mosquitto21;
mod fleet_hub;
mod flow_control;
mod golden_oracle;
mod hash_cost_limits;
mod keepalive_and_client_ids;
mod kicked_sessions;
mod log_lines;
mod mqtt_semantics;
mod persistence;
mod qos0_backpressure;
mod reliability_crash;
mod reliability_soak;
mod reliability_storage;
mod reliability_throttle;
mod repository_hygiene;
mod router_safety;
mod schemas;
mod security_gate;
mod service;
mod shared_unsubscribe;
mod static_security;
mod store_file_attributes;
mod store_startup_checks;
mod sys_topics;
mod tls_listeners;
mod tls_recipe;
mod unsubscribe_and_filter_encoding;
mod websockets;
mod websockets_browser;
