//! TLS listeners (docs/compatibility.md §5.6): the rustls server configuration built from a listener's
//! `certfile`/`keyfile`/`cafile`/`capath`/`crlfile`/`tls_version`/`require_certificate`, its
//! replacement on SIGHUP, and the identity (common name, RFC 2253 subject) read from a verified
//! client certificate.
//!
//! Reload swaps the whole server configuration of a listener: handshakes that start afterwards
//! use the new certificate, key, CAs and CRL; established connections keep the session they
//! negotiated and are not touched. A configuration that cannot be built (unreadable file, key not
//! matching the certificate, …) is logged and the previous one stays in service.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsOptions;
use crate::security::TlsIdentity;

/// Directives that select a feature rustls does not offer; a listener using them is refused
/// rather than served differently from what its configuration asks.
const UNSUPPORTED: &[&str] = &["psk_hint", "tls_engine", "tls_keyform", "tls_engine_kpass_sha1"];
/// Directives that only tune OpenSSL; rustls chooses its own (modern) suites and groups.
const IGNORED: &[&str] = &["ciphers", "ciphers_tls1.3", "dhparamfile"];

/// The TLS side of one listener.
pub(crate) struct TlsListener {
    options: TlsOptions,
    /// Names the listener in log lines (`listener 8883`).
    label: String,
    current: RwLock<TlsAcceptor>,
}

impl TlsListener {
    /// Checks the listener's TLS directives and loads its files; errors name the directive's
    /// place in the configuration file.
    pub fn new(options: &TlsOptions, port: u16) -> Result<TlsListener, String> {
        let at = options.first_at.as_ref().map(|at| format!("{at}: ")).unwrap_or_default();
        if let Some(name) = UNSUPPORTED.iter().find(|name| options.other.contains_key(**name)) {
            return Err(format!("{at}{name} is not supported (listener {port}); rustls offers no TLS-PSK or engines"));
        }
        for name in IGNORED.iter().filter(|name| options.other.contains_key(**name)) {
            tracing::warn!("{at}{name} is ignored on listener {port}: rustls chooses its own cipher suites");
        }
        if options.certfile.is_none() || options.keyfile.is_none() {
            return Err(format!("{at}listener {port} has TLS options but not both certfile and keyfile"));
        }
        if options.require_certificate && options.cafile.is_none() && options.capath.is_none() {
            return Err(format!("{at}require_certificate true on listener {port} needs cafile or capath"));
        }
        let config = server_config(options).map_err(|e| format!("{at}{e}"))?;
        Ok(TlsListener {
            options: options.clone(),
            label: format!("listener {port}"),
            current: RwLock::new(TlsAcceptor::from(config)),
        })
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().clone()
    }

    /// Re-reads the certificate, key, CAs and CRL; keeps the previous configuration on error.
    pub fn reload(&self) {
        match server_config(&self.options) {
            Ok(config) => {
                *self.current.write() = TlsAcceptor::from(config);
                tracing::info!("{}: reloaded TLS certificates", self.label);
            }
            Err(error) => {
                tracing::error!("{}: {error}; keeping the previous certificates", self.label)
            }
        }
    }
}

/// Reloads the certificates of every TLS listener of a broker (SIGHUP).
#[derive(Clone, Default)]
pub struct CertificateReloader {
    pub(crate) listeners: Vec<Arc<TlsListener>>,
}

