//! `warren-perf`: a load generator for AMQP 0-9-1 brokers, in the spirit of
//! RabbitMQ PerfTest and lavinmqperf.
//!
//! Each publisher and each consumer is a thread with its own connection.
//! Publishers copy a pre-encoded basic.publish (method + header + body
//! frames) into a 64 KiB buffer, patch each body's first 16 bytes (send time
//! in ns since a shared epoch, publisher id + sequence) and write the buffer
//! at once; consumers read into a large buffer, split frames with
//! `parse_raw_frame`, read the body size and the stamp and nothing else, and
//! record end-to-end latency into a log-linear histogram.
//!
//! `warren-perf floor` measures the same traffic through an in-process TCP
//! relay that parses nothing: the zero-logic floor to compare a broker with.

use std::process::ExitCode;
use std::time::Duration;

use warren::cli;

mod client;
mod cpu;
mod declare;
mod floor;
mod footprint;
mod hist;
mod mqtt;
mod msg;
mod run;
mod stall;
mod tls;
mod uri;

use floor::FloorSettings;
use run::Settings;

const USAGE: &str = "Usage: warren-perf [OPTIONS]
       warren-perf floor [--size BYTES] [--duration SECS] [--json]
       warren-perf footprint [--connections N] [--messages N] [--tls-port PORT --tls-ca FILE] [--json] -- BROKER [ARGS...]
       warren-perf declare [--uri URI] [--count N] [--transient] [--json]
       warren-perf stall [--uri URI] [--consumers N] [--phases P,...] [--prefetch N] [--messages N] [--broker-pid PID] [--json]
       warren-perf mqtt [--scenario fanin|qos1|idle] [--broker HOST:PORT] [--duration SECS] [--publishers N] [--size BYTES] [--inflight N] [--connections N] [--json]

Publishes until --count or --duration is reached (or Ctrl-C: the summary is
still printed; a second Ctrl-C exits at once), lets the consumers drain, then
prints totals and end-to-end latency percentiles. `floor` pushes the same
traffic through an in-process byte relay instead of a broker. `footprint`
starts a broker binary (warren's --listen/--data-dir options are appended)
and measures its start-up time, idle RSS, RSS per idle connection and RSS
with a million queued messages. `declare` declares and binds --count queues
one operation at a time and reports the rate per thousand. `stall` adds and
removes many consumers on one channel and reports how long a separate
client's one-message round trip took meanwhile (max, p99) and the broker's
CPU time, per phase. `mqtt` is MQTT 3.1.1 load: `fanin` (--publishers
QoS 0 publishers → one subscriber on bench/#), `qos1` (one publisher with
--inflight PUBLISHes awaiting PUBACK → one QoS 1 subscriber) or `idle`
(--connections sessions held open for --duration); one summary line.

amqps://HOST[:PORT]/VHOST (default port 5671) connects over TLS and
verifies the broker's certificate, for the URI's host (an IP address
against the certificate's IP addresses) or ?server_name_indication=NAME,
against the CA given by --tls-ca FILE or ?cacertfile=FILE: one of them is
needed (no system trust store). --tls-cert/--tls-key (?certfile=,
?keyfile=) present a client certificate. `footprint --tls-port PORT` adds
--tls-listen 127.0.0.1:PORT to the broker's command line (give it
--tls-cert and --tls-key there) and holds its connections over TLS.";

/// Apply the `--tls-*` options (they win over the URI's query) and build
/// the TLS configuration once; refused for an `amqp://` URI.
fn apply_tls(m: &getopts::Matches, uri: &mut uri::Uri) -> Result<(), String> {
    let flags = ["tls-ca", "tls-cert", "tls-key"];
    let Some(tls) = uri.tls.as_mut() else {
        return match flags.iter().find(|f| m.opt_present(f)) {
            Some(f) => Err(format!("--{f} is for amqps:// URIs, and {uri} is not one")),
            None => Ok(()),
        };
    };
    for (flag, field) in flags.iter().zip([&mut tls.ca, &mut tls.cert, &mut tls.key]) {
        if let Some(v) = m.opt_str(flag) {
            *field = Some(v.into());
        }
    }
    tls.prepare()
}

/// `--uri` (default amqp://guest:guest@127.0.0.1:5672/%2f) with the
/// `--tls-*` options applied.
fn uri_option(m: &getopts::Matches) -> Result<uri::Uri, String> {
    let mut uri = match m.opt_str("uri") {
        Some(u) => uri::parse(&u)?,
        None => uri::Uri::default(),
    };
    apply_tls(m, &mut uri)?;
    Ok(uri)
}

fn options() -> getopts::Options {
    cli::getopts_for(cli::Program::Perf)
}

fn num<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: T) -> Result<T, String> {
    match m.opt_str(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{name}: '{v}' is not a valid number")),
    }
}

