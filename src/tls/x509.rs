//! The Subject of an X.509 certificate, for SASL EXTERNAL: a small DER
//! reader (no allocation beyond the result, bounded nesting, never reads
//! past the end, never panics) and the two user names RabbitMQ's
//! `rabbitmq_auth_mechanism_ssl` takes from a client certificate.
//!
//! Certificate → TBSCertificate (optional `[0]` version, serialNumber,
//! signature AlgorithmIdentifier, issuer, validity) → subject, an
//! RDNSequence of SETs of AttributeTypeAndValue. Nothing else is looked at:
//! rustls has verified the certificate by then.
//!
//! What RabbitMQ does, and so what this module does (RabbitMQ 3.10 to 4.x,
//! `rabbit_ssl:peer_cert_auth_name/2` and `rabbit_cert_info`, which decode
//! the certificate with Erlang's `public_key:pkix_decode_cert(_, otp)`;
//! checked against rabbit_common 3.10.8 on Erlang/OTP 25):
//!
//! - `ssl_cert_login_from = common_name`: every CN of the subject, in the
//!   order they appear in the certificate (RDN by RDN, and within a
//!   multi-valued RDN in encoded order), joined with `,`, unescaped. Not
//!   the first CN: `/CN=a/CN=b` logs in as `a,b`.
//! - `ssl_cert_login_from = distinguished_name`: RFC 4514-like. The RDNs in
//!   reverse order, joined with `,`; the attributes of a multi-valued RDN in
//!   encoded order (not reversed), joined with `+`; each one `NAME=value`.
//!   NAME is one of SN, GIVENNAME, INITIALS, GENERATIONQUALIFIER, CN, L,
//!   ST, O, OU, TITLE, C, SERIALNUMBER, PSEUDONYM, DC, EMAILADDRESS, UID,
//!   and the dotted OID for any other type (street, 2.5.4.9, too: RabbitMQ
//!   lists a STREET name, but under an identifier that is not the street
//!   attribute's OID, so it never applies). The value is escaped: `\` before
//!   a leading space or `#`, a trailing space, and `"` `+` `,` `;` `<` `>`
//!   `\`; a character below 32 or from 126 (`~`) up as `\` and two
//!   upper-case hex digits, for each UTF-8 byte of a non-ASCII character
//!   (`é` is `\C3\A9`). `=` is not escaped. The result is ASCII.
//!
//! Values, as Erlang decodes them for RabbitMQ: UTF8String and
//! PrintableString as their bytes; TeletexString as Latin-1; BMPString as
//! UCS-2 (a surrogate is an error: RabbitMQ fails on it too); and
//! UniversalString as UCS-4, the last three converted to UTF-8. The types
//! Erlang knows are checked as it checks them (a CN must be one of those
//! five strings; serialNumber and dnQualifier PrintableString; DC
//! IA5String; C PrintableString or UTF8String; emailAddress IA5String or
//! UTF8String); a value of another type is an error, as the certificate
//! fails to decode in RabbitMQ. A UTF8String C or emailAddress is escaped
//! by character, not by byte (`\E9`, and `\**` past U+00FF: Erlang's `~2.16.0B`
//! overflowing). A type Erlang does not know (UID, street, any other OID)
//! is decoded as one of the five strings if it is one, else printed as
//! Erlang prints the binary of its encoding (`~p`) and then escaped: an
//! IA5String UID `foo` gives `UID=\<\<22\,3\,102\,111\,111\>\>`.
//!
//! Where this module parts from RabbitMQ, it refuses what RabbitMQ
//! accepts, or it accepts what RabbitMQ refuses: it does not take BER-only
//! encodings (constructed strings, indefinite lengths), and a UTF8String
//! CN that is not UTF-8 has no CN user name here (RabbitMQ would take its
//! raw bytes) though the DN escapes its bytes as RabbitMQ does.
//!
//! OpenSSL's `-nameopt RFC2253` agrees for the common cases, but differs in
//! the names it uses (`emailAddress`, `serialNumber`, `street`, `GN`,
//! `title`, ...), it reverses the attributes inside a multi-valued RDN too,
//! does not escape `~` and DEL, and prints an unknown type as `#` and hex.

// Its callers: SASL EXTERNAL in the connection handshake (src/amqp/) and
// the management API's peer_cert_subject, through `tls::login_name` and
// `tls::peer_subject`.

use std::fmt;

/// Why a certificate's subject could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum X509Error {
    /// The DER structure is broken (truncated, a wrong tag, a bad length,
    /// trailing bytes); what was expected.
    Malformed(&'static str),
    /// An attribute value is not what its type must be, or not valid in its
    /// string type.
    BadValue(&'static str),
}

impl fmt::Display for X509Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            X509Error::Malformed(what) => write!(f, "malformed certificate: {what}"),
            X509Error::BadValue(what) => write!(f, "bad certificate subject: {what}"),
        }
    }
}

impl std::error::Error for X509Error {}

/// The subject of a certificate: its RDNs in certificate order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    rdns: Vec<Vec<Attribute>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Attribute {
    /// The attribute type as the DN names it (`CN`, or a dotted OID).
    name: String,
    /// It is a commonName.
    cn: bool,
    /// The value as Erlang hands it to RabbitMQ: a list of bytes, or of
    /// characters for a UTF8String C or emailAddress.
    chars: Vec<u32>,
}

