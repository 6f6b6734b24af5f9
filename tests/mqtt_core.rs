//! MQTT sessions against the in-memory core, with simulated time
//! (`warren::testing::Mqtt`): QoS 0/1/2 and their flows across dropped
//! connections, persistent and clean sessions, keep-alive, wills and their
//! delay, takeover, retained messages, MQTT 5 options and shared
//! subscriptions, and bad input. The real clients (paho, mosquitto, pika)
//! run the same features over sockets in `tests/mqtt.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use bytes::Bytes;
use warren::testing::mqtt_client::*;
use warren::testing::Mqtt;
use warren::Config;

fn core() -> Mqtt {
    Mqtt::new(Config::default())
}

fn publishes(ps: &[Packet]) -> Vec<&Publish> {
    ps.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn suback(ps: &[Packet]) -> Vec<u8> {
    ps.iter()
        .find_map(|p| match p {
            Packet::SubAck(a) => Some(a.codes.clone()),
            _ => None,
        })
        .expect("SUBACK")
}

#[test]
fn qos_0_1_2_deliver_with_the_lower_of_the_two_qos() {
    for v in [Version::V311, Version::V5] {
        let mut m = core();
        let (mut s, ca) = m.connect(v, "s", true, 0, Properties::default());
        assert_eq!(ca.code, 0);
        assert!(!ca.session_present);
        m.send(&s, &subscribe(1, "t/+", qos(2)));
        m.send(&s, &subscribe(2, "low/#", qos(1)));
        let got = m.recv(&mut s);
        assert_eq!(suback(&got), vec![2]);
        let (p, _) = m.connect(v, "p", true, 0, Properties::default());
        m.send(&p, &publish("t/a", 0, 0, b"zero"));
        m.send(&p, &publish("t/a", 1, 5, b"one"));
        m.send(&p, &publish("t/a", 2, 6, b"two"));
        m.send(&p, &publish("low/x", 2, 7, b"down"));
        let got = m.recv(&mut s);
        let pubs = publishes(&got);
        let seen: Vec<(u8, &[u8])> = pubs.iter().map(|p| (p.qos, &p.payload[..])).collect();
        assert_eq!(
            seen,
            vec![
                (0, &b"zero"[..]),
                (1, &b"one"[..]),
                (2, &b"two"[..]),
                (1, &b"down"[..])
            ]
        );
        assert!(pubs.iter().all(|p| !p.dup && !p.retain));
        assert_eq!(&pubs[1].topic[..], b"t/a");
        // Settle: PUBACK, PUBREC → PUBREL → PUBCOMP.
        m.send(&s, &Packet::PubAck(ack(pubs[1].packet_id)));
        let two = pubs[2].packet_id;
        let down = pubs[3].packet_id;
        m.send(&s, &Packet::PubAck(ack(down)));
        m.send(&s, &Packet::PubRec(ack(two)));
        let got = m.recv(&mut s);
        assert!(got.contains(&Packet::PubRel(Ack {
            packet_id: two,
            code: 0,
            props: Properties::default()
        })));
        m.send(&s, &Packet::PubComp(ack(two)));
        warren::testing::assert_settled(&m.core);
    }
}

#[test]
fn an_exactly_once_publish_is_routed_once_across_a_dropped_connection() {
    let mut m = core();
    let (mut s, _) = m.connect(Version::V311, "sub", true, 0, Properties::default());
    m.send(&s, &subscribe(1, "x", qos(2)));
    let _ = m.recv(&mut s);
    let (mut p, _) = m.connect(Version::V311, "pub", false, 0, Properties::default());
    m.send(&p, &publish("x", 2, 7, b"once"));
    let got = m.recv(&mut p);
    assert!(matches!(got.last(), Some(Packet::PubRec(a)) if a.packet_id == 7));
    m.drop_client(&p);
    // The publisher comes back, sends the PUBLISH again (DUP), then PUBREL.
    let (mut p, ack2) = m.connect(Version::V311, "pub", false, 0, Properties::default());
    assert!(ack2.session_present);
    let mut again = publish("x", 2, 7, b"once");
    if let Packet::Publish(x) = &mut again {
        x.dup = true;
    }
    m.send(&p, &again);
    m.send(&p, &Packet::PubRel(ack(7)));
    let got = m.recv(&mut p);
    assert!(matches!(got[0], Packet::PubRec(ref a) if a.packet_id == 7));
    assert!(matches!(got[1], Packet::PubComp(ref a) if a.packet_id == 7 && a.code == 0));
    let got = m.recv(&mut s);
    assert_eq!(publishes(&got).len(), 1, "delivered exactly once");
    // A PUBREL for an id not in use: PUBCOMP 0x92 (MQTT 5), plain in 3.1.1.
    let (mut p5, _) = m.connect(Version::V5, "p5", true, 0, Properties::default());
    m.send(&p5, &Packet::PubRel(ack(99)));
    let got = m.recv(&mut p5);
    assert!(matches!(got[0], Packet::PubComp(ref a) if a.packet_id == 99 && a.code == 0x92));
}

#[test]
fn pubrel_is_sent_again_not_the_message_after_a_drop_before_pubcomp() {
    let mut m = core();
    let (mut s, _) = m.connect(Version::V311, "s2", false, 0, Properties::default());
    m.send(&s, &subscribe(1, "q2", qos(2)));
    let _ = m.recv(&mut s);
    let (p, _) = m.connect(Version::V311, "p", true, 0, Properties::default());
    m.send(&p, &publish("q2", 2, 1, b"m"));
    let got = m.recv(&mut s);
    let id = publishes(&got)[0].packet_id;
    m.send(&s, &Packet::PubRec(ack(id)));
    let got = m.recv(&mut s);
    assert!(matches!(got[0], Packet::PubRel(ref a) if a.packet_id == id));
    m.drop_client(&s);
    let (mut s, a) = m.connect(Version::V311, "s2", false, 0, Properties::default());
    assert!(a.session_present);
    let got = m.recv(&mut s);
    assert_eq!(
        got,
        vec![Packet::PubRel(ack(id))],
        "PUBREL again, and no PUBLISH"
    );
    m.send(&s, &Packet::PubComp(ack(id)));
    assert!(m.recv(&mut s).is_empty());
}

#[test]
fn an_unacknowledged_delivery_comes_again_with_dup_after_reconnect() {
    let mut m = core();
    let (mut s, _) = m.connect(Version::V311, "s", false, 0, Properties::default());
    m.send(&s, &subscribe(1, "d", qos(1)));
    let _ = m.recv(&mut s);
    let (p, _) = m.connect(Version::V311, "p", true, 0, Properties::default());
    m.send(&p, &publish("d", 1, 1, b"m1"));
    let first = m.recv(&mut s);
    assert!(!publishes(&first)[0].dup);
    m.drop_client(&s);
    // Published while the session has no connection.
    m.send(&p, &publish("d", 1, 2, b"m2"));
    let (mut s, a) = m.connect(Version::V311, "s", false, 0, Properties::default());
    assert!(a.session_present);
    let got = m.recv(&mut s);
    let pubs = publishes(&got);
    assert_eq!(pubs.len(), 2);
    assert!(pubs[0].dup && &pubs[0].payload[..] == b"m1");
    assert!(!pubs[1].dup && &pubs[1].payload[..] == b"m2");
    // A clean session starts with nothing and deletes the old one.
    m.drop_client(&s);
    let (mut s, a) = m.connect(Version::V311, "s", true, 0, Properties::default());
    assert!(!a.session_present);
    assert!(m.recv(&mut s).is_empty());
    assert!(m
        .core
        .engine
        .broker
        .queues
        .iter()
        .all(|(_, q)| !q.name.starts_with(b"mqtt-subscription-sqos")));
}

#[test]
fn session_expiry_keeps_a_v5_session_for_its_interval() {
    let mut m = core();
    let props = Properties {
        session_expiry_interval: Some(5),
        ..Properties::default()
    };
    let (mut s, _) = m.connect(Version::V5, "e", true, 0, props.clone());
    m.send(&s, &subscribe(1, "e", qos(1)));
    let _ = m.recv(&mut s);
    m.drop_client(&s);
    m.advance(Duration::from_secs(2));
    let (s, a) = m.connect(Version::V5, "e", false, 0, props.clone());
    assert!(a.session_present);
    m.drop_client(&s);
    m.advance(Duration::from_secs(6));
    let (_s, a) = m.connect(Version::V5, "e", false, 0, props);
    assert!(!a.session_present, "expired after 5 s");
}

#[test]
fn keep_alive_closes_a_silent_client_after_one_and_a_half_intervals() {
    let mut m = core();
    let (mut c, _) = m.connect(Version::V5, "k", true, 2, Properties::default());
    m.advance(Duration::from_millis(2900));
    assert!(!m.closed(&c));
    m.send(&c, &Packet::PingReq);
    assert_eq!(m.recv(&mut c), vec![Packet::PingResp]);
    m.advance(Duration::from_millis(2900));
    assert!(!m.closed(&c));
    m.advance(Duration::from_millis(200));
    assert!(m.closed(&c));
    let got = m.recv(&mut c);
    assert!(matches!(got[0], Packet::Disconnect(ref d) if d.code == 0x8D));
    // A CONNECT that never comes: closed at the handshake timeout.
    let silent = m.accept(Version::V311);
    m.advance(Duration::from_secs(11));
    assert!(m.closed(&silent));
}

fn will(topic: &str, delay: Option<u32>) -> Will {
    Will {
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        payload: Bytes::from_static(b"gone"),
        qos: 1,
        retain: false,
        props: Properties {
            will_delay_interval: delay,
            ..Properties::default()
        },
    }
}

fn connect_with_will(m: &mut Mqtt, v: Version, id: &str, w: Will, props: Properties) -> Client {
    let mut c = m.accept(v);
    m.send(
        &c,
        &Packet::Connect(Box::new(Connect {
            version: v,
            client_id: Bytes::copy_from_slice(id.as_bytes()),
            clean_start: true,
            keep_alive: 0,
            username: None,
            password: None,
            will: Some(w),
            props,
        })),
    );
    let got = m.recv(&mut c);
    assert!(matches!(got[0], Packet::ConnAck(ref a) if a.code == 0));
    c
}

#[test]
fn wills_go_out_on_abnormal_ends_and_wait_for_their_delay() {
    let mut m = core();
    let (mut w, _) = m.connect(Version::V5, "watch", true, 0, Properties::default());
    m.send(&w, &subscribe(1, "will/#", qos(1)));
    let _ = m.recv(&mut w);
    // Socket closed without DISCONNECT: the will.
    let c = connect_with_will(
        &mut m,
        Version::V311,
        "a",
        will("will/a", None),
        Properties::default(),
    );
    m.drop_client(&c);
    let got = m.recv(&mut w);
    assert_eq!(&publishes(&got)[0].topic[..], b"will/a");
    // A normal DISCONNECT: none.
    let c = connect_with_will(
        &mut m,
        Version::V311,
        "b",
        will("will/b", None),
        Properties::default(),
    );
    m.send(
        &c,
        &Packet::Disconnect(Disconnect {
            code: 0,
            props: Properties::default(),
        }),
    );
    m.drop_client(&c);
    assert!(publishes(&m.recv(&mut w)).is_empty());
    // MQTT 5 DISCONNECT 0x04: the will.
    let c = connect_with_will(
        &mut m,
        Version::V5,
        "c",
        will("will/c", None),
        Properties::default(),
    );
    m.send(
        &c,
        &Packet::Disconnect(Disconnect {
            code: 4,
            props: Properties::default(),
        }),
    );
    assert_eq!(publishes(&m.recv(&mut w)).len(), 1);
    // Will delay 3 s with a session that lasts 60 s: after 3 s.
    let keep = Properties {
        session_expiry_interval: Some(60),
        ..Properties::default()
    };
    let c = connect_with_will(
        &mut m,
        Version::V5,
        "d",
        will("will/d", Some(3)),
        keep.clone(),
    );
    m.drop_client(&c);
    m.advance(Duration::from_secs(2));
    assert!(publishes(&m.recv(&mut w)).is_empty());
    m.advance(Duration::from_secs(2));
    assert_eq!(&publishes(&m.recv(&mut w))[0].topic[..], b"will/d");
    // ... and not at all if the client comes back within the delay.
    let c = connect_with_will(
        &mut m,
        Version::V5,
        "e",
        will("will/e", Some(3)),
        keep.clone(),
    );
    m.drop_client(&c);
    m.advance(Duration::from_secs(1));
    let _back = m.connect(Version::V5, "e", false, 0, keep);
    m.advance(Duration::from_secs(5));
    assert!(publishes(&m.recv(&mut w)).is_empty());
}

#[test]
fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    let mut m = core();
    let (mut old, _) = m.connect(Version::V5, "same", true, 0, Properties::default());
    let (mut new, a) = m.connect(Version::V5, "same", true, 0, Properties::default());
    assert_eq!(a.code, 0);
    assert!(m.closed(&old));
    let got = m.recv(&mut old);
    assert!(matches!(got[0], Packet::Disconnect(ref d) if d.code == 0x8E));
    m.send(&new, &Packet::PingReq);
    assert_eq!(m.recv(&mut new), vec![Packet::PingResp]);
}

