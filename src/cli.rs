//! The command-line options of `warren`, `warren ctl` and `warren-perf`
//! (and its modes), described once: each binary builds its `getopts`
//! parser from [`OPTIONS`] ([`getopts_for`]), and `warren manpage` and
//! `warren completions` ([`manpage`], [`completions`]) are generated from
//! the same table, so help, man page and completions cannot disagree.
//!
//! An option's `programs` says which command lines take it; options with
//! the same name but another meaning in another program are separate
//! entries. A program's options keep the table's order (its `--help`
//! lists them so).

use std::fmt::Write as _;

/// A command line that takes options from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `warren` (the broker).
    Warren,
    /// `warren ctl`.
    Ctl,
    /// `warren-perf` (its default mode).
    Perf,
    /// `warren-perf floor`.
    PerfFloor,
    /// `warren-perf footprint`.
    PerfFootprint,
    /// `warren-perf declare`.
    PerfDeclare,
    /// `warren-perf stall`.
    PerfStall,
    /// `warren-perf mqtt`.
    PerfMqtt,
}

impl Program {
    /// Every program, in the man page's order.
    pub const ALL: [Program; 8] = [
        Program::Warren,
        Program::Ctl,
        Program::Perf,
        Program::PerfFloor,
        Program::PerfFootprint,
        Program::PerfDeclare,
        Program::PerfStall,
        Program::PerfMqtt,
    ];

    /// Its bit in [`OptDef::programs`].
    pub const fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The command line, as typed.
    pub fn command(self) -> &'static str {
        match self {
            Program::Warren => "warren",
            Program::Ctl => "warren ctl",
            Program::Perf => "warren-perf",
            Program::PerfFloor => "warren-perf floor",
            Program::PerfFootprint => "warren-perf footprint",
            Program::PerfDeclare => "warren-perf declare",
            Program::PerfStall => "warren-perf stall",
            Program::PerfMqtt => "warren-perf mqtt",
        }
    }
}

/// What an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No value.
    Flag,
    /// One value (the last given wins).
    Opt,
    /// A value, repeatable.
    Multi,
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    /// One-letter name, or "".
    pub short: &'static str,
    /// Long name (without `--`).
    pub long: &'static str,
    /// What the value is (`FILE`, `ADDR:PORT`, ...); "" for a flag.
    pub hint: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Flag, option or repeatable option.
    pub kind: Kind,
    /// [`Program::bit`]s of the programs that take it.
    pub programs: u16,
}

const W: u16 = Program::Warren.bit();
const CTL: u16 = Program::Ctl.bit();
const PERF: u16 = Program::Perf.bit();
const FLOOR: u16 = Program::PerfFloor.bit();
const FOOTPRINT: u16 = Program::PerfFootprint.bit();
const DECLARE: u16 = Program::PerfDeclare.bit();
const STALL: u16 = Program::PerfStall.bit();
const MQTT: u16 = Program::PerfMqtt.bit();
/// `warren-perf`'s modes (they add `--json` and `--help` last).
const PERF_MODES: u16 = FLOOR | FOOTPRINT | DECLARE | STALL | MQTT;
/// The `warren-perf` modes that connect to a broker over AMQP (`--tls-*`).
const PERF_AMQP: u16 = PERF | FOOTPRINT | DECLARE | STALL;

const fn flag(
    short: &'static str,
    long: &'static str,
    help: &'static str,
    programs: u16,
) -> OptDef {
    OptDef {
        short,
        long,
        hint: "",
        help,
        kind: Kind::Flag,
        programs,
    }
}

const fn opt(
    short: &'static str,
    long: &'static str,
    help: &'static str,
    hint: &'static str,
    programs: u16,
) -> OptDef {
    OptDef {
        short,
        long,
        hint,
        help,
        kind: Kind::Opt,
        programs,
    }
}

const fn multi(
    short: &'static str,
    long: &'static str,
    help: &'static str,
    hint: &'static str,
    programs: u16,
) -> OptDef {
    OptDef {
        short,
        long,
        hint,
        help,
        kind: Kind::Multi,
        programs,
    }
}

