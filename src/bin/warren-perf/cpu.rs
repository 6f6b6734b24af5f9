//! CPU time from `/proc` (Linux): a broker's (`--broker-pid`), this
//! process's, or the calling thread's. Throughput on a shared machine swings
//! with whatever else runs; CPU time per message is a steadier measure of how
//! much work the broker does. Resolution: one clock tick (10 ms).

use std::fs;

/// USER_HZ: the unit of utime/stime in `/proc/*/stat` (100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime in seconds from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<f64> {
    let s = fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14, 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// CPU seconds used so far by all threads of process `pid`.
pub fn process(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU seconds used so far by this process.
pub fn this_process() -> Option<f64> {
    stat_cpu("/proc/self/stat")
}

/// CPU seconds used so far by the calling thread.
pub fn this_thread() -> Option<f64> {
    stat_cpu("/proc/thread-self/stat")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu() {
        let t0 = super::this_thread().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(super::this_thread().unwrap() >= t0);
        assert!(super::this_process().unwrap() > 0.0);
        assert!(super::process(std::process::id()).is_some());
    }
}