fn secs(m: &getopts::Matches, name: &str) -> Result<Option<Duration>, String> {
    match m.opt_str(name) {
        None => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
            _ => Err(format!(
                "--{name}: '{v}' is not a positive number of seconds"
            )),
        },
    }
}

fn settings(m: &getopts::Matches) -> Result<Settings, String> {
    let uri = uri_option(m)?;
    let exchange_type = m
        .opt_str("exchange-type")
        .unwrap_or_else(|| "direct".into());
    if !matches!(exchange_type.as_str(), "direct" | "fanout" | "topic") {
        return Err(format!(
            "--exchange-type: '{exchange_type}' is not direct, fanout or topic"
        ));
    }
    let exchange = m
        .opt_str("exchange")
        .unwrap_or_else(|| format!("perf-{exchange_type}"));
    if exchange.is_empty() && exchange_type != "direct" {
        return Err("the default exchange (--exchange \"\") is a direct exchange".into());
    }
    let mut s = Settings {
        uri,
        publishers: num(m, "publishers", 1)?,
        consumers: num(m, "consumers", 1)?,
        queues: num(m, "queues", 1)?,
        queue_prefix: m
            .opt_str("queue-prefix")
            .unwrap_or_else(|| "perf-q-".into()),
        exchange,
        exchange_type,
        routing_key: m.opt_str("routing-key"),
        size: num(m, "size", 16)?,
        persistent: m.opt_present("persistent"),
        confirm: num(m, "confirm", 0)?,
        ack: m.opt_present("ack") || m.opt_present("multi-ack"),
        prefetch: num(m, "prefetch", 0)?,
        multi_ack: num(m, "multi-ack", 1)?,
        count: num(m, "count", 0)?,
        duration: secs(m, "duration")?,
        rate: num(m, "rate", 0.0)?,
        durable_queues: m.opt_present("durable-queues"),
        queue_args: queue_args(&m.opt_strs("queue-arg"))?,
        latency: m.opt_present("latency"),
        json: m.opt_present("json"),
        keep: m.opt_present("keep"),
        drain: num(m, "drain", 0)?,
        broker_pid: match m.opt_str("broker-pid") {
            None => None,
            Some(_) => Some(num(m, "broker-pid", 0u32)?),
        },
    };
    if let Some(pid) = s.broker_pid {
        if cpu::process(pid).is_none() {
            return Err(format!("--broker-pid: cannot read /proc/{pid}/stat"));
        }
    }
    if s.size < msg::STAMP_LEN {
        return Err(format!(
            "--size must be at least {} (timestamp + sequence)",
            msg::STAMP_LEN
        ));
    }
    if s.queues == 0 {
        return Err("--queues must be at least 1".into());
    }
    if s.multi_ack == 0 {
        return Err("--multi-ack must be at least 1".into());
    }
    if s.ack && s.prefetch > 0 && s.multi_ack > u64::from(s.prefetch) {
        return Err(format!(
            "--multi-ack {} > --prefetch {}: the consumer would stall waiting for messages the broker won't send",
            s.multi_ack, s.prefetch
        ));
    }
    if !(s.rate >= 0.0 && s.rate.is_finite()) {
        return Err("--rate must be >= 0".into());
    }
    if s.publishers > 1 << 20 {
        return Err("too many publishers".into());
    }
    if s.latency {
        if (s.publishers, s.consumers, s.queues) != (1, 1, 1) {
            eprintln!("warren-perf: --latency uses 1 publisher, 1 consumer and 1 queue");
        }
        s.publishers = 1;
        s.consumers = 1;
        s.queues = 1;
    }
    Ok(s)
}