impl CertificateReloader {
    pub fn reload(&self) {
        for listener in &self.listeners {
            listener.reload();
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `tls_version` is the lowest version allowed (mosquitto's meaning). rustls has no TLS 1.1, so
/// `tlsv1.1` and the default both mean TLS 1.2 and 1.3.
fn versions(tls_version: Option<&str>) -> &'static [&'static SupportedProtocolVersion] {
    static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match tls_version {
        Some("tlsv1.3") => &TLS13_ONLY,
        _ => rustls::ALL_VERSIONS,
    }
}

fn server_config(options: &TlsOptions) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let (Some(certfile), Some(keyfile)) = (&options.certfile, &options.keyfile) else {
        return Err("certfile and keyfile are both required".into());
    };
    let key = load_key(certfile, keyfile, &provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions(options.tls_version.as_deref()))
        .map_err(|e| format!("tls_version: {e}"))?;
    // mosquitto asks for a client certificate only with require_certificate true (SSL_VERIFY_PEER
    // | FAIL_IF_NO_PEER_CERT); otherwise it verifies none, whatever cafile says.
    let builder = if options.require_certificate {
        let anchors = load_anchors(options)?;
        // OpenSSL's X509_V_FLAG_CRL_CHECK checks the client certificate only; so does the verifier.
        let crls = options.crlfile.as_deref().map(load_crls).transpose()?.unwrap_or_default();
        // webpki for v3 certificates; version 1 ones (mosquitto-tls(7)'s recipe) as OpenSSL does.
        let verifier = cert_compat::ClientVerifier::new(anchors, crls, Arc::clone(&provider))
            .map_err(|e| format!("client certificate verification: {e}"))?;
        builder.with_client_cert_verifier(Arc::new(verifier))
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    Ok(Arc::new(config))
}

fn load_key(certfile: &Path, keyfile: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(certfile)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("Unable to load server certificate \"{}\": {e}. Check certfile.", certfile.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "Unable to load server certificate \"{}\": no certificate in the file. Check certfile.",
            certfile.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(keyfile)
        .map_err(|e| format!("Unable to load server key file \"{}\": {e}. Check keyfile.", keyfile.display()))?;
    // Also for a version 1 certificate, whose key rustls cannot match by itself.
    cert_compat::certified_key(chain, key, provider).map_err(|e| {
        format!("Server certificate \"{}\" and key \"{}\" do not match: {e}", certfile.display(), keyfile.display())
    })
}

/// The trust anchors of `cafile` and `capath`, each checked to be usable as one.
fn load_anchors(options: &TlsOptions) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = RootCertStore::empty();
    let mut anchors = Vec::new();
    let mut files: Vec<PathBuf> = options.cafile.iter().cloned().collect();
    if let Some(capath) = &options.capath {
        let entries =
            fs::read_dir(capath).map_err(|e| format!("Unable to read capath \"{}\": {e}", capath.display()))?;
        let mut found: Vec<PathBuf> =
            entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        found.sort();
        files.extend(found);
    }
    for file in &files {
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("Unable to load CA certificates \"{}\": {e}. Check cafile/capath.", file.display()));
        match certs {
            Ok(certs) => {
                for cert in certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| format!("Invalid CA certificate in \"{}\": {e}", file.display()))?;
                    anchors.push(cert);
                }
            }
            // A capath directory may hold other files (OpenSSL's hash links are fine, READMEs not).
            Err(error) if options.cafile.as_ref() == Some(file) => return Err(error),
            Err(error) => tracing::warn!("{error}; skipped"),
        }
    }
    if anchors.is_empty() {
        return Err("Unable to load CA certificates: cafile/capath holds no certificate".into());
    }
    Ok(anchors)
}

fn load_crls(crlfile: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = CertificateRevocationListDer::pem_file_iter(crlfile)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("Unable to load CRL \"{}\": {e}. Check crlfile.", crlfile.display()))?;
    if crls.is_empty() {
        return Err(format!("Unable to load CRL \"{}\": no CRL in the file. Check crlfile.", crlfile.display()));
    }
    Ok(crls)
}

/// The identity of a verified client certificate (the end-entity certificate of the chain).
pub(crate) fn identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<TlsIdentity> {
    let end_entity = peer_certificates?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref()).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next().map(|cn| attribute_text(cn.as_slice(), cn.as_str().ok()));
    Some(TlsIdentity { common_name, subject: rfc2253(subject) })
}

fn attribute_text(raw: &[u8], text: Option<&str>) -> String {
    text.map(str::to_owned).unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

/// The subject as OpenSSL prints it with `XN_FLAG_RFC2253` (what mosquitto uses for
/// `use_subject_as_username`): RDNs in reverse order separated by `,`, multi-valued RDNs joined
/// by `+`, short attribute names, RFC 2253 escaping, bytes above 0x7F and controls as `\XX`.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    let value = attribute_text(attribute.as_slice(), attribute.as_str().ok());
                    format!("{}={}", short_name(&oid).unwrap_or(&oid), escape_rfc2253(&value))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// OpenSSL's short names for the attributes certificates commonly carry.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.46" => "dnQualifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

fn escape_rfc2253(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    for (index, &byte) in bytes.iter().enumerate() {
        let first = index == 0;
        let last = index + 1 == bytes.len();
        match byte {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(byte as char);
            }
            b'#' if first => out.push_str("\\#"),
            b' ' if first || last => out.push_str("\\ "),
            0x00..=0x1f | 0x7f..=0xff => out.push_str(&format!("\\{byte:02X}")),
            _ => out.push(byte as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_escaping_matches_openssl() {
        assert_eq!(escape_rfc2253("Test Org"), "Test Org");
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253("#x "), "\\#x\\ ");
        assert_eq!(escape_rfc2253("é"), "\\C3\\A9");
    }

    #[test]
    fn tls_version_is_a_minimum() {
        assert_eq!(versions(Some("tlsv1.3")).len(), 1);
        assert_eq!(versions(Some("tlsv1.2")).len(), 2);
        assert_eq!(versions(None).len(), 2);
    }
}
