//! Users, password hashes and per-vhost permissions, checked where RabbitMQ
//! checks them. Passwords are stored as RabbitMQ's
//! `rabbit_password_hashing_sha256`: base64(salt ‖ sha256(salt ‖ password))
//! with a 4-byte random salt, so definitions exported from RabbitMQ import
//! unchanged. Permission patterns are regular expressions as RabbitMQ's
//! (Erlang's PCRE) reads them, look-around included (`^(?!amq\.).*`), so
//! the `fancy-regex` engine; topic permissions limit the routing keys a
//! user may publish with and bind with on topic exchanges.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use fancy_regex::Regex;
use sha2::{Digest, Sha256};

/// Name of the hashing algorithm in RabbitMQ definitions.
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// Standard base64 (RFC 4648 alphabet). Decoding is as lenient as
/// RabbitMQ's: padding optional, non-zero trailing bits accepted.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

/// Decode standard base64 (padding optional, ASCII whitespace such as
/// line breaks ignored); None on bad input.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|c| c.is_ascii_whitespace()) {
        let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        return B64.decode(compact).ok();
    }
    B64.decode(s).ok()
}

/// A fresh 4-byte salt from the operating system's random source
/// (`getrandom(2)`, or what the platform has instead). There is no fallback:
/// a salt from the clock would be guessable.
fn random_salt() -> Result<[u8; 4], String> {
    let mut salt = [0u8; 4];
    getrandom::fill(&mut salt).map_err(|e| {
        format!("cannot hash the password: the system's random source failed ({e})")
    })?;
    Ok(salt)
}

/// Hash a password the way RabbitMQ's sha256 scheme does, with a random
/// salt. Fails (and nothing should be stored) when no random salt can be had.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Ok(hash_with_salt(&random_salt()?, password))
}

fn hash_with_salt(salt: &[u8], password: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password);
    let mut all = salt.to_vec();
    all.extend_from_slice(&h.finalize());
    base64_encode(&all)
}

/// Check a password against a stored hash.
pub fn check_password(hash: &str, password: &[u8]) -> bool {
    match base64_decode(hash) {
        Some(raw) if raw.len() == 36 => {
            hash_with_salt(raw.get(..4).unwrap_or_default(), password) == hash
        }
        _ => false,
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Name.
    pub name: String,
    /// Password hash (empty: no password login).
    pub password_hash: String,
    /// Tags: administrator, management, monitoring, …
    pub tags: Vec<String>,
}

/// Configure / write / read patterns of a user in a vhost.
#[derive(Debug, Clone)]
pub struct Permission {
    /// Pattern source for configure.
    pub configure: Arc<str>,
    /// Pattern source for write.
    pub write: Arc<str>,
    /// Pattern source for read.
    pub read: Arc<str>,
    /// Shared by the connections that hold a copy: one regex (and one
    /// match cache) per pattern, not one per connection.
    compiled: [Option<Arc<Regex>>; 3],
}

/// The kind of access a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Declare / delete.
    Configure,
    /// Publish, bind destination.
    Write,
    /// Consume, get, purge, bind source.
    Read,
}

impl Access {
    #[cfg(any(test, feature = "testing"))]
    /// RabbitMQ's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

fn compile(p: &str) -> Result<Option<Regex>, String> {
    // RabbitMQ: the empty pattern is a synonym for '^$' (matches nothing).
    if p.is_empty() {
        return Ok(None);
    }
    Regex::new(p)
        .map(Some)
        .map_err(|e| format!("invalid regular expression '{p}': {e}"))
}

/// Does `re` match anywhere in `s`? (Unanchored, as RabbitMQ's `re:run`.) A
/// pattern that gives up (its backtracking limit) does not match, as PCRE's
/// match limit makes `re:run` fail.
fn matches(re: Option<&Regex>, s: &str) -> bool {
    re.is_some_and(|r| r.is_match(s).unwrap_or(false))
}

impl Permission {
    /// Compile the three patterns.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, String> {
        Ok(Permission {
            compiled: [
                compile(configure)?.map(Arc::new),
                compile(write)?.map(Arc::new),
                compile(read)?.map(Arc::new),
            ],
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        })
    }

    /// Does the pattern for `access` match `name`?
    pub fn allows(&self, access: Access, name: &str) -> bool {
        let i = match access {
            Access::Configure => 0,
            Access::Write => 1,
            Access::Read => 2,
        };
        self.compiled
            .get(i)
            .is_some_and(|re| matches(re.as_deref(), name))
    }
}

/// A user's topic permission on one exchange of a vhost: the routing keys
/// it may publish with (write) and bind with (read), as patterns that may
/// name `{username}` and `{vhost}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermission {
    /// Pattern source for publishing.
    pub write: String,
    /// Pattern source for binding.
    pub read: String,
}

impl TopicPermission {
    /// Check both patterns compile (with their variables as they stand).
    pub fn new(write: &str, read: &str) -> Result<TopicPermission, String> {
        compile(write)?;
        compile(read)?;
        Ok(TopicPermission {
            write: write.into(),
            read: read.into(),
        })
    }
}

/// Topic permissions resolved for one connection (user and vhost known, the
/// variables expanded, the patterns compiled): checked per publish to a
/// topic exchange without a lookup.
#[derive(Debug, Clone)]
pub struct TopicCheck {
    /// Exchange it applies to.
    pub exchange: Vec<u8>,
    /// Compiled write and read patterns.
    compiled: [Option<Regex>; 2],
}

