//! Shared helpers for integration tests: an embedded broker on an ephemeral
//! port with its own temporary data directory (or an external broker via
//! `WARREN_TEST_ADDR`, e.g. a real RabbitMQ for checking that a test encodes
//! RabbitMQ's behaviour).

#![allow(dead_code)]

pub mod rabbitmq;

use std::net::SocketAddr;
use std::path::PathBuf;
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
        let server = Server::bind(self.config.clone()).expect("rebind");
        self.mgmt_addr = server.management_addr();
        self.prom_addr = server.prometheus_addr();
        self.running = Some(server.spawn().expect("spawn"));
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
    let running = server.spawn().expect("spawn");
    TestBroker {
        addr,
        config: cfg,
        mgmt_addr,
        prom_addr,
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