#[test]
fn retained_messages_come_on_subscribe_and_an_empty_one_clears() {
    let mut m = core();
    let (p, _) = m.connect(Version::V311, "p", true, 0, Properties::default());
    let retained = |topic: &str, body: &[u8]| {
        let mut x = publish(topic, 1, 1, body);
        if let Packet::Publish(p) = &mut x {
            p.retain = true;
        }
        x
    };
    m.send(&p, &retained("r/1", b"old"));
    m.send(&p, &retained("r/1", b"new"));
    m.send(&p, &retained("r/2", b"two"));
    let (mut s, _) = m.connect(Version::V311, "s", true, 0, Properties::default());
    m.send(&s, &subscribe(1, "r/+", qos(1)));
    let got = m.recv(&mut s);
    assert!(matches!(got[0], Packet::SubAck(_)), "SUBACK first");
    let mut pubs: Vec<(Vec<u8>, bool)> = publishes(&got)
        .iter()
        .map(|p| (p.payload.to_vec(), p.retain))
        .collect();
    pubs.sort();
    assert_eq!(pubs, vec![(b"new".to_vec(), true), (b"two".to_vec(), true)]);
    // A live publish with retain goes to existing subscribers without it.
    m.send(&p, &retained("r/2", b"live"));
    let got = m.recv(&mut s);
    assert!(!publishes(&got)[0].retain);
    m.send(&p, &retained("r/1", b""));
    let _ = m.recv(&mut s);
    let (mut s2, _) = m.connect(Version::V311, "s2", true, 0, Properties::default());
    m.send(&s2, &subscribe(1, "r/#", qos(0)));
    let got = m.recv(&mut s2);
    let pubs = publishes(&got);
    assert_eq!(pubs.len(), 1);
    assert_eq!(&pubs[0].payload[..], b"live");
}

