//! The rustls client configuration built from mosquitto_ctrl's TLS options.
//!
//! `--cafile`/`--capath` give the trust anchors (an `mqtts://` URL without them uses the system
//! bundle), `--cert`/`--key` the client identity, `--tls-version` the minimum version,
//! `--ciphers` the TLS 1.2 suites (OpenSSL or IANA names), `--tls-alpn` the ALPN protocol, and
//! `--insecure` skips the host name check while still verifying the chain, as libmosquitto does.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

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

    let roots = trust_anchors(tls)?;
    let provider = Arc::new(provider_for(tls.ciphers.as_deref())?);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.tls_version.as_deref() {
        None | Some("tlsv1.2") | Some("tlsv1.1") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("tlsv1.3") => &[&rustls::version::TLS13],
        Some(_) => return Err(setup_error("Error: Problem setting TLS options, check the options are valid.")),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|_| setup_error("Error: Problem setting TLS options, check the options are valid."))?;

    let roots = Arc::new(roots);
    let builder = if tls.insecure {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| setup_error(format!("Error: Problem setting TLS options: {e}.")))?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoHostnameCheck { inner }))
    } else {
        builder.with_root_certificates(roots)
    };

    let mut config = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                setup_error(format!(
                    "Error: Problem setting TLS options: unable to load key file {}: {e}.",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| setup_error(format!("Error: Problem setting TLS options: {e}.")))?
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

fn trust_anchors(tls: &TlsOptions) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
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
                    let _ = roots.add(certificate);
                }
            }
            Err(e) if strict => return Err(e),
            Err(_) => {}
        }
    }
    if roots.is_empty() {
        return Err(setup_error("Error: Problem setting TLS options: no usable CA certificate."));
    }
    Ok(roots)
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

/// `--insecure`: the certificate chain is still verified, only the name check is skipped.
#[derive(Debug)]
struct NoHostnameCheck {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
