//! RabbitMQ's mapping between MQTT topics and AMQP routing keys (`/` ⇄
//! `.`, `+` ⇄ `*`, `#` ⇄ `#`), and MQTT's own filter matching (which
//! subscriptions of a session a delivered topic matches: its granted QoS,
//! subscription identifiers, no-local, retain-as-published).

use bytes::{BufMut, Bytes, BytesMut};

/// An MQTT topic name or filter as an AMQP routing or binding key: `/`
/// and `.` swap places (RabbitMQ's mapping, so a `.` in a topic survives
/// the trip), `+` becomes `*`.
pub fn to_key(topic: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(topic.len());
    for &b in topic {
        out.put_u8(match b {
            b'/' => b'.',
            b'.' => b'/',
            b'+' => b'*',
            b => b,
        });
    }
    out.freeze()
}

/// A routing key as an MQTT topic name (the inverse of [`to_key`] for
/// names; an AMQP key's `*` is kept: it is not a wildcard in a name).
pub fn to_topic(key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(key.len());
    for &b in key {
        out.put_u8(match b {
            b'.' => b'/',
            b'/' => b'.',
            b => b,
        });
    }
    out.freeze()
}

/// True when topic name `topic` matches filter `filter` (MQTT §4.7: `+`
/// one level, `#` this level and all below, including the parent; a
/// topic starting with `$` is not matched by a filter starting with a
/// wildcard).
pub fn matches(filter: &[u8], topic: &[u8]) -> bool {
    if topic.first() == Some(&b'$') && matches!(filter.first(), Some(b'+' | b'#')) {
        return false;
    }
    let mut f = filter.split(|&b| b == b'/');
    let mut t = topic.split(|&b| b == b'/');
    loop {
        match (f.next(), t.next()) {
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A shared subscription's group and filter (`$share/{group}/{filter}`).
pub fn shared(filter: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = filter.strip_prefix(b"$share/")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    Some((rest.get(..slash)?, rest.get(slash + 1..)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_rabbitmqs() {
        assert_eq!(&to_key(b"sensors/+/temp")[..], b"sensors.*.temp");
        assert_eq!(&to_key(b"a/#")[..], b"a.#");
        assert_eq!(&to_key(b"v1.2/x")[..], b"v1/2.x");
        assert_eq!(&to_topic(b"sensors.room1.temp")[..], b"sensors/room1/temp");
        assert_eq!(&to_topic(&to_key(b"a.b/c")[..])[..], b"a.b/c");
    }

    #[test]
    fn filters_match_as_the_spec_says() {
        assert!(matches(b"a/+/c", b"a/b/c"));
        assert!(!matches(b"a/+/c", b"a/b/d"));
        assert!(matches(b"a/#", b"a"));
        assert!(matches(b"a/#", b"a/b/c"));
        assert!(matches(b"#", b"x/y"));
        assert!(!matches(b"#", b"$SYS/x"));
        assert!(!matches(b"+/x", b"$SYS/x"));
        assert!(matches(b"$SYS/#", b"$SYS/x"));
        assert!(matches(b"+", b""));
        assert!(!matches(b"a", b"a/b"));
        assert!(matches(b"a//b", b"a//b"));
        assert!(matches(b"+/+", b"/x"));
    }

    #[test]
    fn shared_filters_split() {
        assert_eq!(shared(b"$share/g/a/b"), Some((&b"g"[..], &b"a/b"[..])));
        assert_eq!(shared(b"$share/g"), None);
        assert_eq!(shared(b"a/b"), None);
    }
}
