//! The Debian package (`src/bin/warren/dist/build-deb.sh`, `cargo deb`):
//! built around the binary under test, its control data and files checked
//! with `dpkg-deb`, then unpacked into a temporary root where the systemd
//! unit's `ExecStart` line runs as an unprivileged user, the way postinst
//! and systemd would set it up: `READY=1` arrives over `$NOTIFY_SOCKET`, the
//! broker answers AMQP and `warren ctl`, SIGTERM brings `STOPPING=1` and a
//! clean exit. Nothing is installed on this machine's root.
//!
//! Two opt-in tests (ignored: each downloads a Debian base system with
//! debootstrap, a minute or two) install the package with `dpkg -i` in a
//! fresh root: `deb_in_a_debootstrap_chroot` starts it in the chroot as the
//! user postinst made; `deb_under_systemd_in_a_booted_container` boots that
//! root with systemd-nspawn, where systemd itself starts, reloads, stops and
//! restarts warren.service and `warren ctl await_startup` answers:
//!
//! ```sh
//! cargo test --release --test package -- --ignored --nocapture
//! ```
//!
//! The Docker image's configuration (`dist/docker.conf`) and the package's
//! default one are parsed here too: the default one's `# key = value` lines,
//! uncommented, must give warren's defaults.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod amqp_raw;
mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amqp_raw::Raw;

/// One package build at a time (cargo-deb is installed on first use).
static BUILD: Mutex<()> = Mutex::new(());

/// Kills the child if a test fails half-way.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dist() -> PathBuf {
    common::root().join("src/bin/warren/dist")
}

/// Run a command; its output, or a panic with its stderr.
fn output(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(output(cmd).stdout).unwrap()
}

/// `cargo deb` present, or installed from crates.io.
fn ensure_cargo_deb() {
    let ok = Command::new("cargo")
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        common::run(Command::new("cargo").args(["install", "cargo-deb", "--locked"]));
    }
}

/// The package of the binary under test, built in `dir`: the binary is
/// put where cargo-deb looks for it (`$CARGO_TARGET_DIR/release/warren`)
/// and build-deb.sh packages it without building.
fn build_deb(dir: &Path) -> PathBuf {
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    ensure_cargo_deb();
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_warren"), target.join("release/warren")).unwrap();
    let deb = dir.join("warren.deb");
    let t = Instant::now();
    output(
        Command::new(dist().join("build-deb.sh"))
            .args(["--no-build", "--fast", "--output"])
            .arg(&deb)
            .env("CARGO_TARGET_DIR", &target),
    );
    eprintln!("package built in {:.1} s", t.elapsed().as_secs_f64());
    assert!(deb.exists(), "no {}", deb.display());
    deb
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The control fields, conffiles and maintainer scripts.
fn check_control(deb: &Path) {
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(deb));
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in\n{info}"))
            .to_string()
    };
    assert_eq!(field("Package"), "warren");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Section"), "net");
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert!(depends.contains("adduser"), "Depends: {depends}");
    for script in ["postinst", "postrm", "prerm", "conffiles"] {
        assert!(
            info.lines()
                .any(|l| l.split_whitespace().any(|w| w == script)),
            "no {script} in\n{info}"
        );
    }
    let conffiles = stdout(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/warren/warren.conf");
    let postinst = stdout(Command::new("dpkg-deb").arg("-I").arg(deb).arg("postinst"));
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(postinst.contains("chown warren:warren"), "{postinst}");
    // cargo-deb's systemd lines replaced the #DEBHELPER# token.
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    assert!(postinst.contains("warren.service"), "{postinst}");
    let postrm = stdout(Command::new("dpkg-deb").arg("-I").arg(deb).arg("postrm"));
    assert!(postrm.contains("rm -rf /var/lib/warren"), "{postrm}");
    assert!(!postrm.contains("#DEBHELPER#"), "{postrm}");
    let prerm = stdout(Command::new("dpkg-deb").arg("-I").arg(deb).arg("prerm"));
    assert!(prerm.contains("warren.service"), "{prerm}");
}

