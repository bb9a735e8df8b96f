//! The production [`Security`]: mosquitto's security chain (docs/compatibility.md §3.1–§3.2, §5.3–§5.5) with the
//! dynamic security plugin built in.
//!
//! Authentication: certificate identity (`use_identity_as_username` / `use_subject_as_username`)
//! replaces the whole basic-auth chain; otherwise dynsec answers first, then `password_file`. The
//! first non-deferring answer wins; if every source defers, only a client without a username gets
//! in, and only with `allow_anonymous`. With no source at all, `allow_anonymous` alone decides.
//! Password hashing runs on a fixed pool of low-priority threads ([`crate::security::verifier`]) behind a
//! semaphore, so a flood of logins can neither take more than a bounded number of threads nor
//! starve connected clients of CPU, and failed logins are throttled per source address and per
//! username ([`crate::security::throttle`]).
//!
//! Authorization: dynsec, then `acl_file`; first non-deferring answer wins; all deferred → deny;
//! no ACL source at all → allow ([`NoAclSource`]).
//!
//! Live changes: `$CONTROL/dynamic-security/v1` is served on the listeners whose security has the
//! plugin (all of them unless `per_listener_settings true`); it runs on the blocking pool and
//! resolves once durable;
//! edits of `dynamic-security.json` by other programs are picked up by a file watcher; SIGHUP
//! re-reads `password_file` and `acl_file` (an invalid file keeps the old one). Each produces
//! kicks for the clients whose rights changed.
//!
//! This file holds the chain's per-listener scopes and its [`Security`] implementation; each job
//! lives beside it: `admin` (the engine and its first admin), `watcher` (external edits),
//! `reload` (the static files, read again on SIGHUP), `authentication`, `control` and `authz`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dynsec::Dynsec;
use dynsec::static_files::PasswordFile;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::admin::open_dynsec;
use super::audit::AuditLog;
use super::authz::SharedRights;
pub use super::control::{DYNSEC_REQUEST_TOPIC, DYNSEC_RESPONSE_TOPIC};
use super::control::{cluster_control_request, control_request};
use super::reload::StaticFiles;
use super::reloadable::Reloadable;
use super::throttle::LoginThrottle;
use super::verifier::VerifierPool;
use super::watcher::watch_dynsec_file;
use crate::Error;
use crate::config::{Config, SecurityOptions};
use crate::security::{
    BoxFuture, ClientAuthz, ConnectDecision, ConnectRequest, ControlOutcome, ControlSender, KickTarget, ListenerId,
    Security,
};

pub use super::admin::ADMIN_PASSWORD_ENV;

/// How a listener derives the username from a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CertificateIdentity {
    None,
    CommonName,
    Subject,
}

/// The security settings of one listener.
pub(super) struct Scope {
    pub(super) allow_anonymous: bool,
    pub(super) dynsec: bool,
    pub(super) password_file: Option<Arc<Reloadable<PasswordFile>>>,
    pub(super) identity: CertificateIdentity,
    /// The scope's ACL sources, with the rights of its users shared by their clients.
    pub(super) rights: Arc<SharedRights>,
}

pub struct AuthChain {
    pub(super) scopes: Vec<Scope>,
    pub(super) dynsec: Option<Arc<Dynsec>>,
    /// The audit trail of control commands, beside the dynsec configuration.
    audit: Option<Arc<AuditLog>>,
    /// The `password_file`s and `acl_file`s the scopes share, re-read on SIGHUP.
    static_files: StaticFiles,
    /// The password-verification threads and their queue (each verification costs a full hash).
    pub(super) verifiers: Arc<VerifierPool>,
    /// `gate_login_queue_timeout`.
    pub(super) queue_timeout: Duration,
    /// Failed-login throttling per address and username.
    pub(super) throttle: Arc<LoginThrottle>,
    kicks_tx: mpsc::UnboundedSender<KickTarget>,
    kicks_rx: Mutex<Option<mpsc::UnboundedReceiver<KickTarget>>>,
    /// Cluster mode: the replicated log every control request goes through (docs/cluster.md).
    cluster: Arc<std::sync::OnceLock<Arc<crate::cluster::security_log::SecurityLog>>>,
    /// Keeps the file watcher alive for as long as the chain lives.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl AuthChain {
    /// Builds the chain the configuration describes. Fails on anything mosquitto would refuse to
    /// start with (unreadable password file, invalid acl_file line, foreign plugin, …).
    pub fn from_config(config: &Config) -> Result<Arc<dyn Security>, Error> {
        Ok(Self::build(config)?)
    }

