//! The broker's configuration: mosquitto.conf syntax (the same file that runs mosquitto 2.0 with
//! the dynamic-security plugin on a plain listener starts this broker unchanged), the embedded
//! default used when no file is given, and the gate's own memory and timing settings (`gate_*`
//! directives, which mosquitto does not know).
//!
//! Parsing happens in two steps: [`read_directives`] (`lexer`) turns files (and `include_dir`) into
//! a list of located directives, then [`Config::from_directives`] (`directives`) interprets them.
//! The listener, TLS and logging settings each have their file; this one holds the whole
//! configuration and the broker-wide settings. Every error names the file and line. Directives
//! that this broker accepts but does not act on produce a warning (kept in [`Config::warnings`]
//! and logged at start-up); the list is in the README section "Configuration".

mod directives;
mod lexer;
mod listeners;
mod logging;
mod persistence;
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use directives::Builder;
pub use lexer::{Directive, Location, parse_text, read_directives};
pub use listeners::{
    DEFAULT_WEBSOCKETS_HEADERS_SIZE, ListenerConfig, ListenerId, ListenerProtocol, PluginConfig, SecurityOptions,
    SocketDomain,
};
pub use logging::{LogConfig, LogDest};
pub use persistence::{DEFAULT_PERSISTENCE_FILE, PersistenceMode, PersistenceSettings};
pub use tls::TlsOptions;

/// Port of the default listener (mosquitto's).
pub const DEFAULT_PORT: u16 = 1883;
/// The dynsec file used when the broker starts without a configuration file.
pub const DEFAULT_DYNSEC_FILE: &str = "./dynamic-security.json";
/// The plugin path recorded for the embedded default (only its file name matters).
pub const DEFAULT_DYNSEC_PLUGIN: &str = "mosquitto_dynamic_security.so";

/// A configuration error, located in its file where possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}:{line}: {message}")]
    At { file: String, line: usize, message: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

/// How the process runs as a service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `user NAME`: the account to switch to when started as root, right after the configuration
    /// is read (as mosquitto 2.0 does). `None`: keep the starting account (see known differences).
    pub user: Option<String>,
    /// `pid_file PATH`: written with the broker's PID at start, removed at exit.
    pub pid_file: Option<PathBuf>,
}

