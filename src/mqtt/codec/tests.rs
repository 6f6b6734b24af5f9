//! Unit tests of the MQTT codec: round trips of every packet type in both
//! wire formats, hand-built byte vectors, each decode rule with the reason
//! code it answers, incomplete input, zero-copy and the size helpers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use bytes::{Bytes, BytesMut};

use super::*;

const NO_LIMIT: usize = usize::MAX;

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn enc(p: &Packet, v: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(p, v, &mut out);
    out.to_vec()
}

/// A packet from a fixed header byte and a body (remaining length added).
fn raw(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let low = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// A two byte length and the bytes (a UTF-8 string or binary data).
fn s(x: &[u8]) -> Vec<u8> {
    let mut out = (x.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(x);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Decodes exactly one packet that is all of `bytes`.
fn dec(bytes: &[u8], v: Option<Version>) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, v, NO_LIMIT)
        .unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"))
        .expect("whole packet");
    assert!(buf.is_empty(), "bytes left over");
    p
}

/// The reason code decoding `bytes` fails with.
fn err(bytes: &[u8], v: Option<Version>) -> u8 {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, v, NO_LIMIT) {
        Err(e) => e.reason,
        Ok(p) => panic!("decoded {p:?} from {bytes:02x?}"),
    }
}

const V5: Option<Version> = Some(Version::V5);
const V311: Option<Version> = Some(Version::V311);
const MALFORMED: u8 = reason::MALFORMED;
const PROTOCOL: u8 = reason::PROTOCOL_ERROR;

/// Encodes for `v`, decodes, and checks the result and every prefix.
fn round_trip(p: &Packet, v: Version) {
    let bytes = enc(p, v);
    let dv = if matches!(p, Packet::Connect(_)) {
        None
    } else {
        Some(v)
    };
    assert_eq!(&dec(&bytes, dv), p, "{} for {v:?}", p.name());
    assert_every_prefix_incomplete(&bytes, dv);
}

fn assert_every_prefix_incomplete(bytes: &[u8], v: Option<Version>) {
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(decode(&mut buf, v, NO_LIMIT), Ok(None), "prefix {cut}");
        assert_eq!(buf.len(), cut, "prefix {cut} consumed");
    }
}

fn user() -> Vec<(Bytes, Bytes)> {
    vec![
        (b(b"k"), b(b"v1")),
        (b(b"k"), b(b"v2")),
        (b(b"\xc3\xa9"), b(b"")),
    ]
}

fn connect_props() -> Properties {
    Properties {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(10),
        maximum_packet_size: Some(65536),
        topic_alias_maximum: Some(5),
        request_response_information: Some(1),
        request_problem_information: Some(0),
        user_properties: user(),
        authentication_method: Some(b(b"SCRAM-SHA-256")),
        authentication_data: Some(b(b"\x00\xffdata")),
        ..Properties::default()
    }
}

fn will_props() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some(b(b"text/plain")),
        response_topic: Some(b(b"reply/here")),
        correlation_data: Some(b(b"\x00\x01")),
        will_delay_interval: Some(10),
        user_properties: user(),
        ..Properties::default()
    }
}

fn connack_props() -> Properties {
    Properties {
        session_expiry_interval: Some(0),
        receive_maximum: Some(100),
        maximum_qos: Some(1),
        retain_available: Some(0),
        maximum_packet_size: Some(1 << 20),
        assigned_client_id: Some(b(b"auto-1")),
        topic_alias_maximum: Some(16),
        reason_string: Some(b(b"welcome")),
        user_properties: user(),
        wildcard_subscription_available: Some(1),
        subscription_ids_available: Some(1),
        shared_subscription_available: Some(0),
        server_keep_alive: Some(30),
        response_information: Some(b(b"resp/")),
        server_reference: Some(b(b"other:1883")),
        authentication_method: Some(b(b"SCRAM-SHA-256")),
        authentication_data: Some(b(b"final")),
        ..Properties::default()
    }
}

fn publish_props() -> Properties {
    Properties {
        payload_format_indicator: Some(0),
        message_expiry_interval: Some(5),
        topic_alias: Some(3),
        response_topic: Some(b(b"r")),
        correlation_data: Some(b(b"c")),
        user_properties: user(),
        subscription_ids: vec![1, 268_435_455, 1],
        content_type: Some(b(b"application/json")),
        ..Properties::default()
    }
}

fn reason_props() -> Properties {
    Properties {
        reason_string: Some(b(b"because")),
        user_properties: user(),
        ..Properties::default()
    }
}

