//! Byte-string helpers with the C library semantics mosquitto_ctrl and mosquitto_passwd rely on.
//!
//! Command-line words are handled as bytes (not `String`) so that a name which is not valid UTF-8
//! reaches the broker unchanged, exactly as mosquitto_ctrl sends it, and the broker's own
//! "not valid UTF-8" error is what the user sees.

/// glibc `atoi`: optional leading whitespace and sign, then digits; stops at the first other byte.
/// Values beyond `long` saturate (strtol) and are then truncated to `int`, as the C cast does.
pub fn atoi(bytes: &[u8]) -> i32 {
    let mut rest = bytes;
    while let [b, tail @ ..] = rest {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            rest = tail;
        } else {
            break;
        }
    }
    let negative = match rest.first() {
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        _ => false,
    };
    let mut value: i64 = 0;
    for &b in rest.iter().take_while(|b| b.is_ascii_digit()) {
        let digit = i64::from(b - b'0');
        value = if negative {
            value.saturating_mul(10).saturating_sub(digit)
        } else {
            value.saturating_mul(10).saturating_add(digit)
        };
    }
    value as i32
}

/// `strcasecmp(a, b) == 0` for ASCII.
pub fn eq_ignore_case(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// For messages and host names: bytes shown as text, invalid sequences replaced.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_matches_glibc() {
        assert_eq!(atoi(b"42"), 42);
        assert_eq!(atoi(b"  -7x"), -7);
        assert_eq!(atoi(b"+3"), 3);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b""), 0);
        assert_eq!(atoi(b"4294967297"), 1);
        assert_eq!(atoi(b"99999999999999999999999"), -1);
        assert_eq!(atoi(b"-99999999999999999999999"), 0);
    }
}