/// The gate's own settings (`gate_*` directives). All bounded; see each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSettings {
    /// `gate_segment_size` (bytes, ≥ 1024; default 2 MiB): size of one rumqttd log segment.
    pub segment_size: usize,
    /// `gate_segment_count` (≥ 1; default 4): segments kept per subscription filter. The router
    /// keeps up to `segment_size × (segment_count + 1)` of messages per filter, consumed or not;
    /// a subscriber further behind than `segment_size × segment_count` loses messages (the
    /// back-pressure below exists to prevent that).
    pub segment_count: usize,
    /// `gate_router_connections` (default 100000): the router's table size: sessions that
    /// publish or subscribe (live or saved), plus a few internal links. A client that needs the
    /// router when the table is full is disconnected (v5: 0x89 server busy); idle clients and
    /// clients that only use `$CONTROL` take no entry (see `lazy_link`).
    pub router_connections: usize,
    /// `gate_connect_timeout` (seconds, default 10): time from accept to a complete CONNECT.
    pub connect_timeout: Duration,
    /// `gate_write_timeout` (seconds, default 10): a client that does not read for this long is
    /// disconnected (so it cannot stall a takeover or the broker's memory).
    pub write_timeout: Duration,
    /// `gate_backpressure_window` (bytes; default half of the segment capacity; 0 disables):
    /// when this many bytes were published for a subscriber (QoS 0 included) since it was last
    /// caught up, publishers stop being read until it catches up.
    pub backpressure_window: u64,
    /// `gate_backpressure_max_hold` (seconds, default 10): a subscriber that stays behind longer
    /// than this no longer holds publishers (a client that never acknowledges cannot stop the
    /// broker); it may then lose messages as rumqttd does.
    pub backpressure_max_hold: Duration,
    /// `gate_worker_threads` (default: CPUs − 1, at least 1; the router has its own thread).
    pub worker_threads: usize,
    /// `gate_login_*`: failed-login throttling (see [`crate::security::throttle`]).
    pub login: crate::security::throttle::ThrottleSettings,
    /// `gate_max_subscriptions_per_client` (default 1000; 0: no limit; mosquitto has no such
    /// directive): filters one connection may hold. Each unique routed filter costs the router
    /// about 7 KB that it never frees (docs/security.md), so the default bounds one client
    /// to about 7 MB while leaving room far beyond what devices and bridges usually subscribe.
    /// A filter over the limit gets SUBACK 0x97 (v5, quota exceeded) or 0x80.
    pub max_subscriptions_per_client: usize,
    /// `gate_new_topics_per_second` (default 1000; 0: no limit) and `gate_new_topics_burst`
    /// (default 10000): the rate at which one connection may publish to topics the router has
    /// never routed (see [`crate::routing::topic_budget`]). The defaults let a backend address a fleet of
    /// 10,000 devices at once. A message over the budget is dropped
    /// (v5 QoS>0: acknowledged with 0x97, quota exceeded).
    pub new_topics_per_second: u32,
    pub new_topics_burst: u32,
    /// `gate_new_filters_per_second` (default 10; 0: no limit) and `gate_new_filters_burst`
    /// (default 1000, the default `gate_max_subscriptions_per_client`): the rate at which one
    /// connection may make the router keep filters it never held — a persistent session's or a
    /// `$share` filter (see [`crate::routing::filter_budget`]). A filter over the budget gets
    /// SUBACK 0x97 (v5, quota exceeded) or 0x80.
    pub new_filters_per_second: u32,
    pub new_filters_burst: u32,
    /// `gate_connect_max_size` (bytes, default 128 KiB): a CONNECT whose fixed header announces
    /// more closes the socket before any more of it is buffered (`max_packet_size` applies once
    /// the client is authenticated).
    pub connect_max_size: usize,
    /// `gate_unauthenticated_connections` (default 1024): sockets accepted whose login is not
    /// decided yet, across listeners; beyond it a new socket is closed at accept.
    pub unauthenticated_connections: usize,
    /// `gate_fleet_hub true|false` (default true): clean sessions' non-shared subscriptions
    /// are served by the gate's fan-out from one router link (`routing::hub`), and connections
    /// without a router link of their own publish through a pool of gate links
    /// (`routing::publisher_pool`). Per-subscriber queues are bounded by `max_queued_messages`
    /// and `max_queued_bytes`. Not used in a cluster. On by default since issue 22 asks for a
    /// fleet served with the default configuration (docs/benchmarks.md, "hub on by default").
    pub fleet_hub: bool,
}