/// One of every packet, with everything MQTT 5 can carry.
fn v5_packets() -> Vec<Packet> {
    let ack = |packet_id, code| Ack {
        packet_id,
        code,
        props: reason_props(),
    };
    vec![
        Packet::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: b(b"client-1"),
            clean_start: true,
            keep_alive: 60,
            username: None,
            password: Some(b(b"\x00secret\xff")),
            will: Some(Will {
                topic: b(b"last/will"),
                payload: b(b"\x00\xffgone"),
                qos: 2,
                retain: true,
                props: will_props(),
            }),
            props: connect_props(),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            props: connack_props(),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: 2,
            retain: true,
            topic: b(b"a/b"),
            packet_id: 7,
            props: publish_props(),
            payload: b(b"payload"),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: 0,
            retain: false,
            topic: b(b""),
            packet_id: 0,
            props: Properties {
                topic_alias: Some(1),
                ..Properties::default()
            },
            payload: Bytes::new(),
        }),
        Packet::PubAck(ack(1, reason::NO_MATCHING_SUBSCRIBERS)),
        Packet::PubRec(ack(2, reason::QUOTA_EXCEEDED)),
        Packet::PubRel(ack(3, reason::PACKET_ID_NOT_FOUND)),
        Packet::PubComp(ack(65535, 0)),
        Packet::PubAck(Ack {
            packet_id: 4,
            code: 0,
            props: Properties::default(),
        }),
        Packet::PubRec(Ack {
            packet_id: 5,
            code: reason::NOT_AUTHORIZED,
            props: Properties::default(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 9,
            props: Properties {
                subscription_ids: vec![42],
                user_properties: user(),
                ..Properties::default()
            },
            filters: vec![
                (
                    b(b"a/+/c"),
                    SubOptions {
                        qos: 1,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                ),
                (
                    b(b"$share/g/x/#"),
                    SubOptions {
                        qos: 2,
                        retain_handling: 1,
                        ..SubOptions::default()
                    },
                ),
                (b(b"#"), SubOptions::default()),
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: 9,
            props: reason_props(),
            codes: vec![1, 2, 0, 0x80, 0x8F, 0x9E, 0xA1, 0xA2],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 10,
            props: Properties {
                user_properties: user(),
                ..Properties::default()
            },
            filters: vec![b(b"a/+/c"), b(b"#")],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 10,
            props: reason_props(),
            codes: vec![0, reason::NO_SUBSCRIPTION_EXISTED],
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            code: reason::DISCONNECT_WITH_WILL,
            props: Properties {
                session_expiry_interval: Some(0),
                reason_string: Some(b(b"bye")),
                server_reference: Some(b(b"elsewhere")),
                user_properties: user(),
                ..Properties::default()
            },
        }),
        Packet::Disconnect(Disconnect {
            code: 0,
            props: Properties::default(),
        }),
        Packet::Disconnect(Disconnect {
            code: reason::SERVER_SHUTTING_DOWN,
            props: Properties::default(),
        }),
        Packet::Auth(Auth {
            code: reason::CONTINUE_AUTHENTICATION,
            props: Properties {
                authentication_method: Some(b(b"SCRAM-SHA-256")),
                authentication_data: Some(b(b"client-first")),
                reason_string: Some(b(b"step")),
                user_properties: user(),
                ..Properties::default()
            },
        }),
        Packet::Auth(Auth {
            code: 0,
            props: Properties::default(),
        }),
    ]
}

/// One of every packet 3.1.1 has.
fn v311_packets() -> Vec<Packet> {
    let ack = |packet_id| Ack {
        packet_id,
        code: 0,
        props: Properties::default(),
    };
    vec![
        Packet::Connect(Box::new(Connect {
            version: Version::V311,
            client_id: b(b""),
            clean_start: true,
            keep_alive: 0,
            username: Some(b(b"guest")),
            password: Some(b(b"\x00\xff")),
            will: Some(Will {
                topic: b(b"will"),
                payload: b(b""),
                qos: 1,
                retain: false,
                props: Properties::default(),
            }),
            props: Properties::default(),
        })),
        Packet::Connect(Box::new(Connect {
            version: Version::V31,
            client_id: b(b"old-client"),
            clean_start: false,
            keep_alive: 65535,
            username: Some(b(b"u")),
            password: None,
            will: None,
            props: Properties::default(),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            props: Properties::default(),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: reason::V311_NOT_AUTHORIZED,
            props: Properties::default(),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: 0,
            retain: true,
            topic: b(b"t"),
            packet_id: 0,
            props: Properties::default(),
            payload: b(b"x"),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: 1,
            retain: false,
            topic: b(b"sensors/\xe2\x82\xac"),
            packet_id: 1,
            props: Properties::default(),
            payload: Bytes::from(vec![7u8; 300]),
        }),
        Packet::PubAck(ack(1)),
        Packet::PubRec(ack(2)),
        Packet::PubRel(ack(3)),
        Packet::PubComp(ack(4)),
        Packet::Subscribe(Subscribe {
            packet_id: 5,
            props: Properties::default(),
            filters: vec![
                (
                    b(b"a/#"),
                    SubOptions {
                        qos: 2,
                        ..SubOptions::default()
                    },
                ),
                (b(b"+"), SubOptions::default()),
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: 5,
            props: Properties::default(),
            codes: vec![2, 0x80, 0, 1],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 6,
            props: Properties::default(),
            filters: vec![b(b"a/#")],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            props: Properties::default(),
            codes: Vec::new(),
        }),
        Packet::PingReq,
        Packet::PingResp,
    ]
}

// ---------------------------------------------------------------------------
// round trips

#[test]
fn version_levels() {
    assert_eq!(Version::V31.level(), 3);
    assert_eq!(Version::V311.level(), 4);
    assert_eq!(Version::V5.level(), 5);
    assert!(Version::V5.is_v5() && !Version::V311.is_v5() && !Version::V31.is_v5());
}

#[test]
fn every_v5_packet_round_trips() {
    for p in v5_packets() {
        round_trip(&p, Version::V5);
    }
}

#[test]
fn every_v311_packet_round_trips() {
    for p in v311_packets() {
        round_trip(&p, Version::V311);
        if !matches!(p, Packet::Connect(_)) {
            // 3.1 shares the format of everything but CONNECT
            round_trip(&p, Version::V31);
        }
    }
}

#[test]
fn v5_packets_for_v311_lose_properties_and_codes() {
    for p in v5_packets() {
        let bytes = enc(&p, Version::V311);
        match &p {
            Packet::Auth(_) => {
                assert!(bytes.is_empty(), "{} is not sent to 3.1.1", p.name());
                continue;
            }
            Packet::Disconnect(_) => {
                assert_eq!(bytes, b"\xe0\x00", "3.1.1's DISCONNECT has no body");
                continue;
            }
            Packet::Connect(_) => continue, // encoded for its own version
            _ => {}
        }
        let back = dec(&bytes, V311);
        let stripped = match p.clone() {
            Packet::ConnAck(c) => Packet::ConnAck(ConnAck {
                props: Properties::default(),
                ..c
            }),
            Packet::Publish(m) => Packet::Publish(Publish {
                props: Properties::default(),
                ..m
            }),
            Packet::PubAck(a) => Packet::PubAck(Ack {
                packet_id: a.packet_id,
                code: 0,
                props: Properties::default(),
            }),
            Packet::PubRec(a) => Packet::PubRec(Ack {
                packet_id: a.packet_id,
                code: 0,
                props: Properties::default(),
            }),
            Packet::PubRel(a) => Packet::PubRel(Ack {
                packet_id: a.packet_id,
                code: 0,
                props: Properties::default(),
            }),
            Packet::PubComp(a) => Packet::PubComp(Ack {
                packet_id: a.packet_id,
                code: 0,
                props: Properties::default(),
            }),
            Packet::Subscribe(sub) => Packet::Subscribe(Subscribe {
                packet_id: sub.packet_id,
                props: Properties::default(),
                filters: sub
                    .filters
                    .into_iter()
                    .map(|(f, o)| {
                        (
                            f,
                            SubOptions {
                                qos: o.qos,
                                ..SubOptions::default()
                            },
                        )
                    })
                    .collect(),
            }),
            Packet::SubAck(a) => Packet::SubAck(SubAck {
                packet_id: a.packet_id,
                props: Properties::default(),
                // v5 failure codes become the one 3.1.1 failure code
                codes: vec![1, 2, 0, 0x80, 0x80, 0x80, 0x80, 0x80],
            }),
            Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
                props: Properties::default(),
                ..u
            }),
            Packet::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
                packet_id: a.packet_id,
                props: Properties::default(),
                codes: Vec::new(),
            }),
            other => other,
        };
        assert_eq!(back, stripped, "{}", p.name());
    }
}

#[test]
fn v5_connect_encoded_for_its_own_version() {
    let p = &v5_packets()[0];
    assert_eq!(enc(p, Version::V311), enc(p, Version::V5));
    let Packet::Connect(c) = p.clone() else {
        unreachable!()
    };
    // the same CONNECT as 3.1.1: no properties, and no password alone
    let old = Packet::Connect(Box::new(Connect {
        version: Version::V311,
        ..*c.clone()
    }));
    let Packet::Connect(back) = dec(&enc(&old, Version::V5), None) else {
        unreachable!()
    };
    assert_eq!(back.version, Version::V311);
    assert_eq!(back.props, Properties::default());
    assert_eq!(back.password, None);
    assert_eq!(back.will.unwrap().props, Properties::default());
}

