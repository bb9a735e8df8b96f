//! Test certificates made with `rcgen` in a directory of the test's own: a CA, a server
//! certificate for `localhost` and 127.0.0.1, client certificates (valid, expired, revoked, signed
//! by another CA, without a CN) and a CRL. Every file is PEM, readable by OpenSSL (mosquitto and
//! its clients) and rustls alike.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType,
    SerialNumber, date_time_ymd,
};

/// The subject of the valid client certificate, in encoding order (C, O, CN), so that mosquitto
/// prints it as `CN=certuser,O=Test Org,C=GB`.
pub const CLIENT_CN: &str = "certuser";
pub const CLIENT_SUBJECT_RFC2253: &str = "CN=certuser,O=Test Org,C=GB";

/// Paths of the generated files.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    /// A second, unrelated CA (signs `untrusted.pem` and `server2.pem`).
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }
    /// A client certificate/key pair by stem: `client`, `expired`, `untrusted`, `revoked`, `nocn`.
    pub fn client(&self, stem: &str) -> (PathBuf, PathBuf) {
        (self.path(&format!("{stem}.pem")), self.path(&format!("{stem}.key")))
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2090, 1, 1);
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

fn leaf_params(dn: &[(DnType, &str)], serial: u64, server: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    for (kind, value) in dn {
        name.push(kind.clone(), *value);
    }
    params.distinguished_name = name;
    params.serial_number = Some(SerialNumber::from(serial));
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2090, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    if server {
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("dns name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    params
}

fn write(dir: &Path, stem: &str, cert_pem: &str, key: &KeyPair) {
    fs::write(dir.join(format!("{stem}.pem")), cert_pem).expect("write certificate");
    fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write key");
}

fn issue(
    dir: &Path,
    stem: &str,
    params: CertificateParams,
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> CertificateParams {
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    write(dir, stem, &cert.pem(), &key);
    params
}

/// Generates every file in `dir`:
/// `ca.pem`, `other-ca.pem`, `server.pem/.key` (localhost + 127.0.0.1, by the CA), `server2.pem/.key`
/// (same names, by the other CA), `client.pem/.key` (C=GB, O=Test Org, CN=certuser), `expired`,
/// `revoked` (listed in `crl.pem`), `untrusted` (by the other CA), `nocn` (no common name),
/// and `crl.pem` (by the CA, revoking `revoked`).
pub fn generate(dir: &Path) -> TestPki {
    fs::create_dir_all(dir).expect("create the certificate directory");
    let ca = CertifiedIssuer::self_signed(ca_params("Test CA"), KeyPair::generate().expect("key")).expect("CA");
    fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
    let other = CertifiedIssuer::self_signed(ca_params("Other CA"), KeyPair::generate().expect("key")).expect("CA");
    fs::write(dir.join("other-ca.pem"), other.pem()).expect("write CA");

    issue(dir, "server", leaf_params(&[(DnType::CommonName, "localhost")], 10, true), &ca);
    issue(dir, "server2", leaf_params(&[(DnType::CommonName, "localhost")], 11, true), &other);
    let subject =
        [(DnType::CountryName, "GB"), (DnType::OrganizationName, "Test Org"), (DnType::CommonName, CLIENT_CN)];
    issue(dir, "client", leaf_params(&subject, 20, false), &ca);
    let mut expired = leaf_params(&[(DnType::CommonName, "expireduser")], 21, false);
    expired.not_before = date_time_ymd(2015, 1, 1);
    expired.not_after = date_time_ymd(2016, 1, 1);
    issue(dir, "expired", expired, &ca);
    issue(dir, "revoked", leaf_params(&[(DnType::CommonName, "revokeduser")], 22, false), &ca);
    issue(dir, "untrusted", leaf_params(&[(DnType::CommonName, CLIENT_CN)], 23, false), &other);
    issue(dir, "nocn", leaf_params(&[(DnType::OrganizationName, "No Name Org")], 24, false), &ca);

    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2021, 1, 1),
        next_update: date_time_ymd(2089, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(22u64),
            revocation_time: date_time_ymd(2021, 1, 1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca)
    .expect("CRL");
    fs::write(dir.join("crl.pem"), crl.pem().expect("CRL PEM")).expect("write CRL");
    TestPki { dir: dir.to_path_buf() }
}