impl Default for GateSettings {
    fn default() -> Self {
        // 2 MiB × 4 keeps a 1 → 1 QoS 1 flow of millions of messages under 64 MB resident
        // (bench P6; 4 MiB held ~95 MB) while QoS 1 subscribers still lose nothing.
        let segment_size = 2 * 1024 * 1024;
        let segment_count = 4;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        GateSettings {
            segment_size,
            segment_count,
            router_connections: 100_000,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            backpressure_window: (segment_size * segment_count / 2) as u64,
            backpressure_max_hold: Duration::from_secs(10),
            worker_threads: cpus.saturating_sub(1).max(1),
            login: Default::default(),
            max_subscriptions_per_client: 1000,
            new_topics_per_second: 1000,
            new_topics_burst: 10_000,
            new_filters_per_second: 10,
            new_filters_burst: 1000,
            connect_max_size: 128 * 1024,
            unauthenticated_connections: 1024,
            fleet_hub: true,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from; `None` for the embedded default.
    pub source: Option<PathBuf>,
    /// Listeners in the order mosquitto numbers them (the default `port` listener first).
    /// `ConnectRequest::listener` indexes this list.
    pub listeners: Vec<ListenerConfig>,
    /// No listener was configured: the broker listens on the loopback only (mosquitto 2.0).
    pub local_only: bool,
    pub per_listener_settings: bool,
    /// Global security options (used for every listener unless `per_listener_settings`).
    pub security: SecurityOptions,
    /// `max_packet_size` (bytes; default 4 MiB, mosquitto's is 256 MiB): larger incoming packets
    /// close the connection (v5: DISCONNECT 0x95); advertised to v5 clients.
    pub max_packet_size: u32,
    /// `max_keepalive` (seconds; default 0, no limit), as in mosquitto 2.1: when set, a client
    /// asking for more, or for no keepalive (0), is told this value (v5, Server Keep Alive) or
    /// refused (3.x, which cannot be told). See `gate::connection::handshake`.
    pub max_keepalive: u16,
    /// `max_inflight_messages` (default 20, mosquitto's; 0 = no limit): the most QoS 1/2
    /// deliveries a client may have unacknowledged (a v5 client's Receive Maximum may lower it),
    /// and the Receive Maximum announced to v5 clients (see [`crate::gate::flow_control`]).
    pub max_inflight_messages: u16,
    /// `sys_interval` (seconds, default 10): how often the `$SYS/broker/...` topics are
    /// refreshed; 0 publishes no `$SYS` topics at all (see [`crate::sys_topics`]).
    pub sys_interval: u32,
    /// `enable_control_api` (default false): serve `$CONTROL/broker/v1` ([`crate::gate::broker_api`]).
    pub enable_control_api: bool,
    /// `set_tcp_nodelay`.
    pub tcp_nodelay: bool,
    /// `websockets_headers_size` (bytes; 0 or unset: 4096): the largest HTTP request head a
    /// websockets listener reads before it answers 431.
    pub websockets_headers_size: usize,
    pub log: LogConfig,
    pub gate: GateSettings,
    /// `user` and `pid_file`: how the broker runs as a service (see [`crate::service`]).
    pub service: ServiceConfig,
    /// The persistence directives (`crate::persistence`, docs/persistence.md).
    pub persistence: PersistenceSettings,
    /// `cluster_*`: this node's cluster settings (`None`: a single node, docs/cluster.md).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Accepted-but-ignored directives and other notes, logged once logging is set up.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads a configuration file; `None` gives the embedded default. `port_override` is `-p`:
    /// the port of the local-only listener when the file defines none (ignored otherwise, as
    /// mosquitto does).
    pub fn load(path: Option<&Path>, port_override: Option<u16>) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::embedded_default(),
            Some(path) => {
                let mut config = Config::from_directives(&read_directives(path)?)?;
                config.source = Some(path.to_path_buf());
                config
            }
        };
        if let Some(port) = port_override {
            if config.local_only {
                config.listeners[0].port = port;
            } else {
                config.warnings.push("-p is ignored because the configuration file defines listeners".into());
            }
        }
        Ok(config)
    }

    /// No file: 127.0.0.1:1883, anonymous clients allowed (mosquitto's local-only mode), and the
    /// dynamic-security plugin on `./dynamic-security.json`.
    pub fn embedded_default() -> Config {
        let mut config = Config::from_directives(&[]).unwrap_or_else(|_| unreachable!("empty configuration is valid"));
        config.security.plugins.push(PluginConfig {
            path: PathBuf::from(DEFAULT_DYNSEC_PLUGIN),
            options: vec![("config_file".to_owned(), DEFAULT_DYNSEC_FILE.to_owned())],
            at: Location { file: "<embedded default>".to_owned(), line: 0 },
        });
        // Unlike mosquitto's local-only mode, the embedded default lets nobody in anonymously:
        // every client authenticates through dynsec.
        config.security.allow_anonymous = false;
        config
    }

