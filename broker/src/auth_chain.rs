//! The production [`Security`]: mosquitto's security chain (compat §3.1–§3.2, §5.3–§5.5) with the
//! dynamic security plugin built in.
//!
//! Authentication: certificate identity (`use_identity_as_username` / `use_subject_as_username`)
//! replaces the whole basic-auth chain; otherwise dynsec answers first, then `password_file`. The
//! first non-deferring answer wins; if every source defers, only a client without a username gets
//! in, and only with `allow_anonymous`. With no source at all, `allow_anonymous` alone decides.
//! Password hashing runs on a fixed pool of low-priority threads ([`crate::verifier`]) behind a
//! semaphore, so a flood of logins can neither take more than a bounded number of threads nor
//! starve connected clients of CPU, and failed logins are throttled per source address and per
//! username ([`crate::throttle`]).
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dynsec::acl::{AccessKind, Decision};
use dynsec::commands::{Admin, Kicks};
use dynsec::password::HashPolicy;
use dynsec::static_files::{AclFile, PasswordFile};
use dynsec::{AclHandle, AuthResult, Dynsec, Options};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::Error;
use crate::config::{Config, PluginConfig, SecurityOptions};
use crate::logging::client_text;
use crate::security::{
    Access, BoxFuture, ClientAuthz, ConnectDecision, ConnectRequest, ControlOutcome, ControlReply, ControlSender,
    KickTarget, Security,
};
use crate::throttle::{Admission, LoginThrottle};
use crate::verifier::VerifierPool;

pub const DYNSEC_REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const DYNSEC_RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The largest payload MQTT can carry; larger replies are dropped, as mosquitto does.
const MAX_PAYLOAD: usize = 268_435_455;
/// Environment variables that give the admin password of a newly created configuration.
pub const ADMIN_PASSWORD_ENV: [&str; 2] = ["DYNSEC_ADMIN_PASSWORD", "MOSQUITTO_DYNSEC_PASSWORD"];

/// How a listener derives the username from a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertificateIdentity {
    None,
    CommonName,
    Subject,
}

/// A file reloaded on SIGHUP: readers take the current version without blocking reloads long.
type Reloadable<T> = Arc<RwLock<Arc<T>>>;

/// The security settings of one listener.
struct Scope {
    allow_anonymous: bool,
    dynsec: bool,
    password_file: Option<(PathBuf, Reloadable<PasswordFile>)>,
    acl_file: Option<(PathBuf, Reloadable<AclFile>)>,
    identity: CertificateIdentity,
}

pub struct AuthChain {
    scopes: Vec<Scope>,
    dynsec: Option<Arc<Dynsec>>,
    /// The password-verification threads and their queue (each verification costs a full hash).
    verifiers: Arc<VerifierPool>,
    /// `gate_login_queue_timeout`.
    queue_timeout: Duration,
    /// Failed-login throttling per address and username.
    throttle: Arc<LoginThrottle>,
    kicks_tx: mpsc::UnboundedSender<KickTarget>,
    kicks_rx: Mutex<Option<mpsc::UnboundedReceiver<KickTarget>>>,
    /// Keeps the file watcher alive for as long as the chain lives.
    _watcher: Option<notify::RecommendedWatcher>,
}

fn security_error(message: impl Into<String>) -> Error {
    Error::Security(message.into())
}

/// Engine options from `plugin_opt_*` lines (documented in the README).
fn dynsec_options(plugin: &PluginConfig) -> Result<Options, Error> {
    let mut options = Options::default();
    let at = &plugin.at;
    let parse_u32 = |key: &str, value: &str| {
        value.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
            security_error(format!("{at}: plugin_opt_{key}: expected a positive integer, got '{value}'"))
        })
    };
    let mut iterations = None;
    let mut algorithm = "pbkdf2";
    for (key, value) in &plugin.options {
        match key.as_str() {
            "config_file" | "password_init_file" => {}
            "password_hash" => match value.as_str() {
                "pbkdf2" | "sha512-pbkdf2" => algorithm = "pbkdf2",
                "argon2id" => algorithm = "argon2id",
                other => {
                    return Err(security_error(format!(
                        "{at}: plugin_opt_password_hash: unknown '{other}' (pbkdf2 or argon2id)"
                    )));
                }
            },
            "password_iterations" => iterations = Some(parse_u32(key, value)?),
            "snapshot_idle_ms" => options.snapshot_idle = Duration::from_millis(parse_u32(key, value)?.into()),
            "auth_cache_ms" => {
                options.auth_cache_ttl = Duration::from_millis(value.parse().map_err(|_| {
                    security_error(format!("{at}: plugin_opt_auth_cache_ms: expected milliseconds, got '{value}'"))
                })?)
            }
            other => tracing::warn!("{at}: unknown dynamic security option plugin_opt_{other} ignored"),
        }
    }
    options.hash_policy = match (algorithm, iterations) {
        ("argon2id", _) => HashPolicy::ARGON2ID_DEFAULT,
        (_, Some(iterations)) => HashPolicy::Pbkdf2Sha512 { iterations },
        _ => HashPolicy::default(),
    };
    Ok(options)
}