#[test]
fn properties_not_allowed_in_a_packet_are_not_encoded() {
    let everything = Properties {
        subscription_ids: vec![5],
        ..connack_props()
    };
    let p = Packet::PubAck(Ack {
        packet_id: 1,
        code: 0,
        props: everything,
    });
    let bytes = enc(&p, Version::V5);
    // reason string and user properties only, in a PUBACK
    assert_eq!(
        dec(&bytes, V5),
        Packet::PubAck(Ack {
            packet_id: 1,
            code: 0,
            props: reason_props_like(&connack_props()),
        })
    );
}

fn reason_props_like(p: &Properties) -> Properties {
    Properties {
        reason_string: p.reason_string.clone(),
        user_properties: p.user_properties.clone(),
        ..Properties::default()
    }
}

// ---------------------------------------------------------------------------
// known bytes

/// The 3.1.1 session of `mosquitto_pub -i mosq-client -t test -m hello -q 1`
/// (CONNECT with clean session and keep alive 60, PUBLISH QoS 1 with packet
/// id 1, DISCONNECT), and the broker's side, byte by byte.
#[test]
fn mosquitto_pub_session_bytes() {
    let connect: &[u8] = b"\x10\x17\x00\x04MQTT\x04\x02\x00\x3c\x00\x0bmosq-client";
    let publish: &[u8] = b"\x32\x0d\x00\x04test\x00\x01hello";
    let disconnect: &[u8] = b"\xe0\x00";
    let mut stream = BytesMut::from(&cat(&[connect, publish, disconnect])[..]);

    let c = decode(&mut stream, None, NO_LIMIT).unwrap().unwrap();
    let want = Packet::Connect(Box::new(Connect {
        version: Version::V311,
        client_id: b(b"mosq-client"),
        clean_start: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
        props: Properties::default(),
    }));
    assert_eq!(c, want);
    assert_eq!(enc(&want, Version::V311), connect);

    let p = decode(&mut stream, V311, NO_LIMIT).unwrap().unwrap();
    let want = Packet::Publish(Publish {
        dup: false,
        qos: 1,
        retain: false,
        topic: b(b"test"),
        packet_id: 1,
        props: Properties::default(),
        payload: b(b"hello"),
    });
    assert_eq!(p, want);
    assert_eq!(enc(&want, Version::V311), publish);

    let d = decode(&mut stream, V311, NO_LIMIT).unwrap().unwrap();
    assert_eq!(
        d,
        Packet::Disconnect(Disconnect {
            code: 0,
            props: Properties::default()
        })
    );
    assert!(stream.is_empty());
    assert_eq!(decode(&mut stream, V311, NO_LIMIT), Ok(None));

    // the broker's answers
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: 0,
        props: Properties::default(),
    });
    assert_eq!(enc(&connack, Version::V311), b"\x20\x02\x00\x00");
    let puback = Packet::PubAck(Ack {
        packet_id: 1,
        code: 0,
        props: Properties::default(),
    });
    assert_eq!(enc(&puback, Version::V311), b"\x40\x02\x00\x01");
    assert_eq!(enc(&puback, Version::V5), b"\x40\x02\x00\x01");
    assert_eq!(enc(&Packet::PingResp, Version::V311), b"\xd0\x00");
}

#[test]
fn v311_subscribe_and_suback_bytes() {
    let sub: &[u8] = b"\x82\x0f\x00\x0a\x00\x04test\x01\x00\x03a/#\x02";
    let p = dec(sub, V311);
    assert_eq!(
        p,
        Packet::Subscribe(Subscribe {
            packet_id: 10,
            props: Properties::default(),
            filters: vec![
                (
                    b(b"test"),
                    SubOptions {
                        qos: 1,
                        ..SubOptions::default()
                    }
                ),
                (
                    b(b"a/#"),
                    SubOptions {
                        qos: 2,
                        ..SubOptions::default()
                    }
                ),
            ],
        })
    );
    assert_eq!(enc(&p, Version::V311), sub);
    let suback = Packet::SubAck(SubAck {
        packet_id: 10,
        props: Properties::default(),
        codes: vec![1, reason::QUOTA_EXCEEDED],
    });
    assert_eq!(enc(&suback, Version::V311), b"\x90\x04\x00\x0a\x01\x80");
}

/// An MQTT 5 CONNECT with CONNECT and will properties, built by hand from
/// MQTT 5.0 §3.1: the decoder's value, and the encoder's bytes.
#[test]
fn v5_connect_bytes() {
    let body = cat(&[
        &s(b"MQTT"),
        b"\x05",
        // user name, password, will QoS 1, will, clean start
        b"\xce",
        b"\x00\x3c",
        // properties: session expiry 3600, receive maximum 10
        b"\x08\x11\x00\x00\x0e\x10\x21\x00\x0a",
        &s(b"cid"),
        // will properties: payload format 1, will delay 5
        b"\x07\x01\x01\x18\x00\x00\x00\x05",
        &s(b"w/tp"),
        &s(b"bye"),
        &s(b"user"),
        &s(b"\x00\xff"),
    ]);
    let bytes = raw(0x10, &body);
    assert_eq!(bytes[1], 53);
    let want = Packet::Connect(Box::new(Connect {
        version: Version::V5,
        client_id: b(b"cid"),
        clean_start: true,
        keep_alive: 60,
        username: Some(b(b"user")),
        password: Some(b(b"\x00\xff")),
        will: Some(Will {
            topic: b(b"w/tp"),
            payload: b(b"bye"),
            qos: 1,
            retain: false,
            props: Properties {
                payload_format_indicator: Some(1),
                will_delay_interval: Some(5),
                ..Properties::default()
            },
        }),
        props: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(10),
            ..Properties::default()
        },
    }));
    assert_eq!(dec(&bytes, None), want);
    assert_eq!(enc(&want, Version::V5), bytes);
    // properties in another order read the same
    let swapped = raw(
        0x10,
        &cat(&[
            &body[..10],
            b"\x08\x21\x00\x0a\x11\x00\x00\x0e\x10",
            &body[19..],
        ]),
    );
    assert_eq!(dec(&swapped, None), want);
}

