//! Password hashes: verifying every form mosquitto writes and producing new ones.
//!
//! Forms understood (docs/compatibility.md §2.2, §2.3, §5.1):
//! - dynsec 2.0 layout: `password` + `salt` + `iterations` JSON fields = PBKDF2-HMAC-SHA512;
//! - `$7$<iterations>$<salt>$<hash>`: the same, as mosquitto_passwd and 2.1's `encoded_password` write it;
//! - `$6$<salt>$<hash>`: one SHA-512 over password ‖ salt (mosquitto_passwd `-H sha512`);
//! - `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`: PHC string (mosquitto 2.1's default).
//!
//! Comparison is constant-time. Nothing here logs, and `Debug` never shows a hash.
//!
//! Cost parameters are bounded ([`MAX_PBKDF2_ITERATIONS`], [`MAX_ARGON2_MEMORY_KIB`],
//! [`MAX_ARGON2_WORK_KIB`], [`MAX_ARGON2_LANES`], [`MAX_HASH_LEN`]; docs/store.md, "Limits"): a
//! stored hash beyond them is refused when it is parsed, is never computed by [`PasswordHash::verify`],
//! and is never created. Without that, one password-file line `$7$4294967295$…` let two wrong
//! passwords occupy the verifier threads for hours, and an argon2id entry with `m=4194304`
//! allocated 4 GiB per attempt. The bounds are about ten times what mosquitto writes by default.

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

/// Most PBKDF2 iterations a hash may use: ~10× the 210,000 OWASP recommends (mosquitto writes
/// 101 in 2.0 and 1,000 in 2.1 unless told otherwise). About a second per attempt on one core.
pub const MAX_PBKDF2_ITERATIONS: u32 = 2_000_000;
/// Most memory an argon2id hash may use, in KiB (256 MiB; mosquitto 2.1 uses 47,104 = 46 MiB).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 262_144;
/// Most work an argon2id hash may take: memory (KiB) × passes, 1 GiB in total, so ~20× mosquitto
/// 2.1's 46 MiB × 1 and ~5× RFC 9106's 64 MiB × 3. About a second and a half on one core.
pub const MAX_ARGON2_WORK_KIB: u64 = 1_048_576;
/// Most argon2id lanes (mosquitto 2.1 uses 1; RFC 9106 suggests 4).
pub const MAX_ARGON2_LANES: u32 = 16;
/// Longest stored hash output in bytes, PBKDF2 or argon2id: what mosquitto writes (a longer
/// PBKDF2 output multiplies the work per attempt).
pub const MAX_HASH_LEN: usize = 64;

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

    /// Whether hashes made with this policy stay within the limits (and so can be loaded again).
    pub fn check(&self) -> Result<(), PasswordError> {
        match *self {
            HashPolicy::Pbkdf2Sha512 { iterations } => check_pbkdf2(iterations),
            HashPolicy::Sha512 => Ok(()),
            HashPolicy::Argon2id { m_cost, t_cost, p_cost } => check_argon2(m_cost, t_cost, p_cost),
        }
    }
}

fn check_pbkdf2(iterations: u32) -> Result<(), PasswordError> {
    if iterations > MAX_PBKDF2_ITERATIONS {
        return Err(PasswordError::OverLimit(format!(
            "PBKDF2 iterations {iterations} above the limit of {MAX_PBKDF2_ITERATIONS}"
        )));
    }
    Ok(())
}

