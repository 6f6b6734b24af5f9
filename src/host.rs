//! What the host offers, as RabbitMQ's relative limits read it: the memory
//! available to this process, which is the machine's RAM (`MemTotal` in
//! `/proc/meminfo`) or, when the process runs in a memory-limited cgroup,
//! that limit if it is lower (cgroup v2 `memory.max`, v1
//! `memory.limit_in_bytes`). `vm_memory_high_watermark.relative` is a
//! fraction of it and `disk_free_limit.relative` a multiple of it.

use std::path::Path;

/// Memory available to this process in bytes: the host's RAM, or the
/// cgroup's memory limit where one is set and lower. `None` if even the
/// host's RAM cannot be read (not Linux, no `/proc`).
pub fn total_memory() -> Option<u64> {
    total_memory_at(Path::new("/"))
}

/// [`total_memory`] with `/proc` and `/sys/fs/cgroup` under `root` (tests).
pub fn total_memory_at(root: &Path) -> Option<u64> {
    let ram = std::fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|t| meminfo_total(&t));
    let limit = cgroup_limit(root);
    match (ram, limit) {
        (Some(r), Some(l)) => Some(r.min(l)),
        (r, l) => r.or(l),
    }
}

/// `MemTotal:  16384 kB` → bytes.
pub fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The memory limit of this process's cgroup, if one is set: v2's
/// `memory.max` (`max` means none), else v1's `memory.limit_in_bytes` (a
/// value near `i64::MAX` means none). The cgroup path comes from
/// `/proc/self/cgroup`; in a container whose namespace hides it, the
/// mount's root is tried too.
pub fn cgroup_limit(root: &Path) -> Option<u64> {
    let cgroups = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let base = root.join("sys/fs/cgroup");
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    // v2: the unified hierarchy's line is `0::/path`.
    if let Some(path) = cgroups.lines().find_map(|l| l.strip_prefix("0::")) {
        for dir in [base.join(rel(path)), base.clone()] {
            if let Ok(t) = std::fs::read_to_string(dir.join("memory.max")) {
                return parse_limit(&t);
            }
        }
    }
    // v1: the memory controller's line is `N:memory:/path` (controllers
    // may be joined with commas).
    let v1 = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls.split(',').any(|c| c == "memory").then_some(path)
    });
    let mem = base.join("memory");
    let dirs = match v1 {
        Some(p) => vec![mem.join(rel(p)), mem],
        None => vec![mem, base.clone()],
    };
    for dir in dirs {
        if let Ok(t) = std::fs::read_to_string(dir.join("memory.limit_in_bytes")) {
            return parse_limit(&t);
        }
        if let Ok(t) = std::fs::read_to_string(dir.join("memory.max")) {
            return parse_limit(&t);
        }
    }
    None
}

/// A cgroup limit file's content: a number of bytes, or `max` (none). v1
/// writes "no limit" as the largest page-aligned `i64`.
fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let n: u64 = t.parse().ok()?;
    (n < (1 << 62)).then_some(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("warren-host-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let f = root.join(path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
        root
    }

    const MEMINFO: &str = "MemTotal:       16384000 kB\nMemFree:  1 kB\n";

    #[test]
    fn ram_alone() {
        let r = fake(&[("proc/meminfo", MEMINFO)]);
        assert_eq!(total_memory_at(&r), Some(16_384_000 * 1024));
        let _ = std::fs::remove_dir_all(r);
    }

    #[test]
    fn cgroup_v2_limit_wins_when_lower() {
        let r = fake(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "0::/app.slice/warren.service\n"),
            (
                "sys/fs/cgroup/app.slice/warren.service/memory.max",
                "536870912\n",
            ),
        ]);
        assert_eq!(total_memory_at(&r), Some(512 << 20));
        let _ = std::fs::remove_dir_all(r);
        // `max`: no limit.
        let r = fake(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "max\n"),
        ]);
        assert_eq!(total_memory_at(&r), Some(16_384_000 * 1024));
        let _ = std::fs::remove_dir_all(r);
        // A namespaced container: the path in /proc/self/cgroup is not
        // under the mount; the mount's root holds the limit.
        let r = fake(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "0::/../../pod1\n"),
            ("sys/fs/cgroup/memory.max", "1073741824\n"),
        ]);
        assert_eq!(total_memory_at(&r), Some(1 << 30));
        let _ = std::fs::remove_dir_all(r);
    }

    #[test]
    fn cgroup_v1_limit() {
        let r = fake(&[
            ("proc/meminfo", MEMINFO),
            (
                "proc/self/cgroup",
                "5:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n",
            ),
            (
                "sys/fs/cgroup/memory/docker/x/memory.limit_in_bytes",
                "268435456\n",
            ),
        ]);
        assert_eq!(total_memory_at(&r), Some(256 << 20));
        let _ = std::fs::remove_dir_all(r);
        // v1's "unlimited".
        let r = fake(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "4:memory:/\n"),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(total_memory_at(&r), Some(16_384_000 * 1024));
        let _ = std::fs::remove_dir_all(r);
    }

    #[test]
    fn this_host() {
        // Whatever it is, it is some memory.
        assert!(total_memory().is_some_and(|m| m > 1 << 20));
    }
}
