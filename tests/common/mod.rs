//! Shared helpers for integration tests: an embedded broker on an ephemeral
//! port with its own temporary data directory (or an external broker via
//! `WARREN_TEST_ADDR`, e.g. a real RabbitMQ for checking that a test encodes
//! RabbitMQ's behaviour).

#![allow(dead_code)]

pub mod rabbitmq;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use warren::{Config, Running, Server};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("warren-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A broker for one test; stopped (and its data dir removed) when dropped.
pub struct TestBroker {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its configuration (the listen address is the bound one).
    pub config: Config,
    /// The management HTTP API's address, when enabled (`start_with` and
    /// `management_listen`; `WARREN_TEST_MGMT_ADDR` for an external broker).
    pub mgmt_addr: Option<SocketAddr>,
    /// The Prometheus listener's address, when enabled (`prometheus_listen`).
    pub prom_addr: Option<SocketAddr>,
    /// The first TLS (AMQPS) listener's address, when there is one
    /// (`tls_listen`).
    pub tls_addr: Option<SocketAddr>,
    /// The management API's HTTPS listener, when there is one
    /// (`management_tls_listen`).
    pub https_addr: Option<SocketAddr>,
    running: Option<Running>,
    owns_dir: bool,
}

impl TestBroker {
    /// `amqp://guest:guest@host:port/%2f`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Stop the broker (clean shutdown) and start it again on the same
    /// address and data directory.
    pub fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().expect("shutdown");
        }
        // The port was free a moment ago; a parallel test's outgoing
        // connection may hold it as its local port for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let server = loop {
            match Server::bind(self.config.clone()) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("rebind: {e:?}"),
            }
        };
        self.mgmt_addr = server.management_addr();
        self.prom_addr = server.prometheus_addr();
        self.running = Some(server.spawn().expect("spawn"));
    }

    /// What SIGHUP does: read the TLS certificate files again.
    pub fn reload_certificates(&self) {
        if let Some(r) = &self.running {
            r.handle().reload_certificates();
        }
    }

    /// Stop the broker without removing its data.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().expect("shutdown");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
        if self.owns_dir {
            if let Some(d) = &self.config.data_dir {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

/// Start a broker with the default config on 127.0.0.1:0.
pub fn start() -> TestBroker {
    start_with(|_| {})
}

/// Start a broker after adjusting its config.
pub fn start_with(f: impl FnOnce(&mut Config)) -> TestBroker {
    let _ = env_logger::builder().is_test(true).try_init();
    if let Ok(addr) = std::env::var("WARREN_TEST_ADDR") {
        return TestBroker {
            addr: addr.parse().expect("WARREN_TEST_ADDR must be host:port"),
            config: Config::default(),
            mgmt_addr: std::env::var("WARREN_TEST_MGMT_ADDR")
                .ok()
                .map(|a| a.parse().expect("WARREN_TEST_MGMT_ADDR must be host:port")),
            prom_addr: None,
            tls_addr: None,
            https_addr: None,
            running: None,
            owns_dir: false,
        };
    }
    let mut cfg = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        data_dir: Some(temp_dir("data")),
        management_listen: None,
        prometheus_listen: None,
        ..Config::default()
    };
    f(&mut cfg);
    let server = Server::bind(cfg.clone()).expect("bind");
    let addr = server.local_addrs()[0];
    cfg.listen = vec![addr];
    let mgmt_addr = server.management_addr();
    if mgmt_addr.is_some() {
        cfg.management_listen = mgmt_addr;
    }
    let prom_addr = server.prometheus_addr();
    if prom_addr.is_some() {
        cfg.prometheus_listen = prom_addr;
    }
    let https_addr = server.management_tls_addr();
    if https_addr.is_some() {
        cfg.management_tls_listen = https_addr;
    }
    let tls_addr = server.tls_addrs().first().copied();
    if !server.tls_addrs().is_empty() {
        cfg.tls_listen = server.tls_addrs().to_vec();
    }
    let running = server.spawn().expect("spawn");
    TestBroker {
        addr,
        config: cfg,
        mgmt_addr,
        prom_addr,
        tls_addr,
        https_addr,
        running: Some(running),
        owns_dir: true,
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run a command; panic with its name unless it succeeds.
pub fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The python of the venv `target/<venv>`, created on first use, with the
/// `requirements` file (relative to the repository root) installed and
/// re-installed when that file changes. Nothing but python3 needs to be on
/// the machine. Tests of one binary may ask at once: provisioning is locked.
pub fn venv_python(venv: &str, requirements: &str) -> PathBuf {
    static PROVISION: Mutex<()> = Mutex::new(());
    let _guard = PROVISION.lock().unwrap_or_else(|e| e.into_inner());
    let venv = root().join("target").join(venv);
    let python = venv.join("bin").join("python");
    let reqs = root().join(requirements);
    let wanted = std::fs::read_to_string(&reqs).expect("requirements file");
    let stamp = venv.join("installed-requirements.txt");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    if std::fs::read_to_string(&stamp).unwrap_or_default() != wanted {
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs));
        std::fs::write(&stamp, wanted).expect("write stamp");
    }
    python
}

/// Certificates made for one test with the `openssl` CLI (never checked
/// in): a CA, and a server certificate it signed for `localhost` and
/// 127.0.0.1.
pub struct TlsCerts {
    /// The directory holding them.
    pub dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, unencrypted PKCS#8).
    pub key: PathBuf,
}

/// Make a CA and a server certificate in a fresh temporary directory.
pub fn tls_certs() -> TlsCerts {
    let dir = temp_dir("tls");
    let openssl = |args: &[&str]| openssl_in(&dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=warren test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca);
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&req);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    TlsCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        dir,
    }
}