    /// Parses configuration text (for tests and embedding).
    pub fn from_text(file: &str, text: &str) -> Result<Config, ConfigError> {
        Config::from_directives(&parse_text(file, text)?)
    }

    /// Interprets directives in order.
    pub fn from_directives(directives: &[Directive]) -> Result<Config, ConfigError> {
        let per_listener_settings = match directives.iter().rev().find(|d| d.key == "per_listener_settings") {
            Some(d) => d.boolean()?,
            None => false,
        };
        let mut builder = Builder::new(per_listener_settings);
        for directive in directives {
            builder.apply(directive)?;
        }
        builder.finish()
    }

    /// Security options that apply to listener `index`.
    pub fn security_for(&self, listener: ListenerId) -> &SecurityOptions {
        self.listeners.get(listener.0).and_then(|l| l.security.as_ref()).unwrap_or(&self.security)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_text("test.conf", text)
    }

    #[test]
    fn mosquitto_dynsec_config_is_accepted_unchanged() {
        let config = parse(
            "# a comment\n\
             listener 1883 127.0.0.1\n\
             allow_anonymous false\n\
             per_listener_settings false\n\
             plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
             plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json\n\
             persistence false\n\
             log_type all\n\
             user root\n",
        )
        .unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].port, 1883);
        assert_eq!(config.listeners[0].bind_address.as_deref(), Some("127.0.0.1"));
        let dynsec = config.security.dynsec().expect("dynsec plugin");
        assert_eq!(dynsec.option("config_file"), Some("/var/lib/mosquitto/dynamic-security.json"));
        assert!(!config.security.allow_anonymous);
        assert_eq!(config.log.level, Some(tracing::Level::DEBUG));
        assert_eq!(config.service.user.as_deref(), Some("root"));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn service_directives() {
        let config = parse("user mosquitto\npid_file /run/mosquitto/mosquitto.pid\n").unwrap();
        assert_eq!(config.service.user.as_deref(), Some("mosquitto"));
        assert_eq!(config.service.pid_file, Some(PathBuf::from("/run/mosquitto/mosquitto.pid")));
        assert_eq!(parse("").unwrap().service, ServiceConfig::default());
        assert!(parse("user\n").is_err());
        assert!(parse("pid_file\n").is_err());
    }

    #[test]
    fn unknown_directive_names_file_and_line() {
        let err = parse("listener 1883\n\nfrobnicate yes\n").unwrap_err().to_string();
        assert_eq!(err, "test.conf:3: unknown configuration directive \"frobnicate\"");
    }

    #[test]
    fn allow_anonymous_defaults_follow_mosquitto() {
        assert!(parse("").unwrap().security.allow_anonymous, "local-only mode allows anonymous");
        assert!(!parse("listener 1883\n").unwrap().security.allow_anonymous);
        assert!(!parse("port 1883\n").unwrap().security.allow_anonymous);
        assert!(parse("listener 1883\nallow_anonymous true\n").unwrap().security.allow_anonymous);
        assert!(!parse("allow_anonymous false\n").unwrap().security.allow_anonymous);
    }

    #[test]
    fn embedded_default_is_local_dynsec() {
        let config = Config::load(None, None).unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].port, 1883);
        assert_eq!(config.listeners[0].bind_address.as_deref(), Some("127.0.0.1"));
        assert!(config.local_only);
        let dynsec = config.security.dynsec().unwrap();
        assert_eq!(dynsec.option("config_file"), Some(DEFAULT_DYNSEC_FILE));
        let config = Config::load(None, Some(1999)).unwrap();
        assert_eq!(config.listeners[0].port, 1999);
    }

    #[test]
    fn plugin_options_need_a_plugin() {
        let err = parse("plugin_opt_config_file /x\n").unwrap_err().to_string();
        assert!(err.starts_with("test.conf:1:"), "{err}");
        let config = parse("auth_plugin /a/libfoo.so\nauth_opt_host db\nauth_opt_spaced a b c\n").unwrap();
        let plugin = &config.security.plugins[0];
        assert!(!plugin.is_dynsec());
        assert_eq!(plugin.option("host"), Some("db"));
        assert_eq!(plugin.option("spaced"), Some("a b c"));
    }

    #[test]
    fn per_listener_settings_scope_security_options() {
        let config = parse(
            "per_listener_settings true\n\
             listener 1883\n\
             allow_anonymous true\n\
             listener 1884\n\
             password_file /etc/pw\n",
        )
        .unwrap();
        assert!(config.security_for(ListenerId(0)).allow_anonymous);
        assert!(!config.security_for(ListenerId(1)).allow_anonymous);
        assert_eq!(config.security_for(ListenerId(1)).password_file.as_deref(), Some(Path::new("/etc/pw")));
        assert_eq!(config.security_for(ListenerId(0)).password_file, None);
    }

    /// `psk_file` was parsed and never used; like the TLS-PSK directives of a listener it is now
    /// refused, naming its place.
    #[test]
    fn psk_file_is_refused_with_its_place() {
        let error = parse("listener 8883\nallow_anonymous true\npsk_file /etc/psk\n").unwrap_err().to_string();
        assert_eq!(error, "test.conf:3: psk_file is not supported: rustls offers no TLS-PSK");
    }

    #[test]
    fn tls_directives_are_stored_per_listener() {
        let config =
            parse("listener 8883\ncertfile /c.pem\nkeyfile /k.pem\ntls_version tlsv1.2\nrequire_certificate true\n")
                .unwrap();
        let tls = &config.listeners[0].tls;
        assert!(tls.is_configured());
        assert_eq!(tls.certfile.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(tls.tls_version.as_deref(), Some("tlsv1.2"));
        assert!(tls.require_certificate);
        assert_eq!(tls.first_at.as_ref().unwrap().line, 2);
    }

    #[test]
    fn bridges_and_bad_values_are_errors() {
        for (text, needle) in [
            ("connection b1\n", "bridges are not supported"),
            ("listener 1883\nmount_point x/\n", "mount points"),
            ("allow_anonymous maybe\n", "invalid allow_anonymous value"),
            ("listener notaport\n", "invalid listener port"),
            ("listener 1883 not-an-ip\n", "invalid listener address"),
            ("gate_segment_size 10\n", "gate_segment_size"),
            ("protocol http_dav\n", "invalid protocol (http_dav)"),
            ("listener 1\nprotocol ws\n", "invalid protocol (ws)"),
            ("websockets_headers_size 70000\n", "websockets_headers_size"),
            ("plugin /a.so\nplugin /a.so\n", "loaded twice"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn websockets_listeners_and_their_directives() {
        let text = "websockets_log_level 255\nwebsockets_headers_size 0\nlistener 1883\nhttp_dir /ignored\n\
                    listener 9001\nprotocol websockets\nhttp_dir /srv/www\nwebsockets_origin http://a.example\n\
                    listener 9443\nprotocol websockets\ncertfile /c.pem\nkeyfile /k.pem\n";
        let config = parse(text).unwrap();
        let protocols: Vec<ListenerProtocol> = config.listeners.iter().map(|l| l.protocol).collect();
        assert_eq!(protocols, [ListenerProtocol::Mqtt, ListenerProtocol::Websockets, ListenerProtocol::Websockets]);
        assert_eq!(config.listeners[1].http_dir.as_deref(), Some(Path::new("/srv/www")));
        assert_eq!(config.listeners[1].websockets_origins, ["http://a.example"]);
        assert!(config.listeners[2].tls.is_configured());
        assert_eq!(config.websockets_headers_size, DEFAULT_WEBSOCKETS_HEADERS_SIZE);
        assert_eq!(
            config.warnings,
            [
                "test.conf:1: websockets_log_level is ignored: websocket events are logged with log_type websockets (debug)",
                "test.conf:4: http_dir is ignored: its listener is not protocol websockets",
            ]
        );
        assert_eq!(parse("websockets_headers_size 1024\n").unwrap().websockets_headers_size, 1024);
    }

    #[test]
    fn ignored_directives_warn() {
        let config = parse("listener 1\nmax_queued_messages 100\nlog_facility 5\npersistence true\n").unwrap();
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(config.persistence.enabled && config.persistence.max_queued_messages == 100);
    }

    #[test]
    fn max_inflight_messages_is_read_as_mosquitto_reads_it() {
        let read = |text: &str| parse(&format!("listener 1\n{text}")).map(|c| c.max_inflight_messages);
        assert_eq!(read("").unwrap(), 20);
        assert_eq!(read("max_inflight_messages 1\n").unwrap(), 1);
        assert_eq!(read("max_inflight_messages 65534\n").unwrap(), 65534);
        for no_limit in ["0", "-5", "65535"] {
            assert_eq!(read(&format!("max_inflight_messages {no_limit}\n")).unwrap(), 0, "{no_limit}");
        }
        let err = read("max_inflight_messages 65536\n").unwrap_err().to_string();
        assert_eq!(err, "test.conf:2: max_inflight_messages must be <= 65535");
    }

    #[test]
    fn sys_interval_is_read() {
        assert_eq!(parse("listener 1\n").unwrap().sys_interval, 10);
        assert_eq!(parse("listener 1\nsys_interval 0\n").unwrap().sys_interval, 0);
        assert!(parse("sys_interval -1\n").is_err());
    }

    #[test]
    fn gate_settings_parse() {
        let config = parse("gate_connect_max_size 4096\ngate_unauthenticated_connections 8\n").unwrap();
        assert_eq!((config.gate.connect_max_size, config.gate.unauthenticated_connections), (4096, 8));
        let err = parse("gate_connect_max_size 10\n").unwrap_err().to_string();
        assert_eq!(err, "test.conf:1: gate_connect_max_size must be between 256 and 268435460 bytes");
        let err = parse("gate_unauthenticated_connections 0\n").unwrap_err().to_string();
        assert_eq!(err, "test.conf:1: gate_unauthenticated_connections must be between 1 and 10000000");
        let config = parse("gate_login_queue_timeout 0.5\n").unwrap();
        assert_eq!(config.gate.login.queue_timeout, Duration::from_millis(500));
        let err = parse("\ngate_login_queue_timeout 0\n").unwrap_err().to_string();
        assert_eq!(err, "test.conf:2: gate_login_queue_timeout must be between 0 and 86400 seconds");
        let config = parse("gate_segment_size 2048\ngate_segment_count 2\ngate_write_timeout 2.5\n").unwrap();
        assert_eq!(config.gate.segment_size, 2048);
        assert_eq!(config.gate.segment_count, 2);
        assert_eq!(config.gate.backpressure_window, 2048);
        assert_eq!(config.gate.write_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn include_dir_reads_conf_files_in_order() {
        let dir = std::env::temp_dir().join(format!("dynsec-broker-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.conf"), "listener 1885\n").unwrap();
        std::fs::write(dir.join("a.conf"), "listener 1884\n").unwrap();
        std::fs::write(dir.join("ignored.txt"), "garbage\n").unwrap();
        let config = parse(&format!("include_dir {}\n", dir.display())).unwrap();
        let ports: Vec<u16> = config.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [1884, 1885]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_settings_map_onto_tracing() {
        let config = parse("log_type error\nlog_type warning\nlog_dest stdout\nlog_dest file /tmp/x.log\n").unwrap();
        assert_eq!(config.log.level, Some(tracing::Level::WARN));
        assert_eq!(config.log.dests, [LogDest::Stdout, LogDest::File("/tmp/x.log".into())]);
        assert_eq!(parse("log_type none\n").unwrap().log.level, None);
        assert!(parse("log_dest none\n").unwrap().log.dests.is_empty());
        assert_eq!(parse("").unwrap().log.dests, [LogDest::Stderr]);
    }
}