/// Parse a subcommand's options (from the shared table),
/// build its settings and run it. `needs_free`: it takes a command line
/// after its options.
fn subcommand<T>(
    name: &str,
    args: &[String],
    o: getopts::Options,
    needs_free: bool,
    settings: impl FnOnce(&getopts::Matches) -> Result<T, String>,
    run: impl FnOnce(T) -> i32,
) -> ExitCode {
    let m = match o.parse(args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("warren-perf {name}: {e}\n{}", o.usage(USAGE));
            return ExitCode::from(2);
        }
    };
    if m.opt_present("help") {
        print!("{}", o.usage(USAGE));
        return ExitCode::SUCCESS;
    }
    if needs_free && m.free.is_empty() {
        eprintln!(
            "warren-perf {name}: the broker command is missing\n{}",
            o.usage(USAGE)
        );
        return ExitCode::from(2);
    }
    match settings(&m) {
        Ok(s) => ExitCode::from(run(s) as u8),
        Err(e) => {
            eprintln!("warren-perf {name}: {e}");
            ExitCode::from(2)
        }
    }
}

fn floor(args: &[String]) -> ExitCode {
    let o = cli::getopts_for(cli::Program::PerfFloor);
    let settings = |m: &getopts::Matches| {
        let size = num(m, "size", 16)?;
        if size < msg::STAMP_LEN {
            return Err("--size must be at least 16".to_string());
        }
        Ok(FloorSettings {
            size,
            duration: secs(m, "duration")?.unwrap_or(Duration::from_secs(5)),
            json: m.opt_present("json"),
        })
    };
    subcommand("floor", args, o, false, settings, floor::run)
}

fn footprint(args: &[String]) -> ExitCode {
    let o = cli::getopts_for(cli::Program::PerfFootprint);
    let settings = |m: &getopts::Matches| {
        let tls = match m.opt_str("tls-port") {
            None => {
                if let Some(f) = ["tls-ca", "tls-cert", "tls-key", "tls-server-name"]
                    .iter()
                    .find(|f| m.opt_present(f))
                {
                    return Err(format!("--{f} needs --tls-port"));
                }
                None
            }
            Some(_) => {
                let port: u16 = num(m, "tls-port", 0)?;
                let mut u = uri::parse(&format!("amqps://guest:guest@127.0.0.1:{port}/%2f"))?;
                if let Some(t) = u.tls.as_mut() {
                    t.server_name = m.opt_str("tls-server-name");
                }
                apply_tls(m, &mut u)?;
                Some(u)
            }
        };
        Ok(footprint::FootprintSettings {
            broker: m.free.clone(),
            tls,
            port: num(m, "port", 5699)?,
            connections: num(m, "connections", 10_000)?,
            messages: num(m, "messages", 1_000_000)?,
            json: m.opt_present("json"),
        })
    };
    subcommand("footprint", args, o, true, settings, footprint::run)
}

fn declare(args: &[String]) -> ExitCode {
    let o = cli::getopts_for(cli::Program::PerfDeclare);
    let settings = |m: &getopts::Matches| {
        Ok(declare::DeclareSettings {
            uri: uri_option(m)?,
            count: num(m, "count", 10_000)?,
            durable: !m.opt_present("transient"),
            prefix: m
                .opt_str("queue-prefix")
                .unwrap_or_else(|| "perf-decl-".into()),
            json: m.opt_present("json"),
        })
    };
    subcommand("declare", args, o, false, settings, declare::run)
}