/// The admin password for a configuration created at start-up, and whether it was generated.
fn initial_admin_password(plugin: &PluginConfig) -> Result<(String, bool), Error> {
    for var in ADMIN_PASSWORD_ENV {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            return Ok((value, false));
        }
    }
    if let Some(file) = plugin.option("password_init_file") {
        let text = std::fs::read_to_string(file)
            .map_err(|e| security_error(format!("plugin_opt_password_init_file {file}: {e}")))?;
        let first = text.lines().next().unwrap_or("").trim_end();
        if first.is_empty() {
            return Err(security_error(format!("plugin_opt_password_init_file {file}: the first line is empty")));
        }
        return Ok((first.to_owned(), false));
    }
    // 20 characters from a 62-symbol alphabet: about 119 bits.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| security_error(format!("no random bytes for the admin password: {e}")))?;
    // 256 % 62 leaves a bias of under 2 %, irrelevant for a 119-bit password.
    Ok((bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect(), true))
}

/// Saves a generated admin password beside the configuration, readable by its owner only.
fn save_generated_password(config_file: &Path, password: &str) -> Result<PathBuf, Error> {
    let mut path = config_file.as_os_str().to_owned();
    path.push(".pw");
    let path = PathBuf::from(path);
    dynsec::store::write_atomically(&path, format!("admin {password}\n").as_bytes())
        .map_err(|e| security_error(format!("cannot save the generated admin password: {e}")))?;
    Ok(path)
}

fn open_dynsec(plugin: &PluginConfig) -> Result<Option<Arc<Dynsec>>, Error> {
    let Some(file) = plugin.option("config_file") else {
        tracing::warn!("{}: dynamic security plugin has no plugin_opt_config_file; it stays inactive", plugin.at);
        return Ok(None);
    };
    let path = PathBuf::from(file);
    let options = dynsec_options(plugin)?;
    crate::store_access::check(&path).map_err(|e| Error::Security(e.to_string()))?;
    let mut generated = None;
    let (engine, report) = Dynsec::open_or_init(&path, options, "admin", || match initial_admin_password(plugin) {
        Ok((password, was_generated)) => {
            if was_generated {
                generated = Some(password.clone());
            }
            password
        }
        Err(e) => {
            // Without a usable password source the admin gets an unguessable one nobody knows;
            // the error is reported and the admin can be reset offline.
            tracing::error!("{e}");
            generated = None;
            format!("{:x}", rand_u128())
        }
    })
    .map_err(|e| security_error(format!("dynamic security configuration {}: {e}", path.display())))?;
    if report.created_admin.is_some() {
        tracing::info!("created {} with an admin client 'admin'", path.display());
        if let Some(password) = generated {
            let saved = save_generated_password(&path, &password)?;
            // Printed once, on purpose: this is the only time the broker shows it.
            println!(
                "Generated password for dynamic security client 'admin': {password} (saved in {})",
                saved.display()
            );
        }
    }
    for warning in &report.warnings {
        tracing::warn!("{}: {}", path.display(), warning.0);
    }
    if report.replayed > 0 {
        tracing::info!("{}: {} journal records replayed", path.display(), report.replayed);
    }
    engine
        .spawn_maintenance()
        .map_err(|e| security_error(format!("cannot start the dynsec maintenance thread: {e}")))?;
    Ok(Some(engine))
}

fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    u128::from_le_bytes(bytes)
}

fn load_password_file(path: &Path) -> Result<PasswordFile, String> {
    let (file, warnings) =
        PasswordFile::load(path).map_err(|e| format!("Error: Unable to open pwfile \"{}\": {e}", path.display()))?;
    for w in warnings {
        tracing::warn!("{}:{}: {}", path.display(), w.line, w.message);
    }
    Ok(file)
}