#[test]
fn v5_options_no_local_identifiers_retain_as_published_and_properties() {
    let mut m = core();
    let (mut c, _) = m.connect(Version::V5, "me", true, 0, Properties::default());
    let mut sub = Subscribe {
        packet_id: 1,
        props: Properties {
            subscription_ids: vec![42],
            ..Properties::default()
        },
        filters: vec![(
            Bytes::from_static(b"o/#"),
            SubOptions {
                qos: 1,
                no_local: true,
                retain_as_published: true,
                retain_handling: 0,
            },
        )],
    };
    m.send(&c, &Packet::Subscribe(sub.clone()));
    let _ = m.recv(&mut c);
    m.send(&c, &publish("o/self", 1, 3, b"mine"));
    let got = m.recv(&mut c);
    assert!(publishes(&got).is_empty(), "no-local: {got:?}");
    let (p, _) = m.connect(Version::V5, "other", true, 0, Properties::default());
    let props = Properties {
        content_type: Some(Bytes::from_static(b"text/plain")),
        response_topic: Some(Bytes::from_static(b"reply/here")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user_properties: vec![
            (Bytes::from_static(b"k1"), Bytes::from_static(b"v1")),
            (Bytes::from_static(b"k2"), Bytes::from_static(b"v2")),
        ],
        ..Properties::default()
    };
    m.send(
        &p,
        &Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: true,
            topic: Bytes::from_static(b"o/x"),
            packet_id: 1,
            props: props.clone(),
            payload: Bytes::from_static(b"theirs"),
        }),
    );
    let got = m.recv(&mut c);
    let pubs = publishes(&got);
    assert_eq!(pubs.len(), 1);
    assert!(pubs[0].retain, "retain as published");
    assert_eq!(pubs[0].props.subscription_ids, vec![42]);
    assert_eq!(pubs[0].props.content_type, props.content_type);
    assert_eq!(pubs[0].props.response_topic, props.response_topic);
    assert_eq!(pubs[0].props.correlation_data, props.correlation_data);
    assert_eq!(pubs[0].props.user_properties, props.user_properties);
    // Retain handling 2: no retained messages on subscribe.
    let (mut c2, _) = m.connect(Version::V5, "rh", true, 0, Properties::default());
    sub.filters[0].1.retain_handling = 2;
    sub.filters[0].1.no_local = false;
    m.send(&c2, &Packet::Subscribe(sub));
    assert!(publishes(&m.recv(&mut c2)).is_empty());
    // Unroutable QoS 1: PUBACK 0x10.
    let (mut q, _) = m.connect(Version::V5, "q", true, 0, Properties::default());
    m.send(&q, &publish("nobody/here", 1, 9, b"x"));
    let got = m.recv(&mut q);
    assert!(matches!(got[0], Packet::PubAck(ref a) if a.packet_id == 9 && a.code == 0x10));
}

