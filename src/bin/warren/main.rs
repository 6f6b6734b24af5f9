//! The `warren` binary: `--config` file, then command-line flags → `Config`
//! → logging (stderr, and a rotated file with `log.file`) → bind every
//! listener → open the data directory → a one-line start-up banner → run
//! (under systemd's `Type=notify`, READY=1 as the loop starts).
//! SIGINT/SIGTERM close every connection with 320
//! CONNECTION_FORCED and exit (STOPPING=1 first); SIGHUP reloads the TLS
//! certificates.
//! `warren ctl ...` is the operator CLI
//! (`ctl.rs` beside this file), talking to a running broker's management
//! API.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

mod ctl;

use warren::{cli, Config, Server};

/// The git revision this binary was built from (`git rev-parse
/// --short=12 HEAD`, `-dirty` when tracked files differed from it), or
/// `$WARREN_GIT_REV` at build time where there is no `.git` (a source
/// tarball, a Docker build), else `unknown`: see `build.rs` beside this file.
const GIT_REV: &str = env!("WARREN_GIT_REV");

/// After the options in `--help`: the management API and the metrics.
const MORE_HELP: &str = "\
Management HTTP API (default 127.0.0.1:15672; --management-listen, --no-management,
config keys management.tcp.port / management.tcp.ip): RabbitMQ's management API
as rabbitmqadmin and monitoring tools use it, with HTTP basic auth against
warren's users (tag administrator to change things; management, policymaker or
monitoring to read): /api/overview, /api/nodes, /api/connections, /api/channels,
/api/consumers, /api/exchanges, /api/queues, /api/bindings, /api/vhosts,
/api/users, /api/permissions, /api/topic-permissions, /api/definitions, publish
and get for debugging. `warren ctl` (warren ctl --help) talks to it.

Prometheus metrics (default 127.0.0.1:15692; --prometheus-listen,
--no-prometheus, config keys prometheus.tcp.port / prometheus.tcp.ip), no
credentials, as RabbitMQ's rabbitmq_prometheus plugin: /metrics (aggregated),
/metrics/per-object, /metrics/detailed?family=F&vhost=V. The management port
serves the same paths.

A listener that cannot be bound stops the start (exit 1), naming the address,
before the data directory is touched.
";

fn usage(opts: &getopts::Options) -> String {
    let head = opts.usage(
        "Usage: warren [--config FILE] [--definitions FILE] [--listen ADDR:PORT]... \
         [--tls-listen ADDR:PORT]... [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]\n       \
         [--mqtt-listen ADDR:PORT]... [--mqtts-listen ADDR:PORT]... [--mqtt-ws-listen ADDR:PORT]...\n       \
         [--data-dir DIR] [--max-memory BYTES] [--min-free-disk BYTES] [--segment-size BYTES]\n       \
         [--consumer-timeout MS]\n       \
         [--management-listen ADDR:PORT | --no-management] \
         [--prometheus-listen ADDR:PORT | --no-prometheus]\n       \
         warren ctl COMMAND [ARGS] (warren ctl --help)\n       \
         warren manpage [warren|warren-perf]\n       \
         warren completions bash|zsh|fish",
    );
    format!("{head}\n{MORE_HELP}")
}

/// A `--*-listen` value.
fn addr_flag(m: &getopts::Matches, flag: &str) -> Result<Option<SocketAddr>, String> {
    match m.opt_str(flag) {
        None => Ok(None),
        Some(v) => v
            .parse::<SocketAddr>()
            .map(Some)
            .map_err(|e| format!("bad --{flag} address '{v}': {e}")),
    }
}

/// `warren manpage [warren|warren-perf]`: the man page, roff, on stdout.
fn manpage(args: &[String]) -> ExitCode {
    let page = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["warren"] => cli::Page::Warren,
        ["warren-perf"] => cli::Page::Perf,
        _ => {
            eprintln!("warren: usage: warren manpage [warren|warren-perf]");
            return ExitCode::from(2);
        }
    };
    print!("{}", cli::manpage(page));
    ExitCode::SUCCESS
}

