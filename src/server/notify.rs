//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): a service
//! started by systemd finds the path of a datagram socket in
//! `$NOTIFY_SOCKET` and sends it newline-separated `KEY=VALUE` lines:
//! `READY=1` once it serves, `STOPPING=1` when it begins to stop, `STATUS=`
//! a line for `systemctl status`. A name starting with `@` is a Linux
//! abstract socket (the `@` stands for the leading NUL byte). No crate: one
//! unbound `UnixDatagram` and `send_to_addr`.
//!
//! Nothing here is fatal: a broker whose notification fails still runs
//! (systemd then times the start out, which is the operator's signal); the
//! failure is logged.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use log::{debug, warn};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How long one notification may wait for room in the socket's queue
/// (systemd reads at once; this only bounds a stuck receiver).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for log lines.
    name: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`: `None` when it is unset or empty (not started
    /// by systemd as `Type=notify`, or by a manager that does not want
    /// notifications).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(v) if !v.is_empty() => {
                let name = v.into_string().map_err(|v| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{NOTIFY_SOCKET} is not UTF-8: {v:?}"),
                    )
                })?;
                Notifier::new(&name).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// For the socket `name`: a path, or `@NAME` for an abstract socket.
    pub fn new(name: &str) -> io::Result<Notifier> {
        let addr = socket_addr(name)?;
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier {
            sock,
            addr,
            name: name.to_string(),
        })
    }

    /// Send one notification (`KEY=VALUE` lines); a failure is logged.
    pub fn notify(&self, state: &str) {
        match self.sock.send_to_addr(state.as_bytes(), &self.addr) {
            Ok(_) => debug!("notified {}: {}", self.name, state.replace('\n', " ")),
            Err(e) => warn!(
                "cannot notify the service manager at {}: {e} (sending {})",
                self.name,
                state.replace('\n', " ")
            ),
        }
    }
}

/// The socket address `$NOTIFY_SOCKET` names.
fn socket_addr(name: &str) -> io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        return abstract_addr(abstract_name.as_bytes());
    }
    if !name.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOTIFY_SOCKET}={name}: neither an absolute path nor an abstract name (@...)"),
        ));
    }
    SocketAddr::from_pathname(name)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_receives_the_lines() {
        let dir = std::env::temp_dir().join(format!("warren-notify-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=up");
        assert_eq!(recv(&server), "READY=1\nSTATUS=up");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives_the_lines() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("warren-notify-unit-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.notify("STOPPING=1");
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn relative_names_are_refused() {
        assert!(Notifier::new("notify.sock").is_err());
    }

    #[test]
    fn a_missing_socket_is_logged_not_fatal() {
        let n = Notifier::new("/nonexistent/warren/notify.sock").unwrap();
        n.notify("READY=1");
    }
}
