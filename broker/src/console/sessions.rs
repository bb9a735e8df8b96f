//! The web UI's login sessions: a random id in an `HttpOnly; SameSite=Strict` cookie (`Secure` on
//! TLS listeners), kept here only as its SHA-256 digest, with the session's CSRF token (sent back
//! by the UI in `X-CSRF-Token` on every unsafe request) and an absolute expiry. In memory: a
//! restart logs everyone out. At most [`MAX_SESSIONS`]; the oldest goes first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// How long a UI login lasts.
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
const MAX_SESSIONS: usize = 1000;

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub username: String,
    pub csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub(super) struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes, base64url without padding.
pub(super) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness no secret can be made; an all-zero one would be guessable, so refuse.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two secrets without an early exit on the first differing byte.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && digest(a) == digest(b)
}

impl Sessions {
    /// A new session for `username`: (cookie value, CSRF token); `None` without randomness.
    pub fn create(&self, username: &str) -> Option<(String, String)> {
        let (id, csrf) = (random_secret(), random_secret());
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let mut sessions = self.by_digest.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        let session = Session { username: username.to_owned(), csrf: csrf.clone(), expires: now + SESSION_LIFETIME };
        sessions.insert(digest(&id), session);
        Some((id, csrf))
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let sessions = self.by_digest.lock();
        sessions.get(&digest(id)).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn remove(&self, id: &str) {
        self.by_digest.lock().remove(&digest(id));
    }
}