    pub fn build(config: &Config) -> Result<Arc<AuthChain>, Error> {
        let mut engine: Option<(PathBuf, Arc<Dynsec>)> = None;
        let mut static_files = StaticFiles::default();
        let mut scopes = Vec::new();
        let listener_count = config.listeners.len().max(1);
        for index in 0..listener_count {
            let options: &SecurityOptions = config.security_for(ListenerId(index));
            let mut dynsec_here = false;
            for plugin in &options.plugins {
                if !plugin.is_dynsec() {
                    return Err(Error::Unsupported(format!(
                        "{}: plugin {} cannot be loaded: only mosquitto's dynamic security plugin is built in",
                        plugin.at,
                        plugin.path.display()
                    )));
                }
                let file = plugin.option("config_file").map(PathBuf::from);
                match (&engine, file) {
                    (Some((loaded, _)), Some(file)) if *loaded != file => {
                        return Err(Error::Security(format!(
                            "{}: the dynamic security plugin can currently only be loaded once ({} and {})",
                            plugin.at,
                            loaded.display(),
                            file.display()
                        )));
                    }
                    (Some(_), Some(_)) => dynsec_here = true,
                    (None, _) => {
                        if let Some(e) = open_dynsec(plugin, config.cluster.as_ref())? {
                            engine = Some((e.path(), e));
                            dynsec_here = true;
                        }
                    }
                    (Some(_), None) => {}
                }
            }
            let password_file = match &options.password_file {
                None => None,
                Some(path) => Some(static_files.password_file(path).map_err(Error::Security)?),
            };
            let acl_file = match &options.acl_file {
                None => None,
                Some(path) => Some(static_files.acl_file(path).map_err(Error::Security)?),
            };
            let tls = config.listeners.get(index).map(|l| &l.tls);
            let identity = match tls {
                Some(t) if t.use_identity_as_username => CertificateIdentity::CommonName,
                Some(t) if t.use_subject_as_username => CertificateIdentity::Subject,
                _ => CertificateIdentity::None,
            };
            if !dynsec_here && options.acl_file.is_none() {
                let port = config.listeners.get(index).map_or(0, |l| l.port);
                tracing::info!(
                    "listener {index} (port {port}) has no ACL source (no dynamic security, no acl_file): clients \
                     on it may publish, subscribe and receive every topic (docs/security.md)"
                );
            }
            let scope_engine = engine.as_ref().filter(|_| dynsec_here).map(|(_, e)| Arc::clone(e));
            let rights = Arc::new(SharedRights::new(scope_engine, acl_file));
            scopes.push(Scope {
                allow_anonymous: options.allow_anonymous,
                dynsec: dynsec_here,
                password_file,
                identity,
                rights,
            });
        }
        let (kicks_tx, kicks_rx) = mpsc::unbounded_channel();
        let dynsec = engine.map(|(_, e)| e);
        // In a cluster the node's file is a copy of the log: edits go through $CONTROL.
        let watcher = match &dynsec {
            Some(engine) if config.cluster.is_none() => watch_dynsec_file(Arc::clone(engine), kicks_tx.clone()),
            _ => None,
        };
        let login = &config.gate.login;
        Ok(Arc::new(AuthChain {
            scopes,
            audit: dynsec.as_ref().map(|engine| Arc::new(AuditLog::beside(&engine.path()))),
            dynsec,
            static_files,
            queue_timeout: login.queue_timeout,
            verifiers: Arc::new(
                VerifierPool::new(login.concurrent_verifications)
                    .map_err(|e| Error::Security(format!("cannot start the password-verification threads: {e}")))?,
            ),
            throttle: LoginThrottle::new(login.clone()),
            kicks_tx,
            kicks_rx: Mutex::new(Some(kicks_rx)),
            cluster: Arc::default(),
            _watcher: watcher,
        }))
    }

