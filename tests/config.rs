//! `--config FILE` (rabbitmq.conf format): the binary refuses a bad file
//! naming every bad line (exit 2); the settings reach the broker (default
//! user, vhost, tags and permissions, tune values, `connection_max`); a
//! port-only listener is dual-stack; `log.file` rotates by size. A listener
//! that cannot be bound stops the start before the data directory exists.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amqp_raw::Raw;
use warren::codec::{QueueDeclare, ReplyCode};

fn warren() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warren"))
}

fn write_conf(tag: &str, text: &str) -> PathBuf {
    let f = common::temp_dir(tag).join("rabbitmq.conf");
    std::fs::write(&f, text).expect("write config");
    f
}

fn run_with_config(conf: &Path) -> (Option<i32>, String) {
    let out = warren()
        .arg("--config")
        .arg(conf)
        .output()
        .expect("run warren");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_file_exits_2_naming_file_and_line() {
    let cases = [
        (
            "# comment\nheartbeat = 30\n\nlisteners.tcp.default = 127.0.0.1:5672x\n",
            4,
            "expected PORT, HOST:PORT or [IPV6]:PORT",
        ),
        (
            "heartbeat = 30\nno_such.setting = 1\n",
            2,
            "unknown key 'no_such.setting'",
        ),
        (
            "vm_memory_high_watermark.absolute = 1.5GB\n",
            1,
            "unknown unit '.5GB'",
        ),
        (
            "default_user = admin\ndefault_user_tags.administrator = yes\n",
            2,
            "expected true or false",
        ),
        (
            "connection_max = many\n",
            1,
            "expected a non-negative integer",
        ),
        ("just some words\n", 1, "expected 'key = value'"),
    ];
    for (text, line, want) in cases {
        let conf = write_conf("badconf", text);
        let (code, stderr) = run_with_config(&conf);
        assert_eq!(code, Some(2), "{text}: {stderr}");
        let prefix = format!("warren: {}:{line}: ", conf.display());
        assert!(
            stderr.starts_with(&prefix) && stderr.contains(want),
            "{text}: want '{prefix}...{want}', got: {stderr}"
        );
    }
    let (code, stderr) = run_with_config(Path::new("/nonexistent/warren.conf"));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("/nonexistent/warren.conf: cannot read"),
        "{stderr}"
    );
}

#[test]
fn bad_definitions_file_exits_2() {
    let dir = common::temp_dir("baddefs");
    let defs = dir.join("defs.json");
    std::fs::write(&defs, "{\"users\": [").unwrap();
    let out = warren()
        .arg("--definitions")
        .arg(&defs)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .expect("run warren");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not valid JSON"), "{stderr}");
}

