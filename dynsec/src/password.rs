//! Password hashes: verifying every form mosquitto writes and producing new ones.
//!
//! Forms understood (compat §2.2, §2.3, §5.1):
//! - dynsec 2.0 layout: `password` + `salt` + `iterations` JSON fields = PBKDF2-HMAC-SHA512;
//! - `$7$<iterations>$<salt>$<hash>`: the same, as mosquitto_passwd and 2.1's `encoded_password` write it;
//! - `$6$<salt>$<hash>`: one SHA-512 over password ‖ salt (mosquitto_passwd `-H sha512`);
//! - `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`: PHC string (mosquitto 2.1's default).
//!
//! Comparison is constant-time. Nothing here logs, and `Debug` never shows a hash.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Salt length of new PBKDF2 and SHA-512 hashes: 12 bytes, the only length mosquitto 2.0.x loads.
pub const PBKDF2_SALT_LEN: usize = 12;
/// PBKDF2-SHA512 output length used by mosquitto.
pub const PBKDF2_HASH_LEN: usize = 64;
/// Default PBKDF2 iteration count for new passwords.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 1000;

/// A stored password hash. Never printed in full: see the `Debug` impl.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    Pbkdf2Sha512 { iterations: u32, salt: Vec<u8>, hash: Vec<u8> },
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    Argon2id { version: u32, m_cost: u32, t_cost: u32, p_cost: u32, salt: Vec<u8>, hash: Vec<u8> },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordHash::Pbkdf2Sha512 { .. } => "PasswordHash(pbkdf2-sha512)",
            PasswordHash::Sha512 { .. } => "PasswordHash(sha512)",
            PasswordHash::Argon2id { .. } => "PasswordHash(argon2id)",
        })
    }
}

/// How new passwords are hashed (configurable per deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPolicy {
    Pbkdf2Sha512 { iterations: u32 },
    Sha512,
    Argon2id { m_cost: u32, t_cost: u32, p_cost: u32 },
}

impl Default for HashPolicy {
    fn default() -> Self {
        HashPolicy::Pbkdf2Sha512 { iterations: DEFAULT_PBKDF2_ITERATIONS }
    }
}

impl HashPolicy {
    /// argon2id with mosquitto 2.1's parameters (46 MiB, one pass, one lane).
    pub const ARGON2ID_DEFAULT: HashPolicy = HashPolicy::Argon2id { m_cost: 47104, t_cost: 1, p_cost: 1 };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("unrecognised password hash format")]
    UnknownFormat,
    #[error("malformed password hash: {0}")]
    Malformed(&'static str),
    #[error("no random bytes available: {0}")]
    Random(String),
}

fn random_bytes(len: usize) -> Result<Vec<u8>, PasswordError> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).map_err(|e| PasswordError::Random(e.to_string()))?;
    Ok(buf)
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32, out_len: usize) -> Vec<u8> {
    let mut out = vec![0u8; out_len];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

fn sha512_salted(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut hasher = Sha512::new();
    hasher.update(password);
    hasher.update(salt);
    hasher.finalize().to_vec()
}

fn argon2id(password: &[u8], salt: &[u8], version: u32, m: u32, t: u32, p: u32, out_len: usize) -> Option<Vec<u8>> {
    let version = argon2::Version::try_from(version).ok()?;
    let params = argon2::Params::new(m, t, p, Some(out_len)).ok()?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, version, params);
    let mut out = vec![0u8; out_len];
    hasher.hash_password_into(password, salt, &mut out).ok()?;
    Some(out)
}

fn decode_b64(text: &str) -> Result<Vec<u8>, PasswordError> {
    STANDARD.decode(text).or_else(|_| STANDARD_NO_PAD.decode(text)).map_err(|_| PasswordError::Malformed("bad base64"))
}

