//! `warren ctl` over HTTPS against the `warren` binary itself: the broker
//! started with a `rabbitmq.conf` that has `management.ssl.*`, and ctl
//! finding the API (HTTPS port, CA) in the same file with `--config`;
//! `reload_certificates` swaps the certificate (a bad file is refused with
//! the reason, and the old certificate stays in use).
//!
//! NEEDS THE SERVER SIDE of management HTTPS (`management.ssl.port`,
//! `.certfile`, `.keyfile`, `.cacertfile` in the config file, and
//! `POST /api/reload-certificates`). Before it is in the broker, the start
//! fails on the config file and this test fails, saying so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(conf: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("ctl")
        .arg("--config")
        .arg(conf)
        .args(args)
        .output()
        .expect("run warren ctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ctl_over_https_with_the_brokers_config_and_certificate_reload() {
    let certs = common::tls_certs();
    let next = common::tls_certs();
    let dir = common::temp_dir("ctl-https-bin");
    let (cert, key) = (dir.join("mgmt.pem"), dir.join("mgmt.key"));
    std::fs::copy(&certs.cert, &cert).unwrap();
    std::fs::copy(&certs.key, &key).unwrap();
    let (amqp, http, https) = (free_port(), free_port(), free_port());
    let conf = dir.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.tcp.default = 127.0.0.1:{amqp}\n\
             management.tcp.ip = 127.0.0.1\n\
             management.tcp.port = {http}\n\
             management.ssl.ip = 127.0.0.1\n\
             management.ssl.port = {https}\n\
             management.ssl.certfile = {}\n\
             management.ssl.keyfile = {}\n\
             management.ssl.cacertfile = {}\n\
             prometheus.tcp.port = 0\n\
             data_dir = {}\n\
             log.console.level = warning\n",
            cert.display(),
            key.display(),
            certs.ca.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--config")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start warren");
    let mut broker = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = ctl(&conf, &["-q", "status"]);
        if o.code == 0 {
            assert!(o.stdout.contains("Product: Warren"), "{}", o.stdout);
            break;
        }
        if let Some(status) = broker.0.try_wait().unwrap() {
            let mut err = String::new();
            let _ = broker.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!(
                "warren exited ({status}) with this config (is the server side of \
                 management HTTPS in?):\n{err}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the HTTPS management API did not come up: {}",
            o.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = ctl(&conf, &["-q", "list_vhosts"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "name\n/\n"),
        "{}",
        o.stderr
    );

    // Reloading the same files works.
    let o = ctl(&conf, &["reload_certificates"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "TLS certificates reloaded.\n");

    // A bad certificate file is refused, with the reason; the certificate
    // in use stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let o = ctl(&conf, &["reload_certificates"]);
    assert_eq!(o.code, 70, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("Error: POST /api/reload-certificates: HTTP 400: "),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("mgmt.pem"), "{}", o.stderr);
    let o = ctl(&conf, &["-q", "list_vhosts"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "name\n/\n"),
        "{}",
        o.stderr
    );

    // A certificate from another CA: after the reload, ctl trusting the
    // old CA (the config's cacertfile) refuses the API, --tls-ca with the
    // new one reaches it.
    std::fs::copy(&next.cert, &cert).unwrap();
    std::fs::copy(&next.key, &key).unwrap();
    let o = ctl(&conf, &["reload_certificates"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = ctl(&conf, &["-q", "list_vhosts"]);
    assert_eq!(o.code, 69, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("TLS handshake failed: invalid peer certificate"),
        "{}",
        o.stderr
    );
    let o = ctl(
        &conf,
        &["--tls-ca", next.ca.to_str().unwrap(), "-q", "list_vhosts"],
    );
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "name\n/\n"),
        "{}",
        o.stderr
    );

    // Plain HTTP on the HTTP port still answers (flags override the file).
    let o = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["ctl", "--host", "127.0.0.1", "--port", &http.to_string()])
        .args(["-q", "list_vhosts"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "name\n/\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
