//! Topic names (PUBLISH) and topic filters (SUBSCRIBE, UNSUBSCRIBE): MQTT
//! 3.1.1 §4.7, MQTT 5.0 §4.7 and §4.8.2 (shared subscriptions).

use super::read::valid_utf8;

/// The prefix of a shared subscription's filter: `$share/{group}/{filter}`.
pub const SHARE_PREFIX: &[u8] = b"$share/";

/// Topic name valid for PUBLISH: non-empty (unless a v5 topic alias
/// supplies it; the caller handles that), no '+' or '#', no U+0000, UTF-8.
pub fn valid_topic_name(t: &[u8]) -> bool {
    // [MQTT-4.7.3-1] "All Topic Names and Topic Filters MUST be at least one
    // character long"; [MQTT-3.3.2-2] "The Topic Name in the PUBLISH Packet
    // MUST NOT contain wildcard characters"; [MQTT-4.7.3-2] no U+0000.
    !t.is_empty()
        && t.len() <= usize::from(u16::MAX)
        && !t.contains(&b'+')
        && !t.contains(&b'#')
        && valid_utf8(t)
}

/// Topic filter valid for SUBSCRIBE/UNSUBSCRIBE: non-empty, '+' occupies a
/// whole level, '#' only as the whole last level, no U+0000, UTF-8.
/// (`$share/{group}/{filter}`: group non-empty without '/', '+', '#';
/// filter valid — these are accepted.)
pub fn valid_topic_filter(t: &[u8]) -> bool {
    if t.len() > usize::from(u16::MAX) || !valid_utf8(t) {
        return false;
    }
    match t.strip_prefix(SHARE_PREFIX) {
        Some(rest) => {
            // [MQTT-4.8.2-1] "A Shared Subscription's Topic Filter MUST start
            // with $share/ and MUST contain a ShareName that is at least one
            // character long"; [MQTT-4.8.2-2] "The ShareName MUST NOT contain
            // the characters "/", "+" or "#", but MUST be followed by a "/"
            // character. This "/" character MUST be followed by a Topic
            // Filter".
            let Some(slash) = rest.iter().position(|&b| b == b'/') else {
                return false;
            };
            let (group, filter) = rest.split_at(slash);
            let filter = filter.get(1..).unwrap_or_default();
            !group.is_empty()
                && !group.contains(&b'+')
                && !group.contains(&b'#')
                && plain_filter(filter)
        }
        None => plain_filter(t),
    }
}

/// A topic filter without the shared-subscription prefix.
fn plain_filter(t: &[u8]) -> bool {
    // [MQTT-4.7.3-1] at least one character long
    if t.is_empty() {
        return false;
    }
    let mut levels = t.split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        // [MQTT-4.7.1-3] "The single-level wildcard can be used at any level
        // in the Topic Filter, including first and last levels. Where it is
        // used it MUST occupy an entire level of the filter".
        if level.contains(&b'+') && level != b"+" {
            return false;
        }
        // [MQTT-4.7.1-2] "The multi-level wildcard character MUST be
        // specified either on its own or following a topic level separator.
        // In either case it MUST be the last character specified in the
        // Topic Filter".
        if level.contains(&b'#') && (level != b"#" || levels.peek().is_some()) {
            return false;
        }
    }
    true
}
