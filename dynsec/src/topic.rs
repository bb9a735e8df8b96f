//! MQTT string and topic rules exactly as mosquitto applies them: the UTF-8 check behind every
//! "… not valid UTF-8" error, filter and topic syntax checks, and the two reference matchers
//! (topic against filter, and 2.0's filter against ACL filter). The compiled ACL structure in
//! [`crate::acl`] must agree with these matchers; property tests hold it to that.

/// mosquitto's `TOPIC_HIERARCHY_LIMIT`: at most this many `/` separators in a topic or filter.
pub const TOPIC_HIERARCHY_LIMIT: usize = 200;

/// `mosquitto_validate_utf8`: well-formed UTF-8 of at most 65536 bytes without NUL, C0/C1
/// control characters or Unicode non-characters.
pub fn valid_mqtt_utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > 65536 {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?;
    let forbidden = |c: char| {
        let cp = c as u32;
        cp <= 0x1F
            || (0x7F..=0x9F).contains(&cp)
            || (0xFDD0..=0xFDEF).contains(&cp)
            || (cp & 0xFFFF) == 0xFFFE
            || (cp & 0xFFFF) == 0xFFFF
    };
    if s.chars().any(forbidden) { None } else { Some(s) }
}

/// `mosquitto_sub_topic_check`: `+` and `#` only as whole levels, `#` only last, length and
/// depth limits. The empty string passes (mosquitto stores an empty ACL topic).
pub fn valid_filter(filter: &str) -> bool {
    if filter.len() > 65535 || filter.matches('/').count() > TOPIC_HIERARCHY_LIMIT {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        if level.contains('#') {
            *level == "#" && i == last
        } else if level.contains('+') {
            *level == "+"
        } else {
            true
        }
    })
}

/// `mosquitto_pub_topic_check` plus the MQTT rule that a topic name is not empty.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 65535
        && !topic.contains(['+', '#'])
        && topic.matches('/').count() <= TOPIC_HIERARCHY_LIMIT
}

/// `mosquitto_topic_matches_sub`: does `topic` (concrete) match `filter`? Invalid filters and
/// empty inputs never match; a filter starting with a wildcard never matches a `$` topic.
pub fn topic_matches_filter(filter: &str, topic: &str) -> bool {
    if filter.is_empty() || topic.is_empty() || !valid_filter(filter) || topic.contains(['+', '#']) {
        return false;
    }
    if filter.starts_with('$') != topic.starts_with('$') {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Splits a filter the way 2.0's `sub_acl_check` sees it: a trailing `#` or `/#` is removed and
/// reported, and what is left is split into levels (the empty remainder is one empty level).
pub fn split_hash(filter: &str) -> (Vec<&str>, bool) {
    let (rest, hash) = if filter == "#" {
        ("", true)
    } else if let Some(rest) = filter.strip_suffix("/#") {
        (rest, true)
    } else {
        (filter, false)
    };
    (rest.split('/').collect(), hash)
}

/// mosquitto 2.0's `sub_acl_check`: may a client holding the pattern ACL `acl` subscribe to
/// `requested`? Filter against filter: ACL `#` covers every filter (even `$SYS/#`), ACL `+`
/// covers any one level including a literal `+`, a requested `#` needs an ACL ending in `#`.
pub fn acl_covers_filter(acl: &str, requested: &str) -> bool {
    if acl == "#" {
        return true;
    }
    let (acl_levels, acl_hash) = split_hash(acl);
    let (sub_levels, sub_hash) = split_hash(requested);
    if sub_hash && !acl_hash {
        return false;
    }
    if acl_levels.len() > sub_levels.len() || (sub_levels.len() > acl_levels.len() && !acl_hash) {
        return false;
    }
    acl_levels.iter().zip(&sub_levels).all(|(a, s)| *a == "+" || a == s)
}

/// Is `filter` a valid subscription filter (shared subscriptions included)?
pub fn valid_subscription_filter(filter: &str) -> bool {
    if filter.is_empty() || !valid_filter(filter) {
        return false;
    }
    match filter.strip_prefix("$share/") {
        None => filter != "$share",
        Some(rest) => match rest.split_once('/') {
            Some((group, path)) => !group.is_empty() && !group.contains(['+', '#']) && !path.is_empty(),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_rules() {
        assert!(valid_mqtt_utf8("héllo/wörld".as_bytes()).is_some());
        for bad in [
            &b"a\x00"[..],
            b"\x01",
            b"\x7f",
            "\u{85}".as_bytes(),
            "\u{FDD0}".as_bytes(),
            "\u{FFFF}".as_bytes(),
            "\u{1FFFE}".as_bytes(),
            b"\xff",
            b"\xc0\x80",
        ] {
            assert!(valid_mqtt_utf8(bad).is_none(), "{bad:?}");
        }
        assert!(valid_mqtt_utf8(&vec![b'a'; 65536]).is_some());
        assert!(valid_mqtt_utf8(&vec![b'a'; 65537]).is_none());
    }

    #[test]
    fn filter_syntax() {
        for ok in ["", "#", "+", "a/+/b", "a/#", "/", "+/+", "$SYS/#", "$share/g/a/#"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["a/#/b", "a+", "+a", "a/b#", "##", "a/++"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_filter(&"a/".repeat(200)));
        assert!(!valid_filter(&"a/".repeat(201)));
    }

    #[test]
    fn topic_matching() {
        let cases = [
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/+", "a/b", true),
            ("a/+", "a", false),
            ("a/+/#", "a/b", true),
            ("+/+", "/", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/b/", false),
            ("a/#/b", "a/x/b", false),
            ("", "a", false),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(topic_matches_filter(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn filter_coverage_2_0_semantics() {
        let cases = [
            ("#", "$SYS/#", true),
            ("#", "$CONTROL/#", true),
            ("#", "$share/g/a", true),
            ("foo/+", "foo/+", true),
            ("foo/+", "foo/#", false),
            ("a/#", "a", true),
            ("a/#", "a/b", true),
            ("a/#", "a/+/c", true),
            ("a/#", "a/#", true),
            ("t/#", "$share/g/t/#", false),
            ("+/#", "#", true),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a", "a/b", false),
        ];
        for (acl, sub, expected) in cases {
            assert_eq!(acl_covers_filter(acl, sub), expected, "{acl} covers {sub}");
        }
    }
}