/// The files and their modes; returns the unit's path inside the package.
fn check_files(deb: &Path) -> String {
    let list = stdout(Command::new("dpkg-deb").arg("-c").arg(deb));
    let entry = |path: &str| {
        list.lines()
            .find(|l| l.split_whitespace().nth(5) == Some(path))
            .unwrap_or_else(|| panic!("no {path} in\n{list}"))
            .to_string()
    };
    // Mode and owner (dpkg-deb prints root/root or 0/0).
    let mode = |path: &str| {
        let e = entry(path);
        let f: Vec<&str> = e.split_whitespace().collect();
        assert!(f[1] == "root/root" || f[1] == "0/0", "{e}");
        (f[0].to_string(), f[2].parse::<u64>().unwrap())
    };
    let (bin_mode, bin_size) = mode("./usr/bin/warren");
    assert_eq!(bin_mode, "-rwxr-xr-x");
    // Stripped: well under the unstripped binary's size.
    let unstripped = std::fs::metadata(env!("CARGO_BIN_EXE_warren"))
        .unwrap()
        .len();
    assert!(bin_size < unstripped, "{bin_size} bytes: not stripped");
    assert_eq!(mode("./etc/warren/warren.conf").0, "-rw-r-----");
    for doc in [
        "README.md",
        "CHANGELOG.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "copyright",
    ] {
        entry(&format!("./usr/share/doc/warren/{doc}"));
    }
    // Generated by build-deb.sh from the binary.
    for generated in [
        "./usr/share/man/man1/warren.1.gz",
        "./usr/share/bash-completion/completions/warren",
        "./usr/share/zsh/vendor-completions/_warren",
        "./usr/share/fish/vendor_completions.d/warren.fish",
    ] {
        let e = entry(generated);
        assert!(e.starts_with("-rw-r--r--"), "{e}");
        let size: u64 = e.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(size > 100, "{e}");
    }
    let unit = list
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/systemd/system/warren.service"))
        .unwrap_or_else(|| panic!("no warren.service in\n{list}"))
        .trim_start_matches('.')
        .to_string();
    // Only what it should hold: no build leftovers.
    for l in list.lines() {
        let p = l.split_whitespace().nth(5).unwrap_or("");
        assert!(
            p.ends_with('/')
                || p.starts_with("./usr/bin/")
                || p.starts_with("./etc/warren/")
                || p.starts_with("./usr/share/doc/warren/")
                || p.starts_with("./usr/share/man/")
                || p.contains("completion")
                || p.contains("/systemd/system/"),
            "unexpected {p} in the package"
        );
    }
    unit
}

/// The unit's settings that matter, read from the file in the package.
fn check_unit(unit: &str) -> Vec<String> {
    for want in [
        "Type=notify",
        "User=warren",
        "Group=warren",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "LimitNOFILE=65536",
        "ReadWritePaths=/var/lib/warren",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == want), "no {want} in\n{unit}");
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert_eq!(
        exec,
        "/usr/bin/warren --config /etc/warren/warren.conf --data-dir /var/lib/warren"
    );
    exec.split_whitespace().map(str::to_string).collect()
}

/// `systemd-analyze verify` of the unit, where systemd-analyze is there:
/// a copy whose ExecStart names the unpacked binary (man pages are not
/// looked up: the host has no warren(1)).
fn verify_unit(dir: &Path, root: &Path, unit: &str) {
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("no systemd-analyze: unit not verified");
        return;
    };
    if !v.status.success() {
        return;
    }
    let copy = dir.join("verify/warren.service");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let bin = root.join("usr/bin/warren");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/warren", &bin.to_string_lossy()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("warren"),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
}

/// One notification, as text.
fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

