//! `warren-perf` itself, end to end against warren: the load generator's
//! counts add up (published = consumed, nothing out of order), the floor
//! relay runs, and `footprint` measures a real broker binary (which gives
//! the memory of a deleted queue back).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Command;

fn perf(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .args(args)
        .output()
        .expect("run warren-perf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "warren-perf {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

#[test]
fn load_generator_counts_add_up() {
    let broker = common::start();
    let uri = broker.uri();
    for extra in [
        &["--size", "16"][..],
        &["--size", "70000", "--ack", "--prefetch", "50"][..],
        &[
            "--confirm",
            "100",
            "--exchange-type",
            "fanout",
            "--queues",
            "3",
            "--consumers",
            "3",
        ][..],
    ] {
        let mut args = vec!["--uri", uri.as_str(), "--count", "5000", "--json"];
        args.extend_from_slice(extra);
        let j = perf(&args);
        assert_eq!(j["failed"], false, "{j}");
        assert_eq!(num(&j, "published"), 5000.0, "{j}");
        assert_eq!(num(&j, "consumed"), num(&j, "expected"), "{j}");
        assert_eq!(num(&j, "out_of_order"), 0.0, "{j}");
        assert!(num(&j, "consume_rate") > 0.0, "{j}");
    }
}

#[test]
fn floor_relay_runs() {
    let j = perf(&["floor", "--duration", "0.5", "--json"]);
    assert_eq!(j["mode"], "floor", "{j}");
    assert!(
        j["throughput"]["consume_rate"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
    assert!(
        j["latency"]["latency_us"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
        "{j}"
    );
}

#[test]
fn footprint_measures_a_broker_binary() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
        .to_string();
    let j = perf(&[
        "footprint",
        "--port",
        &port,
        "--connections",
        "200",
        "--messages",
        "200000",
        "--json",
        "--",
        env!("CARGO_BIN_EXE_warren"),
        "--no-management",
        "--no-prometheus",
    ]);
    assert_eq!(j["mode"], "footprint", "{j}");
    assert!(num(&j["startup_ms"], "best") > 0.0, "{j}");
    let idle = num(&j, "idle_rss");
    assert!(idle > 1e6, "{j}");
    assert!(num(&j, "rss_with_connections") > idle, "{j}");
    assert!(num(&j, "rss_with_messages") > idle, "{j}");
    assert_eq!(num(&j, "messages"), 200000.0, "{j}");
    // Deleting the queue hands its memory back to the system (malloc_trim
    // once much has been freed): nearly all the messages took is gone.
    let queued = num(&j, "rss_with_messages");
    let after = num(&j, "rss_after_delete");
    assert!(
        after - idle < (queued - idle) / 4.0,
        "RSS idle {idle}, with messages {queued}, after deleting the queue {after}"
    );
}