#[test]
fn shared_subscriptions_split_messages_between_their_members() {
    let mut m = core();
    let (mut a, _) = m.connect(Version::V5, "a", true, 0, Properties::default());
    let (mut b, _) = m.connect(Version::V5, "b", true, 0, Properties::default());
    let (mut all, _) = m.connect(Version::V5, "all", true, 0, Properties::default());
    m.send(&a, &subscribe(1, "$share/g/jobs/#", qos(1)));
    m.send(&b, &subscribe(1, "$share/g/jobs/#", qos(1)));
    m.send(&all, &subscribe(1, "jobs/#", qos(0)));
    assert_eq!(suback(&m.recv(&mut a)), vec![1]);
    assert_eq!(suback(&m.recv(&mut b)), vec![1]);
    assert_eq!(suback(&m.recv(&mut all)), vec![0]);
    let (p, _) = m.connect(Version::V5, "p", true, 0, Properties::default());
    for i in 0..100u16 {
        m.send(&p, &publish("jobs/x", 1, i + 1, format!("{i}").as_bytes()));
    }
    let mut seen = Vec::new();
    for c in [&mut a, &mut b] {
        let got = m.recv(c);
        let pubs = publishes(&got);
        assert!(!pubs.is_empty(), "both members get some");
        for x in &pubs {
            seen.push(
                String::from_utf8(x.payload.to_vec())
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            );
        }
        let ids: Vec<u16> = pubs.iter().map(|x| x.packet_id).collect();
        for id in ids {
            m.send(c, &Packet::PubAck(ack(id)));
        }
    }
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<_>>(), "none lost, none twice");
    assert_eq!(publishes(&m.recv(&mut all)).len(), 100);
}

