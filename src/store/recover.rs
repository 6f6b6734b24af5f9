//! Recovery: rebuild the live messages of every durable queue from the
//! segment files (a full scan), or from the index a clean shutdown left.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use bytes::Bytes;
use log::{error, warn};

use super::crc::crc32c;
use super::{
    parse_msg, seg_path, sync_dir, Recovered, RecoveredMsg, StoreRef, FORMAT_VERSION, MAX_RECORD,
    REC_ACK, REC_DELIVERED, REC_HEADER, REC_MSG, REC_PAGED, REC_PURGE,
};
use crate::codec::reader::Reader;

/// Live messages per durable queue, by message id.
pub(super) type LiveMap = BTreeMap<u64, BTreeMap<u64, RecoveredMsg>>;

/// Read every segment in order and rebuild the live messages; truncate a
/// torn tail of the newest segment, skip corrupt records elsewhere.
pub(super) fn scan(mdir: &Path, numbers: &[u32]) -> io::Result<(LiveMap, u64, Recovered)> {
    let mut rec = Recovered::default();
    // Per (queue, msg) state while scanning, in log order.
    let mut live: LiveMap = BTreeMap::new();
    let mut max_id = 0u64;
    let last = numbers.last().copied();
    for &n in numbers {
        let path = seg_path(mdir, n);
        let data = Bytes::from(fs::read(&path)?);
        rec.bytes += data.len() as u64;
        let mut off = 0usize;
        let mut cut: Option<usize> = None;
        while off < data.len() {
            let Some(head) = data.get(off..off + REC_HEADER) else {
                cut = Some(off);
                break;
            };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let end = off + REC_HEADER + len;
            if len == 0 || len > MAX_RECORD || end > data.len() {
                cut = Some(off);
                break;
            }
            let payload = data.slice(off + REC_HEADER..end);
            if crc32c(&payload) != crc {
                rec.damaged += 1;
                if Some(n) == last {
                    cut = Some(off);
                    break;
                }
                error!("segment {n:08}: checksum mismatch at offset {off}; record skipped");
                off = end;
                continue;
            }
            rec.records += 1;
            let at = |id: u64, durable: bool| StoreRef {
                msg_id: id,
                seg: n,
                offset: off as u32,
                len: (end - off) as u32,
                durable,
            };
            let mut r = Reader::new(&payload);
            match r.u8().unwrap_or(0) {
                REC_MSG => {
                    if let Some(m) = parse_msg(&payload) {
                        max_id = max_id.max(m.msg_id);
                        for q in m.queues {
                            live.entry(q).or_default().insert(
                                m.msg_id,
                                RecoveredMsg {
                                    at: at(m.msg_id, true),
                                    delivered: false,
                                    size: m.body.len() as u64,
                                    exchange: Bytes::copy_from_slice(&m.exchange),
                                    routing_key: Bytes::copy_from_slice(&m.routing_key),
                                    timestamp: m.timestamp,
                                    ttl: m.ttl,
                                    priority: m.priority,
                                },
                            );
                        }
                    }
                }
                REC_PAGED => {
                    if let Ok(id) = r.u64() {
                        max_id = max_id.max(id);
                    }
                }
                REC_ACK => {
                    if let (Ok(q), Ok(id)) = (r.u64(), r.u64()) {
                        if let Some(m) = live.get_mut(&q) {
                            m.remove(&id);
                        }
                    }
                }
                REC_DELIVERED => {
                    if let (Ok(q), Ok(id)) = (r.u64(), r.u64()) {
                        if let Some(m) = live.get_mut(&q).and_then(|m| m.get_mut(&id)) {
                            m.delivered = true;
                        }
                    }
                }
                REC_PURGE => {
                    if let Ok(q) = r.u64() {
                        live.remove(&q);
                    }
                }
                k => {
                    rec.damaged += 1;
                    warn!("segment {n:08}: unknown record kind {k} at offset {off}; skipped");
                }
            }
            off = end;
        }
        if let Some(c) = cut {
            if c < data.len() {
                rec.damaged += 1;
                if Some(n) == last {
                    warn!(
                        "segment {n:08}: torn tail at offset {c} ({} bytes); truncating",
                        data.len() - c
                    );
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(c as u64)?;
                } else {
                    error!(
                        "segment {n:08}: unreadable record at offset {c}; rest of segment skipped"
                    );
                }
            }
        }
    }
    Ok((live, max_id, rec))
}

pub(super) const CLEAN: &str = "CLEAN";

/// The index a clean shutdown left, if any (and valid). It is removed as it
/// is read, so a crash after this start scans again.
pub(super) fn load_clean(mdir: &Path) -> Option<(LiveMap, u64)> {
    let path = mdir.join(CLEAN);
    let data = fs::read(&path).ok()?;
    let _ = fs::remove_file(&path);
    let _ = sync_dir(mdir);
    let crc = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
    let body = Bytes::copy_from_slice(data.get(4..)?);
    if crc32c(&body) != crc {
        warn!("clean shutdown marker fails its checksum; scanning the store");
        return None;
    }
    let mut r = Reader::new(&body);
    let max_id = r.u64().ok()?;
    let n = r.u64().ok()?;
    let mut live: LiveMap = BTreeMap::new();
    for _ in 0..n {
        let q = r.u64().ok()?;
        let msg_id = r.u64().ok()?;
        let seg = r.u32().ok()?;
        let offset = r.u32().ok()?;
        let len = r.u32().ok()?;
        let delivered = r.u8().ok()? != 0;
        let size = r.u64().ok()?;
        let timestamp = r.u64().ok()?;
        let ttl = Some(r.u64().ok()?).filter(|t| *t != u64::MAX);
        let priority = r.u8().ok()?;
        let exchange = Bytes::copy_from_slice(&r.shortstr().ok()?);
        let routing_key = Bytes::copy_from_slice(&r.shortstr().ok()?);
        let at = StoreRef {
            msg_id,
            seg,
            offset,
            len,
            durable: true,
        };
        live.entry(q).or_default().insert(
            msg_id,
            RecoveredMsg {
                at,
                delivered,
                size,
                exchange,
                routing_key,
                timestamp,
                ttl,
                priority,
            },
        );
    }
    Some((live, max_id))
}

/// Create (if needed) and lock the data directory `dir` for this process,
/// and check (or, on first start, write) its format `VERSION`. The returned
/// file holds the lock for as long as it is open.
pub(super) fn claim_dir(dir: &Path) -> io::Result<File> {
    fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    if let Err(e) = lock.try_lock() {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "data directory {} is in use by another broker ({e:?})",
                dir.display()
            ),
        ));
    }
    let version = dir.join("VERSION");
    match fs::read_to_string(&version) {
        Ok(v) if v.trim() == FORMAT_VERSION => {}
        Ok(v) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "data directory format '{}' is not '{FORMAT_VERSION}'",
                    v.trim()
                ),
            ))
        }
        Err(_) => {
            // Made durable with the directory's next sync (the
            // definitions snapshot syncs it on the first turn).
            fs::write(&version, format!("{FORMAT_VERSION}\n"))?;
        }
    }
    Ok(lock)
}