    /// The dynsec engine, when configured (for tools and tests).
    pub fn dynsec(&self) -> Option<&Arc<Dynsec>> {
        self.dynsec.as_ref()
    }

    pub(super) fn authz(&self, scope: &Scope, username: Option<Arc<str>>, client_id: Arc<str>) -> Arc<dyn ClientAuthz> {
        scope.rights.for_client(username, client_id)
    }
}

impl Security for AuthChain {
    fn authz_for(
        &self,
        listener: ListenerId,
        username: Option<Arc<str>>,
        client_id: Arc<str>,
    ) -> Option<Arc<dyn ClientAuthz>> {
        let scope = self.scopes.get(listener.0).or_else(|| self.scopes.first())?;
        Some(self.authz(scope, username, client_id))
    }

    fn authenticate(&self, request: ConnectRequest) -> BoxFuture<ConnectDecision> {
        self.authenticate_request(request)
    }

    fn control(&self, sender: ControlSender, topic: &str, payload: Vec<u8>) -> Option<BoxFuture<ControlOutcome>> {
        if topic != DYNSEC_REQUEST_TOPIC || !self.serves_control(sender.listener, topic) {
            return None;
        }
        if let Some(log) = self.cluster.get() {
            return Some(cluster_control_request(Arc::clone(log), self.audit.clone(), sender, payload));
        }
        let engine = Arc::clone(self.dynsec.as_ref()?);
        Some(control_request(engine, self.audit.clone(), sender, payload))
    }

    /// The dynamic-security endpoint (its request and reply topics) belongs to the listeners whose
    /// security has the plugin: every listener unless `per_listener_settings true`, then only the
    /// ones the plugin line follows (docs/compatibility.md §2.1).
    fn serves_control(&self, listener: ListenerId, topic: &str) -> bool {
        let dynsec_topic = topic == DYNSEC_REQUEST_TOPIC || topic == DYNSEC_RESPONSE_TOPIC;
        dynsec_topic && self.dynsec.is_some() && self.scopes.get(listener.0).is_some_and(|scope| scope.dynsec)
    }

    fn attach_connections(&self, directory: Arc<dyn dynsec::connections::ConnectionDirectory>) {
        if let Some(engine) = &self.dynsec {
            engine.attach_connections(directory);
        }
    }

    fn dynsec_engine(&self) -> Option<Arc<Dynsec>> {
        self.dynsec.clone()
    }

    fn audit_log(&self) -> Option<Arc<AuditLog>> {
        self.audit.clone()
    }

    fn join_cluster(&self, membership: &crate::cluster::Membership) -> BoxFuture<Result<(), String>> {
        let Some(engine) = self.dynsec.clone() else {
            return Box::pin(async { Ok(()) });
        };
        let (client, config, kicks) = (membership.client.clone(), membership.config.clone(), self.kicks_tx.clone());
        let slot = Arc::clone(&self.cluster);
        Box::pin(async move {
            let log = crate::cluster::security_log::SecurityLog::open(&client, &config, engine, kicks).await?;
            slot.set(log).map_err(|_| "the security chain is already in a cluster".to_owned())
        })
    }

    fn take_kick_events(&self) -> Option<mpsc::UnboundedReceiver<KickTarget>> {
        self.kicks_rx.lock().take()
    }

    /// SIGHUP: `password_file` and `acl_file` are read again; the usernames whose password entry
    /// changed or disappeared are kicked.
    fn reload(&self) -> BoxFuture<()> {
        for username in self.static_files.reload() {
            let _ = self.kicks_tx.send(KickTarget::CredentialsRevoked(username.into()));
        }
        Box::pin(async {})
    }

    fn shutdown(&self) -> BoxFuture<()> {
        let engine = self.dynsec.clone();
        Box::pin(async move {
            if let Some(engine) = engine {
                let flushed = tokio::task::spawn_blocking(move || engine.flush()).await;
                match flushed {
                    Ok(Ok(())) => tracing::info!("dynamic security configuration saved"),
                    Ok(Err(e)) => tracing::error!(
                        "dynamic security configuration not saved at shutdown (the journal keeps every change): {e}"
                    ),
                    Err(e) => tracing::error!("dynamic security flush failed: {e}"),
                }
            }
        })
    }
}