/// Read the subject of `cert`, a DER certificate (as rustls'
/// `CertificateDer` holds it).
pub fn subject(cert: &[u8]) -> Result<Subject, X509Error> {
    let mut outer = Der::new(cert);
    let certificate = outer.expect(SEQUENCE, "Certificate")?;
    outer.end("after the Certificate")?;
    let tbs = Der::new(certificate).expect(SEQUENCE, "TBSCertificate")?;
    let mut tbs = Der::new(tbs);
    let mut serial = tbs.next("serialNumber")?;
    if serial.tag == VERSION {
        serial = tbs.next("serialNumber")?;
    }
    if serial.tag != INTEGER {
        return Err(X509Error::Malformed("serialNumber"));
    }
    tbs.expect(SEQUENCE, "signature AlgorithmIdentifier")?;
    tbs.expect(SEQUENCE, "issuer")?;
    tbs.expect(SEQUENCE, "validity")?;
    let name = tbs.expect(SEQUENCE, "subject")?;
    let mut rdns = Vec::new();
    let mut seq = Der::new(name);
    while !seq.is_empty() {
        let mut set = Der::new(seq.expect(SET, "RelativeDistinguishedName")?);
        // An empty SET is not DER, but Erlang decodes it, and RabbitMQ
        // prints an empty RDN.
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let mut atv = Der::new(set.expect(SEQUENCE, "AttributeTypeAndValue")?);
            let oid = atv.expect(OID, "attribute type")?;
            let value = atv.next("attribute value")?;
            atv.end("after an attribute value")?;
            rdn.push(Attribute::new(oid, value)?);
        }
        rdns.push(rdn);
    }
    Ok(Subject { rdns })
}

impl Subject {
    /// The user name of RabbitMQ's `ssl_cert_login_from = common_name`:
    /// every CN in certificate order joined with `,`; `None` without a CN
    /// (or when the CNs are not UTF-8).
    pub fn common_name(&self) -> Option<String> {
        let mut out: Vec<u8> = Vec::new();
        let mut any = false;
        for a in self.rdns.iter().flatten().filter(|a| a.cn) {
            if any {
                out.push(b',');
            }
            any = true;
            for &c in &a.chars {
                out.push(u8::try_from(c).ok()?);
            }
        }
        if !any {
            return None;
        }
        String::from_utf8(out).ok()
    }

    /// The user name of RabbitMQ's `ssl_cert_login_from =
    /// distinguished_name` (see the module documentation): e.g.
    /// `CN=client one,OU=dev+UID=42,O=Warren\, Inc.,C=GB`. Empty for an
    /// empty subject.
    pub fn distinguished_name(&self) -> String {
        let mut out = String::new();
        for (i, rdn) in self.rdns.iter().rev().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, a) in rdn.iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                out.push_str(&a.name);
                out.push('=');
                escape_value(&a.chars, &mut out);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Attribute types and values

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;

/// How Erlang's `public_key` decodes an attribute's value, with the size
/// constraints its ASN.1 module checks (found by trying them on Erlang/OTP
/// 25: a UTF8String's size is never checked, nor an upper bound of the
/// X.520 name types).
#[derive(Clone, Copy)]
enum Kind {
    /// X.520 DirectoryString: one of the five string types, not empty but
    /// a UTF8String; `Some(n)`: a PrintableString or TeletexString of at
    /// most `n` bytes, a BMPString or UniversalString of at most `2n`
    /// characters.
    Directory(Option<usize>),
    /// PrintableString of `min..=max` bytes (serialNumber, dnQualifier).
    Printable(usize, usize),
    /// countryName: PrintableString of 2 or 3 bytes, or UTF8String taken
    /// as characters.
    Country,
    /// IA5String only (domainComponent).
    Ia5,
    /// emailAddress: IA5String of 1 to 255 bytes, or UTF8String taken as
    /// characters.
    Email,
    /// A type Erlang leaves undecoded.
    Unknown,
}

/// The upper bound of most DirectoryString types in Erlang's module.
const UB: Option<usize> = Some(128);

/// The attribute types with a name in the DN or a decoding in Erlang, by
/// the contents octets of their OID.
const KNOWN: &[(&[u8], Option<&str>, Kind)] = &[
    (&[0x55, 0x04, 0x03], Some("CN"), Kind::Directory(UB)),
    (&[0x55, 0x04, 0x04], Some("SN"), Kind::Directory(None)),
    (
        &[0x55, 0x04, 0x05],
        Some("SERIALNUMBER"),
        Kind::Printable(1, 64),
    ),
    (&[0x55, 0x04, 0x06], Some("C"), Kind::Country),
    (&[0x55, 0x04, 0x07], Some("L"), Kind::Directory(UB)),
    (&[0x55, 0x04, 0x08], Some("ST"), Kind::Directory(UB)),
    (&[0x55, 0x04, 0x0a], Some("O"), Kind::Directory(UB)),
    (&[0x55, 0x04, 0x0b], Some("OU"), Kind::Directory(UB)),
    (&[0x55, 0x04, 0x0c], Some("TITLE"), Kind::Directory(UB)),
    // name: decoded by Erlang, but without a name in RabbitMQ's table
    (&[0x55, 0x04, 0x29], None, Kind::Directory(None)),
    (
        &[0x55, 0x04, 0x2a],
        Some("GIVENNAME"),
        Kind::Directory(None),
    ),
    (&[0x55, 0x04, 0x2b], Some("INITIALS"), Kind::Directory(None)),
    (
        &[0x55, 0x04, 0x2c],
        Some("GENERATIONQUALIFIER"),
        Kind::Directory(None),
    ),
    // dnQualifier: likewise
    (&[0x55, 0x04, 0x2e], None, Kind::Printable(0, usize::MAX)),
    (&[0x55, 0x04, 0x41], Some("PSEUDONYM"), Kind::Directory(UB)),
    // 0.9.2342.19200300.100.1.25 domainComponent
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        Some("DC"),
        Kind::Ia5,
    ),
    // 0.9.2342.19200300.100.1.1 userId: named, but not decoded by Erlang
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        Some("UID"),
        Kind::Unknown,
    ),
    // 1.2.840.113549.1.9.1 emailAddress
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        Some("EMAILADDRESS"),
        Kind::Email,
    ),
];

