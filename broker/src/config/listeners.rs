//! What one listener is configured with: its socket (`listener`, `port`, `bind_address`, …), its
//! client-id rules, its TLS settings (see `tls`) and, with `per_listener_settings true`, its own
//! security options (password and ACL files, plugins, anonymous access).

use std::path::PathBuf;

use super::Location;
use super::tls::TlsOptions;

/// A listener, by its place in the configuration (the first is 0). The gate resolves each
/// listener's settings once (`shared::Listener`); security implementations key what
/// differs per listener by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub usize);

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
        self.password_file.is_some() || !self.plugins.is_empty()
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

/// What a listener speaks (`protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// MQTT on the socket (or on TLS).
    #[default]
    Mqtt,
    /// MQTT in binary websocket frames, after an HTTP upgrade (served by `crate::gate::websocket`).
    Websockets,
    /// HTTP(S): mosquitto 2.1's `/api/v1/*`, the admin console, `/metrics` and health (served by
    /// `crate::console`).
    HttpApi,
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
    /// `protocol mqtt|websockets|http_api`.
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
    pub(super) fn new(port: u16, bind_address: Option<String>, at: Option<Location>) -> Self {
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