#[test]
fn receive_maximum_bounds_unacknowledged_deliveries() {
    let mut m = core();
    let props = Properties {
        receive_maximum: Some(5),
        ..Properties::default()
    };
    let (mut s, _) = m.connect(Version::V5, "slow", true, 0, props);
    m.send(&s, &subscribe(1, "rm", qos(1)));
    let _ = m.recv(&mut s);
    let (p, _) = m.connect(Version::V5, "p", true, 0, Properties::default());
    for i in 0..20u16 {
        m.send(&p, &publish("rm", 1, i + 1, b"x"));
    }
    let got = m.recv(&mut s);
    let ids: Vec<u16> = publishes(&got).iter().map(|x| x.packet_id).collect();
    assert_eq!(ids.len(), 5);
    m.send(&s, &Packet::PubAck(ack(ids[0])));
    assert_eq!(publishes(&m.recv(&mut s)).len(), 1);
}

#[test]
fn bad_input_gets_the_answer_the_spec_requires() {
    let mut m = core();
    // A fifth remaining-length byte: closed.
    let c = m.accept(Version::V311);
    m.send_raw(&c, &[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(m.closed(&c));
    // Protocol level 6: CONNACK 0x01, then closed.
    let mut c = m.accept(Version::V311);
    m.send_raw(
        &c,
        &[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 0, 0, 0],
    );
    let got = m.recv(&mut c);
    assert!(matches!(got[0], Packet::ConnAck(ref a) if a.code == 1));
    assert!(m.closed(&c));
    // A second CONNECT: closed.
    let (c, _) = m.connect(Version::V311, "twice", true, 0, Properties::default());
    m.send(
        &c,
        &Packet::Connect(Box::new(Connect {
            version: Version::V311,
            client_id: Bytes::from_static(b"twice"),
            clean_start: true,
            keep_alive: 0,
            username: None,
            password: None,
            will: None,
            props: Properties::default(),
        })),
    );
    assert!(m.closed(&c));
    // A wildcard in a PUBLISH topic: MQTT 5 DISCONNECT 0x90.
    let (mut c, _) = m.connect(Version::V5, "wild", true, 0, Properties::default());
    m.send(&c, &publish("a/+", 0, 0, b"x"));
    let got = m.recv(&mut c);
    assert!(matches!(got[0], Packet::Disconnect(ref d) if d.code == 0x90));
    assert!(m.closed(&c));
    // QoS 3: closed.
    let (c, _) = m.connect(Version::V311, "q3", true, 0, Properties::default());
    m.send_raw(&c, &[0x36, 0x05, 0, 1, b'a', 0, 1]);
    assert!(m.closed(&c));
    // An invalid filter fails alone in its SUBACK.
    let (mut c, _) = m.connect(Version::V5, "f", true, 0, Properties::default());
    m.send(
        &c,
        &Packet::Subscribe(Subscribe {
            packet_id: 3,
            props: Properties::default(),
            filters: vec![
                (Bytes::from_static(b"a/#/b"), qos(0)),
                (Bytes::from_static(b"ok"), qos(1)),
            ],
        }),
    );
    assert_eq!(suback(&m.recv(&mut c)), vec![0x8F, 1]);
    // Bad credentials: 0x86 (MQTT 5).
    let mut c = m.accept(Version::V5);
    m.send(
        &c,
        &Packet::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: Bytes::from_static(b"x"),
            clean_start: true,
            keep_alive: 0,
            username: Some(Bytes::from_static(b"guest")),
            password: Some(Bytes::from_static(b"wrong")),
            will: None,
            props: Properties::default(),
        })),
    );
    let got = m.recv(&mut c);
    assert!(matches!(got[0], Packet::ConnAck(ref a) if a.code == 0x86));
    // Others are unaffected.
    let (mut ok, _) = m.connect(Version::V311, "fine", true, 0, Properties::default());
    m.send(&ok, &Packet::PingReq);
    assert_eq!(m.recv(&mut ok), vec![Packet::PingResp]);
    m.core.check_invariants().unwrap();
}

