//! The broker's configuration: mosquitto.conf syntax (the same file that runs mosquitto 2.0 with
//! the dynamic-security plugin on a plain listener starts this broker unchanged), the embedded
//! default used when no file is given, and the gate's own memory and timing settings (`gate_*`
//! directives, which mosquitto does not know).
//!
//! Parsing happens in two steps: [`read_directives`] turns files (and `include_dir`) into a list of
//! located directives, then [`Config::from_directives`] interprets them. Every error names the file
//! and line. Directives that this broker accepts but does not act on produce a warning (kept in
//! [`Config::warnings`] and logged at start-up); the list is in the README section "Configuration".

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Port of the default listener (mosquitto's).
pub const DEFAULT_PORT: u16 = 1883;
/// The dynsec file used when the broker starts without a configuration file.
pub const DEFAULT_DYNSEC_FILE: &str = "./dynamic-security.json";
/// The plugin path recorded for the embedded default (only its file name matters).
pub const DEFAULT_DYNSEC_PLUGIN: &str = "mosquitto_dynamic_security.so";
/// How deep `include_dir` may nest before we call it a loop.
const MAX_INCLUDE_DEPTH: usize = 8;

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

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

impl Location {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::At { file: self.file.clone(), line: self.line, message: message.into() }
    }
}

/// One `key value…` line of a configuration file.
#[derive(Debug, Clone)]
pub struct Directive {
    pub at: Location,
    pub key: String,
    /// Everything after the key, leading blanks removed (mosquitto reads paths and plugin option
    /// values as "the rest of the line").
    pub rest: String,
}

impl Directive {
    fn words(&self) -> Vec<&str> {
        self.rest.split_whitespace().collect()
    }

    /// The single argument of a one-word directive.
    fn one_word(&self) -> Result<&str, ConfigError> {
        match self.words().as_slice() {
            [word] => Ok(word),
            [] => Err(self.at.error(format!("missing value for {}", self.key))),
            _ => Err(self.at.error(format!("too many values for {}", self.key))),
        }
    }

    /// A string argument that may contain spaces (paths, plugin option values).
    fn text(&self) -> Result<&str, ConfigError> {
        let value = self.rest.trim_end();
        if value.is_empty() { Err(self.at.error(format!("missing value for {}", self.key))) } else { Ok(value) }
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self.one_word()? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.at.error(format!("invalid {} value ({other}): expected true or false", self.key))),
        }
    }

    fn number<T: std::str::FromStr>(&self) -> Result<T, ConfigError> {
        let word = self.one_word()?;
        word.parse().map_err(|_| self.at.error(format!("invalid {} value ({word})", self.key)))
    }
}

/// Reads `path` and every `include_dir` it names into a flat list of directives, in the order
/// mosquitto applies them.
pub fn read_directives(path: &Path) -> Result<Vec<Directive>, ConfigError> {
    let mut out = Vec::new();
    read_file_into(path, 0, &mut out)?;
    Ok(out)
}

fn read_file_into(path: &Path, depth: usize, out: &mut Vec<Directive>) -> Result<(), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    let file = path.display().to_string();
    let text = String::from_utf8_lossy(&bytes);
    parse_text_into(&file, &text, depth, out)
}

/// Parses configuration text (as if read from `file`) into directives; `include_dir` is followed.
pub fn parse_text(file: &str, text: &str) -> Result<Vec<Directive>, ConfigError> {
    let mut out = Vec::new();
    parse_text_into(file, text, 0, &mut out)?;
    Ok(out)
}

fn parse_text_into(file: &str, text: &str, depth: usize, out: &mut Vec<Directive>) -> Result<(), ConfigError> {
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = Location { file: file.to_owned(), line: index + 1 };
        let (key, rest) = match line.split_once(char::is_whitespace) {
            Some((key, rest)) => (key, rest.trim_start()),
            None => (line, ""),
        };
        let directive = Directive { at, key: key.to_owned(), rest: rest.trim_end().to_owned() };
        if directive.key == "include_dir" {
            include_dir(&directive, depth, out)?;
        } else {
            out.push(directive);
        }
    }
    Ok(())
}

