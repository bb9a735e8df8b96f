//! The host name check of mosquitto's clients (libmosquitto, so mosquitto_pub/sub/ctrl), for the
//! server certificates webpki finds no name in: when a certificate has no DNS name in its
//! subjectAltName, the host the client connected to must match the subject's common name.
//!
//! Matching is ASCII case-insensitive. A CN of the form `*.rest` matches a host whose first label
//! is followed by exactly `rest`. A certificate that lists DNS names is judged by them alone
//! (webpki has already done so), as libmosquitto does.

use rustls_pki_types::ServerName;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Whether the certificate's CN names `server` and the certificate lists no DNS name.
pub(crate) fn common_name_matches(cert: &X509Certificate<'_>, server: &ServerName<'_>) -> bool {
    if lists_dns_names(cert) {
        return false;
    }
    let host = match server {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        ServerName::IpAddress(address) => std::net::IpAddr::from(*address).to_string(),
        _ => return false,
    };
    // libmosquitto reads the first CN only.
    let Some(common_name) = cert.subject().iter_common_name().next() else {
        return false;
    };
    let Ok(common_name) = common_name.as_str() else {
        return false;
    };
    name_matches(common_name, &host)
}

fn lists_dns_names(cert: &X509Certificate<'_>) -> bool {
    match cert.subject_alternative_name() {
        Ok(Some(names)) => names.value.general_names.iter().any(|name| matches!(name, GeneralName::DNSName(_))),
        Ok(None) => false,
        // An unreadable subjectAltName: do not guess what it lists.
        Err(_) => true,
    }
}

fn name_matches(certificate_name: &str, host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    match certificate_name.strip_prefix('*') {
        None => certificate_name.eq_ignore_ascii_case(host),
        Some(rest) => {
            let Some(suffix) = rest.strip_prefix('.') else {
                return false;
            };
            match host.split_once('.') {
                Some((first_label, host_rest)) => !first_label.is_empty() && suffix.eq_ignore_ascii_case(host_rest),
                None => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn exact_names_ignore_ascii_case() {
        assert!(name_matches("localhost", "localhost"));
        assert!(name_matches("Broker.Example.COM", "broker.example.com"));
        assert!(name_matches("127.0.0.1", "127.0.0.1"));
        assert!(!name_matches("localhost", "localhost2"));
        assert!(!name_matches("localhost", ""));
    }

    #[test]
    fn a_wildcard_covers_one_leading_label() {
        assert!(name_matches("*.example.com", "broker.example.com"));
        assert!(!name_matches("*.example.com", "a.broker.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(!name_matches("*example.com", "broker.example.com"));
        assert!(!name_matches("*.localhost", "localhost"));
    }
}