#[test]
fn persistent_sessions_and_retained_messages_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("warren-mqtt-core-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    {
        let mut m = Mqtt::open(config.clone()).unwrap();
        let (mut s, _) = m.connect(Version::V311, "keep", false, 0, Properties::default());
        m.send(&s, &subscribe(1, "p/#", qos(1)));
        let _ = m.recv(&mut s);
        m.drop_client(&s);
        let (mut p, _) = m.connect(Version::V311, "pub", true, 0, Properties::default());
        m.send(&p, &publish("p/1", 1, 1, b"kept"));
        let mut r = publish("p/r", 1, 2, b"retained");
        if let Packet::Publish(x) = &mut r {
            x.retain = true;
        }
        m.send(&p, &r);
        let got = m.recv(&mut p);
        assert_eq!(got.len(), 2, "both acknowledged: {got:?}");
    }
    let mut m = Mqtt::open(config).unwrap();
    let (mut s, a) = m.connect(Version::V311, "keep", false, 0, Properties::default());
    assert!(a.session_present);
    let got = m.recv(&mut s);
    let mut bodies: Vec<Vec<u8>> = publishes(&got).iter().map(|p| p.payload.to_vec()).collect();
    bodies.sort();
    assert_eq!(bodies, vec![b"kept".to_vec(), b"retained".to_vec()]);
    // The subscription itself came back: a new message reaches it.
    let (p, _) = m.connect(Version::V311, "pub", true, 0, Properties::default());
    m.send(&p, &publish("p/2", 0, 0, b"after"));
    assert_eq!(&publishes(&m.recv(&mut s))[0].payload[..], b"after");
    let (mut s2, _) = m.connect(Version::V311, "new", true, 0, Properties::default());
    m.send(&s2, &subscribe(1, "p/r", qos(0)));
    let got = m.recv(&mut s2);
    assert_eq!(&publishes(&got)[0].payload[..], b"retained");
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connection_limits_apply_to_mqtt_as_to_amqp() {
    let mut m = Mqtt::new(Config {
        max_connections: Some(1),
        ..Config::default()
    });
    let (_first, a) = m.connect(Version::V5, "one", true, 0, Properties::default());
    assert_eq!(a.code, 0);
    let mut c = m.accept(Version::V5);
    m.send(
        &c,
        &Packet::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: Bytes::from_static(b"two"),
            clean_start: true,
            keep_alive: 0,
            username: None,
            password: None,
            will: None,
            props: Properties::default(),
        })),
    );
    let got = m.recv(&mut c);
    assert!(
        matches!(got[0], Packet::ConnAck(ref a) if a.code == 0x97),
        "{got:?}"
    );
    assert!(m.closed(&c));
}