/// `warren completions bash|zsh|fish`: the completion script on stdout.
fn completions(args: &[String]) -> ExitCode {
    match args {
        [shell] => match cli::completions(shell) {
            Some(script) => {
                print!("{script}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("warren: completions: unknown shell '{shell}' (bash, zsh or fish)");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("warren: usage: warren completions bash|zsh|fish");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "ctl") {
        return ctl::main(args.get(1..).unwrap_or(&[]));
    }
    match args.first().map(String::as_str) {
        Some("manpage") => return manpage(args.get(1..).unwrap_or(&[])),
        Some("completions") => return completions(args.get(1..).unwrap_or(&[])),
        _ => {}
    }
    let opts = cli::getopts_for(cli::Program::Warren);
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("warren: {e}\n{}", usage(&opts));
            return ExitCode::from(2);
        }
    };
    if m.opt_present("help") {
        print!("{}", usage(&opts));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("version") {
        println!("warren {} ({GIT_REV})", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut config = Config::default();
    let mut settings = warren::config_file::FileSettings::default();
    let config_file = m.opt_str("config");
    if let Some(f) = &config_file {
        match warren::config_file::load(Path::new(f), &mut config) {
            Ok(s) => settings = s,
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("warren: {e}");
                }
                return ExitCode::from(2);
            }
        }
    }
    let console = settings.log_filter.as_deref().unwrap_or("info");
    if let Err(e) = warren::logging::init(console, settings.log_file.as_ref()) {
        eprintln!("warren: {e}");
        return ExitCode::from(2);
    }
    let listen = m.opt_strs("listen");
    if !listen.is_empty() {
        let mut addrs = Vec::new();
        for l in listen {
            match l.parse::<SocketAddr>() {
                Ok(a) => addrs.push(a),
                Err(e) => {
                    eprintln!("warren: bad --listen address '{l}': {e}");
                    return ExitCode::from(2);
                }
            }
        }
        config.listen = addrs;
    }
    for (flag, field) in [
        ("tls-listen", &mut config.tls_listen),
        ("mqtt-listen", &mut config.mqtt.listen),
        ("mqtts-listen", &mut config.mqtt.tls_listen),
        ("mqtt-ws-listen", &mut config.mqtt.ws_listen),
    ] {
        let given = m.opt_strs(flag);
        if given.is_empty() {
            continue;
        }
        let mut addrs = Vec::new();
        for l in given {
            match l.parse::<SocketAddr>() {
                Ok(a) => addrs.push(a),
                Err(e) => {
                    eprintln!("warren: bad --{flag} address '{l}': {e}");
                    return ExitCode::from(2);
                }
            }
        }
        *field = addrs;
    }
    for (flag, field) in [
        ("tls-cert", &mut config.tls.cert),
        ("tls-key", &mut config.tls.key),
        ("tls-ca", &mut config.tls.ca),
        ("management-tls-cert", &mut config.management_tls.cert),
        ("management-tls-key", &mut config.management_tls.key),
        ("management-tls-ca", &mut config.management_tls.ca),
    ] {
        if let Some(f) = m.opt_str(flag) {
            *field = Some(f.into());
        }
    }
    if m.opt_present("tls-fail-if-no-peer-cert") {
        config.tls.fail_if_no_peer_cert = true;
    }
    for v in m.opt_strs("tls-sni") {
        let parsed = v
            .split_once('=')
            .and_then(|(name, files)| Some((name, files.split_once(',')?)));
        match parsed {
            Some((name, (cert, key))) if !name.is_empty() => config.tls.sni.push(warren::SniCert {
                name: name.to_string(),
                cert: cert.into(),
                key: key.into(),
            }),
            _ => {
                eprintln!("warren: bad --tls-sni '{v}': expected NAME=CERT,KEY");
                return ExitCode::from(2);
            }
        }
    }
    match addr_flag(&m, "management-tls-listen") {
        Ok(Some(a)) => config.management_tls_listen = Some(a),
        Ok(None) => {}
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(d) = m.opt_str("data-dir") {
        config.data_dir = Some(d.into());
    }
    for (flag, off, field) in [
        (
            "management-listen",
            "no-management",
            &mut config.management_listen,
        ),
        (
            "prometheus-listen",
            "no-prometheus",
            &mut config.prometheus_listen,
        ),
    ] {
        match addr_flag(&m, flag) {
            Ok(Some(a)) if m.opt_present(off) => {
                eprintln!("warren: --{flag} {a} and --{off} contradict each other");
                return ExitCode::from(2);
            }
            Ok(Some(a)) => *field = Some(a),
            Ok(None) if m.opt_present(off) => *field = None,
            Ok(None) => {}
            Err(e) => {
                eprintln!("warren: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for (flag, field) in [
        ("max-memory", &mut config.max_memory),
        ("min-free-disk", &mut config.min_free_disk),
        ("segment-size", &mut config.segment_size),
    ] {
        if let Some(v) = m.opt_str(flag) {
            match v.parse::<u64>() {
                Ok(n) => *field = n,
                Err(e) => {
                    eprintln!("warren: bad --{flag} '{v}': {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    if let Some(v) = m.opt_str("consumer-timeout") {
        match v.parse::<u64>() {
            Ok(0) => config.consumer_timeout = None,
            Ok(ms) => config.consumer_timeout = Some(std::time::Duration::from_millis(ms)),
            Err(e) => {
                eprintln!("warren: bad --consumer-timeout '{v}': {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(d) = m.opt_str("definitions") {
        config.definitions = Some(d.into());
    }
    if let Some(d) = &config.definitions {
        if let Err(e) = warren::config_file::read_definitions(d) {
            eprintln!("warren: definitions: {e}");
            return ExitCode::from(2);
        }
    }
    let limits = (config.max_memory, config.min_free_disk);
    let data_dir = config.data_dir.clone();
    let mut server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            if settings.log_file.is_some() {
                log::error!("cannot start: {e}");
            }
            eprintln!("warren: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "{}",
        banner(&server, data_dir.as_deref(), config_file.as_deref(), limits)
    );
    // Under systemd (`Type=notify`): READY=1 once the loop runs, STOPPING=1
    // when a signal stops it.
    match server.notify_service_manager() {
        Ok(true) => log::debug!("notifying the service manager (NOTIFY_SOCKET)"),
        Ok(false) => {}
        Err(e) => log::warn!("cannot notify the service manager: {e}"),
    }
    let handle = server.handle();
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    if sig == signal_hook::consts::SIGHUP {
                        log::info!("received SIGHUP: reloading TLS certificates");
                        handle.reload_certificates();
                        continue;
                    }
                    log::info!("received signal {sig}, shutting down");
                    handle.shutdown();
                    break;
                }
            });
        }
        Err(e) => log::warn!("cannot install signal handlers: {e}"),
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The one-line start-up banner: version, listeners, data directory,
/// config file, memory and disk limits.
fn banner(
    server: &Server,
    data_dir: Option<&Path>,
    config_file: Option<&str>,
    (max_memory, min_free_disk): (u64, u64),
) -> String {
    let strs = |l: &[SocketAddr]| l.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let addrs = strs(server.local_addrs());
    let tls = strs(server.tls_addrs());
    let mqtt = server.mqtt_addrs();
    let opt = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
    let list = |l: Vec<String>| {
        if l.is_empty() {
            "off".to_string()
        } else {
            l.join(" ")
        }
    };
    format!(
        "warren {} ({GIT_REV}) started: AMQP {}, AMQPS {}, MQTT {}, MQTTS {}, MQTT over WebSocket {}, \
         management {}, prometheus {}, data dir {}, \
         config {}, memory limit {max_memory} bytes, disk free limit {min_free_disk} bytes",
        env!("CARGO_PKG_VERSION"),
        list(addrs),
        list(tls),
        list(strs(&mqtt.tcp)),
        list(strs(&mqtt.tls)),
        list(strs(&mqtt.ws)),
        opt(server.management_addr()),
        opt(server.prometheus_addr()),
        data_dir.map_or_else(
            || "none (in memory)".to_string(),
            |d| d.display().to_string()
        ),
        config_file.unwrap_or("none"),
    )
}