impl Attribute {
    fn new(oid: &[u8], value: Tlv<'_>) -> Result<Attribute, X509Error> {
        let known = KNOWN.iter().find(|(o, _, _)| *o == oid);
        let name = match known {
            Some((_, Some(name), _)) => (*name).to_string(),
            _ => dotted(oid)?,
        };
        let kind = known.map_or(Kind::Unknown, |k| k.2);
        let len = value.value.len();
        let sized = |min: usize, max: usize| {
            if (min..=max).contains(&len) {
                Ok(bytes(value.value))
            } else {
                Err(X509Error::BadValue(
                    "a value of a size its type does not allow",
                ))
            }
        };
        let chars = match (kind, value.tag) {
            (Kind::Directory(ub), _) => directory_string(value, ub)?,
            (Kind::Printable(min, max), PRINTABLE_STRING) => sized(min, max)?,
            (Kind::Country, PRINTABLE_STRING) => sized(2, 3)?,
            (Kind::Ia5, IA5_STRING) => bytes(value.value),
            (Kind::Email, IA5_STRING) => sized(1, 255)?,
            (Kind::Country | Kind::Email, UTF8_STRING) => std::str::from_utf8(value.value)
                .map_err(|_| X509Error::BadValue("a UTF8String that is not UTF-8"))?
                .chars()
                .map(u32::from)
                .collect(),
            (Kind::Printable(..) | Kind::Country | Kind::Ia5 | Kind::Email, _) => {
                return Err(X509Error::BadValue("a value of the wrong type"))
            }
            (Kind::Unknown, tag) => {
                if tag & 0x20 != 0 && is_string(tag & !0x20) {
                    return Err(X509Error::BadValue("a constructed string"));
                }
                // Erlang decodes an open type's encoding as BER: a
                // constructed value must hold well-formed elements.
                check_nested(value, 0)?;
                // RabbitMQ tries it as a DirectoryString, and prints the
                // encoding as an Erlang term when that fails.
                directory_string(value, None).unwrap_or_else(|_| erlang_binary(value.whole))
            }
        };
        Ok(Attribute {
            cn: oid == [0x55, 0x04, 0x03],
            name,
            chars,
        })
    }
}

fn is_string(tag: u8) -> bool {
    matches!(
        tag,
        UTF8_STRING
            | PRINTABLE_STRING
            | TELETEX_STRING
            | IA5_STRING
            | UNIVERSAL_STRING
            | BMP_STRING
    )
}

fn bytes(b: &[u8]) -> Vec<u32> {
    b.iter().map(|&c| u32::from(c)).collect()
}

/// A DirectoryString as the bytes RabbitMQ makes of it: UTF8String and
/// PrintableString as they are, the others converted to UTF-8. Sizes as in
/// [`Kind::Directory`].
fn directory_string(v: Tlv<'_>, ub: Option<usize>) -> Result<Vec<u32>, X509Error> {
    let units = match v.tag {
        BMP_STRING => v.value.len() / 2,
        UNIVERSAL_STRING => v.value.len() / 4,
        _ => v.value.len(),
    };
    let max = match (v.tag, ub) {
        (UTF8_STRING, _) | (_, None) => usize::MAX,
        (BMP_STRING | UNIVERSAL_STRING, Some(n)) => 2 * n,
        (_, Some(n)) => n,
    };
    if v.tag != UTF8_STRING && !(1..=max).contains(&units) {
        return Err(X509Error::BadValue(
            "a value of a size its type does not allow",
        ));
    }
    match v.tag {
        UTF8_STRING | PRINTABLE_STRING => Ok(bytes(v.value)),
        TELETEX_STRING => Ok(utf8(v.value.iter().map(|&b| char::from(b)))),
        BMP_STRING => {
            let (units, rest) = v.value.as_chunks::<2>();
            if !rest.is_empty() {
                return Err(X509Error::BadValue("a BMPString of odd length"));
            }
            let chars = units
                .iter()
                .map(|u| char::from_u32(u32::from(u16::from_be_bytes(*u))))
                .collect::<Option<Vec<char>>>()
                .ok_or(X509Error::BadValue("a surrogate in a BMPString"))?;
            Ok(utf8(chars.into_iter()))
        }
        UNIVERSAL_STRING => {
            let (units, rest) = v.value.as_chunks::<4>();
            if !rest.is_empty() {
                return Err(X509Error::BadValue("a UniversalString of bad length"));
            }
            let chars = units
                .iter()
                .map(|u| char::from_u32(u32::from_be_bytes(*u)))
                .collect::<Option<Vec<char>>>()
                .ok_or(X509Error::BadValue("a UniversalString out of Unicode"))?;
            Ok(utf8(chars.into_iter()))
        }
        _ => Err(X509Error::BadValue("not a DirectoryString")),
    }
}

fn utf8(chars: impl Iterator<Item = char>) -> Vec<u32> {
    bytes(chars.collect::<String>().as_bytes())
}

/// An OID in dotted decimal (arcs up to 2^128).
fn dotted(oid: &[u8]) -> Result<String, X509Error> {
    let bad = X509Error::Malformed("object identifier");
    if oid.is_empty() || oid.last().is_some_and(|b| b & 0x80 != 0) {
        return Err(bad);
    }
    let mut out = String::new();
    let mut arc: u128 = 0;
    let mut start = true;
    for &b in oid {
        if start && b == 0x80 {
            // not minimal
            return Err(bad);
        }
        start = false;
        if arc > u128::MAX >> 7 {
            return Err(bad);
        }
        arc = (arc << 7) | u128::from(b & 0x7f);
        if b & 0x80 == 0 {
            if out.is_empty() {
                let (x, y) = match arc {
                    0..40 => (0, arc),
                    40..80 => (1, arc - 40),
                    _ => (2, arc - 80),
                };
                out.push_str(&format!("{x}.{y}"));
            } else {
                out.push_str(&format!(".{arc}"));
            }
            arc = 0;
            start = true;
        }
    }
    Ok(out)
}

/// Elements inside a constructed value this deep are not looked into.
const MAX_DEPTH: usize = 16;

/// A constructed value holds well-formed elements, to `MAX_DEPTH`.
fn check_nested(v: Tlv<'_>, depth: usize) -> Result<(), X509Error> {
    if v.tag & 0x20 == 0 {
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(X509Error::Malformed("nested too deep"));
    }
    let mut inner = Der::new(v.value);
    while !inner.is_empty() {
        check_nested(inner.next("element of a constructed value")?, depth + 1)?;
    }
    Ok(())
}