/// mosquitto's `include_dir`: every `*.conf` file of the directory, in byte order of the names.
fn include_dir(directive: &Directive, depth: usize, out: &mut Vec<Directive>) -> Result<(), ConfigError> {
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(directive.at.error("include_dir nested too deeply (a loop?)"));
    }
    let dir = PathBuf::from(directive.text()?);
    let entries =
        std::fs::read_dir(&dir).map_err(|e| directive.at.error(format!("include_dir {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "conf") && p.is_file())
        .collect();
    files.sort();
    for file in files {
        read_file_into(&file, depth + 1, out)?;
    }
    Ok(())
}

/// Security options (mosquitto's `security_options`): global, or per listener when
/// `per_listener_settings true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOptions {
    /// `allow_anonymous`, resolved: explicit value, else true only in local-only mode (no listener
    /// configured), as mosquitto 2.0 does.
    pub allow_anonymous: bool,
    /// True when `allow_anonymous` was written in the file.
    pub allow_anonymous_explicit: bool,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    pub psk_file: Option<PathBuf>,
    /// `plugin` / `auth_plugin` lines in order, each with the `plugin_opt_*` / `auth_opt_*` lines
    /// that follow it.
    pub plugins: Vec<PluginConfig>,
    /// `allow_zero_length_clientid` (default true): an empty client id is given a generated one.
    pub allow_zero_length_clientid: bool,
    /// `auto_id_prefix` (default `auto-`): prefix of generated client ids.
    pub auto_id_prefix: String,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        SecurityOptions {
            allow_anonymous: false,
            allow_anonymous_explicit: false,
            password_file: None,
            acl_file: None,
            psk_file: None,
            plugins: Vec::new(),
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_owned(),
        }
    }
}

impl SecurityOptions {
    /// The dynamic-security plugin, if configured.
    pub fn dynsec(&self) -> Option<&PluginConfig> {
        self.plugins.iter().find(|p| p.is_dynsec())
    }

    /// True when something other than `allow_anonymous` can authenticate a username.
    pub fn has_auth_source(&self) -> bool {
        self.password_file.is_some() || self.psk_file.is_some() || !self.plugins.is_empty()
    }
}

/// One `plugin` line with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub path: PathBuf,
    /// Option keys without their `plugin_opt_` / `auth_opt_` prefix, in file order.
    pub options: Vec<(String, String)>,
    pub at: Location,
}

impl PluginConfig {
    /// mosquitto's dynamic-security plugin: any path whose file name contains `dynamic_security`.
    pub fn is_dynsec(&self) -> bool {
        self.path.file_name().is_some_and(|name| name.to_string_lossy().contains("dynamic_security"))
    }

    /// The last value given for `key` (e.g. `config_file`).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// TLS settings of a listener (served by `crate::tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub crlfile: Option<PathBuf>,
    pub tls_version: Option<String>,
    pub require_certificate: bool,
    pub use_identity_as_username: bool,
    pub use_subject_as_username: bool,
    /// Other TLS directives seen (`ciphers`, `psk_hint`, `dhparamfile`, …) with their values.
    pub other: BTreeMap<String, String>,
    /// Where the first TLS directive of this listener was written (for the start-up error).
    pub first_at: Option<Location>,
}

impl TlsOptions {
    /// True when any TLS directive was given for the listener.
    pub fn is_configured(&self) -> bool {
        self.first_at.is_some()
    }
}

/// What a listener speaks (`protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// MQTT on the socket (or on TLS).
    #[default]
    Mqtt,
    /// MQTT in binary websocket frames, after an HTTP upgrade (served by `crate::websocket`).
    Websockets,
}

/// Default of `websockets_headers_size` (mosquitto 2.1's): the largest HTTP request head a
/// websockets listener reads.
pub const DEFAULT_WEBSOCKETS_HEADERS_SIZE: usize = 4096;

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// 0 asks the OS for a free port (an extension used by tests; the bound address is logged).
    pub port: u16,
    /// `listener PORT ADDRESS` / `bind_address`; `None` binds every interface.
    pub bind_address: Option<String>,
    /// `socket_domain ipv4|ipv6`.
    pub socket_domain: Option<SocketDomain>,
    /// `max_connections` (mosquitto: -1 = unlimited, the default).
    pub max_connections: Option<usize>,
    pub use_username_as_clientid: bool,
    /// `clientid_prefixes`: clients whose id does not start with it are refused.
    pub clientid_prefix: Option<String>,
    /// `max_topic_alias` (default 10, mosquitto's): aliases a v5 client may use towards us.
    pub max_topic_alias: u16,
    /// `protocol mqtt|websockets`.
    pub protocol: ListenerProtocol,
    /// `http_dir`: files served to plain HTTP GETs on a websockets listener.
    pub http_dir: Option<PathBuf>,
    /// `websockets_origin` lines (mosquitto 2.1): when any is given, an upgrade whose `Origin`
    /// header matches none of them is refused.
    pub websockets_origins: Vec<String>,
    pub tls: TlsOptions,
    /// The listener's own security options when `per_listener_settings true`.
    pub security: Option<SecurityOptions>,
    pub at: Option<Location>,
}

