//! Logging to stderr and to a file, each at its own level (`log.console*`,
//! `log.file*` in the config file): one `env_logger` logger per target and
//! a tee that hands every record to both. `RUST_LOG`, where set, is the
//! filter of both. The file is rotated by size as RabbitMQ (Erlang's
//! `logger_std_h`) rotates it: before it would grow past the limit it is
//! renamed `NAME.0`, the older `NAME.0` becomes `NAME.1`, and so on, keeping
//! `count` rotated files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config_file::LogFile;

/// A log file that rotates by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    count: u32,
}

impl RotatingFile {
    /// Open (append to) `path`; rotate before it would exceed `max` bytes
    /// (0: never), keeping `count` rotated files.
    pub fn open(path: &Path, max: u64, count: u32) -> io::Result<RotatingFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max,
            count,
        })
    }

    /// `NAME.i`.
    fn rotated(&self, i: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let ignore_missing = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if self.count == 0 {
            self.file = File::create(&self.path)?;
        } else {
            for i in (0..self.count - 1).rev() {
                ignore_missing(std::fs::rename(self.rotated(i), self.rotated(i + 1)))?;
            }
            ignore_missing(std::fs::rename(&self.path, self.rotated(0)))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.max > 0 && self.size > 0 && self.size + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Hands each record to every logger that wants it.
struct Tee(Vec<env_logger::Logger>);

impl log::Log for Tee {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        self.0.iter().any(|l| l.enabled(m))
    }

    fn log(&self, record: &log::Record<'_>) {
        for l in &self.0 {
            if l.matches(record) {
                l.log(record);
            }
        }
    }

    fn flush(&self) {
        for l in &self.0 {
            l.flush();
        }
    }
}

/// Install the process's logger: stderr at `console_filter` (an
/// `env_logger` filter such as `info` or `off`) and, if given, the file at
/// its own level. `RUST_LOG` overrides both filters where set. Fails if the
/// file cannot be opened.
pub fn init(console_filter: &str, file: Option<&LogFile>) -> io::Result<()> {
    let env = |default: &str| env_logger::Env::default().default_filter_or(default.to_string());
    let mut loggers = vec![env_logger::Builder::from_env(env(console_filter)).build()];
    if let Some(f) = file {
        let out = RotatingFile::open(&f.path, f.rotation_size, f.rotation_count).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open log file {}: {e}", f.path.display()),
            )
        })?;
        loggers.push(
            env_logger::Builder::from_env(env(&f.filter))
                .write_style(env_logger::WriteStyle::Never)
                .target(env_logger::Target::Pipe(Box::new(out)))
                .build(),
        );
    }
    let max = loggers
        .iter()
        .map(env_logger::Logger::filter)
        .max()
        .unwrap_or(log::LevelFilter::Off);
    log::set_boxed_logger(Box::new(Tee(loggers))).map_err(io::Error::other)?;
    log::set_max_level(max);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_keeping_count_files() {
        let dir = std::env::temp_dir().join(format!("warren-logrot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..20 {
            f.write_all(format!("line {i:02} ........................\n").as_bytes())
                .unwrap();
        }
        // 33-byte lines, at most 3 per 100-byte file.
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&path).lines().count(), 2, "lines 18, 19");
        assert!(read(&path).starts_with("line 18"));
        assert!(read(&dir.join("w.log.0")).starts_with("line 15"));
        assert!(read(&dir.join("w.log.1")).starts_with("line 12"));
        assert!(!dir.join("w.log.2").exists());
        for p in [path.clone(), dir.join("w.log.0"), dir.join("w.log.1")] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        }
        // Reopened, it appends and counts what is there.
        drop(f);
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        f.write_all(&[b'x'; 40]).unwrap();
        assert!(read(&path).starts_with('x'));
        assert!(read(&dir.join("w.log.0")).starts_with("line 18"));
        // count 0: truncated in place.
        let mut f = RotatingFile::open(&dir.join("z.log"), 10, 0).unwrap();
        f.write_all(b"0123456789").unwrap();
        f.write_all(b"abc").unwrap();
        assert_eq!(read(&dir.join("z.log")), "abc");
        assert!(!dir.join("z.log.0").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