/// Every option of every program.
#[rustfmt::skip]
pub static OPTIONS: &[OptDef] = &[
    // warren
    opt("c", "config", "configuration file in rabbitmq.conf format (flags override it)", "FILE", W),
    opt("", "definitions", "RabbitMQ JSON definitions to import at start", "FILE", W),
    multi("l", "listen", "AMQP listener address (default 127.0.0.1:5672)", "ADDR:PORT", W),
    multi("", "tls-listen", "AMQPS (AMQP over TLS) listener address, beside the plain ones; needs --tls-cert and --tls-key", "ADDR:PORT", W),
    multi("", "mqtt-listen", "MQTT listener address (RabbitMQ's port 1883; none by default)", "ADDR:PORT", W),
    multi("", "mqtts-listen", "MQTT over TLS listener address (port 8883); needs --tls-cert and --tls-key", "ADDR:PORT", W),
    multi("", "mqtt-ws-listen", "MQTT over WebSocket listener address (RabbitMQ web-mqtt's port 15675, path /ws)", "ADDR:PORT", W),
    opt("", "tls-cert", "TLS certificate chain, PEM, leaf first", "FILE", W),
    opt("", "tls-key", "TLS private key, PEM (PKCS#8, PKCS#1 or SEC1, unencrypted)", "FILE", W),
    opt("", "tls-ca", "CA certificates, PEM: a client certificate presented is verified against them (verify_peer)", "FILE", W),
    flag("", "tls-fail-if-no-peer-cert", "refuse TLS clients without a certificate (needs --tls-ca)", W),
    multi("", "tls-sni", "another certificate for clients asking for NAME (SNI)", "NAME=CERT,KEY", W),
    opt("", "management-tls-listen", "the management API over HTTPS too (RabbitMQ's 15671); needs --management-tls-cert and --management-tls-key", "ADDR:PORT", W),
    opt("", "management-tls-cert", "HTTPS certificate chain, PEM", "FILE", W),
    opt("", "management-tls-key", "HTTPS private key, PEM", "FILE", W),
    opt("", "management-tls-ca", "CA certificates, PEM, for HTTPS client certificates", "FILE", W),
    opt("d", "data-dir", "data directory (default ./data)", "DIR", W),
    opt("", "management-listen", "management HTTP API address (default 127.0.0.1:15672)", "ADDR:PORT", W),
    flag("", "no-management", "no management HTTP API", W),
    opt("", "prometheus-listen", "Prometheus metrics address (default 127.0.0.1:15692)", "ADDR:PORT", W),
    flag("", "no-prometheus", "no Prometheus metrics listener", W),
    opt("", "max-memory", "memory budget in bytes: message contents go to disk beyond half of it, and a queue keeps in memory only a window at its head and its tail, the rest spilled to disk (queue depth is bounded by the disk: --min-free-disk); publishers are blocked when memory reaches it all the same (default 134217728)", "BYTES", W),
    opt("", "min-free-disk", "block publishers below this much free disk, in bytes (default 67108864)", "BYTES", W),
    opt("", "segment-size", "message store segment file size in bytes (default 8388608)", "BYTES", W),
    opt("", "consumer-timeout", "close a channel whose delivery is not acknowledged within this many milliseconds; 0: never (default 1800000)", "MS", W),
    // warren ctl
    opt("H", "host", "management API host (default localhost)", "HOST", CTL),
    opt("P", "port", "management API port (default 15672, 15671 with --https)", "PORT", CTL),
    opt("c", "config", "the broker's rabbitmq.conf: where its management API listens (management.tcp.*, management.ssl.*)", "FILE", CTL),
    flag("", "https", "HTTPS (needs --tls-ca)", CTL),
    opt("", "tls-ca", "HTTPS: CA certificates (PEM) to verify the management API's certificate with", "FILE", CTL),
    opt("", "tls-server-name", "HTTPS: the name to verify the certificate for (default: --host)", "NAME", CTL),
    opt("u", "user", "user name (default guest)", "USER", CTL),
    opt("w", "password", "password (default guest)", "PASSWORD", CTL),
    opt("p", "vhost", "virtual host (default /)", "VHOST", CTL),
    opt("t", "timeout", "seconds to wait for the broker (default 30; await_startup: 300)", "SECS", CTL),
    flag("", "json", "print JSON instead of tables", CTL),
    opt("", "formatter", "table (default) or json", "FORMAT", CTL),
    flag("q", "quiet", "no informational messages", CTL),
    flag("s", "silent", "same as --quiet", CTL),
    flag("", "no-table-headers", "no header line above tables", CTL),
    flag("", "if-empty", "delete_queue: only if it has no messages", CTL),
    flag("", "if-unused", "delete_queue: only if it has no consumers", CTL),
    opt("", "priority", "set_policy: priority (default 0)", "N", CTL),
    opt("", "apply-to", "set_policy: all, queues, classic_queues, quorum_queues, streams or exchanges (default all)", "WHAT", CTL),
    flag("", "global", "list_vhost_limits: of every vhost", CTL),
    flag("", "any-broker", "act on the management API at --host/--port even if it is not warren's (e.g. RabbitMQ's)", CTL),
    // warren-perf and its modes
    opt("u", "uri", "broker URI (default amqp://guest:guest@127.0.0.1:5672/%2f)", "URI", PERF | DECLARE | STALL),
    opt("x", "publishers", "publisher connections (default 1)", "N", PERF),
    opt("y", "consumers", "consumer connections (default 1)", "N", PERF),
    opt("Q", "queues", "number of queues (default 1)", "N", PERF),
    opt("", "queue-prefix", "queue name prefix (default perf-q-)", "P", PERF),
    opt("e", "exchange", "exchange name (default perf-<type>; \"\" = default exchange)", "NAME", PERF),
    opt("t", "exchange-type", "direct, fanout or topic (default direct)", "TYPE", PERF),
    opt("k", "routing-key", "fixed routing and binding key (default: one key per queue)", "KEY", PERF),
    opt("s", "size", "message body size, at least 16 (default 16)", "BYTES", PERF | FLOOR),
    flag("", "persistent", "publish with delivery-mode 2", PERF),
    opt("c", "confirm", "publisher confirms, at most N unconfirmed per publisher", "N", PERF),
    flag("a", "ack", "manual acks (default: no-ack consumers)", PERF),
    opt("q", "prefetch", "basic.qos prefetch count", "N", PERF),
    opt("A", "multi-ack", "ack every N messages with multiple=true (implies --ack)", "N", PERF),
    opt("C", "count", "messages per publisher", "N", PERF),
    opt("z", "duration", "publish for SECS seconds", "SECS", PERF),
    opt("r", "rate", "messages per second per publisher (0 = unlimited)", "R", PERF),
    flag("", "durable-queues", "declare durable queues and exchange", PERF),
    multi("", "queue-arg", "queue argument KEY=VALUE (integers as long, else string), e.g. x-message-ttl=60000", "KEY=VALUE", PERF),
    flag("l", "latency", "one message in flight: 1 publisher, 1 consumer, 1 queue", PERF),
    flag("j", "json", "final summary as one JSON line on stdout", PERF),
    flag("", "keep", "don't delete the queues and exchange at the end", PERF),
    opt("", "drain", "consume N messages already queued (declared and filled by an earlier run with --keep): the queues are not purged first", "N", PERF),
    opt("", "broker-pid", "report this process's CPU time (read from /proc) per message", "PID", PERF),
    opt("z", "duration", "seconds per phase (default 5)", "SECS", FLOOR),
    opt("p", "port", "port to run the broker on (default 5699)", "PORT", FOOTPRINT),
    opt("n", "connections", "idle connections to hold (default 10000)", "N", FOOTPRINT),
    opt("m", "messages", "messages to queue (default 1000000)", "N", FOOTPRINT),
    opt("", "tls-port", "connect over TLS (amqps) to this port: --tls-listen 127.0.0.1:PORT is added to the broker's command line", "PORT", FOOTPRINT),
    opt("", "tls-server-name", "with --tls-port: the name to verify the broker's certificate for (default 127.0.0.1)", "NAME", FOOTPRINT),
    opt("C", "count", "queues to declare and bind (default 10000)", "N", DECLARE),
    opt("", "queue-prefix", "queue name prefix (default perf-decl-)", "P", DECLARE),
    flag("", "transient", "declare transient queues and exchange", DECLARE),
    opt("n", "consumers", "consumers added by each consume phase (default 100000)", "N", STALL),
    opt("", "phases", "comma-separated: consume, cancel, close-channel, delete-queue, close-connection, publish (default consume,close-channel)", "LIST", STALL),
    opt("q", "prefetch", "basic.qos prefetch count of the consumers (default 0: unlimited)", "N", STALL),
    opt("m", "messages", "messages a publish phase sends (default 1000)", "N", STALL),
    opt("w", "window", "requests in flight at most (default 10000)", "N", STALL),
    opt("", "broker-pid", "report this process's CPU time (read from /proc) per phase", "PID", STALL),
    opt("", "scenario", "fanin, qos1 or idle (default fanin)", "NAME", MQTT),
    opt("b", "broker", "the broker's MQTT address (default 127.0.0.1:1883)", "HOST:PORT", MQTT),
    opt("z", "duration", "seconds to publish; idle: to hold the connections (default 10)", "SECS", MQTT),
    opt("x", "publishers", "fanin: publisher connections (default 100)", "N", MQTT),
    opt("s", "size", "payload bytes (default 16; qos1 stamps the send time in the first 8)", "BYTES", MQTT),
    opt("", "inflight", "qos1: PUBLISHes awaiting their PUBACK at most (default 100)", "N", MQTT),
    opt("n", "connections", "idle: connections to open (default 10000)", "N", MQTT),
    opt("", "threads", "idle: threads opening the connections (default 4)", "N", MQTT),
    opt("", "source-addrs", "idle: connect from 127.0.0.1 to 127.0.0.N in turn, for more connections than one address has ephemeral ports (loopback brokers; default: one per 20000 connections)", "N", MQTT),
    opt("k", "keepalive", "keep-alive in CONNECT, seconds (default 600 for idle, 60 otherwise)", "SECS", MQTT),
    opt("", "topic-prefix", "publish to PREFIX/..., subscribe to PREFIX/# (default bench)", "P", MQTT),
    opt("", "user", "user name in CONNECT (with --password)", "NAME", MQTT),
    opt("", "password", "password in CONNECT", "PASS", MQTT),
    opt("", "broker-pid", "report this process's CPU time (read from /proc) per received message", "PID", MQTT),
    opt("", "tls-ca", "amqps: CA certificates (PEM) to verify the broker with (as ?cacertfile=)", "FILE", PERF_AMQP),
    opt("", "tls-cert", "amqps: client certificate chain (PEM) to present (as ?certfile=)", "FILE", PERF_AMQP),
    opt("", "tls-key", "amqps: the client certificate's private key (PEM, unencrypted; as ?keyfile=)", "FILE", PERF_AMQP),
    flag("j", "json", "summary as one JSON line on stdout", PERF_MODES),
    // everyone
    flag("h", "help", "print this help", W | CTL | PERF | PERF_MODES),
    flag("V", "version", "print the version", W),
];