impl PasswordHash {
    /// Hashes a new password with a fresh random salt.
    pub fn new(password: &[u8], policy: HashPolicy) -> Result<PasswordHash, PasswordError> {
        Ok(match policy {
            HashPolicy::Pbkdf2Sha512 { iterations } => {
                let iterations = iterations.max(1);
                let salt = random_bytes(PBKDF2_SALT_LEN)?;
                let hash = pbkdf2_sha512(password, &salt, iterations, PBKDF2_HASH_LEN);
                PasswordHash::Pbkdf2Sha512 { iterations, salt, hash }
            }
            HashPolicy::Sha512 => {
                let salt = random_bytes(PBKDF2_SALT_LEN)?;
                let hash = sha512_salted(password, &salt);
                PasswordHash::Sha512 { salt, hash }
            }
            HashPolicy::Argon2id { m_cost, t_cost, p_cost } => {
                let salt = random_bytes(16)?;
                let hash = argon2id(password, &salt, 0x13, m_cost, t_cost, p_cost, 32)
                    .ok_or(PasswordError::Malformed("invalid argon2id parameters"))?;
                PasswordHash::Argon2id { version: 0x13, m_cost, t_cost, p_cost, salt, hash }
            }
        })
    }

    /// The dynsec 2.0 file layout: base64 `password`, base64 `salt`, `iterations`.
    pub fn from_dynsec_fields(
        password_b64: &str,
        salt_b64: &str,
        iterations: i64,
    ) -> Result<PasswordHash, PasswordError> {
        if iterations < 1 || iterations > u32::MAX as i64 {
            return Err(PasswordError::Malformed("iterations out of range"));
        }
        let salt = decode_b64(salt_b64)?;
        let hash = decode_b64(password_b64)?;
        if salt.is_empty() || hash.is_empty() || hash.len() > PBKDF2_HASH_LEN * 4 {
            return Err(PasswordError::Malformed("salt or hash length"));
        }
        Ok(PasswordHash::Pbkdf2Sha512 { iterations: iterations as u32, salt, hash })
    }

