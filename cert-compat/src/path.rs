//! The certification path of a version 1 end-entity certificate, which webpki refuses to parse
//! and OpenSSL accepts: the end entity's validity, a chain of signatures through the peer's
//! intermediates to one of the trust anchors, the CA checks OpenSSL makes on every certificate
//! above the end entity, and the end entity's revocation status when CRLs are given.
//!
//! Only the end entity may be version 1; an intermediate must be a v3 CA (OpenSSL's rule), and
//! a trust anchor either a v3 CA or a self-issued v1 root. Anything this module does not
//! understand is refused: name constraints and unknown critical extensions above a v1 end
//! entity, unparseable certificates and CRLs.

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, Error};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::X509Version;

use crate::Refusal;
use crate::signed::{PublicKey, Signed, verify_signed};

/// At most this many intermediates between an end entity and its anchor (webpki allows 6).
const MAX_INTERMEDIATES: usize = 6;

/// What the end-entity certificate is used for; CAs with an extendedKeyUsage must allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    ClientAuth,
    ServerAuth,
}

/// Everything a path check needs besides the peer's certificates.
pub(crate) struct PathPolicy<'p> {
    pub anchors: &'p [CertificateDer<'static>],
    /// `None`: revocation is not checked. `Some`: the end entity must be covered by a CRL of its issuer.
    pub crls: Option<&'p [CertificateRevocationListDer<'static>]>,
    pub purpose: Purpose,
    pub algorithms: &'p WebPkiSupportedAlgorithms,
}

/// A parsed certificate with its DER.
struct Parsed<'a> {
    cert: X509Certificate<'a>,
    der: &'a [u8],
}

fn parse(der: &[u8]) -> Option<Parsed<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(Parsed { cert, der }),
        _ => None,
    }
}

/// Verifies the path of `end_entity` (already parsed, version 1) at `now`.
pub(crate) fn verify_v1_end_entity(
    end_entity: &X509Certificate<'_>,
    end_entity_der: &[u8],
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    policy: &PathPolicy<'_>,
) -> Result<(), Error> {
    check_validity(end_entity, now)?;
    let anchors: Vec<Parsed<'_>> = policy.anchors.iter().filter_map(|der| parse(der.as_ref())).collect();
    // Unparseable intermediates cannot be part of a path; OpenSSL would not use them either.
    let intermediates: Vec<Parsed<'_>> = intermediates.iter().filter_map(|der| parse(der.as_ref())).collect();
    let search = Search { anchors: &anchors, intermediates: &intermediates, now, policy };
    let issuer = search.issuer_path(end_entity, end_entity_der, 0, &mut Vec::new())?;
    if let Some(crls) = policy.crls {
        check_revocation(end_entity, issuer, crls, policy.algorithms)?;
    }
    Ok(())
}

struct Search<'s, 'a> {
    anchors: &'s [Parsed<'a>],
    intermediates: &'s [Parsed<'a>],
    now: UnixTime,
    policy: &'s PathPolicy<'s>,
}

impl<'s, 'a> Search<'s, 'a> {
    /// Finds a valid path from `child` to an anchor; returns `child`'s issuer on that path.
    /// `below` is the number of intermediates already between `child` and the end entity.
    fn issuer_path(
        &self,
        child: &X509Certificate<'_>,
        child_der: &[u8],
        below: usize,
        used: &mut Vec<usize>,
    ) -> Result<&'s X509Certificate<'a>, Error> {
        let signed = Signed::split(child_der).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let issuer_name = child.issuer().as_raw();
        let mut refusal: Error = CertificateError::UnknownIssuer.into();
        for anchor in self.anchors.iter().filter(|a| a.cert.subject().as_raw() == issuer_name) {
            match self.check_issuer(&anchor.cert, true, below).and_then(|()| verify_by(&signed, &anchor.cert, self)) {
                Ok(()) => return Ok(&anchor.cert),
                Err(error) => refusal = error,
            }
        }
        if below >= MAX_INTERMEDIATES {
            return Err(refusal);
        }
        for (index, intermediate) in self.intermediates.iter().enumerate() {
            if used.contains(&index) || intermediate.cert.subject().as_raw() != issuer_name {
                continue;
            }
            let found = self.check_issuer(&intermediate.cert, false, below).and_then(|()| {
                verify_by(&signed, &intermediate.cert, self)?;
                used.push(index);
                let above = self.issuer_path(&intermediate.cert, intermediate.der, below + 1, used);
                used.pop();
                above.map(|_| ())
            });
            match found {
                Ok(()) => return Ok(&intermediate.cert),
                Err(error) => refusal = error,
            }
        }
        Err(refusal)
    }