/// `program`'s options, in the table's order.
pub fn options_of(program: Program) -> impl Iterator<Item = &'static OptDef> {
    OPTIONS
        .iter()
        .filter(move |o| o.programs & program.bit() != 0)
}

/// A `getopts` parser for `program`'s options.
pub fn getopts_for(program: Program) -> getopts::Options {
    let mut o = getopts::Options::new();
    for d in options_of(program) {
        match d.kind {
            Kind::Flag => o.optflag(d.short, d.long, d.help),
            Kind::Opt => o.optopt(d.short, d.long, d.help, d.hint),
            Kind::Multi => o.optmulti(d.short, d.long, d.help, d.hint),
        };
    }
    o
}

/// `warren ctl`'s commands, as its `--help` lists them.
pub const CTL_COMMANDS_HELP: &str = "\
Commands:
  list_queues [COLUMN...]          (default: name messages)
  list_exchanges [COLUMN...]       (default: name type)
  list_bindings [COLUMN...]        (default: source_name source_kind destination_name
                                    destination_kind routing_key arguments)
  list_connections [COLUMN...]     (default: user peer_host peer_port state)
  list_users                       (user tags)
  list_vhosts [COLUMN...]          (default: name)
  list_permissions                 (user configure write read, in --vhost)
  list_user_permissions USER       (vhost configure write read)
  list_topic_permissions           (user exchange write read, in --vhost)
  add_user USER PASSWORD
  delete_user USER
  change_password USER PASSWORD
  set_user_tags USER [TAG...]
  set_permissions USER CONFIGURE WRITE READ    (in --vhost)
  clear_permissions USER                       (in --vhost)
  set_topic_permissions USER EXCHANGE WRITE READ  (in --vhost)
  clear_topic_permissions USER [EXCHANGE]      (in --vhost)
  add_vhost VHOST
  delete_vhost VHOST
  purge_queue QUEUE                            (in --vhost)
  delete_queue QUEUE [--if-empty] [--if-unused] (in --vhost)
  close_connection NAME [REASON]   (NAME as list_connections name shows it)
  set_policy [--priority N] [--apply-to WHAT] NAME PATTERN DEFINITION  (in --vhost)
  clear_policy NAME                            (in --vhost)
  list_policies                                (in --vhost)
  set_operator_policy / clear_operator_policy / list_operator_policies  (the same)
  set_vhost_limits DEFINITION                  (in --vhost; JSON, e.g. {max-connections: 64})
  clear_vhost_limits                           (in --vhost)
  list_vhost_limits [--global]                 (in --vhost)
  set_user_limits USER DEFINITION              (JSON, e.g. {max-channels: 16})
  clear_user_limits USER NAME|all
  list_user_limits [USER]
  set_parameter COMPONENT NAME VALUE           (in --vhost; VALUE: JSON; COMPONENT: shovel,
                                                federation-upstream, federation-upstream-set)
  clear_parameter COMPONENT NAME               (in --vhost)
  list_parameters                              (component name value, in --vhost)
  export_definitions FILE|-
  import_definitions FILE|-
  reload_certificates              (TLS certificates and keys re-read from their files)
  status
  await_startup                    (wait until the broker answers; --timeout, default 300)
  stop                             (stop the broker gracefully, as SIGTERM does, and wait
                                    until it is gone; --timeout, default 30)

