//! Certificate verification for rustls that accepts what mosquitto (through OpenSSL) accepts and
//! webpki refuses for reasons of form only:
//!
//! - X.509 **version 1** end-entity certificates, which `openssl x509 -req … -CAcreateserial` of
//!   OpenSSL 3.0 makes by following mosquitto-tls(7) (client certificates, server certificates,
//!   and their private keys at start-up);
//! - **server host names given only in the subject's CN**, checked as libmosquitto does.
//!
//! Everything else goes to rustls's webpki verifiers unchanged: [`ClientVerifier`] and
//! [`ServerVerifier`] wrap them and take the compatibility path only for a version 1 end entity
//! or for a v3 server certificate whose verified chain webpki refused for its name alone.

mod host_name;
mod key;
mod path;
mod signed;
mod verifier;

use std::fmt;
use std::sync::Arc;

pub use key::certified_key;
pub use verifier::{ClientVerifier, HostNameCheck, ServerVerifier};

/// Why the compatibility path refused a certificate, where rustls has no error of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A certificate above the end entity may not issue certificates.
    IssuerIsNotCa,
    /// More intermediates than a CA's pathLenConstraint allows.
    PathTooLong,
    /// A CA above a version 1 end entity constrains names; this path does not evaluate them.
    NameConstraints,
    /// The TLS signature scheme the peer used is not one for its certificate's key.
    SchemeDoesNotFitKey,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::IssuerIsNotCa => "an issuing certificate is not a CA certificate",
            Refusal::PathTooLong => "the chain is longer than a CA's path length constraint allows",
            Refusal::NameConstraints => "name constraints above a version 1 certificate are not supported",
            Refusal::SchemeDoesNotFitKey => "the signature scheme does not fit the certificate's key",
        })
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for rustls::Error {
    fn from(refusal: Refusal) -> rustls::Error {
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(refusal))).into()
    }
}