#[test]
fn v5_connack_and_short_acks_bytes() {
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: reason::BAD_USER_OR_PASSWORD,
        props: Properties::default(),
    });
    assert_eq!(enc(&connack, Version::V5), b"\x20\x03\x00\x86\x00");
    // PUBACK: remaining length 2 = success, no properties; 3 = code only
    let ack = |code, props| Ack {
        packet_id: 0x0102,
        code,
        props,
    };
    assert_eq!(
        dec(b"\x40\x02\x01\x02", V5),
        Packet::PubAck(ack(0, Properties::default()))
    );
    assert_eq!(
        dec(b"\x40\x03\x01\x02\x10", V5),
        Packet::PubAck(ack(0x10, Properties::default()))
    );
    assert_eq!(
        dec(b"\x40\x04\x01\x02\x00\x00", V5),
        Packet::PubAck(ack(0, Properties::default()))
    );
    assert_eq!(
        enc(
            &Packet::PubAck(ack(0x10, Properties::default())),
            Version::V5
        ),
        b"\x40\x03\x01\x02\x10"
    );
    let with_reason = dec(b"\x50\x08\x01\x02\x97\x04\x1f\x00\x01x", V5);
    assert_eq!(
        with_reason,
        Packet::PubRec(ack(
            reason::QUOTA_EXCEEDED,
            Properties {
                reason_string: Some(b(b"x")),
                ..Properties::default()
            }
        ))
    );
    // DISCONNECT and AUTH: remaining length 0 = success
    assert_eq!(
        dec(b"\xe0\x00", V5),
        Packet::Disconnect(Disconnect {
            code: 0,
            props: Properties::default()
        })
    );
    assert_eq!(
        dec(b"\xe0\x01\x8e", V5),
        Packet::Disconnect(Disconnect {
            code: reason::SESSION_TAKEN_OVER,
            props: Properties::default()
        })
    );
    assert_eq!(
        dec(b"\xf0\x00", V5),
        Packet::Auth(Auth {
            code: 0,
            props: Properties::default()
        })
    );
    assert_eq!(
        enc(
            &Packet::Disconnect(Disconnect {
                code: 0,
                props: Properties::default()
            }),
            Version::V5
        ),
        b"\xe0\x00"
    );
}

// ---------------------------------------------------------------------------
// fixed header and sizes

#[test]
fn remaining_length_spec_values() {
    // MQTT 3.1.1 Table 2.4 / MQTT 5.0 Table 1-1
    let cases: &[(&[u8], usize)] = &[
        (b"\x00", 0),
        (b"\x7f", 127),
        (b"\x80\x01", 128),
        (b"\xff\x7f", 16_383),
        (b"\x80\x80\x01", 16_384),
        (b"\xff\xff\x7f", 2_097_151),
        (b"\x80\x80\x80\x01", 2_097_152),
        (b"\xff\xff\xff\x7f", 268_435_455),
    ];
    for &(bytes, n) in cases {
        let header = cat(&[b"\x30", bytes]);
        assert_eq!(fixed_header(&header), Ok(Some((0x30, 1 + bytes.len(), n))));
        assert_eq!(fixed_header(&header[..header.len() - 1]), Ok(None));
        let mut out = BytesMut::new();
        encode::Sink::varint(&mut out, n);
        assert_eq!(&out[..], bytes);
    }
    assert_eq!(fixed_header(b""), Ok(None));
    assert_eq!(fixed_header(b"\x30"), Ok(None));
}

#[test]
fn remaining_length_fifth_byte_is_malformed() {
    assert_eq!(
        fixed_header(b"\x30\xff\xff\xff\xff").unwrap_err().reason,
        MALFORMED
    );
    assert_eq!(
        fixed_header(b"\x30\x80\x80\x80\x80\x00")
            .unwrap_err()
            .reason,
        MALFORMED
    );
    assert_eq!(err(b"\x30\xff\xff\xff\xff\x01", V311), MALFORMED);
    // four continuation bytes are not enough to know
    assert_eq!(fixed_header(b"\x30\xff\xff\xff"), Ok(None));
}

#[test]
fn non_minimal_remaining_length_is_accepted() {
    assert_eq!(dec(b"\xc0\x80\x00", V311), Packet::PingReq);
    assert_eq!(dec(b"\xd0\x80\x80\x80\x00", V5), Packet::PingResp);
}

#[test]
fn too_large_from_the_fixed_header_alone() {
    // a PUBLISH announcing 16,383 bytes, none of them here yet
    let mut buf = BytesMut::from(&b"\x30\xff\x7f"[..]);
    let e = decode(&mut buf, V311, 1000).unwrap_err();
    assert_eq!(e.reason, reason::PACKET_TOO_LARGE);
    // the limit counts the fixed header: 2 + 3 = 5
    let ping = b"\x30\x03\x00\x01t";
    let mut buf = BytesMut::from(&ping[..]);
    assert!(decode(&mut buf, V311, 5).unwrap().is_some());
    let mut buf = BytesMut::from(&ping[..]);
    assert_eq!(
        decode(&mut buf, V311, 4).unwrap_err().reason,
        reason::PACKET_TOO_LARGE
    );
    // a CONNECT before any version too
    let mut buf = BytesMut::from(&b"\x10\x80\x08"[..]);
    assert_eq!(
        decode(&mut buf, None, 1024).unwrap_err().reason,
        reason::PACKET_TOO_LARGE
    );
}