HTTPS: --https (default port 15671) with --tls-ca FILE, the CA that signed
the management API's certificate (--tls-ca alone implies --https). With
--config FILE (the broker's rabbitmq.conf), management.ssl.port selects
HTTPS on that port trusting management.ssl.cacertfile; otherwise
management.tcp.port/.ip are used. Flags override the file.";

/// The names of `warren ctl`'s commands (for completions).
pub const CTL_COMMANDS: &[&str] = &[
    "list_queues",
    "list_exchanges",
    "list_bindings",
    "list_connections",
    "list_users",
    "list_vhosts",
    "list_permissions",
    "list_user_permissions",
    "list_topic_permissions",
    "add_user",
    "delete_user",
    "change_password",
    "set_user_tags",
    "set_permissions",
    "clear_permissions",
    "set_topic_permissions",
    "clear_topic_permissions",
    "add_vhost",
    "delete_vhost",
    "purge_queue",
    "delete_queue",
    "close_connection",
    "set_policy",
    "clear_policy",
    "list_policies",
    "set_operator_policy",
    "clear_operator_policy",
    "list_operator_policies",
    "set_vhost_limits",
    "clear_vhost_limits",
    "list_vhost_limits",
    "set_user_limits",
    "clear_user_limits",
    "list_user_limits",
    "set_parameter",
    "clear_parameter",
    "list_parameters",
    "export_definitions",
    "import_definitions",
    "reload_certificates",
    "status",
    "await_startup",
    "stop",
];

/// `warren`'s own commands besides running the broker.
pub const WARREN_COMMANDS: &[&str] = &["ctl", "manpage", "completions"];

/// `warren-perf`'s modes besides its default one.
pub const PERF_MODES_NAMES: &[&str] = &["floor", "footprint", "declare", "stall", "mqtt"];

/// The shells `completions` writes scripts for.
pub const SHELLS: &[&str] = &["bash", "zsh", "fish"];

/// Text for roff: backslashes escaped, dashes as minus signs, no control
/// character at a line's start.
fn roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        for ch in line.chars() {
            match ch {
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                c => out.push(c),
            }
        }
    }
    out
}