/// What Erlang's `io_lib:format("~p", [Binary])` gives for an encoding
/// (Erlang/OTP 25, default printable range latin1): `<<"text">>` when
/// every byte is printable Latin-1, else `<<22,3,102,...>>`, broken into
/// lines of at most 80 columns (continuations indented by two spaces)
/// when longer than 81.
fn erlang_binary(b: &[u8]) -> Vec<u32> {
    let printable = b
        .iter()
        .all(|&c| matches!(c, 8..=13 | 27 | 32..=126 | 160..=255));
    let mut out = String::from("<<");
    if printable {
        out.push('"');
        for &c in b {
            match c {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                8 => out.push_str("\\b"),
                9 => out.push_str("\\t"),
                10 => out.push_str("\\n"),
                11 => out.push_str("\\v"),
                12 => out.push_str("\\f"),
                13 => out.push_str("\\r"),
                27 => out.push_str("\\e"),
                c => out.push(char::from(c)),
            }
        }
        out.push_str("\">>");
        // Latin-1 characters, one each: not the UTF-8 bytes of `out`.
        return out.chars().map(u32::from).collect();
    }
    let items: Vec<String> = b.iter().map(|c| c.to_string()).collect();
    let one_line = 4 + items.iter().map(|i| i.len() + 1).sum::<usize>() - 1;
    let mut col = 2;
    for (i, item) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        if i > 0 && one_line > 81 {
            let (width, max) = if last {
                (item.len() + 2, 81)
            } else {
                (item.len() + 1, 79)
            };
            if col + width > max {
                out.push_str("\n  ");
                col = 2;
            }
        }
        out.push_str(item);
        col += item.len();
        if last {
            out.push_str(">>");
        } else {
            out.push(',');
            col += 1;
        }
    }
    bytes(out.as_bytes())
}

/// RabbitMQ's escaping of a DN value (`rabbit_cert_info`, "as per
/// RFC4514"): see the module documentation.
fn escape_value(chars: &[u32], out: &mut String) {
    for (i, &c) in chars.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == chars.len();
        let ascii = u8::try_from(c).ok().filter(|c| (32..126).contains(c));
        match ascii {
            Some(c @ (b' ' | b'#')) if first => {
                out.push('\\');
                out.push(char::from(c));
            }
            Some(b' ') if last => out.push_str("\\ "),
            Some(c @ (b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\')) => {
                out.push('\\');
                out.push(char::from(c));
            }
            Some(c) => out.push(char::from(c)),
            None if c <= 0xff => out.push_str(&format!("\\{c:02X}")),
            None => out.push_str("\\**"),
        }
    }
}

// ---------------------------------------------------------------------------
// DER

/// One element: its tag, its contents, and all of its encoding.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

