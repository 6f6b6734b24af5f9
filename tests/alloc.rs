//! Heap allocations on the publish → route → deliver → ack path, counted
//! with a counting global allocator while 100,000 messages go through the
//! in-memory core (no sockets; time fixed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use warren::codec::frame::{write_method, Frame};
use warren::codec::*;
use warren::testing::Pair;
use warren::Config;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: u64 = 100_000;
const BATCH: u64 = 100;

/// Publish and consume (manual multiple acks) 100,000 16-byte messages
/// through `p`; returns heap allocations per message after a warm-up.
/// `persistent`: durable queue, delivery-mode 2, publisher confirms.
fn allocations_per_message(mut p: Pair, persistent: bool) -> f64 {
    // The counter is global: one measurement at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    p.handshake(0);
    if persistent {
        p.send(1, ConfirmSelect { nowait: false });
    }
    p.send(
        1,
        QueueDeclare {
            queue: Bytes::from_static(b"q"),
            durable: persistent,
            ..Default::default()
        },
    );
    p.send(
        1,
        BasicQos {
            prefetch_count: 1000,
            ..Default::default()
        },
    );
    p.send(
        1,
        BasicConsume {
            queue: Bytes::from_static(b"q"),
            consumer_tag: Bytes::from_static(b"c"),
            ..Default::default()
        },
    );
    let _ = p.recv();
    // Pre-encode a batch: BATCH publishes (method, header, 16-byte body) and
    // one multiple-ack for the deliveries of the previous batch.
    let mut publishes = BytesMut::new();
    for _ in 0..BATCH {
        write_method(
            &mut publishes,
            1,
            &BasicPublish {
                routing_key: Bytes::from_static(b"q"),
                ..Default::default()
            }
            .into(),
        );
        Frame::Header(
            1,
            Box::new(ContentHeader {
                class_id: 60,
                body_size: 16,
                properties: BasicProperties {
                    delivery_mode: persistent.then_some(2),
                    ..Default::default()
                },
            }),
        )
        .encode(&mut publishes);
        Frame::Body(1, Bytes::from_static(b"0123456789abcdef")).encode(&mut publishes);
    }
    let acks: Vec<BytesMut> = (1..=N / BATCH)
        .map(|i| {
            let mut b = BytesMut::new();
            write_method(
                &mut b,
                1,
                &BasicAck {
                    delivery_tag: i * BATCH,
                    multiple: true,
                }
                .into(),
            );
            b
        })
        .collect();
    let (id, now) = (p.id, p.now);
    // Warm up buffers, then count.
    for ack in &acks[..10] {
        p.core.handle_bytes(id, &publishes, now);
        p.core.handle_bytes(id, ack, now);
        p.core.end_turn(now);
        let out = p.core.outbox(id).unwrap();
        let n = out.len();
        out.consume(n);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut delivered = 0u64;
    for ack in &acks[10..] {
        p.core.handle_bytes(id, &publishes, now);
        p.core.handle_bytes(id, ack, now);
        p.core.end_turn(now);
        let out = p.core.outbox(id).unwrap();
        let n = out.len();
        delivered += n as u64;
        out.consume(n);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    let messages = N - 10 * BATCH;
    let per_message = allocs as f64 / messages as f64;
    eprintln!("{allocs} allocations for {messages} messages (persistent: {persistent}): {per_message:.3} per message");
    assert!(
        delivered > messages * 40,
        "deliveries were written ({delivered} bytes)"
    );
    p.core.check_invariants().unwrap();
    per_message
}

#[test]
fn allocations_per_message_stay_small() {
    let p = Pair::new(Config {
        data_dir: None,
        ..Config::default()
    });
    let per_message = allocations_per_message(p, false);
    assert!(per_message < 0.5, "{per_message} allocations per message");
}

/// The same with persistence: each message is appended to the store (one
/// group commit per batch), confirmed, acked, and its ack record written.
#[test]
fn allocations_per_persistent_message_stay_small() {
    let dir = std::env::temp_dir().join(format!("warren-alloc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let p = Pair::open(Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    })
    .expect("open the store");
    let per_message = allocations_per_message(p, true);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(per_message < 0.5, "{per_message} allocations per message");
}