/// One `.TP` paragraph per option of `program`.
fn roff_options(out: &mut String, program: Program) {
    for d in options_of(program) {
        out.push_str(".TP\n");
        let mut names = Vec::new();
        if !d.short.is_empty() {
            names.push(format!("\\fB\\-{}\\fR", roff(d.short)));
        }
        names.push(format!("\\fB\\-\\-{}\\fR", roff(d.long)));
        let mut line = names.join(", ");
        if d.kind != Kind::Flag {
            let _ = write!(line, " \\fI{}\\fR", roff(d.hint));
        }
        if d.kind == Kind::Multi {
            line.push_str(" (repeatable)");
        }
        let _ = writeln!(out, "{line}\n{}", roff(d.help));
    }
}

/// Which man page `warren manpage` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// warren(1): the broker, `warren ctl`, `manpage`, `completions`.
    Warren,
    /// warren-perf(1): the load generator and its modes.
    Perf,
}

/// The man page (roff, section 1), from the option table.
pub fn manpage(page: Page) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut m = String::new();
    match page {
        Page::Warren => {
            let _ = write!(
                m,
                ".TH WARREN 1 \"\" \"warren {version}\" \"User Commands\"\n\
                 .SH NAME\n\
                 warren \\- a lightweight AMQP 0\\-9\\-1 message broker, and its operator CLI\n\
                 .SH SYNOPSIS\n\
                 .B warren\n[\\fIOPTIONS\\fR]\n.br\n\
                 .B warren ctl\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR...]\n.br\n\
                 .B warren manpage\n[\\fBwarren\\fR|\\fBwarren\\-perf\\fR]\n.br\n\
                 .B warren completions\n\\fBbash\\fR|\\fBzsh\\fR|\\fBfish\\fR\n\
                 .SH DESCRIPTION\n\
                 \\fBwarren\\fR is an AMQP 0\\-9\\-1 broker (with MQTT 3.1, 3.1.1 and 5.0, over \
                 TCP, TLS and WebSocket) compatible with RabbitMQ's clients, management HTTP API \
                 and Prometheus metrics. It reads its configuration from \\fB\\-\\-config\\fR \
                 (rabbitmq.conf format), then from the options below, which override the file; \
                 it keeps its messages and definitions in \\fB\\-\\-data\\-dir\\fR.\n\
                 .PP\n\
                 \\fBwarren ctl\\fR is a rabbitmqctl\\-like command line client of a running \
                 broker's management HTTP API (HTTP or HTTPS). \\fBwarren manpage\\fR prints this \
                 page (or warren\\-perf's); \\fBwarren completions\\fR prints a completion script \
                 for bash, zsh or fish.\n\
                 .SH OPTIONS\n"
            );
            roff_options(&mut m, Program::Warren);
            m.push_str(".SH \"CTL OPTIONS\"\n");
            roff_options(&mut m, Program::Ctl);
            let _ = write!(
                m,
                ".SH \"CTL COMMANDS\"\n.nf\n{}\n.fi\n",
                roff(CTL_COMMANDS_HELP)
            );
            m.push_str(
                ".SH \"EXIT STATUS\"\n\
                 \\fBwarren\\fR: 0 after a graceful stop, 1 if it cannot start (e.g. a listener \
                 cannot be bound), 2 for a bad command line or configuration.\n\
                 .PP\n\
                 \\fBwarren ctl\\fR: 0 on success, and rabbitmqctl's codes otherwise: 64 bad \
                 command line, 67 no such user, 69 broker unreachable (or not started within \
                 \\fB\\-\\-timeout\\fR) or no such vhost, queue or connection, 70 any other \
                 refusal, 77 not authorised.\n\
                 .SH SIGNALS\n\
                 SIGTERM and SIGINT close every connection (320 CONNECTION_FORCED) and stop the \
                 broker gracefully (\\fBwarren ctl stop\\fR does the same); SIGHUP reads the TLS \
                 certificates and keys again (\\fBwarren ctl reload_certificates\\fR).\n\
                 .SH FILES\n\
                 .TP\n\\fI./data\\fR\n\
                 The default data directory (\\fB\\-\\-data\\-dir\\fR): the message store, \
                 definitions, users and policies.\n\
                 .TP\n\\fIrabbitmq.conf\\fR\n\
                 The configuration file given with \\fB\\-\\-config\\fR (none by default).\n\
                 .SH ENVIRONMENT\n\
                 .TP\n\\fBRUST_LOG\\fR\n\
                 Log filter (env_logger syntax, e.g. \\fBinfo\\fR or \\fBwarren=debug\\fR); \
                 overrides log.console.level and log.file.level.\n\
                 .SH \"SEE ALSO\"\n\
                 \\fBwarren\\-perf\\fR(1), \\fBrabbitmqctl\\fR(8), \\fBrabbitmq.conf\\fR(5)\n",
            );
        }
        Page::Perf => {
            let _ = write!(
                m,
                ".TH WARREN\\-PERF 1 \"\" \"warren {version}\" \"User Commands\"\n\
                 .SH NAME\n\
                 warren\\-perf \\- a load generator for AMQP 0\\-9\\-1 and MQTT brokers\n\
                 .SH SYNOPSIS\n"
            );
            for p in Program::ALL
                .iter()
                .filter(|p| p.command().starts_with("warren-perf"))
            {
                let _ = write!(m, ".B {}\n[\\fIOPTIONS\\fR]\n.br\n", roff(p.command()));
            }
            m.push_str(
                ".SH DESCRIPTION\n\
                 \\fBwarren\\-perf\\fR publishes and consumes through a broker and reports \
                 throughput and end\\-to\\-end latency, in the spirit of RabbitMQ PerfTest. Its \
                 modes: \\fBfloor\\fR (the same traffic through an in\\-process byte relay), \
                 \\fBfootprint\\fR (a broker's start\\-up time and memory), \\fBdeclare\\fR \
                 (declaration rate), \\fBstall\\fR (how consumer churn delays other clients), \
                 \\fBmqtt\\fR (MQTT load).\n",
            );
            for p in Program::ALL
                .iter()
                .filter(|p| p.command().starts_with("warren-perf"))
            {
                let _ = writeln!(m, ".SH \"{} OPTIONS\"", roff(&p.command().to_uppercase()));
                roff_options(&mut m, *p);
            }
            m.push_str(
                ".SH \"SEE ALSO\"\n\
                 \\fBwarren\\fR(1)\n",
            );
        }
    }
    m
}

