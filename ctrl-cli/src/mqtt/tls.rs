//! The rustls client configuration built from mosquitto_ctrl's TLS options.
//!
//! `--cafile`/`--capath` give the trust anchors (an `mqtts://` URL without them uses the system
//! bundle), `--cert`/`--key` the client identity, `--tls-version` the minimum version,
//! `--ciphers` the TLS 1.2 suites (OpenSSL or IANA names), `--tls-alpn` the ALPN protocol, and
//! `--insecure` skips the host name check while still verifying the chain, as libmosquitto does.
//! Server certificates are verified by `cert-compat`: webpki, plus what libmosquitto also
//! accepts (version 1 certificates, the host name only in the CN).

use std::path::Path;
use std::sync::Arc;

use cert_compat::{HostNameCheck, ServerVerifier};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::SingleCertAndKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::options::TlsOptions;

/// Where Debian-like systems keep the CA bundle (used for `mqtts://` without `--cafile`).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A message for the user; the caller prints it as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub String);

fn setup_error(message: impl Into<String>) -> TlsSetupError {
    TlsSetupError(message.into())
}

/// `None` when the connection is not encrypted.
pub fn client_config(tls: &TlsOptions) -> Result<Option<Arc<rustls::ClientConfig>>, TlsSetupError> {
    if tls.psk.is_some() {
        return Err(setup_error("Error: TLS-PSK (--psk) is not supported by dynsec-ctrl."));
    }
    if tls.engine.is_some() || tls.keyform.as_deref() == Some("engine") {
        return Err(setup_error("Error: TLS engines are not supported by dynsec-ctrl."));
    }
    if let Some(keyform) = &tls.keyform
        && keyform != "pem"
    {
        return Err(setup_error("Error: Problem setting key form, it must be one of 'pem' or 'engine'."));
    }
    if !tls.enabled() {
        return Ok(None);
    }

    let anchors = trust_anchors(tls)?;
    let provider = Arc::new(provider_for(tls.ciphers.as_deref())?);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.tls_version.as_deref() {
        None | Some("tlsv1.2") | Some("tlsv1.1") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("tlsv1.3") => &[&rustls::version::TLS13],
        Some(_) => return Err(setup_error("Error: Problem setting TLS options, check the options are valid.")),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|_| setup_error("Error: Problem setting TLS options, check the options are valid."))?;

    // webpki for v3 certificates; version 1 ones and host names only in the CN as libmosquitto
    // accepts them. `--insecure` skips the host name check while still verifying the chain.
    let host_names = if tls.insecure { HostNameCheck::Skip } else { HostNameCheck::Mosquitto };
    let verifier = ServerVerifier::new(anchors, provider.clone(), host_names)
        .map_err(|e| setup_error(format!("Error: Problem setting TLS options: {e}.")))?;
    let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier));

    let mut config = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                setup_error(format!(
                    "Error: Problem setting TLS options: unable to load key file {}: {e}.",
                    key.display()
                ))
            })?;
            let key = cert_compat::certified_key(chain, key, &provider)
                .map_err(|e| setup_error(format!("Error: Problem setting TLS options: {e}.")))?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)))
        }
        _ => builder.with_no_client_auth(),
    };
    if let Some(alpn) = &tls.alpn {
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    }
    Ok(Some(Arc::new(config)))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    if !path.exists() {
        return Err(setup_error("Error: Problem setting TLS options: File not found."));
    }
    let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| setup_error(format!("Error: Problem setting TLS options: {}: {e}.", path.display())))?
        .filter_map(Result::ok)
        .collect();
    if certificates.is_empty() {
        return Err(setup_error(format!(
            "Error: Problem setting TLS options: no PEM certificate in {}.",
            path.display()
        )));
    }
    Ok(certificates)
}

/// The CA certificates rustls can use as trust anchors.
fn trust_anchors(tls: &TlsOptions) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let mut usable = RootCertStore::empty();
    let mut anchors = Vec::new();
    let mut files = Vec::new();
    if let Some(cafile) = &tls.cafile {
        files.push(cafile.clone());
    }
    if let Some(capath) = &tls.capath {
        let entries = std::fs::read_dir(capath)
            .map_err(|_| setup_error("Error: Problem setting TLS options: File not found."))?;
        files.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()));
    }
    if files.is_empty() {
        let bundle = std::env::var_os("SSL_CERT_FILE").map(Into::into).unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
        files.push(bundle);
    }
    for (index, file) in files.iter().enumerate() {
        // A CA directory may hold other files (hash links to the same certificates, CRLs, ...).
        let strict = index == 0 && tls.cafile.is_some();
        match read_certificates(file) {
            Ok(certificates) => {
                for certificate in certificates {
                    if usable.add(certificate.clone()).is_ok() {
                        anchors.push(certificate);
                    }
                }
            }
            Err(e) if strict => return Err(e),
            Err(_) => {}
        }
    }
    if anchors.is_empty() {
        return Err(setup_error("Error: Problem setting TLS options: no usable CA certificate."));
    }
    Ok(anchors)
}

/// The ring provider, restricted to the `--ciphers` list for TLS 1.2 (TLS 1.3 suites are always
/// kept, as OpenSSL's cipher list does not affect them either).
fn provider_for(ciphers: Option<&str>) -> Result<CryptoProvider, TlsSetupError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let Some(list) = ciphers else {
        return Ok(provider);
    };
    let wanted: Vec<String> = list.split([':', ',', ' ']).filter(|s| !s.is_empty()).map(normalise_suite_name).collect();
    provider.cipher_suites.retain(|suite| {
        let name = format!("{:?}", suite.suite());
        suite.tls13().is_some() || wanted.contains(&name)
    });
    if !provider.cipher_suites.iter().any(|s| s.tls13().is_none()) {
        return Err(setup_error("Error: Problem setting TLS options, check the options are valid."));
    }
    Ok(provider)
}

/// OpenSSL's `ECDHE-RSA-AES128-GCM-SHA256` → IANA's `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
fn normalise_suite_name(name: &str) -> String {
    if name.starts_with("TLS_") {
        return name.to_string();
    }
    let parts: Vec<&str> = name.split('-').collect();
    let (kx, rest) = match parts.as_slice() {
        ["ECDHE", "ECDSA", rest @ ..] => ("ECDHE_ECDSA", rest),
        ["ECDHE", "RSA", rest @ ..] => ("ECDHE_RSA", rest),
        _ => return name.to_string(),
    };
    let cipher = match rest {
        ["AES128", "GCM", "SHA256"] => "AES_128_GCM_SHA256",
        ["AES256", "GCM", "SHA384"] => "AES_256_GCM_SHA384",
        ["CHACHA20", "POLY1305"] => "CHACHA20_POLY1305_SHA256",
        _ => return name.to_string(),
    };
    format!("TLS_{kx}_WITH_{cipher}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_names_map_to_iana() {
        assert_eq!(normalise_suite_name("ECDHE-RSA-AES128-GCM-SHA256"), "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(
            normalise_suite_name("ECDHE-ECDSA-CHACHA20-POLY1305"),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        assert!(provider_for(Some("ECDHE-RSA-AES256-GCM-SHA384")).is_ok());
        assert!(provider_for(Some("NOPE")).is_err());
    }

    #[test]
    fn missing_ca_file_is_reported_like_mosquitto() {
        let tls = TlsOptions { cafile: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert_eq!(client_config(&tls).unwrap_err().0, "Error: Problem setting TLS options: File not found.");
    }

    #[test]
    fn no_tls_without_ca_or_url() {
        assert!(client_config(&TlsOptions::default()).unwrap().is_none());
    }
}
