//! A real RabbitMQ node for tests that compare with it or talk to it: Debian's
//! `rabbitmq-server` is installed on first use (apt-get; the test machines
//! are root and reach Debian's package registry), and each node runs with its
//! own name, ports and directories under `target/rabbitmq/`, without plugins
//! (or with those asked for, and a `rabbitmq.conf`), and is stopped when
//! dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where Debian's package keeps RabbitMQ's own scripts.
const BIN: &str = "/usr/lib/rabbitmq/bin/";

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Install Debian's rabbitmq-server unless it is there (once per process).
fn ensure_installed() {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if std::path::Path::new(BIN).join("rabbitmq-server").exists() {
        return;
    }
    let run = |args: &[&str]| {
        let st = Command::new(args[0])
            .args(&args[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
        assert!(st.success(), "{args:?} failed: {st}");
    };
    run(&["apt-get", "update", "-q"]);
    run(&["apt-get", "install", "-y", "-q", "rabbitmq-server"]);
}

/// The classic `rabbitmqadmin` (a Python script) that Debian's package
/// ships inside its management plugin, installing the package if needed.
pub fn rabbitmqadmin() -> PathBuf {
    ensure_installed();
    let lib = std::path::Path::new("/usr/lib/rabbitmq/lib");
    let under = |dir: &std::path::Path, prefix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .collect()
    };
    under(lib, "rabbitmq_server-")
        .iter()
        .flat_map(|server| under(&server.join("plugins"), "rabbitmq_management-"))
        .map(|plugin| plugin.join("priv/www/cli/rabbitmqadmin"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no rabbitmqadmin under {}", lib.display()))
}

/// A running RabbitMQ node.
pub struct RabbitMq {
    /// Its AMQP address.
    pub addr: SocketAddr,
    /// `-n` argument for rabbitmqctl.
    pub node: String,
    /// Its directories (mnesia, logs, config).
    pub base: PathBuf,
    child: Option<Child>,
}

impl RabbitMq {
    /// Start a node named after `tag` and wait until it accepts AMQP
    /// connections (up to a minute).
    pub fn start(tag: &str) -> RabbitMq {
        RabbitMq::start_with(tag, &[], "")
    }

    /// Start a node with `plugins` enabled (e.g. `rabbitmq_prometheus`,
    /// `rabbitmq_management`) and `conf` as its `rabbitmq.conf` (e.g.
    /// `prometheus.tcp.port = N`; pick ports with [`free_port`]).
    pub fn start_with(tag: &str, plugins: &[&str], conf: &str) -> RabbitMq {
        ensure_installed();
        let port = free_port();
        let dist = free_port();
        let node = format!("warren-test-{tag}-{}@localhost", std::process::id());
        let base = super::root()
            .join("target")
            .join("rabbitmq")
            .join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("log")).expect("rabbitmq dirs");
        let plugins_list = plugins;
        let plugins = base.join("enabled_plugins");
        std::fs::write(&plugins, format!("[{}].\n", plugins_list.join(",")))
            .expect("enabled_plugins");
        std::fs::write(base.join("rabbitmq.conf"), conf).expect("rabbitmq.conf");
        // The scripts themselves, not Debian's wrappers in /usr/sbin (those
        // switch to the rabbitmq user, which cannot use target/).
        let child = Command::new(BIN.to_string() + "rabbitmq-server")
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rabbitmq-server");
        let mut r = RabbitMq {
            addr: ([127, 0, 0, 1], port).into(),
            node,
            base,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(r.addr).is_err() {
            if let Some(Ok(Some(st))) = r.child.as_mut().map(|c| c.try_wait()) {
                panic!("rabbitmq-server exited at start: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ did not listen on {} within a minute",
                r.addr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = r.ctl(&["await_startup"]);
        assert!(out.status.success(), "rabbitmqctl await_startup: {out:?}");
        r
    }

    /// Run `rabbitmqctl -n NODE ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN.to_string() + "rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .expect("run rabbitmqctl")
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !matches!(c.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