/// All the long and short option names of `program`, `--long` and `-s`.
fn option_words(program: Program) -> Vec<String> {
    let mut words = Vec::new();
    for d in options_of(program) {
        words.push(format!("--{}", d.long));
        if !d.short.is_empty() {
            words.push(format!("-{}", d.short));
        }
    }
    words
}

/// The options of `program` that take a value (for the completion of the
/// next word), and those whose value is a file or directory.
fn valued(program: Program) -> (Vec<String>, Vec<String>) {
    let mut takes = Vec::new();
    let mut files = Vec::new();
    for d in options_of(program).filter(|d| d.kind != Kind::Flag) {
        let mut names = vec![format!("--{}", d.long)];
        if !d.short.is_empty() {
            names.push(format!("-{}", d.short));
        }
        if matches!(d.hint, "FILE" | "DIR") {
            files.extend(names.iter().cloned());
        }
        takes.extend(names);
    }
    (takes, files)
}

fn bash_program(out: &mut String, var: &str, program: Program) {
    let (takes, files) = valued(program);
    let _ = writeln!(
        out,
        "    local {var}_opts=\"{}\"\n    local {var}_takes=\" {} \"\n    local {var}_files=\" {} \"",
        option_words(program).join(" "),
        takes.join(" "),
        files.join(" ")
    );
}

/// A bash completion script for `warren` and `warren-perf`.
fn bash() -> String {
    let mut s = String::from(
        "# bash completion for warren and warren-perf (generated by `warren completions bash`)\n\
         _warren() {\n    local cur=\"${COMP_WORDS[COMP_CWORD]}\"\n    \
         local prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n",
    );
    bash_program(&mut s, "broker", Program::Warren);
    bash_program(&mut s, "ctl", Program::Ctl);
    let _ = writeln!(
        s,
        "    local cmds=\"{}\" ctl_cmds=\"{}\" shells=\"{}\"",
        WARREN_COMMANDS.join(" "),
        CTL_COMMANDS.join(" "),
        SHELLS.join(" ")
    );
    s.push_str(
        "    local mode=\"\" i\n\
         \x20   if [[ $COMP_CWORD -gt 1 ]]; then mode=\"${COMP_WORDS[1]}\"; fi\n\
         \x20   case \"$mode\" in\n\
         \x20   completions)\n\
         \x20       [[ $COMP_CWORD -eq 2 ]] && COMPREPLY=($(compgen -W \"$shells\" -- \"$cur\"))\n\
         \x20       return ;;\n\
         \x20   manpage)\n\
         \x20       [[ $COMP_CWORD -eq 2 ]] && COMPREPLY=($(compgen -W \"warren warren-perf\" -- \"$cur\"))\n\
         \x20       return ;;\n\
         \x20   ctl)\n\
         \x20       if [[ $ctl_files == *\" $prev \"* ]]; then COMPREPLY=($(compgen -f -- \"$cur\")); return; fi\n\
         \x20       if [[ $ctl_takes == *\" $prev \"* ]]; then return; fi\n\
         \x20       if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W \"$ctl_opts\" -- \"$cur\")); return; fi\n\
         \x20       for ((i = 2; i < COMP_CWORD; i++)); do\n\
         \x20           [[ \" $ctl_cmds \" == *\" ${COMP_WORDS[i]} \"* ]] && return\n\
         \x20       done\n\
         \x20       COMPREPLY=($(compgen -W \"$ctl_cmds\" -- \"$cur\"))\n\
         \x20       return ;;\n\
         \x20   esac\n\
         \x20   if [[ $broker_files == *\" $prev \"* ]]; then COMPREPLY=($(compgen -f -- \"$cur\")); return; fi\n\
         \x20   if [[ $broker_takes == *\" $prev \"* ]]; then return; fi\n\
         \x20   if [[ $cur == -* || $COMP_CWORD -gt 1 ]]; then\n\
         \x20       COMPREPLY=($(compgen -W \"$broker_opts\" -- \"$cur\"))\n\
         \x20   else\n\
         \x20       COMPREPLY=($(compgen -W \"$cmds $broker_opts\" -- \"$cur\"))\n\
         \x20   fi\n\
         }\n\
         complete -o default -F _warren warren\n\n\
         _warren_perf() {\n    local cur=\"${COMP_WORDS[COMP_CWORD]}\"\n    \
         local prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n",
    );
    let perf: Vec<Program> = Program::ALL
        .iter()
        .copied()
        .filter(|p| p.command().starts_with("warren-perf"))
        .collect();
    for p in &perf {
        bash_program(&mut s, &bash_var(*p), *p);
    }
    let _ = writeln!(s, "    local modes=\"{}\"", PERF_MODES_NAMES.join(" "));
    s.push_str(
        "    local v=perf\n\
         \x20   if [[ $COMP_CWORD -gt 1 && \" $modes \" == *\" ${COMP_WORDS[1]} \"* ]]; then v=\"perf_${COMP_WORDS[1]}\"; fi\n\
         \x20   local opts=\"${v}_opts\" takes=\"${v}_takes\" files=\"${v}_files\"\n\
         \x20   if [[ ${!files} == *\" $prev \"* ]]; then COMPREPLY=($(compgen -f -- \"$cur\")); return; fi\n\
         \x20   if [[ ${!takes} == *\" $prev \"* ]]; then return; fi\n\
         \x20   if [[ $COMP_CWORD -eq 1 && $cur != -* ]]; then\n\
         \x20       COMPREPLY=($(compgen -W \"$modes ${!opts}\" -- \"$cur\"))\n\
         \x20   else\n\
         \x20       COMPREPLY=($(compgen -W \"${!opts}\" -- \"$cur\"))\n\
         \x20   fi\n\
         }\n\
         complete -o default -F _warren_perf warren-perf\n",
    );
    s
}

