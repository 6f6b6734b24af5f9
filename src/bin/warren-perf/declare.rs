//! `warren-perf declare`: how fast a broker takes definitions. One client
//! declares N queues and binds each to an exchange, one operation at a time
//! (each waits for its -ok, as most client programs do), reporting the rate
//! per thousand so a cost that grows with the number of definitions shows
//! up; then deletes them again.

use std::time::Instant;

use bytes::Bytes;
use warren::codec::{
    ExchangeDeclare, ExchangeDelete, Method, QueueBind, QueueDeclare, QueueDelete,
};

use super::client::{channel_closed, Conn, Result};
use super::uri::Uri;

/// Declare options.
pub struct DeclareSettings {
    /// Broker to talk to.
    pub uri: Uri,
    /// Queues (and bindings) to declare.
    pub count: usize,
    /// Durable queues and exchange.
    pub durable: bool,
    /// Queue name prefix.
    pub prefix: String,
    /// One JSON line instead of text.
    pub json: bool,
}

fn expect(m: Method, ok: fn(&Method) -> bool) -> Result<()> {
    match m {
        Method::ChannelClose(c) => Err(channel_closed(&c)),
        m if ok(&m) => Ok(()),
        m => Err(super::client::PerfError::Protocol(format!(
            "unexpected reply {m:?}"
        ))),
    }
}

fn rpc(c: &mut Conn, m: Method, ok: fn(&Method) -> bool) -> Result<()> {
    let reply = c.rpc(1, &m, |r| ok(r) || matches!(r, Method::ChannelClose(_)))?;
    expect(reply, ok)
}

fn run_inner(s: &DeclareSettings) -> Result<()> {
    let mut c = Conn::open(&s.uri, "warren-perf declare")?;
    c.open_channel(1)?;
    let exchange = Bytes::from(format!("{}x", s.prefix));
    rpc(
        &mut c,
        ExchangeDeclare {
            exchange: exchange.clone(),
            kind: Bytes::from_static(b"direct"),
            durable: s.durable,
            ..Default::default()
        }
        .into(),
        |m| matches!(m, Method::ExchangeDeclareOk(_)),
    )?;
    let started = Instant::now();
    let mut lap = started;
    let mut laps = Vec::new();
    for i in 0..s.count {
        let q = Bytes::from(format!("{}{i}", s.prefix));
        rpc(
            &mut c,
            QueueDeclare {
                queue: q.clone(),
                durable: s.durable,
                ..Default::default()
            }
            .into(),
            |m| matches!(m, Method::QueueDeclareOk(_)),
        )?;
        rpc(
            &mut c,
            QueueBind {
                queue: q.clone(),
                exchange: exchange.clone(),
                routing_key: q,
                ..Default::default()
            }
            .into(),
            |m| matches!(m, Method::QueueBindOk(_)),
        )?;
        if (i + 1) % 1000 == 0 {
            laps.push(1000.0 / lap.elapsed().as_secs_f64());
            lap = Instant::now();
        }
    }
    let declare_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..s.count {
        rpc(
            &mut c,
            QueueDelete {
                queue: Bytes::from(format!("{}{i}", s.prefix)),
                ..Default::default()
            }
            .into(),
            |m| matches!(m, Method::QueueDeleteOk(_)),
        )?;
    }
    let delete_secs = started.elapsed().as_secs_f64();
    rpc(
        &mut c,
        ExchangeDelete {
            exchange,
            ..Default::default()
        }
        .into(),
        |m| matches!(m, Method::ExchangeDeleteOk(_)),
    )?;
    c.close(std::time::Duration::from_secs(5));
    let n = s.count as f64;
    if s.json {
        println!(
            "{{\"queues\":{},\"durable\":{},\"declare_bind_secs\":{declare_secs:.3},\"delete_secs\":{delete_secs:.3},\"queues_per_sec_per_1000\":{:?}}}",
            s.count,
            s.durable,
            laps.iter().map(|r| r.round()).collect::<Vec<_>>()
        );
    } else {
        println!(
            "{} {} queues declared and bound in {declare_secs:.2} s ({:.0} queues/s, {:.2} ms per operation), deleted in {delete_secs:.2} s",
            s.count,
            if s.durable { "durable" } else { "transient" },
            n / declare_secs,
            declare_secs * 1000.0 / (2.0 * n)
        );
        let rates: Vec<String> = laps.iter().map(|r| format!("{r:.0}")).collect();
        println!("queues/s per thousand: {}", rates.join(" "));
    }
    Ok(())
}

/// Run the declare benchmark; the process exit code.
pub fn run(s: DeclareSettings) -> i32 {
    match run_inner(&s) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("warren-perf declare: {e}");
            1
        }
    }
}
