//! Signatures: the signed part, algorithm and signature of an X.509 `SIGNED{}` structure
//! (certificate or CRL), checked with the signature algorithms of the rustls crypto provider —
//! the same *ring* implementations and the same algorithm policy webpki applies to v3 chains.

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, DigitallySignedStruct, Error};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use x509_parser::asn1_rs::{Any, FromDer, Tag};

/// The parts of `SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING }`, borrowed from the DER.
pub(crate) struct Signed<'a> {
    /// The signed bytes: the whole DER of the first element, header included.
    pub signed: &'a [u8],
    /// The contents of the AlgorithmIdentifier SEQUENCE (rustls-pki-types' encoding).
    pub algorithm: &'a [u8],
    pub signature: &'a [u8],
}

impl<'a> Signed<'a> {
    pub fn split(der: &'a [u8]) -> Option<Signed<'a>> {
        let (rest, outer) = Any::from_der(der).ok()?;
        if !rest.is_empty() || outer.tag() != Tag::Sequence {
            return None;
        }
        let (after_signed, _) = Any::from_der(outer.data).ok()?;
        let signed = &outer.data[..outer.data.len() - after_signed.len()];
        let (after_algorithm, algorithm) = Any::from_der(after_signed).ok()?;
        let (end, signature) = Any::from_der(after_algorithm).ok()?;
        if !end.is_empty() || algorithm.tag() != Tag::Sequence || signature.tag() != Tag::BitString {
            return None;
        }
        // A signature is a whole number of bytes: no unused bits.
        let signature = match signature.data.split_first() {
            Some((0, bytes)) => bytes,
            _ => return None,
        };
        Some(Signed { signed, algorithm: algorithm.data, signature })
    }
}

/// A public key as the signature algorithms take it.
pub(crate) struct PublicKey<'a> {
    /// The contents of the SubjectPublicKeyInfo's AlgorithmIdentifier SEQUENCE.
    pub algorithm: &'a [u8],
    /// The subjectPublicKey bits (no unused-bits byte).
    pub key: &'a [u8],
}

impl<'a> PublicKey<'a> {
    /// From the DER of a SubjectPublicKeyInfo.
    pub fn from_spki(spki: &'a [u8]) -> Option<PublicKey<'a>> {
        let (rest, outer) = Any::from_der(spki).ok()?;
        if !rest.is_empty() || outer.tag() != Tag::Sequence {
            return None;
        }
        let (after_algorithm, algorithm) = Any::from_der(outer.data).ok()?;
        let (end, key) = Any::from_der(after_algorithm).ok()?;
        if !end.is_empty() || algorithm.tag() != Tag::Sequence || key.tag() != Tag::BitString {
            return None;
        }
        match key.data.split_first() {
            Some((0, key)) => Some(PublicKey { algorithm: algorithm.data, key }),
            _ => None,
        }
    }
}

/// Checks that `signed` was signed by the holder of `signer`, with an algorithm the provider
/// supports for certificates.
pub(crate) fn verify_signed(
    signed: &Signed<'_>,
    signer: &PublicKey<'_>,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), Error> {
    let mut algorithm_known = false;
    for algorithm in algorithms.all {
        if algorithm.signature_alg_id().as_ref() != signed.algorithm {
            continue;
        }
        algorithm_known = true;
        if algorithm.public_key_alg_id().as_ref() != signer.algorithm {
            continue;
        }
        return algorithm
            .verify_signature(signer.key, signed.signed, signed.signature)
            .map_err(|_| CertificateError::BadSignature.into());
    }
    Err(if algorithm_known {
        CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
            signature_algorithm_id: signed.algorithm.to_vec(),
            public_key_algorithm_id: signer.algorithm.to_vec(),
        }
        .into()
    } else {
        CertificateError::UnsupportedSignatureAlgorithmContext {
            signature_algorithm_id: signed.algorithm.to_vec(),
            supported_algorithms: algorithms.all.iter().map(|a| a.signature_alg_id()).collect(),
        }
        .into()
    })
}

/// A TLS handshake signature made with the key of a certificate webpki cannot parse (version 1).
/// TLS 1.2 names only the hash and signature family, so every algorithm of the provider mapped to
/// the scheme and matching the key's type is tried, as rustls does.
pub(crate) fn verify_handshake(
    message: &[u8],
    spki: &[u8],
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<rustls::client::danger::HandshakeSignatureValid, Error> {
    if tls13 {
        return rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki),
            dss,
            algorithms,
        );
    }
    let key = PublicKey::from_spki(spki).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, candidates)| *candidates)
        .ok_or(Error::PeerMisbehaved(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme))?;
    for algorithm in candidates {
        if algorithm.public_key_alg_id().as_ref() != key.algorithm {
            continue;
        }
        return algorithm
            .verify_signature(key.key, message, dss.signature())
            .map(|_| rustls::client::danger::HandshakeSignatureValid::assertion())
            .map_err(|_| CertificateError::BadSignature.into());
    }
    Err(crate::Refusal::SchemeDoesNotFitKey.into())
}
