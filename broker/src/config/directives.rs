//! Interpretation of the directives, in file order: each one changes the listener or security
//! options it applies to (the last `listener` line, or the global ones), or a broker-wide or
//! `gate_*` setting; then the listeners and defaults are resolved as mosquitto 2.0 does. Every
//! error names the file and line.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::lexer::{Directive, Location};
use super::listeners::{
    DEFAULT_WEBSOCKETS_HEADERS_SIZE, ListenerConfig, ListenerProtocol, PluginConfig, SecurityOptions, SocketDomain,
};
use super::logging::LogDirectives;
use super::persistence::PersistenceSettings;
use super::{Config, ConfigError, DEFAULT_PORT, GateSettings, ServiceConfig, tls};

/// Directives accepted and ignored, with the reason logged as a warning.
const IGNORED: &[(&str, &str)] = &[
    ("check_retain_source", "retained messages are checked against the receiver's ACL only"),
    ("log_facility", "syslog is not supported"),
    ("log_timestamp_format", "timestamps are printed as Unix time, as with log_timestamp true"),
    ("max_inflight_bytes", "the router allows 100 QoS>0 messages in flight per client"),
    ("memory_limit", "memory is bounded by the gate_* settings"),
    ("message_size_limit", "use max_packet_size"),
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

/// Interpretation state: which listener and which security options the next directive changes.
pub(super) struct Builder {
    per_listener_settings: bool,
    default_listener: ListenerConfig,
    /// `port` was given, so the default listener exists.
    default_listener_defined: bool,
    listeners: Vec<ListenerConfig>,
    security: SecurityOptions,
    max_packet_size: u32,
    max_keepalive: u16,
    max_inflight_messages: u16,
    sys_interval: u32,
    enable_control_api: bool,
    tcp_nodelay: bool,
    websockets_headers_size: usize,
    log: LogDirectives,
    gate: GateSettings,
    backpressure_window_set: bool,
    service: ServiceConfig,
    persistence: PersistenceSettings,
    cluster: crate::cluster::ClusterDirectives,
    warnings: Vec<String>,
    /// Websockets-only directives seen: (listener count when seen, 0 = the default listener, …).
    websockets_only: Vec<(usize, Location, String)>,
}

impl Builder {
    pub(super) fn new(per_listener_settings: bool) -> Self {
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
            max_keepalive: 0,
            max_inflight_messages: 20,
            sys_interval: 10,
            enable_control_api: false,
            tcp_nodelay: false,
            websockets_headers_size: DEFAULT_WEBSOCKETS_HEADERS_SIZE,
            log: LogDirectives::default(),
            gate: GateSettings::default(),
            backpressure_window_set: false,
            service: ServiceConfig::default(),
            persistence: PersistenceSettings::default(),
            cluster: Default::default(),
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

    pub(super) fn apply(&mut self, d: &Directive) -> Result<(), ConfigError> {
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
        if self.persistence.apply(d)? || self.cluster.apply(d)? {
            return Ok(());
        }
        if let Some(gate_key) = key.strip_prefix("gate_") {
            return self.apply_gate(gate_key, d);
        }
        if tls::apply(&mut self.current_listener().tls, d)? || self.log.apply(d, &mut self.warnings)? {
            return Ok(());
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
                    // mosquitto 2.1's HTTP API, and this broker's console beside it (crate::console).
                    "http_api" => ListenerProtocol::HttpApi,
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
            "allow_anonymous" => {
                let value = d.boolean()?;
                let security = self.current_security();
                security.allow_anonymous = value;
                security.allow_anonymous_explicit = true;
            }
            "password_file" => self.current_security().password_file = Some(Self::path(d)?),
            "acl_file" => self.current_security().acl_file = Some(Self::path(d)?),
            // Like the TLS-PSK directives of a listener (`psk_hint`): rustls offers no TLS-PSK, so the
            // line is refused rather than accepted and never used.
            "psk_file" => return Err(d.at.error("psk_file is not supported: rustls offers no TLS-PSK")),
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
            "max_inflight_messages" => {
                // As mosquitto reads it: negative or 65535 mean no limit.
                let value: i64 = d.number()?;
                self.max_inflight_messages = match value {
                    ..0 | 65535 => 0,
                    0..65535 => value as u16,
                    _ => return Err(d.at.error("max_inflight_messages must be <= 65535")),
                };
            }
            "sys_interval" => self.sys_interval = d.number()?,
            "enable_control_api" => self.enable_control_api = d.boolean()?,
            "set_tcp_nodelay" => self.tcp_nodelay = d.boolean()?,
            "user" => self.service.user = Some(d.one_word()?.to_owned()),
            "pid_file" => {
                let path = d.text()?;
                self.service.pid_file = Some(PathBuf::from(path));
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
            "new_filters_per_second" => self.gate.new_filters_per_second = d.number()?,
            "new_filters_burst" => self.gate.new_filters_burst = d.number()?,
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
            "fleet_hub" => self.gate.fleet_hub = d.boolean()?,
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

    pub(super) fn finish(mut self) -> Result<Config, ConfigError> {
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
        let log = self.log.finish();
        Ok(Config {
            source: None,
            listeners,
            local_only,
            per_listener_settings: self.per_listener_settings,
            security: self.security,
            max_packet_size: self.max_packet_size,
            max_keepalive: self.max_keepalive,
            max_inflight_messages: self.max_inflight_messages,
            sys_interval: self.sys_interval,
            enable_control_api: self.enable_control_api,
            tcp_nodelay: self.tcp_nodelay,
            websockets_headers_size: self.websockets_headers_size,
            log,
            gate: self.gate,
            service: self.service,
            persistence: self.persistence,
            cluster: self.cluster.finish()?,
            warnings: self.warnings,
        })
    }
}