impl TopicCheck {
    /// Resolve `p` for `user` in `vhost`.
    pub fn new(exchange: &str, p: &TopicPermission, user: &str, vhost: &str) -> TopicCheck {
        let expand = |pat: &str| pat.replace("{username}", user).replace("{vhost}", vhost);
        // A pattern that no longer compiles once expanded denies everything.
        let c = |pat: &str| compile(&expand(pat)).ok().flatten();
        TopicCheck {
            exchange: exchange.as_bytes().to_vec(),
            compiled: [c(&p.write), c(&p.read)],
        }
    }

    /// May `routing_key` be used for `access` (write: publish, read: bind)?
    pub fn allows(&self, access: Access, routing_key: &str) -> bool {
        let re = match access {
            Access::Write => &self.compiled[0],
            _ => &self.compiled[1],
        };
        matches(re.as_ref(), routing_key)
    }
}

/// Users and permissions.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Permissions by (user, vhost).
    pub permissions: BTreeMap<(String, String), Permission>,
    /// Topic permissions by (user, vhost, exchange).
    pub topic_permissions: BTreeMap<(String, String, String), TopicPermission>,
}

impl Auth {
    /// Add or replace a user with a plain password; nothing changes when
    /// the password cannot be hashed (no random salt).
    pub fn put_user(&mut self, name: &str, password: &str, tags: &[&str]) -> Result<(), String> {
        let password_hash = hash_password(password.as_bytes())?;
        self.users.insert(
            name.into(),
            User {
                name: name.into(),
                password_hash,
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
        );
        Ok(())
    }

    /// Check credentials; returns the user.
    pub fn login(&self, name: &[u8], password: &[u8]) -> Option<&User> {
        let u = self.users.get(std::str::from_utf8(name).ok()?)?;
        (!u.password_hash.is_empty() && check_password(&u.password_hash, password)).then_some(u)
    }

    /// Set a user's permissions in a vhost.
    pub fn set_permission(&mut self, user: &str, vhost: &str, p: Permission) {
        self.permissions.insert((user.into(), vhost.into()), p);
    }

    /// The user's permissions in a vhost.
    pub fn permission(&self, user: &str, vhost: &str) -> Option<&Permission> {
        self.permissions.get(&(user.to_string(), vhost.to_string()))
    }

    /// The user's topic permissions in a vhost, resolved for a connection.
    pub fn topic_checks(&self, user: &str, vhost: &str) -> Vec<TopicCheck> {
        self.topic_permissions
            .iter()
            .filter(|((u, v, _), _)| u == user && v == vhost)
            .map(|((_, _, x), p)| TopicCheck::new(x, p, user, vhost))
            .collect()
    }

    /// May `user` use `vhost` at all?
    pub fn may_open(&self, user: &str, vhost: &str) -> bool {
        self.permission(user, vhost).is_some()
    }

    #[cfg(any(test, feature = "testing"))]
    /// May `user` do `access` on resource `name` in `vhost`? The default
    /// exchange is checked as `amq.default`, as in RabbitMQ.
    pub fn allows(&self, user: &str, vhost: &str, access: Access, name: &str) -> bool {
        let name = if name.is_empty() { "amq.default" } else { name };
        self.permission(user, vhost)
            .is_some_and(|p| p.allows(access, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for n in 0..20 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"guest"), "Z3Vlc3Q=");
    }

    #[test]
    fn base64_vectors_and_leniency() {
        // RFC 4648 section 10.
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        // Padding optional, line breaks ignored (as RabbitMQ's decoder).
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9v\r\nYmFy\n").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zh==").unwrap(), b"f");
        // Not base64: characters outside the alphabet, data after padding,
        // a length no encoder makes.
        for bad in ["Zm9v!", "Zg==Zg==", "Z", "Zm9vY", "-_8="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn rabbitmq_hash_is_accepted() {
        // The hash RabbitMQ 3.x writes for guest/guest with salt 0x908d'c60a
        // (computed independently: base64(salt ++ sha256(salt ++ "guest"))).
        let salt = [0x90, 0x8d, 0xc6, 0x0a];
        let h = hash_with_salt(&salt, b"guest");
        assert!(check_password(&h, b"guest"));
        assert!(!check_password(&h, b"Guest"));
        assert!(check_password(
            &hash_password(b"s3cret").unwrap(),
            b"s3cret"
        ));
    }

    #[test]
    fn salts_are_random() {
        // Same password, fresh salt each time: 100 hashes, 100 salts (a
        // collision of 4 random bytes among 100 is about 1 in a million).
        let salts: std::collections::HashSet<Vec<u8>> = (0..100)
            .map(|_| base64_decode(&hash_password(b"pw").unwrap()).unwrap()[..4].to_vec())
            .collect();
        assert_eq!(salts.len(), 100);
    }

    #[test]
    fn permissions_match_like_rabbitmq() {
        let mut a = Auth::default();
        a.put_user("bob", "pw", &[]).unwrap();
        a.set_permission("bob", "/", Permission::new("^bob-.*", ".*", "").unwrap());
        assert!(a.allows("bob", "/", Access::Configure, "bob-q"));
        assert!(!a.allows("bob", "/", Access::Configure, "q"));
        assert!(a.allows("bob", "/", Access::Write, ""));
        assert!(!a.allows("bob", "/", Access::Read, "anything"));
        assert!(!a.allows("bob", "/other", Access::Write, "x"));
        assert!(a.login(b"bob", b"pw").is_some());
        assert!(a.login(b"bob", b"nope").is_none());
    }
}
