//! The production [`Security`]: mosquitto's plugin chain (dynamic security, `allow_anonymous`,
//! later `password_file` / `acl_file`).
//!
//! Interim implementation, to be replaced by the lead engineer's dynsec chain: it covers only
//! `allow_anonymous` (mosquitto-compat §3.1 / §5.3): a client without a username is accepted iff
//! anonymous access is allowed; a client with a username is refused unless anonymous access is
//! allowed *and* no authentication source (plugin, password file, PSK file) is configured, in
//! which case the credentials are ignored. Every accepted client may do everything. There are no
//! control endpoints and no kick events.

use std::sync::Arc;

use crate::Error;
use crate::config::{Config, SecurityOptions};
use crate::security::{
    Access, BoxFuture, ClientAuthz, ConnectDecision, ConnectRequest, ControlOutcome, ControlSender, KickTarget,
    Security,
};

/// See the module documentation.
pub struct AuthChain {
    /// Security options per listener index (global options repeated when not per listener).
    per_listener: Vec<SecurityOptions>,
}

impl AuthChain {
    /// Builds the chain the configuration describes.
    pub fn from_config(config: &Config) -> Result<Arc<dyn Security>, Error> {
        let per_listener = (0..config.listeners.len()).map(|i| config.security_for(i).clone()).collect();
        for options in
            std::iter::once(&config.security).chain(config.listeners.iter().filter_map(|l| l.security.as_ref()))
        {
            for plugin in &options.plugins {
                if !plugin.is_dynsec() {
                    return Err(Error::Unsupported(format!(
                        "{}: plugin {} cannot be loaded: only mosquitto's dynamic security plugin is built in",
                        plugin.at,
                        plugin.path.display()
                    )));
                }
            }
        }
        Ok(Arc::new(AuthChain { per_listener }))
    }
}

/// Everything allowed.
struct AllowAll;

impl ClientAuthz for AllowAll {
    fn allows(&self, _access: Access, _topic: &str) -> bool {
        true
    }
}

impl Security for AuthChain {
    fn authenticate(&self, request: ConnectRequest) -> BoxFuture<ConnectDecision> {
        let decision = match self.per_listener.get(request.listener) {
            None => ConnectDecision::NotAuthorized,
            Some(options) => {
                let accepted = match request.username {
                    None => options.allow_anonymous,
                    Some(_) => options.allow_anonymous && !options.has_auth_source(),
                };
                if accepted {
                    ConnectDecision::Accept { username: request.username, authz: Arc::new(AllowAll) }
                } else {
                    ConnectDecision::NotAuthorized
                }
            }
        };
        Box::pin(async move { decision })
    }

    fn control(&self, _sender: ControlSender, _topic: &str, _payload: Vec<u8>) -> Option<BoxFuture<ControlOutcome>> {
        None
    }

    fn take_kick_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<KickTarget>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::Protocol;

    fn request(username: Option<&str>) -> ConnectRequest {
        ConnectRequest {
            listener: 0,
            peer: "127.0.0.1:1".parse().unwrap(),
            client_id: "c".into(),
            username: username.map(Arc::from),
            password: None,
            tls: None,
            protocol: Protocol::V311,
        }
    }

    async fn accepted(config: &str, username: Option<&str>) -> bool {
        let config = Config::from_text("t.conf", config).unwrap();
        let chain = AuthChain::from_config(&config).unwrap();
        matches!(chain.authenticate(request(username)).await, ConnectDecision::Accept { .. })
    }

    #[tokio::test]
    async fn anonymous_matrix_follows_mosquitto() {
        assert!(accepted("listener 1\nallow_anonymous true\n", None).await);
        assert!(accepted("listener 1\nallow_anonymous true\n", Some("u")).await, "no auth source: credentials ignored");
        assert!(!accepted("listener 1\n", None).await, "listener configured: anonymous off by default");
        assert!(!accepted("listener 1\nallow_anonymous false\n", Some("u")).await);
        assert!(accepted("listener 1\nallow_anonymous true\npassword_file /x\n", None).await);
        assert!(!accepted("listener 1\nallow_anonymous true\npassword_file /x\n", Some("u")).await);
        assert!(accepted("", None).await, "local-only default");
        assert!(accepted("", Some("u")).await, "local-only without auth source: credentials ignored");
    }

    #[test]
    fn foreign_plugins_are_refused() {
        let config = Config::from_text("t.conf", "plugin /usr/lib/libfoo.so\n").unwrap();
        assert!(AuthChain::from_config(&config).is_err());
        let config = Config::from_text("t.conf", "plugin /usr/lib/mosquitto_dynamic_security.so\n").unwrap();
        assert!(AuthChain::from_config(&config).is_ok());
    }
}
