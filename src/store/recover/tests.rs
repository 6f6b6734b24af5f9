//! Recovery against damage, on a small store holding every record kind:
//! every byte of the newest and of an older segment flipped, every cut of
//! the newest segment, zero-filled tails, a clean index pointing at changed
//! segments, and resynchronising through a large body stays cheap.
//!
//! The expected outcome comes from a model that replays the undamaged
//! records (walked independently of the scan) minus the damaged ones.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::{
    parse_msg, seg_path, MsgMeta, Recovered, RecoveredMsg, Store, REC_ACK, REC_DELIVERED,
    REC_HEADER, REC_MSG, REC_PAGED, REC_PURGE,
};
use super::QUARANTINE;

/// A fresh directory, on tmpfs when there is one (thousands of starts).
fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let n = N.fetch_add(1, Ordering::SeqCst);
    let d = base.join(format!("warren-recover-{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn meta(body: &[u8]) -> MsgMeta<'_> {
    MsgMeta {
        exchange: b"x",
        routing_key: b"rk",
        header: b"hdr",
        body,
        timestamp: 1,
        ttl: None,
        priority: 0,
    }
}

const SEG: u64 = 4096;

/// A store with every record kind spread over several 4 KiB segments (the
/// newest holds each kind too), left as a crash leaves it: synced, no clean
/// index. Queue 1 gets acks and delivery marks, queue 2 is never touched
/// (so no segment is collected), queue 3 is purged now and then.
fn build(dir: &Path) {
    let (mut st, _) = Store::open(dir, SEG, None).unwrap();
    let mut q1 = Vec::new();
    let mut q3 = Vec::new();
    let mut step = |st: &mut Store, i: u64| {
        let body = vec![b'a' + (i % 26) as u8; 40 + (i as usize * 37) % 160];
        let qs: &[u64] = match i % 6 {
            0 => &[1, 2],
            3 => &[3],
            _ => &[1],
        };
        let r = st.append_msg(qs, &meta(&body));
        if qs.contains(&1) {
            q1.push(r);
        }
        if qs.contains(&3) {
            q3.push(r);
        }
        match i % 6 {
            1 => st.delivered(1, &q1[q1.len() - 2]),
            2 => {
                let r = q1.remove(q1.len() - 3);
                st.ack(1, &r);
            }
            4 => st.delivered(3, &q3[q3.len() - 1]),
            5 if i % 12 == 11 => {
                st.purge(3);
                q3.drain(..).for_each(|r| st.release(&r));
            }
            _ => {}
        }
        if i % 10 == 7 {
            let r = st.append_paged(&meta(b"paged"));
            st.release(&r);
        }
        if i.is_multiple_of(4) {
            st.sync(std::time::Instant::now()).unwrap();
        }
    };
    for i in 0..96 {
        step(&mut st, i);
    }
    st.sync(std::time::Instant::now()).unwrap();
}

/// A record as written (walked without the scan's code).
#[derive(Debug, Clone)]
struct R {
    seg: u32,
    off: usize,
    end: usize,
    kind: u8,
    queues: Vec<u64>,
    id: u64,
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(p[at..at + 8].try_into().unwrap())
}

fn seg_numbers(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(dir.join("msgs"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn records(dir: &Path) -> Vec<R> {
    let mut out = Vec::new();
    for n in seg_numbers(dir) {
        let data = fs::read(seg_path(&dir.join("msgs"), n)).unwrap();
        let mut off = 0;
        while off < data.len() {
            let len = u32::from_be_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let end = off + REC_HEADER + len;
            let p = Bytes::copy_from_slice(&data[off + REC_HEADER..end]);
            let (queues, id) = match p[0] {
                REC_MSG | REC_PAGED => {
                    let m = parse_msg(&p).unwrap();
                    (m.queues, m.msg_id)
                }
                REC_ACK | REC_DELIVERED => (vec![u64_at(&p, 1)], u64_at(&p, 9)),
                REC_PURGE => (vec![u64_at(&p, 1)], 0),
                k => panic!("kind {k}"),
            };
            out.push(R {
                seg: n,
                off,
                end,
                kind: p[0],
                queues,
                id,
            });
            off = end;
        }
    }
    out
}

/// Queue -> (message id, delivered), for queues with messages.
type Live = BTreeMap<u64, Vec<(u64, bool)>>;

fn replay<'a>(recs: impl Iterator<Item = &'a R>) -> Live {
    let mut live: BTreeMap<u64, BTreeMap<u64, bool>> = BTreeMap::new();
    for r in recs {
        match r.kind {
            REC_MSG => r.queues.iter().for_each(|q| {
                live.entry(*q).or_default().insert(r.id, false);
            }),
            REC_ACK => {
                live.entry(r.queues[0]).or_default().remove(&r.id);
            }
            REC_DELIVERED => {
                if let Some(d) = live.entry(r.queues[0]).or_default().get_mut(&r.id) {
                    *d = true;
                }
            }
            REC_PURGE => {
                live.remove(&r.queues[0]);
            }
            _ => {}
        }
    }
    live.into_iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(q, m)| (q, m.into_iter().collect()))
        .collect()
}

fn got(rec: &Recovered) -> Live {
    rec.queues
        .iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(q, m)| (*q, m.iter().map(|m| (m.at.msg_id, m.delivered)).collect()))
        .collect()
}

fn quarantined(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    match fs::read_dir(dir.join("msgs").join(QUARANTINE)) {
        Ok(rd) => rd
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Kinds present in segment `n`.
fn kinds(recs: &[R], n: u32) -> BTreeSet<u8> {
    recs.iter().filter(|r| r.seg == n).map(|r| r.kind).collect()
}

#[test]
fn every_flipped_byte_loses_only_its_record() {
    let base = scratch("flip");
    let orig = base.join("orig");
    build(&orig);
    let recs = records(&orig);
    let segs = seg_numbers(&orig);
    assert!(segs.len() >= 4, "segments {segs:?}");
    let all = BTreeSet::from([REC_MSG, REC_PAGED, REC_ACK, REC_DELIVERED, REC_PURGE]);
    let newest = *segs.last().unwrap();
    let older = *segs[..segs.len() - 1]
        .iter()
        .find(|n| kinds(&recs, **n).is_superset(&all))
        .expect("an older segment with every kind");
    for kind in [REC_MSG, REC_ACK, REC_DELIVERED, REC_PURGE] {
        assert!(kinds(&recs, newest).contains(&kind), "newest lacks {kind}");
    }
    let trial = base.join("trial");
    let mut trials = 0;
    for n in [newest, older] {
        let data = fs::read(seg_path(&orig.join("msgs"), n)).unwrap();
        for pos in 0..data.len() {
            copy_dir(&orig, &trial);
            let mut d = data.clone();
            d[pos] ^= 0x5A;
            fs::write(seg_path(&trial.join("msgs"), n), &d).unwrap();
            let (st, rec) = Store::open(&trial, SEG, None).unwrap();
            drop(st);
            let victim = recs
                .iter()
                .position(|r| r.seg == n && r.off <= pos && pos < r.end)
                .unwrap();
            let r = &recs[victim];
            let want = replay(
                recs.iter()
                    .enumerate()
                    .filter_map(|(i, r)| (i != victim).then_some(r)),
            );
            assert_eq!(
                got(&rec),
                want,
                "segment {n}: byte {pos} flipped (record of kind {} at {})",
                r.kind,
                r.off
            );
            assert_eq!(
                (rec.damaged, rec.damaged_bytes),
                (1, (r.end - r.off) as u64)
            );
            // The damaged record's bytes are kept, exactly.
            let q = quarantined(&trial);
            assert_eq!(
                q.get(&format!("{n:08}.seg.{}", r.off)).map(Vec::as_slice),
                Some(&d[r.off..r.end]),
                "segment {n}: byte {pos} flipped: quarantine {:?}",
                q.keys()
            );
            // Only the newest segment's last record, being a tail, is cut.
            let len = fs::metadata(seg_path(&trial.join("msgs"), n))
                .unwrap()
                .len();
            let cut = n == newest && r.end == data.len();
            assert_eq!(len as usize, if cut { r.off } else { data.len() });
            trials += 1;
        }
    }
    eprintln!("{trials} flipped bytes in segments {newest} and {older}");
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn torn_tails_keep_every_record_before_the_cut() {
    let base = scratch("torn");
    let orig = base.join("orig");
    build(&orig);
    let recs = records(&orig);
    let segs = seg_numbers(&orig);
    let newest = *segs.last().unwrap();
    let older = segs[1];
    let trial = base.join("trial");
    for n in [newest, older] {
        let path = seg_path(&trial.join("msgs"), n);
        let data = fs::read(seg_path(&orig.join("msgs"), n)).unwrap();
        let mut cuts: Vec<usize> = (0..data.len()).collect();
        if n == older {
            cuts.retain(|c| c % 7 == 0);
        }
        for cut in cuts {
            copy_dir(&orig, &trial);
            fs::write(&path, &data[..cut]).unwrap();
            let (st, rec) = Store::open(&trial, SEG, None).unwrap();
            drop(st);
            let want = replay(recs.iter().filter(|r| r.seg != n || r.end <= cut));
            assert_eq!(got(&rec), want, "segment {n} cut at {cut}");
            let boundary = recs
                .iter()
                .filter(|r| r.seg == n && r.end <= cut)
                .map(|r| r.end)
                .max()
                .unwrap_or(0);
            let len = fs::metadata(&path).unwrap().len() as usize;
            // Only the newest segment is truncated (to the last whole record).
            assert_eq!(len, if n == newest { boundary } else { cut });
            let q = quarantined(&trial);
            // Cut bytes are kept unless they are all zeros.
            if data[boundary..cut].iter().any(|b| *b != 0) {
                assert_eq!(
                    q.get(&format!("{n:08}.seg.{boundary}")).map(Vec::as_slice),
                    Some(&data[boundary..cut]),
                    "segment {n} cut at {cut}"
                );
            } else {
                assert!(q.is_empty(), "segment {n} cut at {cut}: {:?}", q.keys());
            }
        }
    }
    // Zero-filled tails (what a crash can leave after preallocation or an
    // unwritten page): cut back, nothing quarantined, nothing lost.
    let data = fs::read(seg_path(&orig.join("msgs"), newest)).unwrap();
    let path = seg_path(&trial.join("msgs"), newest);
    for zeros in [1, 7, 8, 9, 100, 5000] {
        copy_dir(&orig, &trial);
        let mut d = data.clone();
        d.resize(data.len() + zeros, 0);
        fs::write(&path, &d).unwrap();
        let (st, rec) = Store::open(&trial, SEG, None).unwrap();
        drop(st);
        assert_eq!(got(&rec), replay(recs.iter()), "{zeros} zeros");
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, data.len());
        assert!(quarantined(&trial).is_empty());
    }
    // A zero-filled gap inside a segment (a page that never reached the
    // disk) loses what it covers, and nothing after it.
    let mid = recs.iter().filter(|r| r.seg == newest).nth(2).unwrap();
    let gap_end = recs
        .iter()
        .filter(|r| r.seg == newest && r.off >= mid.end + 30)
        .map(|r| r.off)
        .next()
        .unwrap();
    copy_dir(&orig, &trial);
    let mut d = data.clone();
    d[mid.off..gap_end].fill(0);
    fs::write(&path, &d).unwrap();
    let (st, rec) = Store::open(&trial, SEG, None).unwrap();
    drop(st);
    let want = replay(
        recs.iter()
            .filter(|r| r.seg != newest || r.end <= mid.off || r.off >= gap_end),
    );
    assert_eq!(got(&rec), want, "zero gap");
    let _ = fs::remove_dir_all(&base);
}

/// Message id and how reading it back went.
type Reads = Vec<(u64, Result<(), String>)>;

/// Start on `dir` (with its clean index if any) and read every message
/// back: what was recovered, the reads, the store's unreadable count.
fn open_and_read(dir: &Path) -> (Recovered, Reads, u64) {
    let (mut st, rec) = Store::open(dir, SEG, None).unwrap();
    let mut reads = Vec::new();
    for m in rec.queues.values().flatten() {
        let r = st.read(&m.at).map(|_| ()).map_err(|e| e.to_string());
        reads.push((m.at.msg_id, r));
    }
    let unreadable = st.stats.unreadable;
    (rec, reads, unreadable)
}

#[test]
fn clean_index_damage_is_found() {
    let base = scratch("clean");
    let orig = base.join("orig");
    build(&orig);
    let recs = records(&orig);
    let everything = replay(recs.iter());
    // A clean stop: the index of what is live.
    {
        let (mut st, rec) = Store::open(&orig, SEG, None).unwrap();
        let live: Vec<(u64, RecoveredMsg)> = rec
            .queues
            .iter()
            .flat_map(|(q, m)| m.iter().map(|m| (*q, m.clone())))
            .collect();
        st.close_clean(&live, &[]).unwrap();
    }
    let trial = base.join("trial");
    // Undamaged: the index is used (no scan) and every message reads back.
    copy_dir(&orig, &trial);
    let (rec, reads, unreadable) = open_and_read(&trial);
    assert_eq!(rec.records, 0, "the clean index was not used");
    assert_eq!(got(&rec), everything);
    assert!(reads.iter().all(|(_, r)| r.is_ok()) && unreadable == 0);

    // A byte flipped in a message the index points at, anywhere in its
    // record: found when it is read back, and only that message is lost.
    let segs = seg_numbers(&orig);
    let victim = recs
        .iter()
        .find(|r| r.seg == segs[1] && r.kind == REC_MSG && r.queues.contains(&2))
        .unwrap();
    let path = seg_path(&trial.join("msgs"), victim.seg);
    let data = fs::read(seg_path(&orig.join("msgs"), victim.seg)).unwrap();
    for pos in [0, 3, 5, 8, 9, 14, victim.end - victim.off - 1] {
        copy_dir(&orig, &trial);
        let mut d = data.clone();
        d[victim.off + pos] ^= 0x5A;
        fs::write(&path, &d).unwrap();
        let (rec, reads, unreadable) = open_and_read(&trial);
        assert_eq!(rec.records, 0, "the clean index was not used");
        let bad: Vec<_> = reads.iter().filter(|(_, r)| r.is_err()).collect();
        // The message is in queues 1 and 2 (one read each, when live in both).
        assert!(
            !bad.is_empty() && bad.iter().all(|(id, _)| *id == victim.id),
            "{bad:?}"
        );
        assert_eq!(unreadable, bad.len() as u64);
        // The damaged record is copied to the quarantine when read.
        let q = quarantined(&trial);
        assert_eq!(
            q.get(&format!("{:08}.seg.{}", victim.seg, victim.off))
                .map(Vec::as_slice),
            Some(&d[victim.off..victim.end])
        );
        // The next start scans (the index is gone): the damage is found
        // and skipped, nothing else is lost.
        let (st, rec) = Store::open(&trial, SEG, None).unwrap();
        drop(st);
        assert!(rec.records > 0);
        let victim_i = recs
            .iter()
            .position(|r| r.off == victim.off && r.seg == victim.seg);
        let want = replay(
            recs.iter()
                .enumerate()
                .filter_map(|(i, r)| (Some(i) != victim_i).then_some(r)),
        );
        assert_eq!(got(&rec), want, "byte {pos} of the record flipped");
    }

    // A segment cut short or deleted after the clean stop: the index points
    // past what exists, so the start scans instead of trusting it.
    for cut in [Some(victim.off + 10), None] {
        copy_dir(&orig, &trial);
        match cut {
            Some(c) => fs::write(&path, &data[..c]).unwrap(),
            None => fs::remove_file(&path).unwrap(),
        }
        let (rec, reads, _) = open_and_read(&trial);
        assert!(rec.records > 0, "cut {cut:?}: the index was trusted");
        let want = replay(
            recs.iter()
                .filter(|r| r.seg != victim.seg || cut.is_some_and(|c| r.end <= c)),
        );
        assert_eq!(got(&rec), want, "cut {cut:?}");
        assert!(reads.iter().all(|(_, r)| r.is_ok()));
    }
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn resynchronising_through_a_large_body_is_cheap() {
    let base = scratch("big");
    let dir = base.join("d");
    // An 8 MiB pseudo-random body (the worst case for plausible-looking
    // headers), then small messages.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let body: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    {
        let (mut st, _) = Store::open(&dir, 64 << 20, None).unwrap();
        st.append_msg(&[1], &meta(b"first"));
        st.append_msg(&[1], &meta(&body));
        for _ in 0..3 {
            st.append_msg(&[1], &meta(b"after"));
        }
        st.sync(std::time::Instant::now()).unwrap();
    }
    let recs = records(&dir);
    let big = &recs[1];
    let path = seg_path(&dir.join("msgs"), big.seg);
    let data = fs::read(&path).unwrap();
    let started = Instant::now();
    drop(Store::open(&dir, 64 << 20, None).unwrap());
    let undamaged = started.elapsed();
    // The length field hit: nothing says where the next record starts.
    for (pos, flip) in [(1, 0x01), (2, 0x80), (3, 0x10)] {
        let mut d = data.clone();
        d[big.off + pos] ^= flip;
        fs::write(&path, &d).unwrap();
        let started = Instant::now();
        let (st, rec) = Store::open(&dir, 64 << 20, None).unwrap();
        let took = started.elapsed();
        drop(st);
        fs::write(&path, &data).unwrap();
        let ids: Vec<u64> = got(&rec)[&1].iter().map(|m| m.0).collect();
        let want: Vec<u64> = [0, 2, 3, 4].iter().map(|i| recs[*i].id).collect();
        assert_eq!(ids, want, "length byte {pos} flipped");
        eprintln!(
            "resynchronised past an 8 MiB body in {took:?} (undamaged store opens in {undamaged:?})"
        );
        assert!(took < Duration::from_secs(20), "resync took {took:?}");
    }
    let _ = fs::remove_dir_all(&base);
}

/// `payload` framed as the store frames a record.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&crate::store::crc::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn records_inside_a_damaged_message_body_are_not_taken() {
    let base = scratch("embedded");
    let orig = base.join("orig");
    // Bodies that hold valid records: a purge of queue 1 and an ack of the
    // first message (id 1).
    let mut body = b"a body holding records: ".to_vec();
    body.extend(framed(&[REC_PURGE, 0, 0, 0, 0, 0, 0, 0, 1]));
    body.extend(framed(&[
        REC_ACK, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
    ]));
    body.extend(b" and some more bytes after them");
    {
        let (mut st, _) = Store::open(&orig, SEG, None).unwrap();
        st.append_msg(&[1], &meta(b"one"));
        st.append_msg(&[2], &meta(&body));
        st.append_msg(&[1], &meta(b"two"));
        st.append_msg(&[2], &meta(&body));
        st.sync(std::time::Instant::now()).unwrap();
    }
    let recs = records(&orig);
    assert_eq!(recs.len(), 4);
    let n = recs[0].seg;
    let path = seg_path(&orig.join("msgs"), n);
    let data = fs::read(&path).unwrap();
    let trial = base.join("trial");
    // A byte of the body after the embedded records is hit, in a record in
    // the middle and in the last one (a tail).
    for victim in [1, 3] {
        copy_dir(&orig, &trial);
        let mut d = data.clone();
        d[recs[victim].end - 5] ^= 0x5A;
        fs::write(seg_path(&trial.join("msgs"), n), &d).unwrap();
        let (st, rec) = Store::open(&trial, SEG, None).unwrap();
        drop(st);
        let want = replay(
            recs.iter()
                .enumerate()
                .filter_map(|(i, r)| (i != victim).then_some(r)),
        );
        assert!(want[&1].len() == 2, "{want:?}");
        assert_eq!(got(&rec), want, "record {victim} damaged");
    }
    let _ = fs::remove_dir_all(&base);
}

#[test]
fn a_length_field_pointing_at_a_later_record_loses_only_its_record() {
    let base = scratch("length");
    let orig = base.join("orig");
    build(&orig);
    let recs = records(&orig);
    let newest = *seg_numbers(&orig).last().unwrap();
    let path = seg_path(&orig.join("msgs"), newest);
    let data = fs::read(&path).unwrap();
    let here: Vec<usize> = (0..recs.len()).filter(|i| recs[*i].seg == newest).collect();
    let trial = base.join("trial");
    // The length of record a says it ends where record a+2 starts.
    for w in here.windows(3) {
        let (a, b, c) = (&recs[w[0]], &recs[w[1]], &recs[w[2]]);
        copy_dir(&orig, &trial);
        let mut d = data.clone();
        d[a.off..a.off + 4].copy_from_slice(&((c.off - a.off - REC_HEADER) as u32).to_be_bytes());
        fs::write(seg_path(&trial.join("msgs"), newest), &d).unwrap();
        let (st, rec) = Store::open(&trial, SEG, None).unwrap();
        drop(st);
        let want = replay(
            recs.iter()
                .enumerate()
                .filter_map(|(i, r)| (i != w[0]).then_some(r)),
        );
        assert_eq!(
            got(&rec),
            want,
            "record at {} pointing past {}",
            a.off,
            b.off
        );
    }
    let _ = fs::remove_dir_all(&base);
}