/// A cursor over consecutive DER elements.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element. Single-byte tags; definite lengths of up to four
    /// bytes (not necessarily minimal: Erlang takes BER there).
    fn next(&mut self, what: &'static str) -> Result<Tlv<'a>, X509Error> {
        let bad = X509Error::Malformed(what);
        let (&tag, after) = self.rest.split_first().ok_or(bad.clone())?;
        if tag & 0x1f == 0x1f {
            return Err(bad);
        }
        let (&first, mut after) = after.split_first().ok_or(bad.clone())?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(bad);
            }
            let (len_bytes, tail) = after.split_at_checked(n).ok_or(bad.clone())?;
            after = tail;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        let (value, rest) = after.split_at_checked(len).ok_or(bad.clone())?;
        let header = self.rest.len() - after.len();
        let whole = self.rest.get(..header + len).ok_or(bad)?;
        self.rest = rest;
        Ok(Tlv { tag, value, whole })
    }

    /// The contents of the next element, which must have tag `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], X509Error> {
        let tlv = self.next(what)?;
        if tlv.tag != tag {
            return Err(X509Error::Malformed(what));
        }
        Ok(tlv.value)
    }

    /// Nothing is left.
    fn end(&self, what: &'static str) -> Result<(), X509Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(X509Error::Malformed(what))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Expected strings are what RabbitMQ gives for the same certificate
    //! (`rabbit_cert_info:subject/1` of rabbit_common 3.10.8 on Erlang/OTP
    //! 25, run by hand on these encodings; the CN is what
    //! `rabbit_ssl:peer_cert_auth_name(common_name, _)` makes of
    //! `subject_items/2`), and for the `openssl` certificates OpenSSL's
    //! `-nameopt RFC2253` where the two agree.

    use super::*;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // -- certificates made by the openssl CLI

    /// A temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("warren-x509-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn openssl(dir: &TempDir, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .current_dir(&dir.0)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A self-signed certificate for `subj` (`openssl req -subj` syntax,
    /// UTF-8) in DER, and OpenSSL's RFC 2253 form of its subject.
    fn openssl_cert(subj: &str) -> (Vec<u8>, String) {
        let dir = TempDir::new();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "1",
                "-utf8",
                "-subj",
                subj,
            ],
        );
        openssl(
            &dir,
            &[
                "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
            ],
        );
        let rfc2253 = openssl(
            &dir,
            &[
                "x509", "-in", "cert.pem", "-noout", "-subject", "-nameopt", "RFC2253",
            ],
        );
        let rfc2253 = rfc2253.trim_end().strip_prefix("subject=").unwrap();
        (
            std::fs::read(dir.0.join("cert.der")).unwrap(),
            rfc2253.to_string(),
        )
    }

    #[test]
    fn openssl_subject_with_a_multi_valued_rdn() {
        let (der, openssl) = openssl_cert("/C=GB/O=Warren, Inc./OU=dev+UID=42/CN=client one");
        let s = subject(&der).unwrap();
        assert_eq!(s.common_name().as_deref(), Some("client one"));
        assert_eq!(
            s.distinguished_name(),
            r"CN=client one,OU=dev+UID=42,O=Warren\, Inc.,C=GB"
        );
        // OpenSSL reverses the attributes of a multi-valued RDN as well;
        // RabbitMQ keeps their encoded order.
        assert_eq!(openssl, r"CN=client one,UID=42+OU=dev,O=Warren\, Inc.,C=GB");
    }

    #[test]
    fn openssl_subject_where_rabbitmq_and_openssl_agree() {
        let (der, openssl) = openssl_cert(
            "/DC=org/DC=example/O=Zoë & Co/OU=a\\+b/L= lead/ST=#x;y <z> \"q\"=\\\\/CN=client 1",
        );
        let s = subject(&der).unwrap();
        let dn = r#"CN=client 1,ST=\#x\;y \<z\> \"q\"=\\,L=\ lead,OU=a\+b,O=Zo\C3\AB & Co,DC=example,DC=org"#;
        assert_eq!(s.distinguished_name(), dn);
        assert_eq!(openssl, dn);
        assert_eq!(s.common_name().as_deref(), Some("client 1"));
    }

    #[test]
    fn openssl_subject_with_several_cns_and_other_names() {
        let (der, openssl) = openssl_cert(
            "/DC=org/DC=example/O=Zoë & Co/CN=first/CN=second ~ λ/emailAddress=a@b.c\
             /serialNumber=123/street=1 Main St/L=Lon\\+don/ST=#x;y <z> \"q\"=\\\\ /title=Dr",
        );
        let s = subject(&der).unwrap();
        // every CN, in certificate order, joined with a comma
        assert_eq!(s.common_name().as_deref(), Some("first,second ~ λ"));
        assert_eq!(
            s.distinguished_name(),
            r#"TITLE=Dr,ST=\#x\;y \<z\> \"q\"=\\\ ,L=Lon\+don,2.5.4.9=1 Main St,SERIALNUMBER=123,EMAILADDRESS=a@b.c,CN=second \7E \CE\BB,CN=first,O=Zo\C3\AB & Co,DC=example,DC=org"#
        );
        // OpenSSL: other names, and `~` as it is
        assert_eq!(
            openssl,
            r#"title=Dr,ST=\#x\;y \<z\> \"q\"=\\\ ,L=Lon\+don,street=1 Main St,serialNumber=123,emailAddress=a@b.c,CN=second ~ \CE\BB,CN=first,O=Zo\C3\AB & Co,DC=example,DC=org"#
        );
    }

    // -- certificates built here, for what openssl will not make

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const SERIAL: &[u8] = &[0x55, 0x04, 0x05];
    const STREET: &[u8] = &[0x55, 0x04, 0x09];
    const DN_QUALIFIER: &[u8] = &[0x55, 0x04, 0x2e];
    const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
    const DC: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19];
    const UID: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01];
    /// 1.2.3.4
    const OTHER: &[u8] = &[0x2a, 0x03, 0x04];

    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match body.len() {
            n @ 0..0x80 => out.push(n as u8),
            n @ 0x80..0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }

    fn atv(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), tlv(tag, value)].concat())
    }

    /// A subject Name of these RDNs (each a SET of these attributes).
    fn name(rdns: &[&[Vec<u8>]]) -> Vec<u8> {
        let sets: Vec<u8> = rdns.iter().flat_map(|r| tlv(SET, &r.concat())).collect();
        tlv(SEQUENCE, &sets)
    }

    /// A v3 certificate with this subject (and a made-up key and signature:
    /// nothing but the structure matters here).
    fn cert_with(version: bool, subject: &[u8]) -> Vec<u8> {
        let alg = tlv(
            SEQUENCE,
            &[
                tlv(OID, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b"),
                vec![5, 0],
            ]
            .concat(),
        );
        let issuer = name(&[&[atv(CN, UTF8_STRING, b"issuer")]]);
        let validity = tlv(
            SEQUENCE,
            &[tlv(0x17, b"240101000000Z"), tlv(0x17, b"340101000000Z")].concat(),
        );
        let spki = tlv(
            SEQUENCE,
            &[
                tlv(
                    SEQUENCE,
                    &[
                        tlv(OID, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"),
                        vec![5, 0],
                    ]
                    .concat(),
                ),
                tlv(
                    0x03,
                    &[
                        &[0u8][..],
                        &tlv(
                            SEQUENCE,
                            &[tlv(INTEGER, &[0x11; 64]), tlv(INTEGER, &[1, 0, 1])].concat(),
                        ),
                    ]
                    .concat(),
                ),
            ]
            .concat(),
        );
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(VERSION, &tlv(INTEGER, &[2])));
        }
        for part in [
            tlv(INTEGER, &[1, 0x23]),
            alg.clone(),
            issuer,
            validity,
            subject.to_vec(),
            spki,
        ] {
            tbs.extend(part);
        }
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), alg, tlv(0x03, &[0x42; 33])].concat(),
        )
    }

    fn cert(subject: &[u8]) -> Vec<u8> {
        cert_with(true, subject)
    }

    /// DN and CN of a certificate whose subject is one attribute.
    fn one(oid: &[u8], tag: u8, value: &[u8]) -> (String, Option<String>) {
        let s = subject(&cert(&name(&[&[atv(oid, tag, value)]]))).unwrap();
        (s.distinguished_name(), s.common_name())
    }

    fn one_err(oid: &[u8], tag: u8, value: &[u8]) -> X509Error {
        subject(&cert(&name(&[&[atv(oid, tag, value)]]))).unwrap_err()
    }

    #[test]
    fn escaping_follows_rabbitmq() {
        let (dn, cn) = one(CN, UTF8_STRING, "# a\"+,;<>\\=é~\x7f\x01 ".as_bytes());
        assert_eq!(dn, r#"CN=\# a\"\+\,\;\<\>\\=\C3\A9\7E\7F\01\ "#);
        assert_eq!(cn.as_deref(), Some("# a\"+,;<>\\=é~\x7f\x01 "));
        assert_eq!(one(CN, UTF8_STRING, b" ").0, r"CN=\ ");
        assert_eq!(one(CN, UTF8_STRING, b"  ").0, r"CN=\ \ ");
        assert_eq!(one(CN, UTF8_STRING, b"#").0, r"CN=\#");
        assert_eq!(one(CN, UTF8_STRING, b"a#b c").0, "CN=a#b c");
        // a value that is not UTF-8: its bytes in the DN, no CN user name
        // (RabbitMQ would log in with the raw bytes)
        assert_eq!(one(CN, UTF8_STRING, b"a\xff"), (r"CN=a\FF".into(), None));
        assert_eq!(
            one(CN, PRINTABLE_STRING, b"a\xe9"),
            (r"CN=a\E9".into(), None)
        );
        assert_eq!(one(CN, PRINTABLE_STRING, b"a@*_").0, "CN=a@*_");
        assert_eq!(
            one(CN, UTF8_STRING, b""),
            ("CN=".into(), Some(String::new()))
        );
    }

    #[test]
    fn string_types() {
        assert_eq!(
            one(CN, TELETEX_STRING, b"caf\xe9"),
            (r"CN=caf\C3\A9".into(), Some("café".into()))
        );
        assert_eq!(
            one(CN, TELETEX_STRING, b"\x80\x9f\xff").0,
            r"CN=\C2\80\C2\9F\C3\BF"
        );
        assert_eq!(
            one(CN, BMP_STRING, b"\x00x\x03\xbb"),
            (r"CN=x\CE\BB".into(), Some("xλ".into()))
        );
        assert_eq!(
            one(CN, UNIVERSAL_STRING, b"\0\0\0x\0\x01\xf6\x00"),
            (r"CN=x\F0\9F\98\80".into(), Some("x😀".into()))
        );
        // UCS-2: RabbitMQ fails on a surrogate pair as on a lone surrogate
        for bad in [&b"\x00x\xd8\x3d\xde\x00"[..], b"\xd8\x3d", b"\x00a\x00"] {
            assert!(matches!(
                one_err(CN, BMP_STRING, bad),
                X509Error::BadValue(_)
            ));
        }
        for bad in [&b"\x00\x11\x00\x00"[..], b"\0\0\xd8\0", b"\0\0\0"] {
            assert!(matches!(
                one_err(CN, UNIVERSAL_STRING, bad),
                X509Error::BadValue(_)
            ));
        }
    }

    #[test]
    fn types_are_checked_where_erlang_checks_them() {
        for (oid, tag) in [
            (CN, IA5_STRING),
            (O, IA5_STRING),
            (DC, UTF8_STRING),
            (SERIAL, UTF8_STRING),
            (DN_QUALIFIER, UTF8_STRING),
            (EMAIL, BMP_STRING),
            (EMAIL, PRINTABLE_STRING),
            (C, BMP_STRING),
            (CN, INTEGER),
        ] {
            assert!(
                matches!(one_err(oid, tag, b"ab"), X509Error::BadValue(_)),
                "{oid:?} {tag}"
            );
        }
        assert_eq!(one(DC, IA5_STRING, b"ab").0, "DC=ab");
        assert_eq!(one(SERIAL, PRINTABLE_STRING, b"12").0, "SERIALNUMBER=12");
        assert_eq!(one(DN_QUALIFIER, PRINTABLE_STRING, b"q").0, "2.5.4.46=q");
        assert_eq!(one(C, PRINTABLE_STRING, b"GBR").0, "C=GBR");
        assert_eq!(one(EMAIL, IA5_STRING, b"a@b").0, "EMAILADDRESS=a@b");
        // a UTF8String C or emailAddress: Erlang hands over characters, and
        // RabbitMQ escapes them with two hex digits (or none fit: `**`)
        assert_eq!(
            one(EMAIL, UTF8_STRING, "é@x".as_bytes()).0,
            r"EMAILADDRESS=\E9@x"
        );
        assert_eq!(one(C, UTF8_STRING, "Gé".as_bytes()).0, r"C=G\E9");
        assert_eq!(one(C, UTF8_STRING, "λ".as_bytes()).0, r"C=\**");
        assert!(matches!(
            one_err(C, UTF8_STRING, b"\xff"),
            X509Error::BadValue(_)
        ));
    }

    #[test]
    fn sizes_are_checked_where_erlang_checks_them() {
        let size = |oid: &[u8], tag: u8, unit: &[u8], n: usize| {
            subject(&cert(&name(&[&[atv(oid, tag, &unit.repeat(n))]]))).is_ok()
        };
        let sn: &[u8] = &[0x55, 0x04, 0x04];
        for (oid, tag, unit, ok, bad) in [
            (
                CN,
                PRINTABLE_STRING,
                &b"a"[..],
                &[1, 128][..],
                &[0, 129][..],
            ),
            (CN, TELETEX_STRING, b"a", &[1, 128], &[0, 129]),
            (CN, BMP_STRING, b"\0a", &[1, 256], &[0, 257]),
            (CN, UNIVERSAL_STRING, b"\0\0\0a", &[1, 256], &[0, 257]),
            (CN, UTF8_STRING, b"a", &[0, 1, 1000], &[]),
            (O, PRINTABLE_STRING, b"a", &[128], &[129]),
            (sn, PRINTABLE_STRING, b"a", &[1, 1000], &[0]),
            (sn, BMP_STRING, b"\0a", &[1, 1000], &[0]),
            (C, PRINTABLE_STRING, b"G", &[2, 3], &[0, 1, 4]),
            (C, UTF8_STRING, b"G", &[0, 1, 4], &[]),
            (SERIAL, PRINTABLE_STRING, b"1", &[1, 64], &[0, 65]),
            (DN_QUALIFIER, PRINTABLE_STRING, b"q", &[0, 1000], &[]),
            (EMAIL, IA5_STRING, b"a", &[1, 255], &[0, 256]),
            (EMAIL, UTF8_STRING, b"a", &[0, 256], &[]),
            (DC, IA5_STRING, b"a", &[0, 1000], &[]),
        ] {
            for &n in ok {
                assert!(size(oid, tag, unit, n), "{oid:?} {tag} {n}");
            }
            for &n in bad {
                assert!(!size(oid, tag, unit, n), "{oid:?} {tag} {n}");
            }
        }
        // a type Erlang does not know: an empty string but a UTF8String
        // does not decode, and is printed as a term
        assert_eq!(
            one(OTHER, PRINTABLE_STRING, b"").0,
            r"1.2.3.4=\<\<19\,0\>\>"
        );
        assert_eq!(one(UID, BMP_STRING, b"").0, r"UID=\<\<30\,0\>\>");
        assert_eq!(one(OTHER, PRINTABLE_STRING, &[b'a'; 300]).0.len(), 8 + 300);
    }

    #[test]
    fn names_of_attribute_types() {
        let s = subject(&cert(&name(&[&[
            atv(&[0x55, 4, 41], UTF8_STRING, b"n"),
            atv(&[0x55, 4, 65], UTF8_STRING, b"p"),
            atv(&[0x55, 4, 43], UTF8_STRING, b"i"),
            atv(&[0x55, 4, 44], UTF8_STRING, b"g"),
            atv(&[0x55, 4, 4], UTF8_STRING, b"s"),
            atv(&[0x55, 4, 42], UTF8_STRING, b"gn"),
            atv(&[0x55, 4, 12], BMP_STRING, b"\0t"),
            atv(&[0x55, 4, 7], PRINTABLE_STRING, b"l"),
            atv(&[0x55, 4, 8], UTF8_STRING, b"st"),
            atv(&[0x55, 4, 11], UTF8_STRING, b"ou"),
            atv(UID, UTF8_STRING, b"u"),
        ]])))
        .unwrap();
        assert_eq!(
            s.distinguished_name(),
            "2.5.4.41=n+PSEUDONYM=p+INITIALS=i+GENERATIONQUALIFIER=g+SN=s+GIVENNAME=gn\
             +TITLE=t+L=l+ST=st+OU=ou+UID=u"
        );
        assert_eq!(one(STREET, TELETEX_STRING, b"\xe9").0, r"2.5.4.9=\C3\A9");
        assert_eq!(
            one(
                &[0x88, 0x37, 0xa3, 0xf7, 0x8f, 0xec, 0x89, 0x4b],
                UTF8_STRING,
                b"x"
            )
            .0,
            "2.999.1234567890123=x"
        );
        assert_eq!(one(OTHER, UTF8_STRING, b"v,1").0, r"1.2.3.4=v\,1");
        assert_eq!(one(OTHER, UTF8_STRING, b"").0, "1.2.3.4=");
        assert_eq!(one(OTHER, UTF8_STRING, b"a\xff").0, r"1.2.3.4=a\FF");
    }

    #[test]
    fn undecoded_values_print_as_erlang_terms() {
        assert_eq!(
            one(UID, IA5_STRING, b"foo").0,
            r"UID=\<\<22\,3\,102\,111\,111\>\>"
        );
        assert_eq!(one(OTHER, INTEGER, &[5]).0, r"1.2.3.4=\<\<2\,1\,5\>\>");
        assert_eq!(
            one(OTHER, SEQUENCE, &[2, 1, 5]).0,
            r"1.2.3.4=\<\<48\,3\,2\,1\,5\>\>"
        );
        // a string type that fails to decode, for a type Erlang does not know
        assert_eq!(
            one(OTHER, BMP_STRING, b"\xd8\x3d").0,
            r"1.2.3.4=\<\<30\,2\,216\,61\>\>"
        );
        assert_eq!(
            one(OTHER, BMP_STRING, b"\x00a\x00").0,
            r"1.2.3.4=\<\<30\,3\,0\,97\,0\>\>"
        );
        // lines broken at 80 columns
        assert_eq!(
            one(UID, IA5_STRING, &[b'f'; 60]).0,
            r"UID=\<\<22\,60\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,\0A  102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,\0A  102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,102\,\0A  102\,102\,102\,102\,102\>\>"
        );
        let octets: Vec<u8> = (0..120).collect();
        assert_eq!(
            one(OTHER, 0x04, &octets).0,
            r"1.2.3.4=\<\<4\,120\,0\,1\,2\,3\,4\,5\,6\,7\,8\,9\,10\,11\,12\,13\,14\,15\,16\,17\,18\,19\,20\,21\,22\,23\,24\,25\,26\,\0A  27\,28\,29\,30\,31\,32\,33\,34\,35\,36\,37\,38\,39\,40\,41\,42\,43\,44\,45\,46\,47\,48\,49\,50\,51\,\0A  52\,53\,54\,55\,56\,57\,58\,59\,60\,61\,62\,63\,64\,65\,66\,67\,68\,69\,70\,71\,72\,73\,74\,75\,76\,\0A  77\,78\,79\,80\,81\,82\,83\,84\,85\,86\,87\,88\,89\,90\,91\,92\,93\,94\,95\,96\,97\,98\,99\,100\,101\,\0A  102\,103\,104\,105\,106\,107\,108\,109\,110\,111\,112\,113\,114\,115\,116\,117\,118\,119\>\>"
        );
        // every byte printable Latin-1: a quoted string
        let mut inner = b"\x0c\x20ab \"\\\xe9\xff\xa0\x1b\t\n".to_vec();
        inner.extend([b'x'; 21]);
        assert_eq!(
            one(OTHER, SEQUENCE, &inner).0,
            r#"1.2.3.4=\<\<\"0\\\"\\f ab \\\"\\\\\E9\FF\A0\\e\\t\\nxxxxxxxxxxxxxxxxxxxxx\"\>\>"#
        );
        // a constructed value must hold elements
        assert!(matches!(
            one_err(OTHER, SEQUENCE, b" abc"),
            X509Error::Malformed(_)
        ));
    }

    #[test]
    fn rdn_order_and_multi_valued_rdns() {
        let s = subject(&cert(&name(&[
            &[atv(CN, UTF8_STRING, b"a"), atv(CN, UTF8_STRING, b"b")],
            &[atv(CN, UTF8_STRING, b"c")],
        ])))
        .unwrap();
        assert_eq!(s.distinguished_name(), "CN=c,CN=a+CN=b");
        assert_eq!(s.common_name().as_deref(), Some("a,b,c"));
        // an empty RDN (not DER, but decoded): an empty part
        let s = subject(&cert(&name(&[
            &[atv(O, UTF8_STRING, b"o")],
            &[],
            &[atv(CN, UTF8_STRING, b"c")],
        ])))
        .unwrap();
        assert_eq!(s.distinguished_name(), "CN=c,,O=o");
        // no subject at all
        let s = subject(&cert(&name(&[]))).unwrap();
        assert_eq!(s.distinguished_name(), "");
        assert_eq!(s.common_name(), None);
        let s = subject(&cert(&name(&[&[atv(O, UTF8_STRING, b"o")]]))).unwrap();
        assert_eq!(s.common_name(), None);
    }

    #[test]
    fn encodings_erlang_takes() {
        // a version 1 certificate has no [0] version
        let v1 = cert_with(false, &name(&[&[atv(CN, UTF8_STRING, b"v1")]]));
        assert_eq!(subject(&v1).unwrap().distinguished_name(), "CN=v1");
        // a length in long form where short would do
        let long = tlv(
            SEQUENCE,
            &[tlv(OID, CN), b"\x0c\x81\x02ab".to_vec()].concat(),
        );
        let s = subject(&cert(&name(&[&[long]]))).unwrap();
        assert_eq!(s.distinguished_name(), "CN=ab");
        // a constructed (BER) string: RabbitMQ takes it, this does not
        let constructed = tlv(
            SEQUENCE,
            &[tlv(OID, CN), tlv(0x2c, &tlv(UTF8_STRING, b"ab"))].concat(),
        );
        assert!(subject(&cert(&name(&[&[constructed]]))).is_err());
        let constructed = tlv(
            SEQUENCE,
            &[tlv(OID, OTHER), tlv(0x2c, &tlv(UTF8_STRING, b"ab"))].concat(),
        );
        assert!(subject(&cert(&name(&[&[constructed]]))).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (der, _) = openssl_cert("/O=Warren/CN=client");
        assert!(subject(&der).is_ok());
        for n in 0..der.len() {
            assert!(subject(&der[..n]).is_err(), "{n} bytes");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(subject(&trailing).is_err());
    }

    #[test]
    fn malformed_encodings_are_errors() {
        let good = cert(&name(&[&[atv(CN, UTF8_STRING, b"c")]]));
        assert!(subject(&good).is_ok());
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x30],
            vec![0x30, 0x80, 0, 0],                      // indefinite length
            vec![0x30, 0x85, 1, 0, 0, 0, 0],             // five length bytes
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0], // past the end
            vec![0x3f, 0x01, 0x00],                      // high tag number
            vec![0x31, 0x00],                            // not a SEQUENCE
            tlv(SEQUENCE, &tlv(SEQUENCE, &[])),          // empty TBS
            b"-----BEGIN CERTIFICATE-----".to_vec(),
        ];
        for c in cases {
            assert!(subject(&c).is_err(), "{c:02x?}");
        }
        // the serial number must be an INTEGER
        let mut bad = good.clone();
        let at = bad
            .windows(4)
            .position(|w| w == [INTEGER, 2, 1, 0x23])
            .unwrap();
        bad[at] = 0x04;
        assert!(matches!(
            subject(&bad),
            Err(X509Error::Malformed("serialNumber"))
        ));
        // an attribute with a third element, an OID cut short, an OID with
        // a non-minimal arc
        for atv_bytes in [
            tlv(
                SEQUENCE,
                &[tlv(OID, CN), tlv(UTF8_STRING, b"c"), tlv(UTF8_STRING, b"d")].concat(),
            ),
            tlv(
                SEQUENCE,
                &[tlv(OID, &[0x2a, 0x86]), tlv(UTF8_STRING, b"c")].concat(),
            ),
            tlv(
                SEQUENCE,
                &[tlv(OID, &[0x2a, 0x80, 0x01]), tlv(UTF8_STRING, b"c")].concat(),
            ),
            tlv(SEQUENCE, &[tlv(OID, &[]), tlv(UTF8_STRING, b"c")].concat()),
            tlv(
                SEQUENCE,
                &[tlv(OID, &[0xff; 20]), tlv(UTF8_STRING, b"c")].concat(),
            ),
            tlv(SEQUENCE, &tlv(OID, CN)),
        ] {
            let c = cert(&name(&[std::slice::from_ref(&atv_bytes)]));
            assert!(subject(&c).is_err(), "{atv_bytes:02x?}");
        }
        // nesting inside an undecoded value is bounded
        let mut deep = tlv(INTEGER, &[1]);
        for _ in 0..40 {
            deep = tlv(SEQUENCE, &deep);
        }
        let c = cert(&name(&[
            &[[tlv(OID, OTHER), deep].concat()].map(|b| tlv(SEQUENCE, &b))
        ]));
        assert!(matches!(subject(&c), Err(X509Error::Malformed(_))));
    }

    #[test]
    fn garbage_never_panics() {
        // a cheap deterministic generator: xorshift
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let good = cert(&name(&[
            &[atv(CN, BMP_STRING, b"\x00c"), atv(UID, IA5_STRING, b"u")],
            &[atv(OTHER, SEQUENCE, &tlv(INTEGER, &[7]))],
        ]));
        let mut parsed = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut c = good.clone();
            let at = (x as usize >> 8) % c.len();
            c[at] ^= (x as u8) | 1;
            if let Ok(s) = subject(&c) {
                parsed += 1;
                assert!(s.distinguished_name().is_ascii());
            }
        }
        // flips in the parts not read (key, signature) still parse
        assert!(parsed > 0);
    }
}
