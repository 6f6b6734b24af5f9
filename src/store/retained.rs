//! MQTT retained messages on disk: one file, `retained`, rewritten whole
//! (atomically: a temporary file, synced, renamed) when they change.
//! Layout: `crc32c u32 | records`, each record `vhost_len u16 | vhost |
//! topic_len u16 | topic | qos u8 | expires u64 (wall-clock ms, u64::MAX:
//! never) | header_len u32 | header | payload_len u32 | payload`.

use std::io;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};

use super::crc::crc32c;
use super::disk::Disk;

/// The file name inside the data directory.
const FILE: &str = "retained";

/// One retained message: vhost, topic, QoS, expiry (wall-clock ms),
/// content header, payload.
pub type Entry = (Bytes, Bytes, u8, Option<u64>, Bytes, Bytes);

/// Write every retained message.
pub fn save(dir: &Path, entries: &[Entry]) -> io::Result<()> {
    let mut body = BytesMut::new();
    for (vhost, topic, qos, expires, header, payload) in entries {
        body.put_u16(vhost.len().min(u16::MAX as usize) as u16);
        body.put_slice(vhost.get(..u16::MAX as usize).unwrap_or(vhost));
        body.put_u16(topic.len().min(u16::MAX as usize) as u16);
        body.put_slice(topic.get(..u16::MAX as usize).unwrap_or(topic));
        body.put_u8(*qos);
        body.put_u64(expires.unwrap_or(u64::MAX));
        body.put_u32(header.len() as u32);
        body.put_slice(header);
        body.put_u32(payload.len() as u32);
        body.put_slice(payload);
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    let disk = Disk::default();
    let d = disk.open_dir(dir)?;
    disk.replace(&d, &dir.join(FILE), &out, 0)
}

/// Read the retained messages back (none if the file is missing). A
/// file that fails its checksum is an error: the caller logs it and
/// starts without them.
pub fn load(dir: &Path) -> io::Result<Vec<Entry>> {
    let data = match Disk::default().read(&dir.join(FILE)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "retained messages file is damaged",
        )
    };
    let crc = data
        .get(..4)
        .and_then(|c| <[u8; 4]>::try_from(c).ok())
        .ok_or_else(bad)?;
    let body = Bytes::copy_from_slice(data.get(4..).unwrap_or_default());
    if u32::from_be_bytes(crc) != crc32c(&body) {
        return Err(bad());
    }
    let mut at = 0usize;
    let mut out = Vec::new();
    let take = |at: &mut usize, n: usize| -> Option<Bytes> {
        let end = at.checked_add(n).filter(|&e| e <= body.len())?;
        let b = body.slice(*at..end);
        *at = end;
        Some(b)
    };
    let num = |at: &mut usize, n: usize| -> Option<u64> {
        let b = take(at, n)?;
        Some(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    };
    while at < body.len() {
        let rec = (|| {
            let n = num(&mut at, 2)? as usize;
            let vhost = take(&mut at, n)?;
            let n = num(&mut at, 2)? as usize;
            let topic = take(&mut at, n)?;
            let qos = num(&mut at, 1)? as u8;
            let expires = Some(num(&mut at, 8)?).filter(|&e| e != u64::MAX);
            let n = num(&mut at, 4)? as usize;
            let header = take(&mut at, n)?;
            let n = num(&mut at, 4)? as usize;
            let payload = take(&mut at, n)?;
            Some((vhost, topic, qos, expires, header, payload))
        })();
        out.push(rec.ok_or_else(bad)?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn saved_messages_load_back_and_damage_is_seen() {
        let d = std::env::temp_dir().join(format!("warren-retained-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert!(load(&d).unwrap().is_empty());
        let e: Vec<Entry> = vec![
            (
                Bytes::from_static(b"/"),
                Bytes::from_static(b"a/b"),
                1,
                Some(1_700_000_000_000),
                Bytes::from_static(b"hdr"),
                Bytes::from_static(b"payload"),
            ),
            (
                Bytes::from_static(b"v2"),
                Bytes::from_static(b"c"),
                0,
                None,
                Bytes::new(),
                Bytes::from_static(b"x"),
            ),
        ];
        save(&d, &e).unwrap();
        assert_eq!(load(&d).unwrap(), e);
        let p = d.join(FILE);
        let mut raw = std::fs::read(&p).unwrap();
        raw[6] ^= 1;
        std::fs::write(&p, raw).unwrap();
        assert!(load(&d).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