/// The file's users, vhost, tags, permissions and tune values reach the
/// broker; with `connection_max = 2` a third connection is refused at
/// connection.open with 530, and admitted again once one closes.
#[test]
fn config_file_settings_reach_the_broker() {
    let conf = write_conf(
        "goodconf",
        "default_user = admin\n\
         default_pass = s3cr=t  # '=' in a value is fine; '#' starts a comment\n\
         default_vhost = prod\n\
         default_user_tags.administrator = true\n\
         default_permissions.configure = ^admin-\n\
         default_permissions.write = .*\n\
         default_permissions.read = .*\n\
         channel_max = 16\n\
         frame_max = 8KB\n\
         heartbeat = 7\n\
         connection_max = 2\n",
    );
    let broker = common::start_with(|cfg| {
        warren::config_file::load(&conf, cfg).expect("config");
    });
    let addr = broker.addr;

    // Only the configured default user exists, only in the default vhost.
    let mut guest = Raw::tcp(addr);
    let e = guest.handshake("guest", "guest", "/").unwrap_err();
    assert_eq!(e.reply_code, ReplyCode::ACCESS_REFUSED);
    let mut slash = Raw::tcp(addr);
    let e = slash.handshake("admin", "s3cr=t", "/").unwrap_err();
    assert_eq!(e.reply_code, ReplyCode::NOT_ALLOWED);
    assert_eq!(&e.reply_text[..], b"NOT_ALLOWED - vhost / not found");

    let mut a = Raw::tcp(addr);
    a.handshake("admin", "s3cr=t", "prod")
        .expect("admin to prod");
    let tune = a.tune.clone().expect("tune");
    assert_eq!(
        (tune.channel_max, tune.frame_max, tune.heartbeat),
        (16, 8192, 7)
    );
    // default_permissions.configure = ^admin-
    a.open_channel(1);
    a.rpc(
        1,
        QueueDeclare {
            queue: "admin-q".into(),
            ..QueueDeclare::default()
        },
    );
    a.send(
        1,
        QueueDeclare {
            queue: "other-q".into(),
            ..QueueDeclare::default()
        },
    );
    let close = a.expect_channel_close(1);
    assert_eq!(close.reply_code, ReplyCode::ACCESS_REFUSED);
    assert_eq!(
        &close.reply_text[..],
        &b"ACCESS_REFUSED - access to queue 'other-q' in vhost 'prod' refused for user 'admin'"[..]
    );

    // connection_max = 2: `a` is one; one more fits, the next is refused.
    let mut b = Raw::tcp(addr);
    b.handshake("admin", "s3cr=t", "prod")
        .expect("second connection");
    let mut c = Raw::tcp(addr);
    let e = c.handshake("admin", "s3cr=t", "prod").unwrap_err();
    assert_eq!(e.reply_code, ReplyCode::NOT_ALLOWED);
    assert_eq!(
        &e.reply_text[..],
        &b"NOT_ALLOWED - connection refused: node connection limit (2) is reached"[..]
    );
    drop(b);
    let mut d = Raw::tcp(addr);
    let mut admitted = false;
    for _ in 0..50 {
        // The broker notices b's socket close on its next loop turn.
        match d.handshake("admin", "s3cr=t", "prod") {
            Ok(()) => {
                admitted = true;
                break;
            }
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                d = Raw::tcp(addr);
            }
        }
    }
    assert!(admitted, "a slot freed by a closed connection is reused");
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Its exit code within `limit` (None: still running).
    fn exit_within(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An AMQP, management or Prometheus port already in use: the binary exits
/// 1 naming the address, and has not created the data directory.
#[test]
fn a_taken_port_stops_the_start_before_the_data_directory_is_made() {
    for (i, what) in ["AMQP", "the management API", "Prometheus metrics"]
        .into_iter()
        .enumerate()
    {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().unwrap().to_string();
        let mut addrs = [0, 1, 2].map(|_| format!("127.0.0.1:{}", free_port()));
        addrs[i] = taken_addr.clone();
        let dir = common::temp_dir("taken").join("data");
        let stderr = common::temp_dir("taken-log").join("stderr");
        let child = warren()
            .args(["--listen", &addrs[0]])
            .args(["--management-listen", &addrs[1]])
            .args(["--prometheus-listen", &addrs[2]])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn warren");
        let mut p = Proc(child);
        let code = p.exit_within(Duration::from_secs(20));
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(
            err.contains(&format!(
                "warren: cannot start: cannot listen on {taken_addr} for {what}: \
                 Address already in use"
            )),
            "{what}: {err}"
        );
        assert!(!dir.exists(), "{what}: the data directory was created");
        drop(taken);
    }
    // --no-management / --no-prometheus: those ports are not wanted.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let t = taken.local_addr().unwrap().to_string();
    let out = warren()
        .args(["--no-management", "--management-listen", &t])
        .output()
        .expect("run warren");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("contradict"));
}

/// Every bad line of a file is reported in one go, each with its number.
#[test]
fn every_bad_line_is_reported_at_once() {
    let conf = write_conf(
        "manybad",
        "heartbeat = 30\n\
         vm_memory_high_watermark.relative = lots\n\
         listeners.tcp.default = 5672\n\
         log.file.rotation.date = $D0\n\
         no_such.setting = 1\n\
         channel_max = 70000\n",
    );
    let (code, stderr) = run_with_config(&conf);
    assert_eq!(code, Some(2), "{stderr}");
    let f = conf.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    for (line, (n, want)) in lines.iter().zip([
        (2, "expected a non-negative number"),
        (4, "rotates log files by size only"),
        (5, "unknown key 'no_such.setting'"),
        (6, "must be at most 65535"),
    ]) {
        assert!(
            line.starts_with(&format!("warren: {f}:{n}: ")) && line.contains(want),
            "want line {n} '{want}', got: {line}"
        );
    }
}

