//! TLS handshake failures in words for log lines. rustls's own messages show some causes in
//! Rust's debug notation (`invalid peer certificate: Other(OtherError(UnsupportedCertVersion))`,
//! `received fatal alert: BadCertificate`); an operator reading the broker's log should see
//! `unsupported cert version` and `bad certificate` instead.

/// What went wrong in a failed handshake (the error `tokio_rustls` returned).
pub fn handshake_error_text(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cause)) => {
            // Most causes are shown by their bare variant name (`UnknownIssuer`).
            let text = cause.to_string();
            let text = match text.chars().all(char::is_alphanumeric) {
                true => camel_case_words(&text),
                false => without_debug_notation(&text),
            };
            format!("invalid peer certificate: {text}")
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("received fatal alert: {}", camel_case_words(&format!("{alert:?}")))
        }
        Some(rustls::Error::NoCertificatesPresented) => "the client sent no certificate".to_owned(),
        Some(other) => without_debug_notation(&other.to_string()),
        None => without_debug_notation(&error.to_string()),
    }
}

/// Replaces every `Name(...)` or `Name { ... }` in `text` by the words of the innermost name
/// (`Other(OtherError(UnsupportedCertVersion))` → `unsupported cert version`).
pub fn without_debug_notation(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_name = chars[i].is_ascii_uppercase() && (i == 0 || !chars[i - 1].is_alphanumeric());
        if starts_name {
            let name_end = (i..chars.len()).find(|&j| !chars[j].is_alphanumeric() && chars[j] != '_');
            let opener = name_end.and_then(|end| match chars.get(end) {
                Some('(') => Some((end, '(', ')')),
                Some(' ') if chars.get(end + 1) == Some(&'{') => Some((end + 1, '{', '}')),
                _ => None,
            });
            if let Some((open_at, open, close)) = opener
                && let Some(close_at) = matching(&chars, open_at, open, close)
            {
                let span: String = chars[i..=close_at].iter().collect();
                out.push_str(&camel_case_words(innermost_name(&span)));
                i = close_at + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The index of the bracket closing the one at `open_at`.
fn matching(chars: &[char], open_at: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (at, &c) in chars.iter().enumerate().skip(open_at) {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(at);
            }
        }
    }
    None
}

/// The last capitalised name in a debug-notation span.
fn innermost_name(span: &str) -> &str {
    span.split(|c: char| !c.is_alphanumeric() && c != '_')
        .rfind(|word| word.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .unwrap_or(span)
}

/// `UnsupportedCertVersion` → `unsupported cert version`.
fn camel_case_words(name: &str) -> String {
    let mut words = String::with_capacity(name.len() + 4);
    for (at, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && at > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_notation_becomes_words() {
        assert_eq!(
            without_debug_notation("invalid peer certificate: Other(OtherError(UnsupportedCertVersion))"),
            "invalid peer certificate: unsupported cert version"
        );
        assert_eq!(without_debug_notation("peer misbehaved: Thing { field: Inner }"), "peer misbehaved: inner");
        assert_eq!(without_debug_notation("certificate expired (UNIX)"), "certificate expired (UNIX)");
        assert_eq!(without_debug_notation("UnknownIssuer"), "UnknownIssuer", "a bare name is left alone");
        assert_eq!(camel_case_words("BadCertificate"), "bad certificate");
    }

    #[test]
    fn rustls_errors_are_described_in_words() {
        let error = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(handshake_error_text(&error), "invalid peer certificate: unknown issuer");
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        );
        assert_eq!(handshake_error_text(&alert), "received fatal alert: bad certificate");
    }
}