fn stall(args: &[String]) -> ExitCode {
    let o = cli::getopts_for(cli::Program::PerfStall);
    let settings = |m: &getopts::Matches| {
        let phases = m
            .opt_str("phases")
            .unwrap_or_else(|| "consume,close-channel".into())
            .split(',')
            .map(|p| {
                stall::Phase::parse(p.trim())
                    .ok_or_else(|| format!("--phases: unknown phase '{p}'"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let broker_pid = match m.opt_str("broker-pid") {
            None => None,
            Some(_) => Some(num(m, "broker-pid", 0u32)?),
        };
        if let Some(pid) = broker_pid {
            if cpu::process(pid).is_none() {
                return Err(format!("--broker-pid: cannot read /proc/{pid}/stat"));
            }
        }
        Ok(stall::StallSettings {
            uri: uri_option(m)?,
            consumers: num(m, "consumers", 100_000)?,
            phases,
            window: num(m, "window", 10_000)?,
            prefetch: num(m, "prefetch", 0)?,
            messages: num(m, "messages", 1000)?,
            broker_pid,
            json: m.opt_present("json"),
        })
    };
    subcommand("stall", args, o, false, settings, stall::run)
}

fn mqtt(args: &[String]) -> ExitCode {
    let o = cli::getopts_for(cli::Program::PerfMqtt);
    let settings = |m: &getopts::Matches| {
        use std::net::ToSocketAddrs;
        let scenario_name = m.opt_str("scenario").unwrap_or_else(|| "fanin".into());
        let scenario = mqtt::Scenario::parse(&scenario_name)
            .ok_or_else(|| format!("--scenario: '{scenario_name}' is not fanin, qos1 or idle"))?;
        let broker = m
            .opt_str("broker")
            .unwrap_or_else(|| "127.0.0.1:1883".into());
        let addr = broker
            .to_socket_addrs()
            .map_err(|e| format!("--broker {broker}: {e}"))?
            .next()
            .ok_or_else(|| format!("--broker {broker}: no address"))?;
        let connections: usize = num(m, "connections", 10_000)?;
        let inflight: usize = num(m, "inflight", 100)?;
        if !(1..=65_000).contains(&inflight) {
            return Err("--inflight must be between 1 and 65000".to_string());
        }
        let source_addrs: usize = num(m, "source-addrs", connections.div_ceil(20_000).max(1))?;
        if !(1..=254).contains(&source_addrs) {
            return Err("--source-addrs must be between 1 and 254".to_string());
        }
        let default_keepalive = if scenario == mqtt::Scenario::Idle {
            600
        } else {
            60
        };
        let credentials = match (m.opt_str("user"), m.opt_str("password")) {
            (None, None) => None,
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            (None, Some(_)) => return Err("--password needs --user".to_string()),
        };
        let broker_pid = match m.opt_str("broker-pid") {
            None => None,
            Some(_) => Some(num(m, "broker-pid", 0u32)?),
        };
        if let Some(pid) = broker_pid {
            if cpu::process(pid).is_none() {
                return Err(format!("--broker-pid: cannot read /proc/{pid}/stat"));
            }
        }
        let s = mqtt::MqttSettings {
            scenario,
            addr,
            publishers: num(m, "publishers", 100)?,
            size: num(m, "size", 16)?,
            duration: secs(m, "duration")?.unwrap_or(Duration::from_secs(10)),
            inflight,
            connections,
            threads: num(m, "threads", 4)?,
            source_addrs,
            keepalive: num(m, "keepalive", default_keepalive)?,
            credentials,
            topic: m.opt_str("topic-prefix").unwrap_or_else(|| "bench".into()),
            broker_pid,
            json: m.opt_present("json"),
        };
        if s.publishers == 0 || s.connections == 0 || s.threads == 0 {
            return Err("--publishers, --connections and --threads must be at least 1".into());
        }
        if s.publishers > 100_000 {
            return Err("too many publishers".into());
        }
        if s.size > 64 << 20 {
            return Err("--size: at most 64 MiB".into());
        }
        Ok(s)
    };
    subcommand("mqtt", args, o, false, settings, mqtt::run)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("floor") => return floor(args.get(1..).unwrap_or_default()),
        Some("footprint") => return footprint(args.get(1..).unwrap_or_default()),
        Some("declare") => return declare(args.get(1..).unwrap_or_default()),
        Some("stall") => return stall(args.get(1..).unwrap_or_default()),
        Some("mqtt") => return mqtt(args.get(1..).unwrap_or_default()),
        _ => {}
    }
    let opts = options();
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("warren-perf: {e}\n{}", opts.usage(USAGE));
            return ExitCode::from(2);
        }
    };
    if m.opt_present("help") {
        print!("{}", opts.usage(USAGE));
        return ExitCode::SUCCESS;
    }
    if let Some(extra) = m.free.first() {
        eprintln!(
            "warren-perf: unexpected argument '{extra}'\n{}",
            opts.usage(USAGE)
        );
        return ExitCode::from(2);
    }
    match settings(&m) {
        Ok(s) => ExitCode::from(run::run(s) as u8),
        Err(e) => {
            eprintln!("warren-perf: {e}");
            ExitCode::from(2)
        }
    }
}

/// `KEY=VALUE` queue arguments: integers become longs, anything else a string.
fn queue_args(args: &[String]) -> Result<warren::codec::FieldTable, String> {
    use warren::codec::{FieldTable, FieldValue};
    let mut t = FieldTable::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("--queue-arg {a}: expected KEY=VALUE"))?;
        let value = match v.parse::<i64>() {
            Ok(n) => FieldValue::I64(n),
            Err(_) => FieldValue::LongStr(bytes::Bytes::copy_from_slice(v.as_bytes())),
        };
        t.insert(bytes::Bytes::copy_from_slice(k.as_bytes()), value);
    }
    Ok(t)
}