/// `listeners.tcp.default = PORT` binds `[::]` dual-stack like RabbitMQ:
/// IPv4 clients get in (and IPv6 ones where the host has IPv6). With
/// `log.file` and a tiny `log.file.rotation.size`, the log rotates to
/// NAME.0, NAME.1, ... keeping `log.file.rotation.count` files, none past
/// the size; the start-up banner opens the log.
#[test]
fn dual_stack_listener_and_rotated_log_file() {
    let dir = common::temp_dir("dualstack");
    let port = TcpListener::bind("[::]:0")
        .or_else(|_| TcpListener::bind("0.0.0.0:0"))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log = dir.join("warren.log");
    let conf = dir.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.tcp.default = {port}\n\
             management.tcp.port = 0\n\
             prometheus.tcp.port = 0\n\
             data_dir = {}\n\
             log.console = false\n\
             log.file = {}\n\
             log.file.level = info\n\
             log.file.rotation.size = 4096\n\
             log.file.rotation.count = 3\n",
            dir.join("data").display(),
            log.display()
        ),
    )
    .unwrap();
    let stderr = dir.join("stderr");
    let child = warren()
        .arg("--config")
        .arg(&conf)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn warren");
    let mut p = Proc(child);
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(v4).is_err() {
        assert!(p.exit_within(Duration::ZERO).is_none(), "warren exited");
        assert!(Instant::now() < deadline, "warren did not listen on {v4}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The banner follows the listeners.
    let mut first = String::new();
    while !first.contains("started: AMQP") {
        assert!(Instant::now() < deadline, "no banner in {first}");
        std::thread::sleep(Duration::from_millis(20));
        first = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let banner = first
        .lines()
        .find(|l| l.contains("started: AMQP"))
        .unwrap_or_default();
    let has_v6 = std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| !t.is_empty());
    if has_v6 {
        assert!(banner.contains(&format!("AMQP [::]:{port},")), "{banner}");
    } else {
        assert!(
            banner.contains(&format!("AMQP 0.0.0.0:{port},")),
            "{banner}"
        );
    }
    assert!(
        banner.contains(&format!("config {}", conf.display())),
        "{banner}"
    );
    assert!(banner.contains("memory limit 134217728 bytes"), "{banner}");
    // An IPv4 client does the AMQP handshake on the one listener.
    Raw::tcp(v4)
        .handshake("guest", "guest", "/")
        .expect("IPv4 client");
    if has_v6 {
        let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        Raw::tcp(v6)
            .handshake("guest", "guest", "/")
            .expect("IPv6 client");
    }
    // Enough log lines (one per accepted connection) to rotate several
    // times.
    for _ in 0..300 {
        drop(TcpStream::connect(v4).expect("connect"));
    }
    let name = |i: Option<u32>| match i {
        None => log.clone(),
        Some(i) => PathBuf::from(format!("{}.{i}", log.display())),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !name(Some(2)).exists() {
        assert!(Instant::now() < deadline, "the log was not rotated 3 times");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the last connections' lines land.
    std::thread::sleep(Duration::from_millis(300));
    for i in [None, Some(0), Some(1), Some(2)] {
        let f = name(i);
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 4096, "{} is {len} bytes", f.display());
        if i.is_some() {
            assert!(len > 3000, "{} is only {len} bytes", f.display());
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.contains(" AMQP connection "), "{text}");
        }
    }
    assert!(!name(Some(3)).exists(), "more than 3 rotated files kept");
    // log.console = false: nothing on stderr.
    assert_eq!(std::fs::read_to_string(&stderr).unwrap(), "");
}