    /// Parses `$6$…`, `$7$…` or `$argon2id$…` (mosquitto_passwd lines, 2.1 `encoded_password`).
    pub fn parse(encoded: &str) -> Result<PasswordHash, PasswordError> {
        let parts: Vec<&str> = encoded.split('$').collect();
        match parts.as_slice() {
            ["", "6", salt, hash] => {
                let (salt, hash) = (decode_b64(salt)?, decode_b64(hash)?);
                if salt.is_empty() || hash.len() != 64 {
                    return Err(PasswordError::Malformed("sha512 salt or hash length"));
                }
                Ok(PasswordHash::Sha512 { salt, hash })
            }
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations.parse().map_err(|_| PasswordError::Malformed("iterations"))?;
                if iterations == 0 {
                    return Err(PasswordError::Malformed("iterations"));
                }
                let (salt, hash) = (decode_b64(salt)?, decode_b64(hash)?);
                if salt.is_empty() || hash.is_empty() || hash.len() > PBKDF2_HASH_LEN * 4 {
                    return Err(PasswordError::Malformed("pbkdf2 salt or hash length"));
                }
                Ok(PasswordHash::Pbkdf2Sha512 { iterations, salt, hash })
            }
            ["", "argon2id", rest @ ..] => Self::parse_argon2id(rest),
            _ => Err(PasswordError::UnknownFormat),
        }
    }

    fn parse_argon2id(parts: &[&str]) -> Result<PasswordHash, PasswordError> {
        // Optional `v=`; then `m=,t=,p=`; then salt and hash (unpadded base64).
        let (version, rest) = match parts {
            [v, rest @ ..] if v.starts_with("v=") => {
                let version = v[2..].parse().map_err(|_| PasswordError::Malformed("argon2 version"))?;
                (version, rest)
            }
            _ => (0x10, parts),
        };
        let [params, salt, hash] = rest else {
            return Err(PasswordError::Malformed("argon2 field count"));
        };
        let (mut m, mut t, mut p) = (None, None, None);
        for kv in params.split(',') {
            let (key, value) = kv.split_once('=').ok_or(PasswordError::Malformed("argon2 params"))?;
            let value: u32 = value.parse().map_err(|_| PasswordError::Malformed("argon2 params"))?;
            match key {
                "m" => m = Some(value),
                "t" => t = Some(value),
                "p" => p = Some(value),
                _ => {} // keyid/data are accepted and ignored
            }
        }
        let (Some(m_cost), Some(t_cost), Some(p_cost)) = (m, t, p) else {
            return Err(PasswordError::Malformed("argon2 params"));
        };
        let salt = STANDARD_NO_PAD.decode(salt).map_err(|_| PasswordError::Malformed("argon2 salt"))?;
        let hash = STANDARD_NO_PAD.decode(hash).map_err(|_| PasswordError::Malformed("argon2 hash"))?;
        argon2::Params::new(m_cost, t_cost, p_cost, Some(hash.len()))
            .map_err(|_| PasswordError::Malformed("argon2 params out of range"))?;
        if salt.len() < 8 {
            return Err(PasswordError::Malformed("argon2 salt too short"));
        }
        Ok(PasswordHash::Argon2id { version, m_cost, t_cost, p_cost, salt, hash })
    }

    /// The single-string form (`$7$…`, `$6$…`, `$argon2id$…`).
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, salt, hash } => {
                format!("$7${iterations}${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            PasswordHash::Sha512 { salt, hash } => format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash)),
            PasswordHash::Argon2id { version, m_cost, t_cost, p_cost, salt, hash } => format!(
                "$argon2id$v={version}$m={m_cost},t={t_cost},p={p_cost}${}${}",
                STANDARD_NO_PAD.encode(salt),
                STANDARD_NO_PAD.encode(hash)
            ),
        }
    }

    /// The dynsec 2.0 fields (`password`, `salt`, `iterations`) when this hash can be written in
    /// that layout. Only such hashes are usable by a mosquitto 2.0.x broker reading the file.
    pub fn dynsec_fields(&self) -> Option<(String, String, u32)> {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, salt, hash } => {
                Some((STANDARD.encode(hash), STANDARD.encode(salt), *iterations))
            }
            _ => None,
        }
    }

    /// Whether mosquitto 2.0.x would load these fields (12-byte salt, 64-byte hash).
    pub fn loadable_by_mosquitto_2_0(&self) -> bool {
        matches!(self, PasswordHash::Pbkdf2Sha512 { salt, hash, .. } if salt.len() == PBKDF2_SALT_LEN && hash.len() == PBKDF2_HASH_LEN)
    }

    /// Constant-time verification of a candidate password. Costs one full hash computation.
    pub fn verify(&self, password: &[u8]) -> bool {
        let (computed, expected) = match self {
            PasswordHash::Pbkdf2Sha512 { iterations, salt, hash } => {
                (pbkdf2_sha512(password, salt, *iterations, hash.len()), hash)
            }
            PasswordHash::Sha512 { salt, hash } => (sha512_salted(password, salt), hash),
            PasswordHash::Argon2id { version, m_cost, t_cost, p_cost, salt, hash } => {
                match argon2id(password, salt, *version, *m_cost, *t_cost, *p_cost, hash.len()) {
                    Some(computed) => (computed, hash),
                    None => return false,
                }
            }
        };
        computed.len() == expected.len() && bool::from(computed.ct_eq(expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_mosquitto_reference_vector() {
        // Written by `mosquitto_ctrl dynsec init` (2.0.11) for password "secretpw".
        let hash = PasswordHash::from_dynsec_fields(
            "WEucOmL/77l/oPKSc9aQVDsLSnhE8i63FRMllxBxsexRMtowGVy6N5jxEcoytgV/9Hfz5E+qvTqLnvQzdhoh0Q==",
            "U1TK/0NP30j8HoGL",
            101,
        )
        .unwrap();
        assert!(hash.verify(b"secretpw"));
        assert!(!hash.verify(b"secretpx"));
        assert!(hash.loadable_by_mosquitto_2_0());
    }

    #[test]
    fn new_hashes_round_trip_through_their_encoding() {
        for policy in
            [HashPolicy::default(), HashPolicy::Sha512, HashPolicy::Argon2id { m_cost: 64, t_cost: 1, p_cost: 1 }]
        {
            let hash = PasswordHash::new(b"pw", policy).unwrap();
            let parsed = PasswordHash::parse(&hash.encode()).unwrap();
            assert_eq!(parsed, hash);
            assert!(parsed.verify(b"pw"));
            assert!(!parsed.verify(b"pW"));
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "$",
            "$7$",
            "$7$0$AAAA$AAAA",
            "$7$x$a$b",
            "$6$!!$??",
            "$argon2id$m=1$a$b",
            "plain",
            "$argon2id$v=19$m=8,t=1,p=1$$",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_material() {
        let hash = PasswordHash::new(b"pw", HashPolicy::default()).unwrap();
        assert_eq!(format!("{hash:?}"), "PasswordHash(pbkdf2-sha512)");
    }
}
