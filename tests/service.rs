//! What a service manager sees of the `warren` binary: `--version` names
//! the git revision it was built from, and under systemd's `Type=notify`
//! (`$NOTIFY_SOCKET`, a path or an abstract `@name`) it sends `READY=1`
//! once it listens and `STOPPING=1` when SIGTERM stops it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amqp_raw::Raw;

/// Kills the child if a test fails half-way.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One datagram from the notification socket, as text.
fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// The value of `KEY=` in a notification.
fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| l.strip_prefix(&format!("{key}=")))
}

/// Start the binary with `NOTIFY_SOCKET=name` on an ephemeral port, read
/// READY=1 (whose STATUS names the port), talk AMQP, SIGTERM it, read
/// STOPPING=1, and see it exit cleanly.
fn ready_and_stopping(sock: &UnixDatagram, name: &str) {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let dir = common::temp_dir("notify");
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--no-management", "--no-prometheus"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn warren");
    let mut p = Proc(child);
    let ready = recv(sock);
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready}");
    assert_eq!(
        field(&ready, "MAINPID"),
        Some(p.0.id().to_string().as_str()),
        "{ready}"
    );
    let status = field(&ready, "STATUS").expect("a STATUS line");
    let addr: SocketAddr = status
        .strip_prefix("serving AMQP ")
        .unwrap_or_else(|| panic!("STATUS={status}"))
        .parse()
        .unwrap_or_else(|e| panic!("STATUS={status}: {e}"));
    // Ready means bound and recovered: the first connection works.
    Raw::tcp(addr)
        .handshake("guest", "guest", "/")
        .expect("AMQP handshake after READY=1");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) }, 0);
    let stopping = recv(sock);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "warren did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn notify_socket_path_gets_ready_and_stopping() {
    let dir = common::temp_dir("notify-sock");
    let path = dir.join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    ready_and_stopping(&sock, path.to_str().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn abstract_notify_socket_gets_ready_and_stopping() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("warren-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    ready_and_stopping(&sock, &format!("@{name}"));
}

/// Without `$NOTIFY_SOCKET` nothing changes; with one that is not a socket
/// address the broker still starts (a warning is logged).
#[test]
fn a_bad_notify_socket_does_not_stop_the_start() {
    let dir = common::temp_dir("notify-bad");
    let log = dir.join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--no-management", "--no-prometheus"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", "relative/path")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn warren");
    let mut p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("started: AMQP") && text.contains("cannot notify the service manager") {
            break;
        }
        assert!(p.0.try_wait().unwrap().is_none(), "warren exited: {text}");
        assert!(Instant::now() < deadline, "warren did not start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) }, 0);
    assert!(p.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `warren --version`: the package version and the git revision of this
/// checkout (with `-dirty` while tracked files are changed), as `git`
/// says; `unknown` only where the build had neither git nor
/// `WARREN_GIT_REV`.
#[test]
fn version_names_the_git_revision() {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.trim_end();
    let prefix = format!("warren {} (", env!("CARGO_PKG_VERSION"));
    let rev = line
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version printed {line:?}"));
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::root())
        .output();
    match git {
        Ok(g) if g.status.success() => {
            let head = String::from_utf8(g.stdout).unwrap().trim().to_string();
            assert_eq!(head.len(), 12, "{head}");
            assert!(
                rev == head || rev == format!("{head}-dirty"),
                "--version says {rev}, HEAD is {head}"
            );
        }
        // A build outside a git checkout: WARREN_GIT_REV or unknown.
        _ => assert!(!rev.is_empty(), "{line}"),
    }
    // -V is the same.
    let short = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("-V")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(short.stdout).unwrap(), text);
}