impl ListenerConfig {
    fn new(port: u16, bind_address: Option<String>, at: Option<Location>) -> Self {
        ListenerConfig {
            port,
            bind_address,
            socket_domain: None,
            max_connections: None,
            use_username_as_clientid: false,
            clientid_prefix: None,
            max_topic_alias: 10,
            protocol: ListenerProtocol::Mqtt,
            http_dir: None,
            websockets_origins: Vec::new(),
            tls: TlsOptions::default(),
            security: None,
            at,
        }
    }

    /// Addresses to bind: the configured address, or every interface of the socket domain.
    pub fn bind_host(&self) -> String {
        match (&self.bind_address, self.socket_domain) {
            (Some(address), _) => address.clone(),
            (None, Some(SocketDomain::Ipv6)) => "::".to_owned(),
            (None, _) => "0.0.0.0".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDomain {
    Ipv4,
    Ipv6,
}

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Stdout,
    File(PathBuf),
}

/// Logging, mapped onto `tracing` levels (`log_type`, `log_dest`, `-v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The most verbose level any `log_type` asked for; `None` = logging off (`log_type none`).
    pub level: Option<tracing::Level>,
    pub dests: Vec<LogDest>,
    /// `log_timestamp`: lines start with the Unix time.
    pub timestamp: bool,
    /// `connection_messages`: connects and disconnects are logged.
    pub connection_messages: bool,
}

impl Default for LogConfig {
    /// mosquitto's default: error, warning, notice and information, on stderr, with timestamps
    /// and connection messages.
    fn default() -> Self {
        LogConfig {
            level: Some(tracing::Level::INFO),
            dests: vec![LogDest::Stderr],
            timestamp: true,
            connection_messages: true,
        }
    }
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
    /// when a QoS>0 subscriber has its 100 messages in flight and this many bytes were published
    /// since it was last caught up, publishers stop being read until it catches up.
    pub backpressure_window: u64,
    /// `gate_backpressure_max_hold` (seconds, default 10): a subscriber that stays behind longer
    /// than this no longer holds publishers (a client that never acknowledges cannot stop the
    /// broker); it may then lose messages as rumqttd does.
    pub backpressure_max_hold: Duration,
    /// `gate_worker_threads` (default: CPUs − 1, at least 1; the router has its own thread).
    pub worker_threads: usize,
    /// `gate_login_*`: failed-login throttling (see [`crate::throttle`]).
    pub login: crate::throttle::ThrottleSettings,
    /// `gate_max_subscriptions_per_client` (default 1000; 0: no limit; mosquitto has no such
    /// directive): filters one connection may hold. Each unique routed filter costs the router
    /// about 7 KB that it never frees (docs/security.md), so the default bounds one client
    /// to about 7 MB while leaving room far beyond what devices and bridges usually subscribe.
    /// A filter over the limit gets SUBACK 0x97 (v5, quota exceeded) or 0x80.
    pub max_subscriptions_per_client: usize,
    /// `gate_new_topics_per_second` (default 1000; 0: no limit) and `gate_new_topics_burst`
    /// (default 10000): the rate at which one connection may publish to topics the router has
    /// never routed (see [`crate::topic_budget`]). The defaults let a backend address a fleet of
    /// 10,000 devices at once. A message over the budget is dropped
    /// (v5 QoS>0: acknowledged with 0x97, quota exceeded).
    pub new_topics_per_second: u32,
    pub new_topics_burst: u32,
    /// `gate_connect_max_size` (bytes, default 128 KiB): a CONNECT whose fixed header announces
    /// more closes the socket before any more of it is buffered (`max_packet_size` applies once
    /// the client is authenticated).
    pub connect_max_size: usize,
    /// `gate_unauthenticated_connections` (default 1024): sockets accepted whose login is not
    /// decided yet, across listeners; beyond it a new socket is closed at accept.
    pub unauthenticated_connections: usize,
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
            connect_max_size: 128 * 1024,
            unauthenticated_connections: 1024,
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
    /// `max_keepalive` (seconds, default 65535): v5 clients asking for more are told this value.
    pub max_keepalive: u16,
    /// `sys_interval` (seconds, default 10): how often the `$SYS/broker/...` topics are
    /// refreshed; 0 publishes no `$SYS` topics at all (see [`crate::sys_topics`]).
    pub sys_interval: u32,
    /// `enable_control_api` (default false): serve `$CONTROL/broker/v1` ([`crate::broker_api`]).
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
    /// Accepted-but-ignored directives and other notes, logged once logging is set up.
    pub warnings: Vec<String>,
}

/// Directives that configure one listener (apply to the default listener when written before
/// any `listener` line, as in mosquitto).
const TLS_PATHS: &[&str] = &["cafile", "capath", "certfile", "keyfile", "crlfile"];
const TLS_OTHER: &[&str] = &[
    "ciphers",
    "ciphers_tls1.3",
    "dhparamfile",
    "psk_hint",
    "tls_engine",
    "tls_keyform",
    "tls_engine_kpass_sha1",
    "tls_version",
];

/// Directives accepted and ignored, with the reason logged as a warning.
const IGNORED: &[(&str, &str)] = &[
    ("autosave_interval", "sessions are kept in memory only"),
    ("autosave_on_changes", "sessions are kept in memory only"),
    ("persistent_client_expiration", "sessions are kept in memory only and expire per MQTT v5 session expiry"),
    ("check_retain_source", "retained messages are checked against the receiver's ACL only"),
    ("log_facility", "syslog is not supported"),
    ("log_timestamp_format", "timestamps are printed as Unix time, as with log_timestamp true"),
    ("max_inflight_bytes", "the router allows 100 QoS>0 messages in flight per client"),
    ("max_inflight_messages", "the router allows 100 QoS>0 messages in flight per client"),
    ("max_queued_bytes", "offline queues are bounded by gate_segment_size × gate_segment_count"),
    ("max_queued_messages", "offline queues are bounded by gate_segment_size × gate_segment_count"),
    ("memory_limit", "memory is bounded by the gate_* settings"),
    ("message_size_limit", "use max_packet_size"),
    ("queue_qos0_messages", "the router queues QoS 0 messages for persistent sessions"),
    ("retain_available", "retained messages are always available"),
    ("upgrade_outgoing_qos", "delivery QoS is the subscription QoS (see known differences)"),
    ("allow_duplicate_messages", "duplicates are always allowed"),
    ("auth_plugin_deny_special_chars", "only applies to legacy auth plugins"),
    ("maximum_qos", "QoS 2 is always available"),
    ("websockets_log_level", "websocket events are logged with log_type websockets (debug)"),
];

/// Directives that only make sense for a bridge.
const BRIDGE: &[&str] = &[
    "connection",
    "address",
    "addresses",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "bridge_alpn",
    "cleansession",
    "clientid",
    "idle_timeout",
    "keepalive_interval",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "notifications",
    "notifications_local_only",
    "notification_topic",
    "password",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "topic",
];

/// Directives that change behaviour we do not implement: refused, so nobody runs believing they
/// apply.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("mount_point", "mount points are not supported"),
    ("bind_interface", "bind_interface is not supported; use listener PORT ADDRESS"),
    ("try_private", "bridges are not supported"),
];

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
    pub fn security_for(&self, listener: usize) -> &SecurityOptions {
        self.listeners.get(listener).and_then(|l| l.security.as_ref()).unwrap_or(&self.security)
    }
}