#[test]
fn a_retained_message_is_retained_only_until_it_expires() {
    let mut m = core();
    let (p, _) = m.connect(Version::V5, "p", true, 0, Properties::default());
    m.send(
        &p,
        &Packet::Publish(Publish {
            dup: false,
            qos: 1,
            retain: true,
            topic: Bytes::from_static(b"exp/r"),
            packet_id: 1,
            props: Properties {
                message_expiry_interval: Some(3),
                ..Properties::default()
            },
            payload: Bytes::from_static(b"short-lived"),
        }),
    );
    m.advance(Duration::from_secs(1));
    let (mut s, _) = m.connect(Version::V5, "s1", true, 0, Properties::default());
    m.send(&s, &subscribe(1, "exp/#", qos(1)));
    let got = m.recv(&mut s);
    let pubs = publishes(&got);
    assert_eq!(pubs.len(), 1);
    assert!(pubs[0].retain);
    let left = pubs[0].props.message_expiry_interval.unwrap();
    assert!((1..=2).contains(&left), "{left} s left");
    m.advance(Duration::from_secs(3));
    let (mut s2, _) = m.connect(Version::V5, "s2", true, 0, Properties::default());
    m.send(&s2, &subscribe(1, "exp/#", qos(1)));
    assert!(publishes(&m.recv(&mut s2)).is_empty(), "expired");
}