    /// OpenSSL's checks of a certificate that issues another one.
    fn check_issuer(&self, cert: &X509Certificate<'_>, anchor: bool, below: usize) -> Result<(), Error> {
        check_validity(cert, self.now)?;
        if cert.version() != X509Version::V3 {
            // Only a self-issued v1 root in the trust store counts as a CA.
            let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
            return if anchor && self_issued { Ok(()) } else { Err(Refusal::IssuerIsNotCa.into()) };
        }
        for extension in cert.extensions() {
            let understood = extension.oid == OID_X509_EXT_BASIC_CONSTRAINTS
                || extension.oid == OID_X509_EXT_KEY_USAGE
                || extension.oid == OID_X509_EXT_EXTENDED_KEY_USAGE;
            if extension.critical && !understood {
                return Err(CertificateError::UnhandledCriticalExtension.into());
            }
        }
        if !matches!(cert.name_constraints(), Ok(None)) {
            return Err(Refusal::NameConstraints.into());
        }
        let key_usage = cert.key_usage().map_err(|_| CertificateError::BadEncoding)?;
        if key_usage.as_ref().is_some_and(|usage| !usage.value.key_cert_sign()) {
            return Err(Refusal::IssuerIsNotCa.into());
        }
        match cert.basic_constraints().map_err(|_| CertificateError::BadEncoding)? {
            Some(constraints) if constraints.value.ca => {
                if constraints.value.path_len_constraint.is_some_and(|limit| (below as u64) > u64::from(limit)) {
                    return Err(Refusal::PathTooLong.into());
                }
            }
            Some(_) => return Err(Refusal::IssuerIsNotCa.into()),
            // OpenSSL lets a trust anchor without basicConstraints sign when its keyUsage allows it.
            None if anchor && key_usage.is_some() => {}
            None => return Err(Refusal::IssuerIsNotCa.into()),
        }
        if let Some(usage) = cert.extended_key_usage().map_err(|_| CertificateError::BadEncoding)? {
            let allowed = match self.policy.purpose {
                Purpose::ClientAuth => usage.value.client_auth,
                Purpose::ServerAuth => usage.value.server_auth,
            };
            if !allowed {
                return Err(CertificateError::InvalidPurpose.into());
            }
        }
        Ok(())
    }
}

fn verify_by(signed: &Signed<'_>, issuer: &X509Certificate<'_>, search: &Search<'_, '_>) -> Result<(), Error> {
    let key = PublicKey::from_spki(issuer.public_key().raw).ok_or(CertificateError::BadEncoding)?;
    verify_signed(signed, &key, search.policy.algorithms)
}

fn check_validity(cert: &X509Certificate<'_>, now: UnixTime) -> Result<(), Error> {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(CertificateError::NotValidYet.into());
    }
    if now > validity.not_after.timestamp() {
        return Err(CertificateError::Expired.into());
    }
    Ok(())
}

/// The end entity must be covered by a CRL of its issuer, correctly signed, that does not list
/// its serial number; like webpki's default, a CRL past its next update still counts.
fn check_revocation(
    end_entity: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    crls: &[CertificateRevocationListDer<'static>],
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), Error> {
    let issuer_key = PublicKey::from_spki(issuer.public_key().raw).ok_or(CertificateError::BadEncoding)?;
    let may_sign_crls = match issuer.key_usage() {
        Ok(Some(usage)) => usage.value.crl_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    for der in crls {
        let Ok((_, crl)) = CertificateRevocationList::from_der(der.as_ref()) else {
            continue;
        };
        if crl.issuer().as_raw() != end_entity.issuer().as_raw() || !may_sign_crls {
            continue;
        }
        let Some(signed) = Signed::split(der.as_ref()) else {
            continue;
        };
        if verify_signed(&signed, &issuer_key, algorithms).is_err() {
            continue;
        }
        let serial = end_entity.raw_serial();
        if crl.iter_revoked_certificates().any(|revoked| revoked.raw_serial() == serial) {
            return Err(CertificateError::Revoked.into());
        }
        return Ok(());
    }
    Err(CertificateError::UnknownRevocationStatus.into())
}