/// The shell variable prefix of a `warren-perf` mode (`perf`, `perf_floor`).
fn bash_var(p: Program) -> String {
    p.command().trim_start_matches("warren-").replace(' ', "_")
}

/// Single-quoted for zsh and fish (`'` closed, escaped, reopened).
fn quoted(s: &str, fish: bool) -> String {
    if fish {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A zsh completion script (`#compdef warren warren-perf`).
fn zsh() -> String {
    let mut s = String::from(
        "#compdef warren warren-perf\n\
         # zsh completion for warren and warren-perf (generated by `warren completions zsh`)\n\n",
    );
    let arrays: Vec<(String, Program)> = Program::ALL
        .iter()
        .map(|p| (p.command().replace(['-', ' '], "_"), *p))
        .collect();
    for (name, p) in &arrays {
        let specs: Vec<String> = options_of(*p)
            .map(|d| {
                let help = d.help.replace(['[', ']'], "").replace(':', "\\:");
                let hint = d.hint.replace(':', "\\:");
                let action = match (d.kind, d.hint) {
                    (Kind::Flag, _) => String::new(),
                    (_, "FILE") => format!(":{hint}:_files"),
                    (_, "DIR") => format!(":{hint}:_files -/"),
                    _ => format!(":{hint}: "),
                };
                let repeat = if d.kind == Kind::Multi { "*" } else { "" };
                let mut v = vec![quoted(
                    &format!("{repeat}--{}[{help}]{action}", d.long),
                    false,
                )];
                if !d.short.is_empty() {
                    v.push(quoted(
                        &format!("{repeat}-{}[{help}]{action}", d.short),
                        false,
                    ));
                }
                v.join(" \\\n    ")
            })
            .collect();
        let _ = write!(
            s,
            "local -a _{name}_args\n_{name}_args=(\n    {}\n)\n",
            specs.join(" \\\n    ")
        );
    }
    let _ = write!(
        s,
        "\n_warren_main() {{\n\
         \x20   if [[ $service == warren-perf ]]; then\n\
         \x20       case $words[2] in\n\
         \x20       {modes})\n\
         \x20           local arr=_warren_perf_${{words[2]}}_args\n\
         \x20           shift words; (( CURRENT-- ))\n\
         \x20           _arguments -s ${{(P)arr}} ;;\n\
         \x20       *)\n\
         \x20           if (( CURRENT == 2 )) && [[ $PREFIX != -* ]]; then compadd -- {modes_words}; fi\n\
         \x20           _arguments -s $_warren_perf_args ;;\n\
         \x20       esac\n\
         \x20       return\n\
         \x20   fi\n\
         \x20   case $words[2] in\n\
         \x20   ctl)\n\
         \x20       shift words; (( CURRENT-- ))\n\
         \x20       _arguments -s $_warren_ctl_args '1:command:({ctl})' '*::argument:_files' ;;\n\
         \x20   completions)\n\
         \x20       (( CURRENT == 3 )) && compadd -- {shells} ;;\n\
         \x20   manpage)\n\
         \x20       (( CURRENT == 3 )) && compadd -- warren warren-perf ;;\n\
         \x20   *)\n\
         \x20       if (( CURRENT == 2 )) && [[ $PREFIX != -* ]]; then compadd -- {cmds}; fi\n\
         \x20       _arguments -s $_warren_args ;;\n\
         \x20   esac\n\
         }}\n\n\
         _warren_main \"$@\"\n",
        modes = PERF_MODES_NAMES.join("|"),
        modes_words = PERF_MODES_NAMES.join(" "),
        ctl = CTL_COMMANDS.join(" "),
        shells = SHELLS.join(" "),
        cmds = WARREN_COMMANDS.join(" "),
    );
    s
}

/// A fish completion script.
fn fish() -> String {
    let mut s = String::from(
        "# fish completion for warren and warren-perf (generated by `warren completions fish`)\n",
    );
    let sub = |words: &[&str]| words.join(" ");
    let warren_cmds = sub(WARREN_COMMANDS);
    let modes = sub(PERF_MODES_NAMES);
    let _ = writeln!(
        s,
        "complete -c warren -n 'not __fish_seen_subcommand_from {warren_cmds}' -f -a '{warren_cmds}'\n\
         complete -c warren -n '__fish_seen_subcommand_from completions' -f -a '{}'\n\
         complete -c warren -n '__fish_seen_subcommand_from manpage' -f -a 'warren warren-perf'\n\
         complete -c warren -n '__fish_seen_subcommand_from ctl; and not __fish_seen_subcommand_from {ctl}' -f -a '{ctl}'\n\
         complete -c warren-perf -n 'not __fish_seen_subcommand_from {modes}' -f -a '{modes}'",
        sub(SHELLS),
        ctl = sub(CTL_COMMANDS),
    );
    for p in Program::ALL {
        let (cmd, cond) = match p {
            Program::Warren => (
                "warren",
                format!("not __fish_seen_subcommand_from {warren_cmds}"),
            ),
            Program::Ctl => ("warren", "__fish_seen_subcommand_from ctl".to_string()),
            Program::Perf => (
                "warren-perf",
                format!("not __fish_seen_subcommand_from {modes}"),
            ),
            other => (
                "warren-perf",
                format!(
                    "__fish_seen_subcommand_from {}",
                    other.command().trim_start_matches("warren-perf ")
                ),
            ),
        };
        for d in options_of(p) {
            let mut line = format!("complete -c {cmd} -n {}", quoted(&cond, true));
            if !d.short.is_empty() {
                let _ = write!(line, " -s {}", d.short);
            }
            let _ = write!(line, " -l {}", d.long);
            match (d.kind, d.hint) {
                (Kind::Flag, _) => {}
                (_, "FILE" | "DIR") => line.push_str(" -r -F"),
                _ => line.push_str(" -x"),
            }
            let _ = writeln!(s, "{line} -d {}", quoted(d.help, true));
        }
    }
    s
}

/// The completion script for `shell` (bash, zsh or fish), None for
/// another shell.
pub fn completions(shell: &str) -> Option<String> {
    match shell {
        "bash" => Some(bash()),
        "zsh" => Some(zsh()),
        "fish" => Some(fish()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn every_program_parses_its_options_and_names_are_unique() {
        for p in Program::ALL {
            let o = getopts_for(p);
            assert!(o.parse(["--help"]).unwrap().opt_present("help"), "{p:?}");
            let mut longs: Vec<&str> = options_of(p).map(|d| d.long).collect();
            let mut shorts: Vec<&str> = options_of(p)
                .map(|d| d.short)
                .filter(|s| !s.is_empty())
                .collect();
            let (l, s) = (longs.len(), shorts.len());
            longs.sort_unstable();
            longs.dedup();
            shorts.sort_unstable();
            shorts.dedup();
            assert_eq!((longs.len(), shorts.len()), (l, s), "{p:?}: a name twice");
        }
        let m = getopts_for(Program::Warren)
            .parse([
                "-l",
                "127.0.0.1:1",
                "--listen",
                "[::1]:2",
                "-d",
                "x",
                "--no-management",
            ])
            .unwrap();
        assert_eq!(m.opt_strs("listen").len(), 2);
        assert_eq!(m.opt_str("data-dir").as_deref(), Some("x"));
        assert!(m.opt_present("no-management"));
    }

    #[test]
    fn ctl_commands_are_in_its_help() {
        for c in CTL_COMMANDS {
            assert!(
                CTL_COMMANDS_HELP.contains(&format!("  {c} "))
                    || CTL_COMMANDS_HELP.contains(&format!("  {c}\n"))
                    || CTL_COMMANDS_HELP.contains(&format!(" {c} /"))
                    || CTL_COMMANDS_HELP.contains(&format!("/ {c} ")),
                "{c}"
            );
        }
    }

    #[test]
    fn man_pages_list_every_option() {
        let warren = manpage(Page::Warren);
        let perf = manpage(Page::Perf);
        for d in OPTIONS {
            let page = if d.programs & (W | CTL) != 0 {
                &warren
            } else {
                &perf
            };
            let long = format!("\\fB\\-\\-{}\\fR", d.long.replace('-', "\\-"));
            assert!(page.contains(&long), "{} missing", d.long);
        }
        assert!(warren.contains(".SH \"CTL COMMANDS\""));
        assert!(!warren.lines().any(|l| l.starts_with('\'')));
    }
}
