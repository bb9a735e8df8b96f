//! A certificate chain with its private key, for the side that presents it (broker server
//! certificate, dynsec-ctrl client certificate). rustls checks that key and certificate belong
//! together by parsing the certificate with webpki, which refuses version 1 certificates; for
//! those the check compares the key's SubjectPublicKeyInfo with the one x509-parser reads.

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{Error, InconsistentKeys};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::verifier::parse_v1;

/// Like `CertifiedKey::from_der`, also for a version 1 end-entity certificate.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let v1_spki = chain.first().and_then(|der| parse_v1(der)).map(|cert| cert.public_key().raw.to_vec());
    let Some(end_entity_spki) = v1_spki else {
        return CertifiedKey::from_der(chain, key, provider);
    };
    let signing_key = provider.key_provider.load_private_key(key)?;
    // As rustls does: a key that cannot tell its public half is not refused.
    if let Some(key_spki) = signing_key.public_key()
        && key_spki.as_ref() != end_entity_spki.as_slice()
    {
        return Err(InconsistentKeys::KeyMismatch.into());
    }
    Ok(CertifiedKey::new(chain, signing_key))
}