fn load_acl_file(path: &Path) -> Result<AclFile, String> {
    let file = AclFile::load(path).map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))?;
    for w in &file.warnings {
        tracing::warn!("{}:{}: {}", path.display(), w.line, w.message);
    }
    Ok(file)
}

impl AuthChain {
    /// Builds the chain the configuration describes. Fails on anything mosquitto would refuse to
    /// start with (unreadable password file, invalid acl_file line, foreign plugin, …).
    pub fn from_config(config: &Config) -> Result<Arc<dyn Security>, Error> {
        Ok(Self::build(config)?)
    }

    pub fn build(config: &Config) -> Result<Arc<AuthChain>, Error> {
        let mut engine: Option<(PathBuf, Arc<Dynsec>)> = None;
        let mut password_files: Vec<(PathBuf, Reloadable<PasswordFile>)> = Vec::new();
        let mut acl_files: Vec<(PathBuf, Reloadable<AclFile>)> = Vec::new();
        let mut scopes = Vec::new();
        let listener_count = config.listeners.len().max(1);
        for index in 0..listener_count {
            let options: &SecurityOptions = config.security_for(index);
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
                        return Err(security_error(format!(
                            "{}: the dynamic security plugin can currently only be loaded once ({} and {})",
                            plugin.at,
                            loaded.display(),
                            file.display()
                        )));
                    }
                    (Some(_), Some(_)) => dynsec_here = true,
                    (None, _) => {
                        if let Some(e) = open_dynsec(plugin)? {
                            engine = Some((e.path(), e));
                            dynsec_here = true;
                        }
                    }
                    (Some(_), None) => {}
                }
            }
            let password_file = match &options.password_file {
                None => None,
                Some(path) => Some(match password_files.iter().find(|(p, _)| p == path) {
                    Some(shared) => shared.clone(),
                    None => {
                        let file = load_password_file(path).map_err(security_error)?;
                        let shared = (path.clone(), Arc::new(RwLock::new(Arc::new(file))));
                        password_files.push(shared.clone());
                        shared
                    }
                }),
            };
            let acl_file = match &options.acl_file {
                None => None,
                Some(path) => Some(match acl_files.iter().find(|(p, _)| p == path) {
                    Some(shared) => shared.clone(),
                    None => {
                        let file = load_acl_file(path).map_err(security_error)?;
                        let shared = (path.clone(), Arc::new(RwLock::new(Arc::new(file))));
                        acl_files.push(shared.clone());
                        shared
                    }
                }),
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
            scopes.push(Scope {
                allow_anonymous: options.allow_anonymous,
                dynsec: dynsec_here,
                password_file,
                acl_file,
                identity,
            });
        }
        let (kicks_tx, kicks_rx) = mpsc::unbounded_channel();
        let dynsec = engine.map(|(_, e)| e);
        let watcher = match &dynsec {
            Some(engine) => watch_dynsec_file(Arc::clone(engine), kicks_tx.clone()),
            None => None,
        };
        let login = &config.gate.login;
        Ok(Arc::new(AuthChain {
            scopes,
            dynsec,
            queue_timeout: login.queue_timeout,
            verifiers: Arc::new(
                VerifierPool::new(login.concurrent_verifications)
                    .map_err(|e| Error::Security(format!("cannot start the password-verification threads: {e}")))?,
            ),
            throttle: LoginThrottle::new(login.clone()),
            kicks_tx,
            kicks_rx: Mutex::new(Some(kicks_rx)),
            _watcher: watcher,
        }))
    }

    /// The dynsec engine, when configured (for tools and tests).
    pub fn dynsec(&self) -> Option<&Arc<Dynsec>> {
        self.dynsec.as_ref()
    }

    fn authz(&self, scope: &Scope, username: Option<Arc<str>>, client_id: Arc<str>) -> Arc<dyn ClientAuthz> {
        let dynsec = if scope.dynsec { self.dynsec.clone() } else { None };
        build_authz(dynsec.as_ref(), scope.acl_file.as_ref().map(|(_, f)| Arc::clone(f)), username, client_id)
    }

    /// Re-reads every password_file and acl_file (SIGHUP). An invalid file keeps the old one.
    /// Usernames whose password entry changed or disappeared are kicked.
    pub fn reload_files(&self) {
        let mut kicked = std::collections::BTreeSet::new();
        let mut seen_pw: Vec<&Path> = Vec::new();
        let mut seen_acl: Vec<&Path> = Vec::new();
        for scope in &self.scopes {
            if let Some((path, shared)) = &scope.password_file
                && !seen_pw.contains(&path.as_path())
            {
                seen_pw.push(path);
                match load_password_file(path) {
                    Ok(new) => {
                        let old = std::mem::replace(&mut *shared.write(), Arc::new(new));
                        let now = shared.read().clone();
                        for user in changed_password_users(&old, &now) {
                            kicked.insert(user);
                        }
                        tracing::info!("reloaded password file {}", path.display());
                    }
                    Err(e) => tracing::error!("{e}; keeping the previous password file"),
                }
            }
            if let Some((path, shared)) = &scope.acl_file
                && !seen_acl.contains(&path.as_path())
            {
                seen_acl.push(path);
                match load_acl_file(path) {
                    Ok(new) => {
                        *shared.write() = Arc::new(new);
                        tracing::info!("reloaded acl file {}", path.display());
                    }
                    Err(e) => tracing::error!("{e}; keeping the previous acl file"),
                }
            }
        }
        for user in kicked {
            let _ = self.kicks_tx.send(KickTarget::CredentialsRevoked(user.into()));
        }
    }
}