/// Interpretation state: which listener and which security options the next directive changes.
struct Builder {
    per_listener_settings: bool,
    default_listener: ListenerConfig,
    /// `port` was given, so the default listener exists.
    default_listener_defined: bool,
    listeners: Vec<ListenerConfig>,
    security: SecurityOptions,
    max_packet_size: u32,
    max_keepalive: u16,
    sys_interval: u32,
    enable_control_api: bool,
    tcp_nodelay: bool,
    websockets_headers_size: usize,
    log_level: Option<Option<tracing::Level>>,
    /// `None`: no `log_dest` line (stderr, mosquitto's default).
    log_dests: Option<Vec<LogDest>>,
    log_timestamp: bool,
    connection_messages: bool,
    gate: GateSettings,
    backpressure_window_set: bool,
    service: ServiceConfig,
    warnings: Vec<String>,
    /// Websockets-only directives seen: (listener count when seen, 0 = the default listener, …).
    websockets_only: Vec<(usize, Location, String)>,
}

impl Builder {
    fn new(per_listener_settings: bool) -> Self {
        let mut default_listener = ListenerConfig::new(DEFAULT_PORT, None, None);
        if per_listener_settings {
            default_listener.security = Some(SecurityOptions::default());
        }
        Builder {
            per_listener_settings,
            default_listener,
            default_listener_defined: false,
            listeners: Vec::new(),
            security: SecurityOptions::default(),
            max_packet_size: 4 * 1024 * 1024,
            max_keepalive: 65535,
            sys_interval: 10,
            enable_control_api: false,
            tcp_nodelay: false,
            websockets_headers_size: DEFAULT_WEBSOCKETS_HEADERS_SIZE,
            log_level: None,
            log_dests: None,
            log_timestamp: true,
            connection_messages: true,
            gate: GateSettings::default(),
            backpressure_window_set: false,
            service: ServiceConfig::default(),
            warnings: Vec::new(),
            websockets_only: Vec::new(),
        }
    }