fn check_argon2(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<(), PasswordError> {
    let over = |what: String| Err(PasswordError::OverLimit(what));
    if m_cost > MAX_ARGON2_MEMORY_KIB {
        return over(format!("argon2id memory m={m_cost} KiB above the limit of {MAX_ARGON2_MEMORY_KIB}"));
    }
    if u64::from(m_cost) * u64::from(t_cost) > MAX_ARGON2_WORK_KIB {
        return over(format!(
            "argon2id work m×t={m_cost}×{t_cost} above the limit of {MAX_ARGON2_WORK_KIB} KiB-passes"
        ));
    }
    if p_cost > MAX_ARGON2_LANES {
        return over(format!("argon2id lanes p={p_cost} above the limit of {MAX_ARGON2_LANES}"));
    }
    Ok(())
}

fn check_hash_len(hash: &[u8]) -> Result<(), PasswordError> {
    if hash.len() > MAX_HASH_LEN {
        return Err(PasswordError::OverLimit(format!(
            "hash of {} bytes longer than the limit of {MAX_HASH_LEN}",
            hash.len()
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("unrecognised password hash format")]
    UnknownFormat,
    #[error("malformed password hash: {0}")]
    Malformed(&'static str),
    #[error("no random bytes available: {0}")]
    Random(String),
    /// A cost parameter beyond the limits of this module.
    #[error("{0}")]
    OverLimit(String),
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
        policy.check()?;
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
        let iterations = iterations as u32;
        check_pbkdf2(iterations)?;
        let salt = decode_b64(salt_b64)?;
        let hash = decode_b64(password_b64)?;
        if salt.is_empty() || hash.is_empty() {
            return Err(PasswordError::Malformed("salt or hash length"));
        }
        check_hash_len(&hash)?;
        Ok(PasswordHash::Pbkdf2Sha512 { iterations, salt, hash })
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
                check_pbkdf2(iterations)?;
                let (salt, hash) = (decode_b64(salt)?, decode_b64(hash)?);
                if salt.is_empty() || hash.is_empty() {
                    return Err(PasswordError::Malformed("pbkdf2 salt or hash length"));
                }
                check_hash_len(&hash)?;
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
        check_argon2(m_cost, t_cost, p_cost)?;
        let salt = STANDARD_NO_PAD.decode(salt).map_err(|_| PasswordError::Malformed("argon2 salt"))?;
        let hash = STANDARD_NO_PAD.decode(hash).map_err(|_| PasswordError::Malformed("argon2 hash"))?;
        check_hash_len(&hash)?;
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

    /// Whether this hash is within the cost limits. Parsing refuses hashes that are not; this is
    /// for hashes that reached memory some other way.
    pub fn within_limits(&self) -> bool {
        let params = match self {
            PasswordHash::Pbkdf2Sha512 { iterations, hash, .. } => check_pbkdf2(*iterations).and(check_hash_len(hash)),
            PasswordHash::Sha512 { .. } => Ok(()),
            PasswordHash::Argon2id { m_cost, t_cost, p_cost, hash, .. } => {
                check_argon2(*m_cost, *t_cost, *p_cost).and(check_hash_len(hash))
            }
        };
        params.is_ok()
    }

    /// Constant-time verification of a candidate password. Costs one full hash computation,
    /// bounded by the limits: a hash beyond them verifies nothing and costs nothing.
    pub fn verify(&self, password: &[u8]) -> bool {
        if !self.within_limits() {
            return false;
        }
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

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn unpadded(bytes: &[u8]) -> String {
        STANDARD_NO_PAD.encode(bytes)
    }

    /// What mosquitto and mosquitto_passwd write by default, and well beyond, loads; beyond the
    /// limits nothing does, and the error says which parameter and which limit.
    #[test]
    fn cost_parameters_are_bounded_at_parse() {
        let (salt, hash) = (b64(&[7; 12]), b64(&[9; 64]));
        for iterations in [1, 101, 1000, 210_000, MAX_PBKDF2_ITERATIONS] {
            assert!(PasswordHash::parse(&format!("$7${iterations}${salt}${hash}")).is_ok(), "{iterations}");
            assert!(PasswordHash::from_dynsec_fields(&hash, &salt, iterations.into()).is_ok(), "{iterations}");
        }
        for iterations in [u64::from(MAX_PBKDF2_ITERATIONS) + 1, u64::from(u32::MAX)] {
            let err = PasswordHash::parse(&format!("$7${iterations}${salt}${hash}")).unwrap_err();
            assert_eq!(err.to_string(), format!("PBKDF2 iterations {iterations} above the limit of 2000000"));
            assert!(PasswordHash::from_dynsec_fields(&hash, &salt, iterations as i64).is_err());
        }
        let long = b64(&[9; 65]);
        let err = PasswordHash::parse(&format!("$7$101${salt}${long}")).unwrap_err();
        assert_eq!(err.to_string(), "hash of 65 bytes longer than the limit of 64");

        let (salt, hash) = (unpadded(&[7; 16]), unpadded(&[9; 32]));
        let argon = |params: &str| PasswordHash::parse(&format!("$argon2id$v=19${params}${salt}${hash}"));
        // mosquitto 2.1's default, the OWASP alternatives, RFC 9106's second recommendation, the edges.
        for ok in ["m=47104,t=1,p=1", "m=19456,t=2,p=1", "m=7168,t=5,p=1", "m=65536,t=3,p=4", "m=262144,t=4,p=16"] {
            assert!(argon(ok).is_ok(), "{ok}");
        }
        for (bad, message) in [
            ("m=4194304,t=1,p=1", "argon2id memory m=4194304 KiB above the limit of 262144"),
            ("m=262145,t=1,p=1", "argon2id memory m=262145 KiB above the limit of 262144"),
            ("m=262144,t=5,p=1", "argon2id work m×t=262144×5 above the limit of 1048576 KiB-passes"),
            ("m=64,t=4294967295,p=1", "argon2id work m×t=64×4294967295 above the limit of 1048576 KiB-passes"),
            ("m=1024,t=1,p=17", "argon2id lanes p=17 above the limit of 16"),
        ] {
            assert_eq!(argon(bad).unwrap_err().to_string(), message, "{bad}");
        }
    }

    /// New hashes are never made beyond the limits (they could not be loaded again).
    #[test]
    fn policies_beyond_the_limits_are_refused() {
        assert!(HashPolicy::Pbkdf2Sha512 { iterations: MAX_PBKDF2_ITERATIONS + 1 }.check().is_err());
        assert!(PasswordHash::new(b"pw", HashPolicy::Argon2id { m_cost: 1 << 22, t_cost: 1, p_cost: 1 }).is_err());
        assert!(HashPolicy::ARGON2ID_DEFAULT.check().is_ok() && HashPolicy::default().check().is_ok());
    }

    /// A hash beyond the limits that reached memory anyway is never computed: even the right
    /// password does not verify.
    #[test]
    fn verify_refuses_hashes_beyond_the_limits() {
        let salt = vec![3u8; 12];
        // A PBKDF2 output longer than 64 bytes multiplies the work per attempt.
        let hash = pbkdf2_sha512(b"right", &salt, 1, MAX_HASH_LEN + 1);
        let stored = PasswordHash::Pbkdf2Sha512 { iterations: 1, salt: salt.clone(), hash };
        assert!(!stored.within_limits());
        assert!(!stored.verify(b"right"));
        let slow = PasswordHash::Pbkdf2Sha512 { iterations: u32::MAX, salt, hash: vec![0; 64] };
        assert!(!slow.within_limits());
        assert!(!slow.verify(b"anything"), "refused without 4 billion iterations");
        let huge = PasswordHash::Argon2id {
            version: 0x13,
            m_cost: 1 << 22,
            t_cost: 1,
            p_cost: 1,
            salt: vec![1; 16],
            hash: vec![0; 32],
        };
        assert!(!huge.verify(b"anything"), "refused without allocating 4 GiB");
    }

    #[test]
    fn debug_never_shows_material() {
        let hash = PasswordHash::new(b"pw", HashPolicy::default()).unwrap();
        assert_eq!(format!("{hash:?}"), "PasswordHash(pbkdf2-sha512)");
    }
}