#[test]
fn incomplete_input_consumes_nothing() {
    let mut stream = Vec::new();
    for p in v5_packets().iter().skip(1) {
        let bytes = enc(p, Version::V5);
        assert_every_prefix_incomplete(&bytes, V5);
        stream.extend_from_slice(&bytes);
    }
    // the whole stream fed one byte at a time
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &byte in &stream {
        buf.extend_from_slice(&[byte]);
        while let Some(p) = decode(&mut buf, V5, NO_LIMIT).unwrap() {
            got.push(p);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, v5_packets()[1..].to_vec());
}

#[test]
fn decoded_fields_are_slices_of_the_packet() {
    let bytes = enc(&v5_packets()[2], Version::V5);
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let range = start..start + bytes.len();
    let Some(Packet::Publish(p)) = decode(&mut buf, V5, NO_LIMIT).unwrap() else {
        panic!("not a publish")
    };
    for field in [
        &p.topic,
        &p.payload,
        p.props.content_type.as_ref().unwrap(),
        p.props.correlation_data.as_ref().unwrap(),
        &p.props.user_properties[0].1,
    ] {
        assert!(
            range.contains(&(field.as_ptr() as usize)),
            "{field:?} copied"
        );
    }
}

#[test]
fn publish_head_and_size() {
    for v in [Version::V311, Version::V5] {
        for p in v5_packets().into_iter().chain(v311_packets()) {
            let Packet::Publish(m) = p else { continue };
            let whole = enc(&Packet::Publish(m.clone()), v);
            assert_eq!(
                publish_size(v, m.topic.len(), m.qos, &m.props, m.payload.len()),
                whole.len()
            );
            let mut out = BytesMut::from(&b"already here"[..]);
            let n = encode_publish_head(
                &mut out,
                v,
                m.dup,
                m.qos,
                m.retain,
                &m.topic,
                m.packet_id,
                &m.props,
                m.payload.len(),
            );
            assert_eq!(n, out.len() - 12);
            out.extend_from_slice(&m.payload);
            assert_eq!(&out[12..], &whole[..]);
        }
    }
    // a payload that needs a longer remaining length
    let props = Properties::default();
    assert_eq!(publish_size(Version::V311, 1, 0, &props, 124), 2 + 127);
    assert_eq!(publish_size(Version::V311, 1, 0, &props, 125), 3 + 128);
    assert_eq!(publish_size(Version::V5, 1, 1, &props, 0), 2 + 3 + 2 + 1);
}

// ---------------------------------------------------------------------------
// fixed header rules

#[test]
fn first_packet_must_be_connect() {
    assert_eq!(err(b"\xc0\x00", None), PROTOCOL);
    assert_eq!(err(b"\x30\x03\x00\x01t", None), PROTOCOL);
    assert_eq!(err(b"\x20", None), PROTOCOL); // from the first byte
    assert_eq!(err(b"\x00\x00", None), PROTOCOL);
}

#[test]
fn reserved_flags_are_malformed() {
    // every type but PUBLISH has fixed flags: 0b0010 for PUBREL, SUBSCRIBE,
    // UNSUBSCRIBE, 0 for the others
    let good: &[(u8, &[u8])] = &[
        (0x20, b"\x00\x00"),
        (0x40, b"\x00\x01"),
        (0x50, b"\x00\x01"),
        (0x62, b"\x00\x01"),
        (0x70, b"\x00\x01"),
        (0x82, b"\x00\x01\x00\x01t\x00"),
        (0x90, b"\x00\x01\x00"),
        (0xA2, b"\x00\x01\x00\x01t"),
        (0xB0, b"\x00\x01"),
        (0xC0, b""),
        (0xD0, b""),
        (0xE0, b""),
    ];
    for &(first, body) in good {
        dec(&raw(first, body), V311);
        for flags in 0..16u8 {
            let other = (first & 0xF0) | flags;
            if other != first {
                assert_eq!(err(&raw(other, body), V311), MALFORMED, "{other:02x}");
            }
        }
    }
    assert_eq!(err(b"\x11\x00", None), MALFORMED);
    assert_eq!(err(b"\xf1\x00", V5), MALFORMED);
}

#[test]
fn reserved_and_v5_only_packet_types() {
    assert_eq!(err(b"\x00\x00", V311), MALFORMED);
    assert_eq!(err(b"\x00\x00", V5), MALFORMED);
    // AUTH is MQTT 5 only
    assert_eq!(err(b"\xf0\x00", V311), MALFORMED);
    assert_eq!(err(b"\xf0\x00", Some(Version::V31)), MALFORMED);
}

#[test]
fn publish_qos_3_and_qos_0_dup_are_malformed() {
    // [MQTT-3.3.1-4], [MQTT-3.3.1-2]
    for v in [V311, V5] {
        assert_eq!(err(b"\x36\x05\x00\x01t\x00\x01", v), MALFORMED);
        assert_eq!(err(b"\x38\x03\x00\x01t", v), MALFORMED);
        assert_eq!(err(b"\x36", v), MALFORMED); // from the first byte
    }
    // DUP with QoS 1 is fine
    dec(b"\x3a\x05\x00\x01t\x00\x01", V311);
    dec(b"\x3a\x06\x00\x01t\x00\x01\x00", V5);
}

#[test]
fn packet_id_zero_is_a_protocol_error() {
    for v in [V311, V5] {
        assert_eq!(err(b"\x32\x05\x00\x01t\x00\x00", v), PROTOCOL);
        assert_eq!(err(b"\x34\x05\x00\x01t\x00\x00", v), PROTOCOL);
        assert_eq!(err(b"\x40\x02\x00\x00", v), PROTOCOL);
        assert_eq!(err(b"\x50\x02\x00\x00", v), PROTOCOL);
        assert_eq!(err(b"\x62\x02\x00\x00", v), PROTOCOL);
        assert_eq!(err(b"\x70\x02\x00\x00", v), PROTOCOL);
        assert_eq!(err(b"\xb0\x02\x00\x00", V311), PROTOCOL);
    }
    assert_eq!(err(b"\x82\x06\x00\x00\x00\x01t\x00", V311), PROTOCOL);
    assert_eq!(err(b"\x82\x07\x00\x00\x00\x00\x01t\x00", V5), PROTOCOL);
    assert_eq!(err(b"\xa2\x05\x00\x00\x00\x01t", V311), PROTOCOL);
    assert_eq!(err(b"\xa2\x06\x00\x00\x00\x00\x01t", V5), PROTOCOL);
    assert_eq!(err(b"\x90\x03\x00\x00\x00", V311), PROTOCOL);
    // QoS 0: no packet identifier at all
    assert_eq!(
        dec(b"\x30\x05\x00\x01t\x00\x00", V311),
        Packet::Publish(Publish {
            dup: false,
            qos: 0,
            retain: false,
            topic: b(b"t"),
            packet_id: 0,
            props: Properties::default(),
            payload: b(b"\x00\x00"),
        })
    );
}

#[test]
fn trailing_bytes_are_malformed() {
    assert_eq!(err(b"\xc0\x01\x00", V311), MALFORMED);
    assert_eq!(err(b"\xd0\x01\x00", V5), MALFORMED);
    assert_eq!(err(b"\xe0\x01\x00", V311), MALFORMED);
    assert_eq!(err(b"\x40\x03\x00\x01\x00", V311), MALFORMED);
    assert_eq!(err(b"\x40\x05\x00\x01\x00\x00\x00", V5), MALFORMED);
    assert_eq!(err(b"\xb0\x03\x00\x01\x00", V311), MALFORMED);
    assert_eq!(err(b"\x20\x03\x00\x00\x00", V311), MALFORMED);
    assert_eq!(err(b"\x20\x04\x00\x00\x00\x00", V5), MALFORMED);
    assert_eq!(err(b"\xe0\x03\x00\x00\x00", V5), MALFORMED);
    let connect = enc(&v311_packets()[0], Version::V311);
    let mut longer = raw(0x10, &cat(&[&connect[2..], b"x"]));
    assert_eq!(err(&longer, None), MALFORMED);
    longer.truncate(longer.len() - 2);
    longer[1] -= 2;
    assert_eq!(err(&longer, None), MALFORMED); // and shorter
}

// ---------------------------------------------------------------------------
// strings

#[test]
fn strings_must_be_utf8_without_nul() {
    let bad: [&[u8]; 4] = [b"a\x00b", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf"];
    for bad in bad {
        // topic, filter
        assert_eq!(err(&raw(0x30, &s(bad)), V311), MALFORMED);
        assert_eq!(
            err(&raw(0x82, &cat(&[b"\x00\x01", &s(bad), b"\x00"])), V311),
            MALFORMED
        );
        assert_eq!(
            err(&raw(0xA2, &cat(&[b"\x00\x01", &s(bad)])), V311),
            MALFORMED
        );
        // client id, will topic, user name
        let connect = |flags: &[u8], payload: &[u8]| {
            raw(
                0x10,
                &cat(&[&s(b"MQTT"), b"\x04", flags, b"\x00\x00", payload]),
            )
        };
        assert_eq!(err(&connect(b"\x00", &s(bad)), None), MALFORMED);
        assert_eq!(
            err(&connect(b"\x04", &cat(&[&s(b"c"), &s(bad), &s(b"")])), None),
            MALFORMED
        );
        assert_eq!(
            err(&connect(b"\x80", &cat(&[&s(b"c"), &s(bad)])), None),
            MALFORMED
        );
        // properties: content type, response topic, reason string, user
        // property name and value
        for prop in [
            cat(&[b"\x03", &s(bad)]),
            cat(&[b"\x08", &s(bad)]),
            cat(&[b"\x26", &s(bad), &s(b"v")]),
            cat(&[b"\x26", &s(b"k"), &s(bad)]),
        ] {
            let body = cat(&[&s(b"t"), &[prop.len() as u8], &prop]);
            assert_eq!(err(&raw(0x30, &body), V5), MALFORMED);
        }
        let body = cat(&[b"\x00\x01\x80", &[3 + bad.len() as u8, 0x1F], &s(bad)]);
        assert_eq!(err(&raw(0x40, &body), V5), MALFORMED);
    }
    // password, will payload, correlation data are binary
    let p = dec(
        &raw(
            0x10,
            &cat(&[
                &s(b"MQTT"),
                b"\x05\xc4\x00\x00\x00",
                &s(b"c"),
                &cat(&[b"\x05\x09", &s(b"\x00\xff")]),
                &s(b"t"),
                &s(b"\x00\xff"),
                &s(b"u"),
                &s(b"\xff\x00"),
            ]),
        ),
        None,
    );
    let Packet::Connect(c) = p else { panic!() };
    assert_eq!(c.password, Some(b(b"\xff\x00")));
    let will = c.will.unwrap();
    assert_eq!(will.payload, b(b"\x00\xff"));
    assert_eq!(will.props.correlation_data, Some(b(b"\x00\xff")));
    // multi-byte UTF-8 is fine
    dec(&raw(0x30, &s("héllo/wörld/日本".as_bytes())), V311);
}

#[test]
fn strings_running_past_the_packet_are_malformed() {
    assert_eq!(err(b"\x30\x03\x00\x05t", V311), MALFORMED);
    assert_eq!(err(b"\x30\x01\x00", V311), MALFORMED);
    assert_eq!(err(b"\x32\x04\x00\x01t\x00", V311), MALFORMED);
}

// ---------------------------------------------------------------------------
// CONNECT

fn connect_bytes(name: &[u8], level: u8, flags: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut body = cat(&[&s(name), &[level, flags], b"\x00\x3c"]);
    for r in rest {
        body.extend_from_slice(r);
    }
    raw(0x10, &body)
}

#[test]
fn connect_protocol_name_and_level() {
    let ok = |name: &[u8], level, props: &[u8], v| {
        let Packet::Connect(c) = dec(&connect_bytes(name, level, 2, &[props, &s(b"c")]), None)
        else {
            panic!()
        };
        assert_eq!(c.version, v);
    };
    ok(b"MQIsdp", 3, b"", Version::V31);
    ok(b"MQTT", 4, b"", Version::V311);
    ok(b"MQTT", 5, b"\x00", Version::V5);
    for (name, level) in [
        (&b"MQTT"[..], 3),
        (b"MQTT", 6),
        (b"MQTT", 0),
        (b"MQIsdp", 4),
        (b"MQIsdp", 5),
    ] {
        let bytes = connect_bytes(name, level, 2, &[&s(b"c")]);
        assert_eq!(err(&bytes, None), reason::UNSUPPORTED_VERSION, "{level}");
    }
    for name in [&b"MQTT5"[..], b"mqtt", b"", b"MQIsdpX"] {
        assert_eq!(
            err(&connect_bytes(name, 4, 2, &[&s(b"c")]), None),
            MALFORMED
        );
    }
}

#[test]
fn connect_flags() {
    let c = |flags, rest: &[&[u8]]| connect_bytes(b"MQTT", 4, flags, rest);
    let c5 = |flags, rest: &[&[u8]]| connect_bytes(b"MQTT", 5, flags, rest);
    let id = s(b"c");
    // [MQTT-3.1.2-3] reserved bit
    assert_eq!(err(&c(0x03, &[&id]), None), MALFORMED);
    assert_eq!(err(&c5(0x01, &[b"\x00", &id]), None), MALFORMED);
    // will QoS 3
    assert_eq!(err(&c(0x1c, &[&id, &s(b"t"), &s(b"p")]), None), MALFORMED);
    // will QoS or retain without the will flag
    assert_eq!(err(&c(0x08, &[&id]), None), MALFORMED);
    assert_eq!(err(&c(0x10, &[&id]), None), MALFORMED);
    assert_eq!(err(&c(0x20, &[&id]), None), MALFORMED);
    assert_eq!(err(&c5(0x20, &[b"\x00", &id]), None), MALFORMED);
    // a will with QoS 2 and retain
    let Packet::Connect(w) = dec(&c(0x34, &[&id, &s(b"t"), &s(b"p")]), None) else {
        panic!()
    };
    let will = w.will.unwrap();
    assert_eq!((will.qos, will.retain), (2, true));
    // password without user name: malformed in 3.1.1, allowed in 5
    assert_eq!(err(&c(0x40, &[&id, &s(b"pw")]), None), MALFORMED);
    assert_eq!(
        err(&connect_bytes(b"MQIsdp", 3, 0x40, &[&id, &s(b"pw")]), None),
        MALFORMED
    );
    let Packet::Connect(p) = dec(&c5(0x40, &[b"\x00", &id, &s(b"pw")]), None) else {
        panic!()
    };
    assert_eq!((p.username, p.password), (None, Some(b(b"pw"))));
    // empty client id is the session's call
    let Packet::Connect(e) = dec(&c(0x00, &[&s(b"")]), None) else {
        panic!()
    };
    assert!(e.client_id.is_empty() && !e.clean_start);
    // flags announcing fields that are not there
    assert_eq!(err(&c(0x80, &[&id]), None), MALFORMED);
    assert_eq!(err(&c(0x04, &[&id, &s(b"t")]), None), MALFORMED);
}

#[test]
fn connect_properties() {
    let c5 = |props: &[u8]| {
        connect_bytes(
            b"MQTT",
            5,
            0x02,
            &[&cat(&[&[props.len() as u8], props]), &s(b"c")],
        )
    };
    dec(&c5(b"\x11\x00\x00\x00\x05"), None);
    // not allowed in CONNECT: topic alias, will delay, server keep alive
    assert_eq!(err(&c5(b"\x23\x00\x01"), None), MALFORMED);
    assert_eq!(err(&c5(b"\x18\x00\x00\x00\x01"), None), MALFORMED);
    assert_eq!(err(&c5(b"\x13\x00\x01"), None), MALFORMED);
    // zero values
    assert_eq!(err(&c5(b"\x21\x00\x00"), None), PROTOCOL);
    assert_eq!(err(&c5(b"\x27\x00\x00\x00\x00"), None), PROTOCOL);
    // 0/1 values
    assert_eq!(err(&c5(b"\x17\x02"), None), PROTOCOL);
    assert_eq!(err(&c5(b"\x19\x02"), None), PROTOCOL);
    // authentication data needs a method
    assert_eq!(err(&c5(&cat(&[b"\x16", &s(b"d")])), None), PROTOCOL);
    dec(&c5(&cat(&[b"\x15", &s(b"m"), b"\x16", &s(b"d")])), None);
    // will properties are their own set: no session expiry in the will
    let will = |props: &[u8]| {
        connect_bytes(
            b"MQTT",
            5,
            0x06,
            &[
                b"\x00",
                &s(b"c"),
                &cat(&[&[props.len() as u8], props]),
                &s(b"t"),
                &s(b"p"),
            ],
        )
    };
    dec(&will(b"\x18\x00\x00\x00\x05"), None);
    assert_eq!(err(&will(b"\x11\x00\x00\x00\x05"), None), MALFORMED);
    assert_eq!(err(&will(b"\x01\x02"), None), PROTOCOL);
    assert_eq!(err(&will(b"\x08\x00\x01#"), None), PROTOCOL);
}

// ---------------------------------------------------------------------------
// properties

/// A v5 PUBLISH (topic "t", QoS 0) with property bytes `props`.
fn publish_with(props: &[u8]) -> Vec<u8> {
    let mut len = BytesMut::new();
    encode::Sink::varint(&mut len, props.len());
    raw(0x30, &cat(&[&s(b"t"), &len, props, b"pay"]))
}

#[test]
fn property_rules() {
    let p = |props: &[u8]| match dec(&publish_with(props), V5) {
        Packet::Publish(m) => m.props,
        _ => panic!(),
    };
    // unknown identifiers are malformed, ones not for PUBLISH too
    for id in [0x00u8, 0x04, 0x0A, 0x2B, 0x7F] {
        assert_eq!(err(&publish_with(&[id, 0]), V5), MALFORMED, "{id:02x}");
    }
    assert_eq!(err(&publish_with(b"\x80\x01\x00"), V5), MALFORMED);
    assert_eq!(err(&publish_with(b"\x11\x00\x00\x00\x00"), V5), MALFORMED);
    assert_eq!(err(&publish_with(b"\x1f\x00\x00"), V5), MALFORMED);
    // a non-minimal identifier is the same identifier
    assert_eq!(p(b"\x81\x00\x01").payload_format_indicator, Some(1));
    // at most once
    assert_eq!(err(&publish_with(b"\x01\x00\x01\x01"), V5), PROTOCOL);
    assert_eq!(
        err(&publish_with(b"\x23\x00\x01\x23\x00\x02"), V5),
        PROTOCOL
    );
    assert_eq!(
        err(
            &publish_with(b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x01"),
            V5
        ),
        PROTOCOL
    );
    // zero where it is not allowed
    assert_eq!(err(&publish_with(b"\x23\x00\x00"), V5), PROTOCOL);
    assert_eq!(err(&publish_with(b"\x0b\x00"), V5), PROTOCOL);
    // subscription identifiers repeat in a PUBLISH, in order
    assert_eq!(
        p(b"\x0b\x05\x0b\xff\xff\xff\x7f\x0b\x05").subscription_ids,
        vec![5, 268_435_455, 5]
    );
    // and a five byte one is malformed
    assert_eq!(
        err(&publish_with(b"\x0b\x80\x80\x80\x80\x01"), V5),
        MALFORMED
    );
    // user properties repeat, in order
    assert_eq!(
        p(&cat(&[
            b"\x26",
            &s(b"b"),
            &s(b"1"),
            b"\x26",
            &s(b"a"),
            &s(b"2"),
            b"\x26",
            &s(b"b"),
            &s(b"3")
        ]))
        .user_properties,
        vec![(b(b"b"), b(b"1")), (b(b"a"), b(b"2")), (b(b"b"), b(b"3"))]
    );
    // response topic: a topic name
    assert_eq!(
        err(&publish_with(&cat(&[b"\x08", &s(b"a/+")])), V5),
        PROTOCOL
    );
    assert_eq!(err(&publish_with(&cat(&[b"\x08", &s(b"")])), V5), PROTOCOL);
    // a value cut short by the property length
    assert_eq!(
        err(&raw(0x30, &cat(&[&s(b"t"), b"\x02\x02\x00\x00\x00"])), V5),
        MALFORMED
    );
    // property length past the packet
    assert_eq!(
        err(&raw(0x30, &cat(&[&s(b"t"), b"\x09\x01\x01"])), V5),
        MALFORMED
    );
    // property length varint of five bytes
    assert_eq!(
        err(&raw(0x30, &cat(&[&s(b"t"), b"\x80\x80\x80\x80\x00"])), V5),
        MALFORMED
    );
    // missing property length in v5
    assert_eq!(err(&raw(0x30, &s(b"t")), V5), MALFORMED);
}

#[test]
fn properties_per_packet_type() {
    // CONNACK-only values
    let connack = |props: &[u8]| raw(0x20, &cat(&[b"\x00\x00", &[props.len() as u8], props]));
    dec(&connack(b"\x24\x01\x25\x00\x28\x01\x29\x00\x2a\x01"), V5);
    assert_eq!(err(&connack(b"\x24\x02"), V5), PROTOCOL);
    assert_eq!(err(&connack(b"\x2a\x02"), V5), PROTOCOL);
    assert_eq!(err(&connack(b"\x17\x01"), V5), MALFORMED);
    assert_eq!(err(&connack(b"\x01\x01"), V5), MALFORMED);
    // SUBSCRIBE: one subscription identifier, non-zero
    let sub = |props: &[u8]| {
        raw(
            0x82,
            &cat(&[b"\x00\x01", &[props.len() as u8], props, &s(b"t"), b"\x00"]),
        )
    };
    let Packet::Subscribe(one) = dec(&sub(b"\x0b\x07"), V5) else {
        panic!()
    };
    assert_eq!(one.props.subscription_ids, vec![7]);
    assert_eq!(err(&sub(b"\x0b\x07\x0b\x08"), V5), PROTOCOL);
    assert_eq!(err(&sub(b"\x0b\x00"), V5), PROTOCOL);
    assert_eq!(err(&sub(b"\x1f\x00\x00"), V5), MALFORMED);
    // acks: reason string and user properties only
    assert_eq!(err(&raw(0x40, b"\x00\x01\x00\x02\x0b\x01"), V5), MALFORMED);
    // DISCONNECT: session expiry and server reference allowed, not the
    // receive maximum
    dec(&raw(0xE0, &cat(&[b"\x9c\x05\x11\x00\x00\x00\x01"])), V5);
    assert_eq!(err(&raw(0xE0, b"\x00\x03\x21\x00\x01"), V5), MALFORMED);
    // AUTH
    assert_eq!(err(&raw(0xF0, b"\x18\x02\x11\x00"), V5), MALFORMED);
    // UNSUBSCRIBE: user properties only
    assert_eq!(
        err(&raw(0xA2, &cat(&[b"\x00\x01\x02\x0b\x01", &s(b"t")])), V5),
        MALFORMED
    );
}

// ---------------------------------------------------------------------------
// reason codes

#[test]
fn reason_codes_must_fit_the_packet() {
    assert_eq!(err(b"\x40\x03\x00\x01\x92", V5), PROTOCOL); // PUBACK
    assert_eq!(err(b"\x50\x03\x00\x01\x01", V5), PROTOCOL); // PUBREC
    assert_eq!(err(b"\x62\x03\x00\x01\x10", V5), PROTOCOL); // PUBREL
    dec(b"\x62\x03\x00\x01\x92", V5);
    dec(b"\x70\x03\x00\x01\x92", V5);
    assert_eq!(err(b"\xe0\x01\x01", V5), PROTOCOL); // DISCONNECT
    assert_eq!(err(b"\xe0\x01\x84", V5), PROTOCOL);
    assert_eq!(err(b"\xf0\x01\x80", V5), PROTOCOL); // AUTH
    dec(b"\xf0\x01\x19", V5);
    assert_eq!(err(b"\x20\x03\x00\x04\x00", V5), PROTOCOL); // CONNACK
    assert_eq!(err(b"\x20\x02\x00\x06", V311), PROTOCOL);
    dec(b"\x20\x02\x00\x05", V311);
    // session present only with success
    assert_eq!(err(b"\x20\x02\x01\x05", V311), PROTOCOL);
    assert_eq!(err(b"\x20\x03\x01\x87\x00", V5), PROTOCOL);
    // CONNACK flags other than session present
    assert_eq!(err(b"\x20\x02\x02\x00", V311), MALFORMED);
    // SUBACK: 3.1.1 has four codes, MQTT 5 more
    assert_eq!(err(b"\x90\x03\x00\x01\x87", V311), PROTOCOL);
    dec(b"\x90\x04\x00\x01\x00\x87", V5);
    assert_eq!(err(b"\x90\x04\x00\x01\x00\x03", V5), PROTOCOL);
    assert_eq!(err(b"\x90\x02\x00\x01", V311), PROTOCOL);
    // UNSUBACK
    dec(b"\xb0\x04\x00\x01\x00\x11", V5);
    assert_eq!(err(b"\xb0\x04\x00\x01\x00\x10", V5), PROTOCOL);
    assert_eq!(err(b"\xb0\x03\x00\x01\x00", V5), PROTOCOL);
}

#[test]
fn v311_connack_code_mapping() {
    assert_eq!(reason::v311_connack_code(reason::SUCCESS), 0);
    assert_eq!(reason::v311_connack_code(reason::UNSUPPORTED_VERSION), 1);
    assert_eq!(reason::v311_connack_code(reason::CLIENT_ID_NOT_VALID), 2);
    assert_eq!(reason::v311_connack_code(reason::SERVER_BUSY), 3);
    assert_eq!(reason::v311_connack_code(reason::BAD_USER_OR_PASSWORD), 4);
    assert_eq!(reason::v311_connack_code(reason::NOT_AUTHORIZED), 5);
}

// ---------------------------------------------------------------------------
// SUBSCRIBE and UNSUBSCRIBE

#[test]
fn subscribe_needs_a_filter() {
    assert_eq!(err(b"\x82\x02\x00\x01", V311), PROTOCOL);
    assert_eq!(err(b"\x82\x03\x00\x01\x00", V5), PROTOCOL);
    assert_eq!(err(b"\xa2\x02\x00\x01", V311), PROTOCOL);
    assert_eq!(err(b"\xa2\x03\x00\x01\x00", V5), PROTOCOL);
    // a filter without its options byte
    assert_eq!(
        err(&raw(0x82, &cat(&[b"\x00\x01", &s(b"t")])), V311),
        MALFORMED
    );
}

#[test]
fn subscription_options() {
    let v311 = |o: u8| raw(0x82, &cat(&[b"\x00\x01", &s(b"t"), &[o]]));
    let v5 = |f: &[u8], o: u8| raw(0x82, &cat(&[b"\x00\x01\x00", &s(f), &[o]]));
    let opts = |bytes: &[u8], v| match dec(bytes, v) {
        Packet::Subscribe(sub) => sub.filters[0].1,
        _ => panic!(),
    };
    // 3.1.1: only the QoS bits, QoS 3 malformed
    assert_eq!(opts(&v311(2), V311).qos, 2);
    assert_eq!(err(&v311(3), V311), MALFORMED);
    for bit in 2..8 {
        assert_eq!(err(&v311(1 << bit), V311), MALFORMED, "bit {bit}");
    }
    // MQTT 5
    assert_eq!(
        opts(&v5(b"t", 0x2d), V5),
        SubOptions {
            qos: 1,
            no_local: true,
            retain_as_published: true,
            retain_handling: 2
        }
    );
    assert_eq!(err(&v5(b"t", 0x40), V5), MALFORMED);
    assert_eq!(err(&v5(b"t", 0x80), V5), MALFORMED);
    assert_eq!(err(&v5(b"t", 0x03), V5), PROTOCOL);
    assert_eq!(err(&v5(b"t", 0x30), V5), PROTOCOL);
    // no local on a shared subscription
    assert_eq!(err(&v5(b"$share/g/t", 0x04), V5), PROTOCOL);
    opts(&v5(b"$share/g/t", 0x08), V5);
    // an invalid filter is still decoded: SUBACK answers it
    opts(&v5(b"a/b#", 0x00), V5);
}

// ---------------------------------------------------------------------------
// topics

#[test]
fn topic_names() {
    for ok in [
        &b"a"[..],
        b"/",
        b"a/b/c",
        b"$SYS/x",
        b"sport/tennis ",
        "ü".as_bytes(),
    ] {
        assert!(valid_topic_name(ok), "{ok:?}");
    }
    for bad in [&b""[..], b"a/+", b"#", b"a/#", b"a+b", b"a\x00b", b"\xff"] {
        assert!(!valid_topic_name(bad), "{bad:?}");
    }
}

#[test]
fn topic_filters() {
    for ok in [
        &b"a"[..],
        b"#",
        b"+",
        b"/",
        b"+/+",
        b"a/#",
        b"/#",
        b"a/+/c",
        b"+/tennis/#",
        b"a//b",
        b"$SYS/#",
        b"$share/group/a/+",
        b"$share/g/#",
        b"$share",
        b"$shares/x",
    ] {
        assert!(valid_topic_filter(ok), "{:?}", String::from_utf8_lossy(ok));
    }
    for bad in [
        &b""[..],
        b"a#",
        b"#/a",
        b"a/#/b",
        b"a+",
        b"a/b+/c",
        b"++",
        b"##",
        b"a\x00",
        b"\xc3",
        b"$share/",
        b"$share//a",
        b"$share/g",
        b"$share/g/",
        b"$share/+/a",
        b"$share/g#/a",
        b"$share/g/a#",
    ] {
        assert!(
            !valid_topic_filter(bad),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

// ---------------------------------------------------------------------------
// fuzz entry point

#[test]
fn fuzz_entry_point_accepts_sessions() {
    let mut v5 = vec![0u8];
    for p in v5_packets() {
        v5.extend_from_slice(&enc(&p, Version::V5));
    }
    fuzzing::fuzz_mqtt(&v5);
    let mut v311 = vec![0u8];
    for p in v311_packets().iter().skip(1) {
        v311.extend_from_slice(&enc(p, Version::V311));
    }
    fuzzing::fuzz_mqtt(&v311);
    for select in 0..16u8 {
        let mut input = vec![select];
        input.extend_from_slice(&v5[1..]);
        fuzzing::fuzz_mqtt(&input);
    }
    fuzzing::fuzz_mqtt(b"");
    fuzzing::fuzz_mqtt(b"\x01\xe0\x00\xe0\x00");
}
