//! The rustls verifiers: rustls's webpki client and server verifiers, with the compatibility
//! path of this crate taken only where webpki refuses for form alone — a version 1 end-entity
//! certificate (path in [`crate::path`], handshake signature with its key), or a v3 server
//! certificate whose chain webpki verified but whose host name is only in the CN.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Version;

use crate::host_name::common_name_matches;
use crate::path::{PathPolicy, Purpose, verify_v1_end_entity};
use crate::signed::verify_handshake;

/// The certificate, if it parses and is version 1 (the only form this crate takes over).
pub(crate) fn parse_v1(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok((rest, cert)) if rest.is_empty() && cert.version() == X509Version::V1 => Some(cert),
        _ => None,
    }
}

fn roots(anchors: &[CertificateDer<'static>]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    // Callers report unusable CA files themselves; what webpki cannot use, nothing here uses.
    roots.add_parsable_certificates(anchors.iter().cloned());
    Arc::new(roots)
}

/// A peer's handshake signature: with the key of a version 1 end-entity certificate here, any
/// other certificate as rustls's webpki verifiers check it (with the same algorithms).
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, Error> {
    match parse_v1(cert.as_ref()) {
        Some(v1) => verify_handshake(message, v1.public_key().raw, dss, algorithms, tls13),
        None if tls13 => rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms),
        None => rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms),
    }
}

/// The handshake-signature methods, the same in the client and the server verifier traits (a
/// verifier with an `algorithms` field).
macro_rules! handshake_signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_signature(message, cert, dss, &self.algorithms, false)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_signature(message, cert, dss, &self.algorithms, true)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// Verifies client certificates (a broker listener with `require_certificate true`).
#[derive(Debug)]
pub struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    anchors: Vec<CertificateDer<'static>>,
    /// Empty: revocation is not checked.
    crls: Vec<CertificateRevocationListDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    /// A verifier trusting `anchors`; with CRLs, the end-entity certificate's revocation status
    /// must be known and good (OpenSSL's `X509_V_FLAG_CRL_CHECK`, which mosquitto sets).
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientVerifier, VerifierBuilderError> {
        let algorithms = provider.signature_verification_algorithms;
        let mut builder = WebPkiClientVerifier::builder_with_provider(roots(&anchors), provider);
        if !crls.is_empty() {
            builder = builder.with_crls(crls.iter().cloned()).only_check_end_entity_revocation();
        }
        Ok(ClientVerifier { webpki: builder.build()?, anchors, crls, algorithms })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let Some(cert) = parse_v1(end_entity.as_ref()) else {
            return self.webpki.verify_client_cert(end_entity, intermediates, now);
        };
        let policy = PathPolicy {
            anchors: &self.anchors,
            crls: (!self.crls.is_empty()).then_some(self.crls.as_slice()),
            purpose: Purpose::ClientAuth,
            algorithms: &self.algorithms,
        };
        verify_v1_end_entity(&cert, end_entity.as_ref(), intermediates, now, &policy)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signature_methods!();
}

/// Whether a client checks that the server certificate names the host it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostNameCheck {
    /// subjectAltName as webpki reads it, else the CN as libmosquitto reads it.
    Mosquitto,
    /// `--insecure`: the chain is still verified, the name is not.
    Skip,
}

/// Verifies server certificates (dynsec-ctrl connecting with `--cafile`/`--capath`).
#[derive(Debug)]
pub struct ServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    anchors: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
    host_names: HostNameCheck,
}

impl ServerVerifier {
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
        host_names: HostNameCheck,
    ) -> Result<ServerVerifier, VerifierBuilderError> {
        let algorithms = provider.signature_verification_algorithms;
        let webpki = WebPkiServerVerifier::builder_with_provider(roots(&anchors), provider).build()?;
        Ok(ServerVerifier { webpki, anchors, algorithms, host_names })
    }
}

fn is_name_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
    )
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(cert) = parse_v1(end_entity.as_ref()) {
            let policy = PathPolicy {
                anchors: &self.anchors,
                crls: None,
                purpose: Purpose::ServerAuth,
                algorithms: &self.algorithms,
            };
            verify_v1_end_entity(&cert, end_entity.as_ref(), intermediates, now, &policy)?;
            if self.host_names == HostNameCheck::Mosquitto && !common_name_matches(&cert, server_name) {
                return Err(CertificateError::NotValidForName.into());
            }
            return Ok(ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name last: this refusal means the chain itself was verified.
            Err(error) if is_name_refusal(&error) => {
                let named_by_cn = || {
                    X509Certificate::from_der(end_entity.as_ref())
                        .is_ok_and(|(_, cert)| common_name_matches(&cert, server_name))
                };
                if self.host_names == HostNameCheck::Skip || named_by_cn() {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(error)
                }
            }
            other => other,
        }
    }

    handshake_signature_methods!();
}