/// `warren ctl` against the management API: `await_startup` where the
/// binary has it, else a listing (which also waits for nothing).
fn ctl_answers(warren: &Path, mgmt_port: u16) {
    let help = Command::new(warren)
        .args(["ctl", "--help"])
        .output()
        .unwrap();
    let help =
        String::from_utf8_lossy(&help.stdout).to_string() + &String::from_utf8_lossy(&help.stderr);
    let cmd = if help.contains("await_startup") {
        "await_startup"
    } else {
        "list_vhosts"
    };
    let port = mgmt_port.to_string();
    let out = output(
        Command::new(warren)
            .args(["ctl", "--host", "127.0.0.1", "--port", &port, cmd])
            .stdin(Stdio::null()),
    );
    eprintln!("warren ctl {cmd}: answered");
    if cmd == "list_vhosts" {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l == "/"), "{text}");
    }
}

#[test]
fn deb_contents_and_the_units_exec_start() {
    let t0 = Instant::now();
    let dir = common::temp_dir("deb");
    let deb = build_deb(&dir);
    check_control(&deb);
    let unit_path = check_files(&deb);

    // Unpacked into a temporary root, as dpkg would install the files.
    let root = dir.join("root");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let unit = std::fs::read_to_string(root.join(unit_path.trim_start_matches('/'))).unwrap();
    let exec = check_unit(&unit);
    verify_unit(&dir, &root, &unit);
    let version = stdout(Command::new(root.join("usr/bin/warren")).arg("--version"));
    assert!(
        version.starts_with(&format!("warren {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // What postinst does: the data directory owned by the service user,
    // the configuration readable by its group. Root runs the broker as
    // nobody (setpriv, from util-linux), as systemd would run it as warren.
    let data = root.join("var/lib/warren");
    std::fs::create_dir_all(&data).unwrap();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let drop_to_nobody = as_root
        && Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if drop_to_nobody {
        let nobody = 65534u32;
        std::os::unix::fs::chown(&data, Some(nobody), Some(nobody)).unwrap();
        std::os::unix::fs::chown(root.join("etc/warren/warren.conf"), None, Some(nobody)).unwrap();
    }
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();

    // The ExecStart line with its paths inside the root, on free ports
    // (flags win over the file; the file's defaults are 5672 and 15672).
    let inside = |a: &str| {
        if a.starts_with('/') {
            root.join(a.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned()
        } else {
            a.to_string()
        }
    };
    let args: Vec<String> = exec.iter().map(|a| inside(a)).collect();
    let (amqp_port, mgmt_port) = (free_port(), free_port());
    let notify_name = format!("warren-deb-test-{}", std::process::id());
    let notify = {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(notify_name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&a).unwrap()
    };
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut cmd = if drop_to_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
            "--",
        ]);
        c.args(&args);
        c
    } else {
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]);
        c
    };
    cmd.args(["--listen", &format!("127.0.0.1:{amqp_port}")])
        .args(["--management-listen", &format!("127.0.0.1:{mgmt_port}")])
        .arg("--no-prometheus")
        .current_dir(&data)
        .env("NOTIFY_SOCKET", format!("@{notify_name}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    let t = Instant::now();
    let mut p = Proc(cmd.spawn().expect("start the ExecStart line"));
    let ready = recv(&notify);
    let ready_after = t.elapsed();
    assert!(has_line(&ready, "READY=1"), "{ready}");
    // No `:` after the address: the STATUS line lists AMQP first.
    assert!(
        ready.contains(&format!("STATUS=serving AMQP 127.0.0.1:{amqp_port}")),
        "{ready}"
    );
    let addr: SocketAddr = ([127, 0, 0, 1], amqp_port).into();
    Raw::tcp(addr)
        .handshake("guest", "guest", "/")
        .expect("AMQP after READY=1");
    ctl_answers(&root.join("usr/bin/warren"), mgmt_port);
    // The broker wrote its data as the service user.
    assert!(data.join("VERSION").exists() || std::fs::read_dir(&data).unwrap().count() > 0);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) }, 0);
    let stopping = recv(&notify);
    assert!(has_line(&stopping, "STOPPING=1"), "{stopping}");
    let status = p.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert!(status.success(), "exit {status}\n{log}");
    eprintln!(
        "READY=1 {:.0} ms after ExecStart; whole test {:.1} s{}",
        ready_after.as_secs_f64() * 1000.0,
        t0.elapsed().as_secs_f64(),
        if drop_to_nobody {
            " (ran as nobody)"
        } else {
            ""
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Settings lines of a rabbitmq.conf text: `# key = value` lines of the
/// package's file are its defaults, commented out; `##` lines explain.
fn uncommented_defaults(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        if let Some(setting) = l.strip_prefix("# ") {
            if !l.starts_with("##") {
                out.push_str(setting);
                out.push('\n');
            }
        }
    }
    out
}

#[test]
fn default_config_is_commented_defaults() {
    let text = std::fs::read_to_string(dist().join("warren.conf")).unwrap();
    // Nothing is set in the shipped file.
    for l in text.lines() {
        assert!(
            l.is_empty() || l.starts_with('#'),
            "an active line in warren.conf: {l}"
        );
    }
    let settings = uncommented_defaults(&text);
    assert!(settings.lines().count() > 30, "{settings}");
    let dir = common::temp_dir("conf");
    let f = dir.join("defaults.conf");
    std::fs::write(&f, &settings).unwrap();
    let mut config = warren::Config::default();
    let loaded = warren::config_file::load(&f, &mut config);
    if let Err(e) = &loaded {
        panic!(
            "{}",
            e.0.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(
        format!("{config:?}"),
        format!("{:?}", warren::Config::default()),
        "uncommented, warren.conf's lines are not warren's defaults"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn docker_config_parses_and_the_dockerfile_uses_it() {
    let mut config = warren::Config::default();
    let loaded = warren::config_file::load(&dist().join("docker.conf"), &mut config);
    assert!(loaded.is_ok(), "docker.conf does not parse");
    assert_eq!(
        config.data_dir.as_deref(),
        Some(Path::new("/var/lib/warren"))
    );
    assert!(config.loopback_users.is_empty());
    assert!(config
        .listen
        .iter()
        .all(|a| a.port() == 5672 && a.ip().is_unspecified()));
    assert_eq!(
        config.management_listen,
        Some("0.0.0.0:15672".parse().unwrap())
    );
    let dockerfile = std::fs::read_to_string(common::root().join("Dockerfile")).unwrap();
    for want in [
        "COPY src ./src",
        "src/bin/warren/dist/docker.conf /out/etc/warren/warren.conf",
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "USER 65532:65532",
        "EXPOSE 5672 15672",
        "VOLUME [\"/var/lib/warren\"]",
        "ENTRYPOINT [\"/usr/bin/warren\"]",
        "CMD [\"--config\", \"/etc/warren/warren.conf\"]",
        "ARG WARREN_GIT_REV",
    ] {
        assert!(dockerfile.contains(want), "no {want} in the Dockerfile");
    }
    // The builder image is the rust-version Cargo.toml states.
    let manifest = std::fs::read_to_string(common::root().join("Cargo.toml")).unwrap();
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={msrv}\n")),
        "the Dockerfile's Rust is not {msrv}"
    );
}

/// `packages` installed with apt-get unless `tool` runs.
fn ensure_tool(tool: &str, packages: &[&str]) {
    if Command::new(tool).arg("--version").output().is_err() {
        common::run(Command::new("apt-get").args(["update", "-q"]));
        common::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q"])
                .args(packages),
        );
    }
}

/// A Debian bookworm base system (minbase and `include`) in `root`, from
/// the mirror apt uses here (debootstrap installed when missing).
fn debootstrap(root: &Path, include: &str) {
    ensure_tool("debootstrap", &["debootstrap"]);
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("URIs: "))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let t = Instant::now();
    common::run(
        Command::new("debootstrap")
            .args([
                "--variant=minbase",
                &format!("--include={include}"),
                "bookworm",
            ])
            .arg(root)
            .arg(&mirror),
    );
    eprintln!("debootstrap: {:.0} s", t.elapsed().as_secs_f64());
}

/// The package installed with `dpkg -i` in a Debian chroot made by
/// debootstrap (installed with apt-get when missing), then started there
/// as its unit would start it: the user postinst made, READY=1, AMQP,
/// `warren ctl`, STOPPING=1; then purged. Downloads a base system:
/// minutes, so opt-in.
#[test]
#[ignore]
fn deb_in_a_debootstrap_chroot() {
    let t0 = Instant::now();
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (chroot, mount)");
    let dir = common::temp_dir("chroot");
    let deb = build_deb(&dir);
    let root = dir.join("root");
    debootstrap(&root, "adduser");
    std::fs::copy(&deb, root.join("tmp/warren.deb")).unwrap();
    let chroot = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(&root)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    };
    std::fs::create_dir_all(root.join("proc")).unwrap();
    common::run(
        Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.join("proc")),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _proc = Unmount(root.join("proc"));
    let t = Instant::now();
    let install = output(&mut chroot(&["dpkg", "-i", "/tmp/warren.deb"]));
    eprintln!(
        "dpkg -i: {:.1} s\n{}",
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&install.stdout)
    );
    // What postinst made.
    let passwd = stdout(&mut chroot(&["getent", "passwd", "warren"]));
    assert!(passwd.contains(":/var/lib/warren:"), "{passwd}");
    let owner = stdout(&mut chroot(&[
        "stat",
        "-c",
        "%U:%G %a",
        "/var/lib/warren",
        "/etc/warren/warren.conf",
    ]));
    assert_eq!(owner, "warren:warren 750\nroot:warren 640\n");
    let status = stdout(&mut chroot(&[
        "dpkg-query",
        "-W",
        "-f",
        "${Status} ${Version}",
        "warren",
    ]));
    assert_eq!(
        status,
        format!("install ok installed {}-1", env!("CARGO_PKG_VERSION"))
    );

    // Start it as the unit does (user warren, its ExecStart), on free
    // ports, with a notification socket.
    let unit = [
        "usr/lib/systemd/system/warren.service",
        "lib/systemd/system/warren.service",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
    .expect("the unit installed");
    let exec = check_unit(&unit);
    let (amqp_port, mgmt_port) = (free_port(), free_port());
    let notify_name = format!("warren-chroot-test-{}", std::process::id());
    let notify = {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(notify_name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&a).unwrap()
    };
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut args = vec![
        "setpriv".to_string(),
        "--reuid=warren".into(),
        "--regid=warren".into(),
        "--init-groups".into(),
        "--no-new-privs".into(),
        "--".into(),
    ];
    args.extend(exec);
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{amqp_port}"),
        "--management-listen".into(),
        format!("127.0.0.1:{mgmt_port}"),
        "--no-prometheus".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let mut p = Proc(
        chroot(&argv)
            .env("NOTIFY_SOCKET", format!("@{notify_name}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ready = recv(&notify);
    eprintln!(
        "READY=1 after {:.0} ms: {ready:?}",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert!(has_line(&ready, "READY=1"), "{ready}");
    Raw::tcp(([127, 0, 0, 1], amqp_port).into())
        .handshake("guest", "guest", "/")
        .expect("AMQP in the chroot");
    let port = mgmt_port.to_string();
    let help = stdout(&mut chroot(&["warren", "ctl", "--help"]));
    let cmd = if help.contains("await_startup") {
        "await_startup"
    } else {
        "list_vhosts"
    };
    let ctl = stdout(&mut chroot(&[
        "warren",
        "ctl",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        cmd,
    ]));
    eprintln!("warren ctl {cmd} in the chroot: {ctl:?}");
    let files = stdout(&mut chroot(&[
        "find",
        "/var/lib/warren",
        "-maxdepth",
        "1",
        "-printf",
        "%u %p\n",
    ]));
    assert!(files.lines().all(|l| l.starts_with("warren ")), "{files}");
    assert_eq!(unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) }, 0);
    let stopping = recv(&notify);
    assert!(has_line(&stopping, "STOPPING=1"), "{stopping}");
    assert!(p.0.wait().unwrap().success());

    // Purge: the data goes, the user stays.
    output(&mut chroot(&["dpkg", "--purge", "warren"]));
    assert!(!root.join("var/lib/warren").exists());
    assert!(!root.join("etc/warren/warren.conf").exists());
    drop(_proc);
    eprintln!("chroot test: {:.0} s in all", t0.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs inside the booted container as a oneshot unit: install the
/// package, see systemd start it, reload, stop and start it, then purge.
const IN_CONTAINER: &str = r#"#!/bin/sh
exec > /root/result.txt 2>&1
set -x
dpkg -i /root/warren.deb; echo "dpkg rc=$?"
systemctl is-enabled warren
systemctl is-active warren
warren ctl await_startup --timeout 30; echo "await_startup rc=$?"
systemctl show warren -p Type -p SubState -p StatusText -p User
ps -o user= -C warren
stat -c '%U:%G %a %n' /var/lib/warren /etc/warren/warren.conf
systemctl reload warren; echo "reload rc=$?"
systemctl stop warren; echo "stop rc=$?"
systemctl show warren -p ActiveState -p Result -p ExecMainStatus
systemctl start warren; warren ctl await_startup --timeout 30; echo "restart rc=$?"
journalctl -u warren --no-pager
systemd-analyze security warren --no-pager | tail -1
dpkg --purge warren; echo "purge rc=$?"
test -e /var/lib/warren; echo "data left=$?"
echo DONE
systemctl poweroff
"#;

/// The acceptance test of the package under a real systemd: a debootstrap
/// root with systemd, booted with `systemd-nspawn` (Debian's
/// systemd-container, installed when missing; a private network, so the
/// package's default ports are its own), where `dpkg -i` enables and
/// starts warren.service: Type=notify reaches `active (running)` as user
/// warren with warren's STATUS line, `warren ctl await_startup` answers,
/// reload (SIGHUP), stop (exit 0) and start work, and purge removes the
/// data. Downloads a base system: minutes, so opt-in:
///
/// ```sh
/// cargo test --release --test package deb_under_systemd -- --ignored --nocapture
/// ```
#[test]
#[ignore]
fn deb_under_systemd_in_a_booted_container() {
    let t0 = Instant::now();
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (systemd-nspawn)");
    ensure_tool("systemd-nspawn", &["systemd-container"]);
    let dir = common::temp_dir("nspawn");
    let deb = build_deb(&dir);
    let root = dir.join("root");
    debootstrap(&root, "adduser,systemd,systemd-sysv,dbus,procps");
    // A minbase root has no /etc/hosts; an installed system does.
    std::fs::write(
        root.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .unwrap();
    std::fs::copy(&deb, root.join("root/warren.deb")).unwrap();
    let script = root.join("root/pkgtest.sh");
    std::fs::write(&script, IN_CONTAINER).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        root.join("etc/systemd/system/pkgtest.service"),
        "[Unit]\nDescription=install and start the warren package\nAfter=multi-user.target\n\
         [Service]\nType=oneshot\nExecStart=/root/pkgtest.sh\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/pkgtest.service",
        root.join("etc/systemd/system/multi-user.target.wants/pkgtest.service"),
    )
    .unwrap();
    let t = Instant::now();
    let mut boot = Proc(
        Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&root)
            .args([
                "-b",
                "--register=no",
                "--private-network",
                "--console=pipe",
                "--keep-unit",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    while boot.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the container did not power off");
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = std::fs::read_to_string(root.join("root/result.txt")).unwrap_or_default();
    eprintln!(
        "booted, installed, started, stopped, purged in {:.1} s:\n{result}",
        t.elapsed().as_secs_f64()
    );
    for line in [
        "dpkg rc=0",
        "enabled",
        "active",
        "await_startup rc=0",
        "Type=notify",
        "SubState=running",
        "StatusText=serving AMQP 127.0.0.1:5672, management 127.0.0.1:15672",
        "User=warren",
        "warren",
        "warren:warren 750 /var/lib/warren",
        "root:warren 640 /etc/warren/warren.conf",
        "reload rc=0",
        "stop rc=0",
        "ActiveState=inactive",
        "Result=success",
        "ExecMainStatus=0",
        "restart rc=0",
        "purge rc=0",
        "data left=1",
        "DONE",
    ] {
        assert!(
            result.lines().any(|l| l == line),
            "no line {line:?} in\n{result}"
        );
    }
    eprintln!("systemd test: {:.0} s in all", t0.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
}
