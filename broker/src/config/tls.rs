//! The TLS directives of a listener (`certfile`, `keyfile`, `cafile`, `capath`, `crlfile`,
//! `tls_version`, `require_certificate`, `use_identity_as_username`, …). They are stored here and
//! checked when the listener starts (`crate::gate::tls`), with the place of the first one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ConfigError;
use super::lexer::{Directive, Location};

/// TLS directives that name a file.
const TLS_PATHS: &[&str] = &["cafile", "capath", "certfile", "keyfile", "crlfile"];
/// TLS directives kept as text (checked, or refused, when the listener starts).
const TLS_OTHER: &[&str] = &[
    "ciphers",
    "ciphers_tls1.3",
    "dhparamfile",
    "psk_hint",
    "tls_engine",
    "tls_keyform",
    "tls_engine_kpass_sha1",
    "tls_version",
];

/// TLS settings of a listener (served by `crate::gate::tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub crlfile: Option<PathBuf>,
    pub tls_version: Option<String>,
    pub require_certificate: bool,
    pub use_identity_as_username: bool,
    pub use_subject_as_username: bool,
    /// Other TLS directives seen (`ciphers`, `psk_hint`, `dhparamfile`, …) with their values.
    pub other: BTreeMap<String, String>,
    /// Where the first TLS directive of this listener was written (for the start-up error).
    pub first_at: Option<Location>,
}

impl TlsOptions {
    /// True when any TLS directive was given for the listener.
    pub fn is_configured(&self) -> bool {
        self.first_at.is_some()
    }
}

/// Applies `d` to `tls` when it is a TLS directive; `Ok(false)` when it is not one.
pub(super) fn apply(tls: &mut TlsOptions, d: &Directive) -> Result<bool, ConfigError> {
    let key = d.key.as_str();
    let is_tls = matches!(key, "require_certificate" | "use_identity_as_username" | "use_subject_as_username")
        || TLS_PATHS.contains(&key)
        || TLS_OTHER.contains(&key);
    if !is_tls {
        return Ok(false);
    }
    // Validate before recording the place, so that an invalid line changes nothing.
    match key {
        "require_certificate" => tls.require_certificate = d.boolean()?,
        "use_identity_as_username" => tls.use_identity_as_username = d.boolean()?,
        "use_subject_as_username" => tls.use_subject_as_username = d.boolean()?,
        k if TLS_PATHS.contains(&k) => {
            let path = Some(PathBuf::from(d.text()?));
            match k {
                "cafile" => tls.cafile = path,
                "capath" => tls.capath = path,
                "certfile" => tls.certfile = path,
                "keyfile" => tls.keyfile = path,
                _ => tls.crlfile = path,
            }
        }
        k => {
            let value = d.text()?.to_owned();
            if k == "tls_version" {
                if !matches!(value.as_str(), "tlsv1.3" | "tlsv1.2" | "tlsv1.1") {
                    return Err(d.at.error(format!("invalid tls_version ({value})")));
                }
                tls.tls_version = Some(value);
            } else {
                tls.other.insert(k.to_owned(), value);
            }
        }
    }
    if tls.first_at.is_none() {
        tls.first_at = Some(d.at.clone());
    }
    Ok(true)
}
