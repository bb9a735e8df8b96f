//! The authentication chain for one CONNECT: certificate identity, or dynsec then `password_file`
//! (first non-deferring answer wins), with anonymous access as the fallback. Password hashing runs
//! on the verifier threads after the login throttle admitted the attempt.

use std::sync::Arc;

use dynsec::AuthResult;

use super::chain::{AuthChain, CertificateIdentity};
use super::throttle::Admission;
use crate::security::{BoxFuture, ConnectDecision, ConnectRequest};

impl AuthChain {
    /// The authentication chain for one CONNECT (see the module documentation of `chain`).
    pub(super) fn authenticate_request(&self, request: ConnectRequest) -> BoxFuture<ConnectDecision> {
        let Some(scope) = self.scopes.get(request.listener.0).or_else(|| self.scopes.first()) else {
            return Box::pin(async { ConnectDecision::NotAuthorized });
        };
        // Certificate identity replaces the basic-auth chain entirely (docs/compatibility.md §3.2, §5.6).
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
        let password_file = scope.password_file.as_ref().map(|f| f.current());
        let rights = Arc::clone(&scope.rights);
        let allow_anonymous = scope.allow_anonymous;
        let verifiers = Arc::clone(&self.verifiers);
        let queue_timeout = self.queue_timeout;
        let (delay, ticket) = match self.throttle.admit(request.peer.ip(), request.username.as_deref().unwrap_or("")) {
            Admission::Verify { delay, ticket } => (delay, ticket),
            Admission::Refuse => {
                tracing::info!(peer = %request.peer, "login refused: too many failed logins from this address");
                crate::metrics::SECURITY.login(false);
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
                    let started = std::time::Instant::now();
                    let mut result = AuthResult::Defer;
                    if let (Some(engine), Some(u)) = (&engine_for_check, user) {
                        result = engine.authenticate(u, password.as_deref(), &cid);
                    }
                    if result == AuthResult::Defer
                        && let Some(file) = &password_file
                    {
                        result = file.authenticate(user, password.as_deref());
                    }
                    crate::metrics::SECURITY.password_verification.observe(started.elapsed().as_secs_f64());
                    result
                })
                .await
                .unwrap_or(AuthResult::Deny);
            let accepted = chain_decision(verdict, false, allow_anonymous);
            ticket.finish(accepted);
            crate::metrics::SECURITY.login(accepted);
            if accepted {
                let authz = rights.for_client(username.clone(), client_id);
                ConnectDecision::Accept { username, authz }
            } else {
                ConnectDecision::NotAuthorized
            }
        })
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

/// Test-only behaviour, compiled into `testkit` builds only.
#[cfg(feature = "testkit")]
mod test_hooks {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use dynsec::AuthResult;

    use crate::security::verifier::Cancellation;

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