fn changed_password_users(old: &PasswordFile, new: &PasswordFile) -> Vec<String> {
    old.usernames().filter(|u| old.hash_of(u) != new.hash_of(u)).map(str::to_owned).collect()
}

/// Watches `dynamic-security.json` for edits by other programs.
fn watch_dynsec_file(
    engine: Arc<Dynsec>,
    kicks: mpsc::UnboundedSender<KickTarget>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let path = engine.path();
    let file_name = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| p.file_name() == Some(file_name.as_os_str()))
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch {} for external edits: {e}", path.display());
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!("cannot watch {} for external edits: {e}", dir.display());
        return None;
    }
    let weak = Arc::downgrade(&engine);
    drop(engine);
    let spawned = std::thread::Builder::new().name("dynsec-watch".into()).spawn(move || {
        while rx.recv().is_ok() {
            // Editors write in several steps: wait until the events settle.
            while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
            let Some(engine) = weak.upgrade() else { return };
            match engine.reload_external() {
                Ok(None) => {}
                Ok(Some(k)) => {
                    tracing::info!("{} changed on disk: reloaded", engine.path().display());
                    send_kicks(&kicks, &k);
                }
                Err(e) => tracing::error!("{} changed on disk but was not loaded: {e}", engine.path().display()),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the file watcher thread: {e}");
        return None;
    }
    Some(watcher)
}

fn kick_targets(kicks: &Kicks) -> Vec<KickTarget> {
    let mut targets: Vec<KickTarget> = kicks.users.iter().map(|u| KickTarget::Username(u.as_str().into())).collect();
    if kicks.anonymous {
        targets.push(KickTarget::Anonymous);
    }
    targets
}

fn send_kicks(tx: &mpsc::UnboundedSender<KickTarget>, kicks: &Kicks) {
    for target in kick_targets(kicks) {
        let _ = tx.send(target);
    }
}

/// The basic-auth chain's combined answer.
fn chain_decision(result: AuthResult, anonymous: bool, allow_anonymous: bool) -> bool {
    match result {
        AuthResult::Allow => true,
        AuthResult::Deny => false,
        AuthResult::Defer => anonymous && allow_anonymous,
    }
}

impl Security for AuthChain {
    fn authenticate(&self, request: ConnectRequest) -> BoxFuture<ConnectDecision> {
        let Some(scope) = self.scopes.get(request.listener).or_else(|| self.scopes.first()) else {
            return Box::pin(async { ConnectDecision::NotAuthorized });
        };
        // Certificate identity replaces the basic-auth chain entirely (compat §3.2, §5.6).
        if scope.identity != CertificateIdentity::None {
            let username = request.tls.as_ref().and_then(|tls| match scope.identity {
                CertificateIdentity::CommonName => tls.common_name.clone().filter(|cn| !cn.contains('\0')),
                _ => Some(tls.subject.clone()),
            });
            let decision = match username {
                Some(name) => {
                    let username: Arc<str> = name.into();
                    let authz = self.authz(scope, Some(username.clone()), request.client_id);
                    ConnectDecision::Accept { username: Some(username), authz }
                }
                None => ConnectDecision::BadUsernameOrPassword,
            };
            return Box::pin(async move { decision });
        }
        let anonymous = request.username.is_none();
        let has_source = scope.dynsec || scope.password_file.is_some();
        if !has_source {
            let decision = if scope.allow_anonymous {
                ConnectDecision::Accept {
                    authz: self.authz(scope, request.username.clone(), request.client_id.clone()),
                    username: request.username,
                }
            } else {
                ConnectDecision::NotAuthorized
            };
            return Box::pin(async move { decision });
        }
        if anonymous {
            // Every source defers for a client without a username: no hashing needed.
            let decision = if scope.allow_anonymous {
                ConnectDecision::Accept { username: None, authz: self.authz(scope, None, request.client_id) }
            } else {
                ConnectDecision::NotAuthorized
            };
            return Box::pin(async move { decision });
        }
        let engine = if scope.dynsec { self.dynsec.clone() } else { None };
        let password_file = scope.password_file.as_ref().map(|(_, f)| f.read().clone());
        let acl_file = scope.acl_file.as_ref().map(|(_, f)| Arc::clone(f));
        let allow_anonymous = scope.allow_anonymous;
        let verifiers = Arc::clone(&self.verifiers);
        let queue_timeout = self.queue_timeout;
        let (delay, ticket) = match self.throttle.admit(request.peer.ip(), request.username.as_deref().unwrap_or("")) {
            Admission::Verify { delay, ticket } => (delay, ticket),
            Admission::Refuse => {
                tracing::info!(peer = %request.peer, "login refused: too many failed logins from this address");
                return Box::pin(async { ConnectDecision::NotAuthorized });
            }
        };
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let ConnectRequest { client_id, username, password, peer, .. } = request;
            let Some(admission) = verifiers.admit(username.as_deref().unwrap_or(""), queue_timeout).await else {
                tracing::warn!(%peer, "login refused: no password verifier free within gate_login_queue_timeout");
                return ConnectDecision::ServerUnavailable;
            };
            let (engine_for_check, user, cid) = (engine.clone(), username.clone(), client_id.clone());
            let verdict = verifiers
                .run(admission, move |_cancellation| {
                    #[cfg(feature = "testkit")]
                    if let Some(verdict) = test_hooks::slow_login(user.as_deref(), _cancellation) {
                        return verdict;
                    }
                    let user = user.as_deref();
                    let mut result = AuthResult::Defer;
                    if let (Some(engine), Some(u)) = (&engine_for_check, user) {
                        result = engine.authenticate(u, password.as_deref(), &cid);
                    }
                    if result == AuthResult::Defer
                        && let Some(file) = &password_file
                    {
                        result = file.authenticate(user, password.as_deref());
                    }
                    result
                })
                .await
                .unwrap_or(AuthResult::Deny);
            let accepted = chain_decision(verdict, false, allow_anonymous);
            ticket.finish(accepted);
            if accepted {
                let authz = build_authz(engine.as_ref(), acl_file, username.clone(), client_id);
                ConnectDecision::Accept { username, authz }
            } else {
                ConnectDecision::NotAuthorized
            }
        })
    }

    fn control(&self, sender: ControlSender, topic: &str, payload: Vec<u8>) -> Option<BoxFuture<ControlOutcome>> {
        if topic != DYNSEC_REQUEST_TOPIC || !self.serves_control(sender.listener, topic) {
            return None;
        }
        let engine = Arc::clone(self.dynsec.as_ref()?);
        Some(Box::pin(async move {
            // Used only for the audit log line: made safe for it here.
            let admin = Admin {
                client_id: client_text(&sender.client_id).to_string(),
                username: sender.username.map(|u| client_text(&u).to_string()),
            };
            let result = tokio::task::spawn_blocking(move || engine.handle_control(&payload, admin)).await;
            match result {
                Ok(result) => {
                    let replies = if result.response.len() <= MAX_PAYLOAD {
                        vec![ControlReply { topic: DYNSEC_RESPONSE_TOPIC.to_owned(), payload: result.response }]
                    } else {
                        tracing::warn!(
                            "dynsec reply of {} bytes exceeds the MQTT payload limit; dropped",
                            result.response.len()
                        );
                        Vec::new()
                    };
                    ControlOutcome { replies, kicks: kick_targets(&result.kicks) }
                }
                Err(e) => {
                    tracing::error!("dynsec control request failed: {e}");
                    ControlOutcome::default()
                }
            }
        }))
    }

    /// The dynamic-security endpoint (its request and reply topics) belongs to the listeners whose
    /// security has the plugin: every listener unless `per_listener_settings true`, then only the
    /// ones the plugin line follows (mosquitto-compat §2.1).
    fn serves_control(&self, listener: usize, topic: &str) -> bool {
        let dynsec_topic = topic == DYNSEC_REQUEST_TOPIC || topic == DYNSEC_RESPONSE_TOPIC;
        dynsec_topic && self.dynsec.is_some() && self.scopes.get(listener).is_some_and(|scope| scope.dynsec)
    }

    fn attach_connections(&self, directory: Arc<dyn dynsec::connections::ConnectionDirectory>) {
        if let Some(engine) = &self.dynsec {
            engine.attach_connections(directory);
        }
    }

    fn take_kick_events(&self) -> Option<mpsc::UnboundedReceiver<KickTarget>> {
        self.kicks_rx.lock().take()
    }

    fn reload(&self) -> BoxFuture<()> {
        self.reload_files();
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

fn build_authz(
    dynsec: Option<&Arc<Dynsec>>,
    acl_file: Option<Reloadable<AclFile>>,
    username: Option<Arc<str>>,
    client_id: Arc<str>,
) -> Arc<dyn ClientAuthz> {
    if dynsec.is_none() && acl_file.is_none() {
        return Arc::new(NoAclSource);
    }
    let dynsec = dynsec.map(|engine| engine.acl_handle(username.as_deref()));
    Arc::new(ChainAuthz { dynsec, acl_file, username, client_id })
}

/// The rights on a listener with no ACL source (neither dynamic security nor `acl_file`), as in
/// mosquitto: every topic may be published, subscribed and received. What still applies there
/// comes from the gate, not from this: `$SYS` and `$share` topics cannot be published, and the
/// `$CONTROL` endpoints of other listeners are neither executed nor delivered
/// ([`Security::serves_control`]); see docs/security.md.
struct NoAclSource;

impl ClientAuthz for NoAclSource {
    fn allows(&self, _: Access, _: &str) -> bool {
        true
    }
}

/// Per-connection authorization: dynsec, then acl_file (compat §3.1 ACL chain).
struct ChainAuthz {
    dynsec: Option<AclHandle>,
    acl_file: Option<Reloadable<AclFile>>,
    username: Option<Arc<str>>,
    client_id: Arc<str>,
}

impl ClientAuthz for ChainAuthz {
    fn allows(&self, access: Access, topic: &str) -> bool {
        if let Some(handle) = &self.dynsec {
            let kind = match access {
                Access::Publish => AccessKind::Publish,
                Access::Receive => AccessKind::Receive,
                Access::Subscribe => AccessKind::Subscribe,
                Access::Unsubscribe => AccessKind::Unsubscribe,
            };
            match handle.check(kind, topic, Some(&self.client_id)) {
                Decision::Allow => return true,
                Decision::Deny => return false,
                Decision::Defer => {}
            }
        }
        if let Some(file) = &self.acl_file {
            return match access {
                // acl_file never restricts subscriptions; delivery is filtered instead.
                Access::Subscribe | Access::Unsubscribe => true,
                Access::Publish | Access::Receive => {
                    let write = access == Access::Publish;
                    file.read().check(self.username.as_deref(), &self.client_id, topic, write) == Decision::Allow
                }
            };
        }
        false
    }
}

/// Test-only behaviour, compiled into `testkit` builds only.
#[cfg(feature = "testkit")]
mod test_hooks {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use dynsec::AuthResult;

    use crate::verifier::Cancellation;

    /// Names a username whose password verification lasts until its login is abandoned (at most
    /// [`SLOW_LOGIN_LIMIT`]) and then fails: a hash as slow as a test needs, without a clock.
    pub const SLOW_LOGIN_ENV: &str = "DYNSEC_BROKER_TEST_SLOW_LOGIN";
    const SLOW_LOGIN_LIMIT: Duration = Duration::from_secs(60);

    pub fn slow_login(username: Option<&str>, cancellation: &Cancellation) -> Option<AuthResult> {
        static SLOW: OnceLock<Option<String>> = OnceLock::new();
        let slow = SLOW.get_or_init(|| std::env::var(SLOW_LOGIN_ENV).ok()).as_deref()?;
        if username != Some(slow) {
            return None;
        }
        tracing::info!("test hook: slow login started");
        let started = Instant::now();
        while !cancellation.is_cancelled() && started.elapsed() < SLOW_LOGIN_LIMIT {
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::info!("test hook: slow login ended");
        Some(AuthResult::Deny)
    }
}