    fn current_listener(&mut self) -> &mut ListenerConfig {
        match self.listeners.last_mut() {
            Some(listener) => listener,
            None => &mut self.default_listener,
        }
    }

    fn current_security(&mut self) -> &mut SecurityOptions {
        if self.per_listener_settings {
            self.current_listener().security.get_or_insert_with(SecurityOptions::default)
        } else {
            &mut self.security
        }
    }

    fn path(directive: &Directive) -> Result<PathBuf, ConfigError> {
        Ok(PathBuf::from(directive.text()?))
    }

    fn apply(&mut self, d: &Directive) -> Result<(), ConfigError> {
        let key = d.key.as_str();
        if let Some(option) = key.strip_prefix("plugin_opt_").or_else(|| key.strip_prefix("auth_opt_")) {
            let value = d.rest.trim().to_owned();
            if option.is_empty() {
                return Err(d.at.error(format!("invalid option name {key}")));
            }
            let Some(plugin) = self.current_security().plugins.last_mut() else {
                return Err(d.at.error(format!("{key} given without a preceding plugin line")));
            };
            plugin.options.push((option.to_owned(), value));
            return Ok(());
        }
        if let Some(gate_key) = key.strip_prefix("gate_") {
            return self.apply_gate(gate_key, d);
        }
        match key {
            "listener" => {
                let words = d.words();
                let (port, address) = match words.as_slice() {
                    [port] => (*port, None),
                    [port, address] => (*port, Some((*address).to_owned())),
                    _ => return Err(d.at.error("listener needs a port and optionally an address")),
                };
                let port: u16 = port.parse().map_err(|_| d.at.error(format!("invalid listener port ({port})")))?;
                let mut listener = ListenerConfig::new(port, address, Some(d.at.clone()));
                if self.per_listener_settings {
                    listener.security = Some(SecurityOptions::default());
                }
                self.listeners.push(listener);
            }
            "port" => {
                self.default_listener.port = d.number()?;
                self.default_listener.at = Some(d.at.clone());
                self.default_listener_defined = true;
            }
            "bind_address" => self.default_listener.bind_address = Some(d.one_word()?.to_owned()),
            "socket_domain" => {
                let domain = match d.one_word()? {
                    "ipv4" => SocketDomain::Ipv4,
                    "ipv6" => SocketDomain::Ipv6,
                    other => return Err(d.at.error(format!("invalid socket_domain ({other}): expected ipv4 or ipv6"))),
                };
                self.current_listener().socket_domain = Some(domain);
            }
            "protocol" => {
                let protocol = match d.one_word()? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::Websockets,
                    "http_api" => {
                        return Err(d.at.error("protocol http_api (mosquitto 2.1's HTTP API) is not supported"));
                    }
                    other => return Err(d.at.error(format!("invalid protocol ({other})"))),
                };
                self.current_listener().protocol = protocol;
            }
            "http_dir" => {
                let path = Self::path(d)?;
                self.current_listener().http_dir = Some(path);
                self.listener_only_for_websockets(d);
            }
            "websockets_origin" => {
                let origin = d.one_word()?.to_owned();
                self.current_listener().websockets_origins.push(origin);
                self.listener_only_for_websockets(d);
            }
            "websockets_headers_size" => {
                let value: usize = d.number()?;
                // libwebsockets kept it in 16 bits; larger heads are not HTTP requests a broker needs.
                if value > 65_535 {
                    return Err(d.at.error("websockets_headers_size must be between 0 and 65535 bytes"));
                }
                self.websockets_headers_size = if value == 0 { DEFAULT_WEBSOCKETS_HEADERS_SIZE } else { value };
            }
            "max_connections" => {
                let value: i64 = d.number()?;
                self.current_listener().max_connections = if value < 0 { None } else { Some(value as usize) };
            }
            "use_username_as_clientid" => self.current_listener().use_username_as_clientid = d.boolean()?,
            "clientid_prefixes" => self.current_listener().clientid_prefix = Some(d.one_word()?.to_owned()),
            "max_topic_alias" => self.current_listener().max_topic_alias = d.number()?,
            "require_certificate" => {
                let value = d.boolean()?;
                self.tls(d).require_certificate = value;
            }
            "use_identity_as_username" => {
                let value = d.boolean()?;
                self.tls(d).use_identity_as_username = value;
            }
            "use_subject_as_username" => {
                let value = d.boolean()?;
                self.tls(d).use_subject_as_username = value;
            }
            k if TLS_PATHS.contains(&k) => {
                let path = Self::path(d)?;
                let tls = self.tls(d);
                match k {
                    "cafile" => tls.cafile = Some(path),
                    "capath" => tls.capath = Some(path),
                    "certfile" => tls.certfile = Some(path),
                    "keyfile" => tls.keyfile = Some(path),
                    _ => tls.crlfile = Some(path),
                }
            }
            k if TLS_OTHER.contains(&k) => {
                let value = d.text()?.to_owned();
                if k == "tls_version" && !matches!(value.as_str(), "tlsv1.3" | "tlsv1.2" | "tlsv1.1") {
                    return Err(d.at.error(format!("invalid tls_version ({value})")));
                }
                let tls = self.tls(d);
                if k == "tls_version" {
                    tls.tls_version = Some(value);
                } else {
                    tls.other.insert(k.to_owned(), value);
                }
            }
            "allow_anonymous" => {
                let value = d.boolean()?;
                let security = self.current_security();
                security.allow_anonymous = value;
                security.allow_anonymous_explicit = true;
            }
            "password_file" => self.current_security().password_file = Some(Self::path(d)?),
            "acl_file" => self.current_security().acl_file = Some(Self::path(d)?),
            "psk_file" => self.current_security().psk_file = Some(Self::path(d)?),
            "allow_zero_length_clientid" => self.current_security().allow_zero_length_clientid = d.boolean()?,
            "auto_id_prefix" => self.current_security().auto_id_prefix = d.one_word()?.to_owned(),
            "plugin" | "auth_plugin" => {
                let path = Self::path(d)?;
                let security = self.current_security();
                if security.plugins.iter().any(|p| p.path == path) {
                    // mosquitto 2.0.15+ refuses this too (2.0.11 duplicated every dynsec entry).
                    return Err(d.at.error(format!("plugin {} is loaded twice", path.display())));
                }
                security.plugins.push(PluginConfig { path, options: Vec::new(), at: d.at.clone() });
            }
            "per_listener_settings" => {
                d.boolean()?; // applied before interpretation began
            }
            "max_packet_size" => {
                let value: u32 = d.number()?;
                if value != 0 && value < 20 {
                    return Err(d.at.error("max_packet_size must be 0 (default) or at least 20"));
                }
                if value != 0 {
                    self.max_packet_size = value.min(268_435_455 + 5);
                }
            }
            "max_keepalive" => self.max_keepalive = d.number()?,
            "sys_interval" => self.sys_interval = d.number()?,
            "enable_control_api" => self.enable_control_api = d.boolean()?,
            "set_tcp_nodelay" => self.tcp_nodelay = d.boolean()?,
            "log_type" => {
                let level = match d.one_word()? {
                    "none" => None,
                    "error" => Some(tracing::Level::ERROR),
                    "warning" => Some(tracing::Level::WARN),
                    "notice" | "information" | "subscribe" | "unsubscribe" => Some(tracing::Level::INFO),
                    "debug" | "websockets" | "all" => Some(tracing::Level::DEBUG),
                    other => return Err(d.at.error(format!("invalid log_type ({other})"))),
                };
                // The most verbose type wins; `none` only counts when nothing else is asked for.
                let merged = match (self.log_level.flatten(), level) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                self.log_level = Some(merged);
            }
            "log_dest" => {
                let words = d.words();
                let dests = self.log_dests.get_or_insert_with(Vec::new);
                match words.first().copied() {
                    Some("stderr") => dests.push(LogDest::Stderr),
                    Some("stdout") => dests.push(LogDest::Stdout),
                    Some("file") => {
                        let path = d.rest.trim_start_matches("file").trim();
                        if path.is_empty() {
                            return Err(d.at.error("log_dest file needs a path"));
                        }
                        dests.push(LogDest::File(PathBuf::from(path)));
                    }
                    Some("none") => dests.clear(),
                    Some(other @ ("syslog" | "topic" | "dlt")) => {
                        dests.push(LogDest::Stderr);
                        self.warnings.push(format!("{}: log_dest {other} is not supported; logging to stderr", d.at));
                    }
                    _ => return Err(d.at.error(format!("invalid log_dest ({})", d.rest))),
                }
            }
            "log_timestamp" => self.log_timestamp = d.boolean()?,
            "connection_messages" => self.connection_messages = d.boolean()?,
            "user" => self.service.user = Some(d.one_word()?.to_owned()),
            "pid_file" => {
                let path = d.text()?;
                self.service.pid_file = Some(PathBuf::from(path));
            }
            "persistence" => {
                if d.boolean()? {
                    self.warnings.push(format!(
                        "{}: persistence is not supported: sessions, queued and retained messages are kept in memory only",
                        d.at
                    ));
                }
            }
            "persistence_file" | "persistence_location" => {
                d.text()?;
                self.warnings.push(format!("{}: {key} is ignored: sessions are kept in memory only", d.at));
            }
            k => {
                if let Some((_, why)) = IGNORED.iter().find(|(name, _)| *name == k) {
                    self.warnings.push(format!("{}: {k} is ignored: {why}", d.at));
                } else if BRIDGE.contains(&k) || k.starts_with("bridge_") {
                    return Err(d.at.error(format!("{k}: bridges are not supported")));
                } else if let Some((_, why)) = UNSUPPORTED.iter().find(|(name, _)| *name == k) {
                    return Err(d.at.error(format!("{k}: {why}")));
                } else {
                    return Err(d.at.error(format!("unknown configuration directive \"{k}\"")));
                }
            }
        }
        Ok(())
    }

    /// Notes a websockets-only directive; [`Builder::finish`] warns if its listener stays `mqtt`.
    fn listener_only_for_websockets(&mut self, d: &Directive) {
        let listener = self.listeners.len();
        self.websockets_only.push((listener, d.at.clone(), d.key.clone()));
    }

    fn tls(&mut self, d: &Directive) -> &mut TlsOptions {
        let tls = &mut self.current_listener().tls;
        if tls.first_at.is_none() {
            tls.first_at = Some(d.at.clone());
        }
        tls
    }

    fn apply_gate(&mut self, key: &str, d: &Directive) -> Result<(), ConfigError> {
        let seconds = |d: &Directive| -> Result<Duration, ConfigError> {
            let value: f64 = d.number()?;
            if !(value > 0.0 && value <= 86_400.0) {
                return Err(d.at.error(format!("{} must be between 0 and 86400 seconds", d.key)));
            }
            Ok(Duration::from_secs_f64(value))
        };
        match key {
            "segment_size" => {
                let value: usize = d.number()?;
                if !(1024..=1 << 30).contains(&value) {
                    return Err(d.at.error("gate_segment_size must be between 1024 and 1073741824 bytes"));
                }
                self.gate.segment_size = value;
            }
            "segment_count" => {
                let value: usize = d.number()?;
                if !(1..=1024).contains(&value) {
                    return Err(d.at.error("gate_segment_count must be between 1 and 1024"));
                }
                self.gate.segment_count = value;
            }
            "router_connections" => {
                let value: usize = d.number()?;
                if !(16..=10_000_000).contains(&value) {
                    return Err(d.at.error("gate_router_connections must be between 16 and 10000000"));
                }
                self.gate.router_connections = value;
            }
            "max_subscriptions_per_client" => self.gate.max_subscriptions_per_client = d.number()?,
            "new_topics_per_second" => self.gate.new_topics_per_second = d.number()?,
            "new_topics_burst" => self.gate.new_topics_burst = d.number()?,
            "connect_timeout" => self.gate.connect_timeout = seconds(d)?,
            "write_timeout" => self.gate.write_timeout = seconds(d)?,
            "backpressure_window" => {
                self.gate.backpressure_window = d.number()?;
                self.backpressure_window_set = true;
            }
            "backpressure_max_hold" => self.gate.backpressure_max_hold = seconds(d)?,
            "worker_threads" => {
                let value: usize = d.number()?;
                if !(1..=1024).contains(&value) {
                    return Err(d.at.error("gate_worker_threads must be between 1 and 1024"));
                }
                self.gate.worker_threads = value;
            }
            "connect_max_size" => {
                let value: usize = d.number()?;
                if !(256..=268_435_460).contains(&value) {
                    return Err(d.at.error("gate_connect_max_size must be between 256 and 268435460 bytes"));
                }
                self.gate.connect_max_size = value;
            }
            "unauthenticated_connections" => {
                let value: usize = d.number()?;
                if !(1..=10_000_000).contains(&value) {
                    return Err(d.at.error("gate_unauthenticated_connections must be between 1 and 10000000"));
                }
                self.gate.unauthenticated_connections = value;
            }
            "login_throttle" => self.gate.login.enabled = d.boolean()?,
            "login_window" => self.gate.login.window = seconds(d)?,
            "login_queue_timeout" => self.gate.login.queue_timeout = seconds(d)?,
            "login_failures_per_address"
            | "login_failures_per_username"
            | "login_pending_per_address"
            | "login_verifications" => {
                let value: u32 = d.number()?;
                if !(1..=1_000_000).contains(&value) {
                    return Err(d.at.error(format!("{} must be between 1 and 1000000", d.key)));
                }
                let login = &mut self.gate.login;
                match key {
                    "login_failures_per_address" => login.failures_per_address = value,
                    "login_failures_per_username" => login.failures_per_username = value,
                    "login_pending_per_address" => login.pending_per_address = value as usize,
                    _ => login.concurrent_verifications = value as usize,
                }
            }
            _ => return Err(d.at.error(format!("unknown configuration directive \"gate_{key}\""))),
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Config, ConfigError> {
        // mosquitto ignores http_dir and websockets_origin on an mqtt listener; say so.
        for (count, at, key) in &self.websockets_only {
            let protocol = match count {
                0 => self.default_listener.protocol,
                n => self.listeners[n - 1].protocol,
            };
            if protocol != ListenerProtocol::Websockets {
                self.warnings.push(format!("{at}: {key} is ignored: its listener is not protocol websockets"));
            }
        }
        let mut listeners = Vec::new();
        if self.default_listener_defined {
            listeners.push(self.default_listener.clone());
        }
        listeners.append(&mut self.listeners);
        let local_only = listeners.is_empty();
        if local_only {
            // mosquitto 2.0 without listeners: loopback only, anonymous allowed unless told not to.
            let mut listener = self.default_listener.clone();
            listener.port = DEFAULT_PORT;
            listener.bind_address = Some(Ipv4Addr::LOCALHOST.to_string());
            listeners.push(listener);
        }
        let resolve = |security: &mut SecurityOptions| {
            if !security.allow_anonymous_explicit {
                security.allow_anonymous = local_only;
            }
        };
        resolve(&mut self.security);
        for listener in &mut listeners {
            if let Some(security) = listener.security.as_mut() {
                resolve(security);
            }
            if let Some(address) = &listener.bind_address
                && address.parse::<IpAddr>().is_err()
                && address != "localhost"
            {
                let at = listener.at.as_ref().map(|a| a.to_string()).unwrap_or_default();
                return Err(ConfigError::Invalid(format!("{at}: invalid listener address {address}")));
            }
        }
        if !self.backpressure_window_set {
            self.gate.backpressure_window = (self.gate.segment_size * self.gate.segment_count / 2) as u64;
        }
        let log = LogConfig {
            level: self.log_level.unwrap_or(LogConfig::default().level),
            dests: self.log_dests.unwrap_or_else(|| vec![LogDest::Stderr]),
            timestamp: self.log_timestamp,
            connection_messages: self.connection_messages,
        };
        Ok(Config {
            source: None,
            listeners,
            local_only,
            per_listener_settings: self.per_listener_settings,
            security: self.security,
            max_packet_size: self.max_packet_size,
            max_keepalive: self.max_keepalive,
            sys_interval: self.sys_interval,
            enable_control_api: self.enable_control_api,
            tcp_nodelay: self.tcp_nodelay,
            websockets_headers_size: self.websockets_headers_size,
            log,
            gate: self.gate,
            service: self.service,
            warnings: self.warnings,
        })
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
        assert!(config.security_for(0).allow_anonymous);
        assert!(!config.security_for(1).allow_anonymous);
        assert_eq!(config.security_for(1).password_file.as_deref(), Some(Path::new("/etc/pw")));
        assert_eq!(config.security_for(0).password_file, None);
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
            ("protocol http_api\n", "http_api"),
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
        assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
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
