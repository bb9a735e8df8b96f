//! MQTT topics and filters as NATS subjects, and back.
//!
//! NATS splits subjects on `.`, gives `*` and `>` a meaning as whole tokens, forbids empty tokens
//! and whitespace. MQTT topic levels may hold all of these, be empty, start with `$` and contain
//! any UTF-8. So each level becomes one token written in a small alphabet: ASCII letters, digits
//! and `-` stand for themselves, every other byte is `_` and two upper-case hex digits, and an
//! empty level is a lone `_`. The mapping is total (every string has a subject) and reversible
//! (a subject decodes to exactly one topic), and it keeps levels as tokens, so MQTT wildcards map
//! onto NATS wildcards: `+` is `*`, and `#` is `>` plus the parent level itself (MQTT's `a/#`
//! matches `a`; NATS's `a.>` does not).

/// The subject of `topic` under `prefix` (`prefix` is plain NATS tokens, such as `dynsec.msg`).
pub fn topic_to_subject(prefix: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + topic.len() * 2 + 2);
    subject.push_str(prefix);
    for level in topic.split('/') {
        subject.push('.');
        push_level(&mut subject, level);
    }
    subject
}

fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('_');
        return;
    }
    for b in level.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('_');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The topic a subject under `prefix` stands for; `None` if it is not one [`topic_to_subject`]
/// could have written.
pub fn subject_to_topic(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut topic = Vec::with_capacity(rest.len());
    for (index, token) in rest.split('.').enumerate() {
        if index > 0 {
            topic.push(b'/');
        }
        if token == "_" {
            continue;
        }
        let bytes = token.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'_' => {
                    let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                    if hex.bytes().any(|h| h.is_ascii_lowercase()) {
                        return None;
                    }
                    let byte = u8::from_str_radix(hex, 16).ok()?;
                    if byte.is_ascii_alphanumeric() || byte == b'-' {
                        return None; // written plain, never escaped: not our spelling
                    }
                    topic.push(byte);
                    i += 3;
                }
                b if b.is_ascii_alphanumeric() || b == b'-' => {
                    topic.push(b);
                    i += 1;
                }
                _ => return None,
            }
        }
    }
    String::from_utf8(topic).ok()
}

/// The NATS subjects that together match what the MQTT `filter` matches (one, or two for a
/// trailing `#`). `$` topics are matched as MQTT says only by the receiving node's own matching;
/// these subjects may match more (a leading wildcard also matches `$` topics).
pub fn filter_to_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut subject = String::with_capacity(prefix.len() + filter.len() * 2 + 2);
    subject.push_str(prefix);
    let levels: Vec<&str> = filter.split('/').collect();
    for (index, level) in levels.iter().enumerate() {
        if *level == "#" && index + 1 == levels.len() {
            let parent = (index > 0).then(|| subject.clone());
            subject.push_str(".>");
            return parent.into_iter().chain(std::iter::once(subject)).collect();
        }
        subject.push('.');
        if *level == "+" {
            subject.push('*');
        } else {
            push_level(&mut subject, level);
        }
    }
    vec![subject]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: &str = "dynsec.msg";

    #[test]
    fn awkward_topics_become_valid_subjects() {
        let cases = [
            ("a/b", "dynsec.msg.a.b"),
            ("a.b c", "dynsec.msg.a_2Eb_20c"),
            ("/", "dynsec.msg._._"),
            ("a//b/", "dynsec.msg.a._.b._"),
            ("$SYS/x", "dynsec.msg._24SYS.x"),
            ("*/>", "dynsec.msg._2A._3E"),
            ("_", "dynsec.msg._5F"),
            ("é", "dynsec.msg._C3_A9"),
            ("", "dynsec.msg._"),
        ];
        for (topic, subject) in cases {
            assert_eq!(topic_to_subject(P, topic), subject, "{topic:?}");
            assert_eq!(subject_to_topic(P, subject).as_deref(), Some(topic), "{subject:?}");
        }
    }

    #[test]
    fn foreign_subjects_are_refused() {
        for subject in ["other.a", "dynsec.msg", "dynsec.msg.a_2e", "dynsec.msg.a_41", "dynsec.msg.a_", "dynsec.msg.a*"]
        {
            assert_eq!(subject_to_topic(P, subject), None, "{subject}");
        }
        // Not UTF-8 once decoded.
        assert_eq!(subject_to_topic(P, "dynsec.msg._FF"), None);
    }

    #[test]
    fn filters_become_wildcard_subjects() {
        assert_eq!(filter_to_subjects(P, "a/+/c"), ["dynsec.msg.a.*.c"]);
        assert_eq!(filter_to_subjects(P, "a/#"), ["dynsec.msg.a", "dynsec.msg.a.>"]);
        assert_eq!(filter_to_subjects(P, "#"), ["dynsec.msg.>"]);
        assert_eq!(filter_to_subjects(P, "+"), ["dynsec.msg.*"]);
        assert_eq!(filter_to_subjects(P, "a.b/#"), ["dynsec.msg.a_2Eb", "dynsec.msg.a_2Eb.>"]);
    }

    /// NATS's own rule for a literal subject matching a pattern, token by token.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), subject.split('.').collect());
        for (i, token) in p.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if s.get(i) == Some(&t) => {}
                _ => return false,
            }
        }
        p.len() == s.len()
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-c.$*> _é-]{1,4}"]
    }

    proptest! {
        #[test]
        fn every_topic_round_trips_through_a_valid_subject(levels in prop::collection::vec(level(), 1..5)) {
            let topic = levels.join("/");
            let subject = topic_to_subject(P, &topic);
            prop_assert!(subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"));
            prop_assert!(!subject.contains(char::is_whitespace));
            prop_assert_eq!(subject_to_topic(P, &subject), Some(topic));
        }

        #[test]
        fn filter_subjects_match_what_the_filter_matches(
            levels in prop::collection::vec(prop_oneof![Just("a".to_string()), Just("b".to_string()), Just(String::new())], 1..4),
            filter in prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just(""), Just("+")], 0..3),
            hash in any::<bool>(),
        ) {
            let topic = levels.join("/");
            let mut filter: Vec<&str> = filter;
            if hash { filter.push("#"); }
            if filter.is_empty() { filter.push("#"); }
            let filter = filter.join("/");
            // MQTT has neither an empty topic nor an empty filter.
            prop_assume!(!topic.is_empty() && !filter.is_empty());
            let mqtt = dynsec::topic::topic_matches_filter(&filter, &topic);
            let subject = topic_to_subject(P, &topic);
            let nats = filter_to_subjects(P, &filter).iter().any(|p| nats_matches(p, &subject));
            prop_assert_eq!(mqtt, nats, "filter {:?} topic {:?}", filter, topic);
        }
    }
}