/// Run the openssl CLI in `dir`; panics with its stderr on failure.
pub fn openssl_in(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The usual extensions of a client certificate.
pub const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE\n\
     keyUsage=critical,digitalSignature\n\
     extendedKeyUsage=clientAuth\n";

impl TlsCerts {
    /// A certificate and key `NAME.pem`/`NAME.key` for `subj` (openssl
    /// `-subj` form), with extensions `ext` (an openssl extfile), signed by
    /// this CA (or, `untrusted`, by a CA of its own that nobody trusts),
    /// valid for `days` (-1: expired yesterday).
    pub fn issue(
        &self,
        name: &str,
        subj: &str,
        ext: &str,
        days: i32,
        untrusted: bool,
    ) -> (PathBuf, PathBuf) {
        let dir = &self.dir;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let (ca, ca_key) = if untrusted {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend([
                "-keyout",
                "rogue-ca.key",
                "-out",
                "rogue-ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=rogue CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl_in(dir, &args);
            ("rogue-ca.pem", "rogue-ca.key")
        } else {
            ("ca.pem", "ca.key")
        };
        let (key, csr, ext_file, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
        openssl_in(dir, &args);
        std::fs::write(dir.join(&ext_file), ext).unwrap();
        let days = days.to_string();
        openssl_in(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                ca,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-days",
                &days,
                "-extfile",
                &ext_file,
                "-out",
                &pem,
            ],
        );
        (dir.join(pem), dir.join(key))
    }

    /// A client certificate for `subj` signed by the CA, valid 2 days.
    pub fn client(&self, name: &str, subj: &str) -> (PathBuf, PathBuf) {
        self.issue(name, subj, CLIENT_EXT, 2, false)
    }

    /// A server certificate for DNS name `dns`, signed by the CA.
    pub fn server(&self, name: &str, dns: &str) -> (PathBuf, PathBuf) {
        let ext = format!(
            "subjectAltName=DNS:{dns}\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n"
        );
        self.issue(name, &format!("/CN={dns}"), &ext, 2, false)
    }
}

impl Drop for TlsCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start a broker with a plain listener and a TLS listener on 127.0.0.1,
/// using `certs`, after adjusting its config.
pub fn start_tls(certs: &TlsCerts, f: impl FnOnce(&mut Config)) -> TestBroker {
    start_with(|c| {
        c.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls.cert = Some(certs.cert.clone());
        c.tls.key = Some(certs.key.clone());
        f(c)
    })
}
