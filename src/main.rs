//! The `warren` binary: `--config` file, then command-line flags → `Config`
//! → bind → run. SIGINT/SIGTERM close every connection with 320
//! CONNECTION_FORCED and exit. `warren ctl ...` is the operator CLI
//! (`src/ctl.rs`), talking to a running broker's management API.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use warren::{Config, Server};

fn usage(opts: &getopts::Options) -> String {
    opts.usage(
        "Usage: warren [--config FILE] [--definitions FILE] [--listen ADDR:PORT]... \
         [--data-dir DIR] [--max-memory BYTES] [--min-free-disk BYTES] [--segment-size BYTES]\n       \
         warren ctl COMMAND [ARGS] (warren ctl --help)",
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "ctl") {
        return warren::ctl::main(args.get(1..).unwrap_or(&[]));
    }
    let mut opts = getopts::Options::new();
    opts.optopt(
        "c",
        "config",
        "configuration file in rabbitmq.conf format (flags override it)",
        "FILE",
    );
    opts.optopt(
        "",
        "definitions",
        "RabbitMQ JSON definitions to import at start",
        "FILE",
    );
    opts.optmulti(
        "l",
        "listen",
        "AMQP listener address (default 127.0.0.1:5672)",
        "ADDR:PORT",
    );
    opts.optopt("d", "data-dir", "data directory (default ./data)", "DIR");
    opts.optopt(
        "",
        "max-memory",
        "memory budget for queued messages in bytes: contents go to disk beyond half of it, publishers are blocked at it (default 134217728)",
        "BYTES",
    );
    opts.optopt(
        "",
        "min-free-disk",
        "block publishers below this much free disk, in bytes (default 67108864)",
        "BYTES",
    );
    opts.optopt(
        "",
        "segment-size",
        "message store segment file size in bytes (default 8388608)",
        "BYTES",
    );
    opts.optflag("h", "help", "print this help");
    opts.optflag("V", "version", "print the version");
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
        println!("warren {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut config = Config::default();
    let mut log_filter = String::from("info");
    if let Some(f) = m.opt_str("config") {
        match warren::config_file::load(Path::new(&f), &mut config) {
            Ok(settings) => log_filter = settings.log_filter.unwrap_or(log_filter),
            Err(e) => {
                eprintln!("warren: {e}");
                return ExitCode::from(2);
            }
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(log_filter)).init();
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
    if let Some(d) = m.opt_str("data-dir") {
        config.data_dir = Some(d.into());
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
    if let Some(d) = m.opt_str("definitions") {
        config.definitions = Some(d.into());
    }
    if let Some(d) = &config.definitions {
        if let Err(e) = warren::config_file::read_definitions(d) {
            eprintln!("warren: definitions: {e}");
            return ExitCode::from(2);
        }
    }
    let server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = server.handle();
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    log::info!("received signal {sig}, shutting down");
                    handle.shutdown();
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
