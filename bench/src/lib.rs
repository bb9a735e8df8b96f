//! `dynsec-bench`: the side-by-side benchmark of issue 6. It starts `dynsec-broker`, a bare
//! rumqttd and mosquitto 2.0 with its dynamic-security plugin, gives the two dynsec brokers the
//! same `dynamic-security.json`, runs the same scenarios on each in turn (rounds), and reports
//! medians, ratios and whether each target is met. See `docs/benchmarks.md`.
#![forbid(unsafe_code)]

pub mod brokers;
pub mod chart;
pub mod cluster;
pub mod fleet;
pub mod flow;
pub mod machine;
pub mod mqtt;
pub mod persistence;
pub mod progress;
pub mod provisioning;
pub mod report;
pub mod results;
pub mod revocation;
pub mod scrape;
pub mod security_setup;
pub mod storm;
