//! Application tokens for scripts: `Authorization: Bearer dct_<id>_<secret>`. Created and revoked
//! through the REST API; each has an owner (a dynsec client), a scope (`read` or `admin`, never
//! more than the owner's rights at the time of use) and an optional expiry. Only the SHA-256
//! digest of the secret is kept, in `<dynsec config_file>.console-tokens.json` (written whole and
//! atomically, readable by its owner only), so the file gives nobody a usable token.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use dynsec::json::{self, Json};
use parking_lot::Mutex;

use super::auth::Level;
use super::sessions::{digest, random_secret};

/// Tokens one broker keeps at most.
const MAX_TOKENS: usize = 1000;

#[derive(Debug, Clone)]
struct Token {
    id: String,
    name: String,
    owner: String,
    scope: Level,
    created_ms: i64,
    expires_ms: Option<i64>,
    digest: [u8; 32],
}

impl Token {
    fn json(&self, with_digest: bool) -> Json {
        let mut item = Json::object()
            .with("id", Json::str(&self.id))
            .with("name", Json::str(&self.name))
            .with("owner", Json::str(&self.owner))
            .with("scope", Json::str(self.scope.name()))
            .with("created", Json::int(self.created_ms))
            .with("expires", self.expires_ms.map_or(Json::Null, Json::int));
        if with_digest {
            item.push("sha256", Json::str(&hex(&self.digest)));
        }
        item
    }
}

pub(super) struct Tokens {
    file: Option<PathBuf>,
    tokens: Mutex<Vec<Token>>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(super) fn parse_scope(text: &str) -> Option<Level> {
    match text {
        "read" => Some(Level::ReadOnly),
        "admin" => Some(Level::Admin),
        _ => None,
    }
}

impl Tokens {
    /// The tokens kept beside the dynsec configuration at `config_file` (none kept without one).
    pub fn open(config_file: Option<PathBuf>) -> Tokens {
        let file = config_file.map(|path| {
            let mut name = path.into_os_string();
            name.push(".console-tokens.json");
            PathBuf::from(name)
        });
        let tokens = file.as_ref().map(load).unwrap_or_default();
        Tokens { file, tokens: Mutex::new(tokens) }
    }

    /// A new token; returns its secret form (shown once) and its description.
    pub fn create(
        &self,
        owner: &str,
        name: &str,
        scope: Level,
        expires_in_s: Option<i64>,
    ) -> Result<(String, Json), &'static str> {
        let id = random_secret().chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>();
        let secret = random_secret();
        if id.len() < 12 || secret.is_empty() {
            return Err("no random bytes available");
        }
        let created_ms = now_ms();
        let expires_ms = expires_in_s.map(|s| created_ms.saturating_add(s.saturating_mul(1000)));
        let token = Token {
            id: id.clone(),
            name: name.to_owned(),
            owner: owner.to_owned(),
            scope,
            created_ms,
            expires_ms,
            digest: digest(&secret),
        };
        let description = token.json(false);
        let mut tokens = self.tokens.lock();
        tokens.retain(|t| t.expires_ms.is_none_or(|e| e > created_ms));
        if tokens.len() >= MAX_TOKENS {
            return Err("too many tokens: revoke some first");
        }
        tokens.push(token);
        self.save(&tokens)?;
        Ok((format!("dct_{id}_{secret}"), description))
    }

    /// The owner and scope of a valid, unexpired token.
    pub fn verify(&self, presented: &str) -> Option<(String, Level)> {
        let rest = presented.strip_prefix("dct_")?;
        let (id, secret) = rest.split_once('_')?;
        let tokens = self.tokens.lock();
        let token = tokens.iter().find(|t| t.id == id)?;
        let valid = digest(secret) == token.digest && token.expires_ms.is_none_or(|e| e > now_ms());
        valid.then(|| (token.owner.clone(), token.scope))
    }

    /// Descriptions of the tokens `owner` has (every token when `owner` is `None`).
    pub fn list(&self, owner: Option<&str>) -> Vec<Json> {
        let tokens = self.tokens.lock();
        tokens.iter().filter(|t| owner.is_none_or(|o| t.owner == o)).map(|t| t.json(false)).collect()
    }

    /// Revokes token `id` if `owner` owns it (any token when `owner` is `None`); false if none.
    pub fn revoke(&self, id: &str, owner: Option<&str>) -> Result<bool, &'static str> {
        let mut tokens = self.tokens.lock();
        let before = tokens.len();
        tokens.retain(|t| !(t.id == id && owner.is_none_or(|o| t.owner == o)));
        if tokens.len() == before {
            return Ok(false);
        }
        self.save(&tokens)?;
        Ok(true)
    }

    fn save(&self, tokens: &[Token]) -> Result<(), &'static str> {
        let Some(path) = &self.file else { return Ok(()) };
        let doc = Json::object().with("tokens", Json::Array(tokens.iter().map(|t| t.json(true)).collect()));
        dynsec::atomic_file::replace(path, &doc.to_pretty()).map_err(|e| {
            tracing::error!("console tokens {}: {e}", path.display());
            "the token file could not be saved"
        })
    }
}

fn load(path: &PathBuf) -> Vec<Token> {
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    let Ok(doc) = json::parse(&bytes) else {
        tracing::warn!("console tokens {}: not valid JSON; no token is valid", path.display());
        return Vec::new();
    };
    let text = |item: &Json, key: &str| {
        item.get(key).and_then(Json::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let number = |item: &Json, key: &str| match item.get(key) {
        Some(Json::Number(n)) => Some(*n as i64),
        _ => None,
    };
    doc.get("tokens")
        .and_then(Json::as_array)
        .unwrap_or(&[])
        .iter()
        .filter_map(|item| {
            Some(Token {
                id: text(item, "id")?,
                name: text(item, "name").unwrap_or_default(),
                owner: text(item, "owner")?,
                scope: parse_scope(&text(item, "scope")?)?,
                created_ms: number(item, "created").unwrap_or(0),
                expires_ms: number(item, "expires"),
                digest: unhex(&text(item, "sha256")?)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_revoke_and_survive_a_restart_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("dynsec.json");
        let tokens = Tokens::open(Some(config.clone()));
        let (secret, _) = tokens.create("admin", "ci", Level::ReadOnly, None).unwrap();
        let (expired, _) = tokens.create("admin", "old", Level::Admin, Some(-1)).unwrap();
        assert_eq!(tokens.verify(&secret), Some(("admin".to_owned(), Level::ReadOnly)));
        assert_eq!(tokens.verify(&expired), None);
        assert_eq!(tokens.verify(&format!("{secret}x")), None);
        let file = std::fs::read_to_string(dir.path().join("dynsec.json.console-tokens.json")).unwrap();
        // (The random part may itself contain `_`: it is everything after `dct_<id>_`.)
        let bare = secret.splitn(3, '_').nth(2).unwrap();
        assert!(!file.contains(bare), "only the digest is stored");
        let reopened = Tokens::open(Some(config));
        assert_eq!(reopened.verify(&secret), Some(("admin".to_owned(), Level::ReadOnly)));
        let id = secret.split('_').nth(1).unwrap();
        assert_eq!(reopened.revoke(id, Some("someone else")), Ok(false));
        assert_eq!(reopened.revoke(id, Some("admin")), Ok(true));
        assert_eq!(reopened.verify(&secret), None);
    }
}
