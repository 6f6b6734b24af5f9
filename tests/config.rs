//! `--config FILE` (rabbitmq.conf format): the binary refuses a bad file
//! naming the line (exit 2); the settings reach the broker (default user,
//! vhost, tags and permissions, tune values, `connection_max`).

mod amqp_raw;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

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
