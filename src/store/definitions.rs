//! Durable definitions (vhosts, users, permissions, exchanges, queues,
//! bindings): a snapshot file plus an append-only log of the changes since.
//! The snapshot `definitions` is replaced atomically (write `definitions.tmp`,
//! fsync, rename, fsync the directory); the log `definitions.log` gets one
//! record per change, written and synced with the message store's group
//! commit at the end of a loop turn, and is folded into a new snapshot once
//! it outgrows the last one. Both are AMQP field tables behind a CRC, so the
//! codec we already trust does the parsing. The log's first record names the
//! snapshot generation it extends; a log left from an older generation (a
//! crash between writing a snapshot and starting its log) is ignored.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use log::{error, info, warn};

use super::crc::crc32c;
use super::disk::{Disk, Faults};
use super::file::LogFile;
use super::{repeats, Throttle, REC_HEADER};
use crate::codec::reader::Reader;
use crate::codec::{FieldTable, FieldValue};

/// A durable exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    /// Virtual host.
    pub vhost: Bytes,
    /// Name.
    pub name: Bytes,
    /// Type name.
    pub kind: Bytes,
    /// auto-delete.
    pub auto_delete: bool,
    /// internal.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    /// Virtual host.
    pub vhost: Bytes,
    /// Name.
    pub name: Bytes,
    /// Store id (message records refer to the queue by it).
    pub id: u64,
    /// auto-delete.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A binding between durable entities.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    /// Virtual host.
    pub vhost: Bytes,
    /// Source exchange.
    pub source: Bytes,
    /// Destination is a queue (else an exchange).
    pub to_queue: bool,
    /// Destination name.
    pub dest: Bytes,
    /// Binding key.
    pub routing_key: Bytes,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A runtime parameter: a policy, an operator policy, a vhost's or a
/// user's limits, a shovel, a federation upstream or upstream set. The
/// store keeps the broker's JSON for it by (component, owner, name)
/// without reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDef {
    /// What it is (`policy`, `operator_policy`, `vhost-limits`, ...).
    pub component: String,
    /// The vhost (or, for user limits, the user) it belongs to.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// The broker's JSON for it.
    pub value: Bytes,
}

/// Everything durable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// Virtual hosts.
    pub vhosts: Vec<Bytes>,
    /// Exchanges.
    pub exchanges: Vec<ExchangeDef>,
    /// Queues.
    pub queues: Vec<QueueDef>,
    /// Bindings.
    pub bindings: Vec<BindingDef>,
    /// Next queue store id.
    pub next_queue_id: u64,
    /// Users: name, password hash, tags.
    pub users: Vec<(String, String, Vec<String>)>,
    /// Permissions: user, vhost, configure, write, read.
    pub permissions: Vec<[String; 5]>,
    /// Topic permissions: user, vhost, exchange, write, read.
    pub topic_permissions: Vec<[String; 5]>,
    /// Runtime parameters: policies, operator policies, limits, shovels,
    /// federation upstreams and upstream sets.
    pub params: Vec<ParamDef>,
}

fn s(b: &Bytes) -> FieldValue {
    FieldValue::LongStr(b.clone())
}

fn get_s(t: &FieldTable, k: &str) -> Bytes {
    t.get(k)
        .and_then(|v| v.as_bytes())
        .cloned()
        .unwrap_or_default()
}

fn get_b(t: &FieldTable, k: &str) -> bool {
    matches!(t.get(k), Some(FieldValue::Bool(true)))
}

fn get_t(t: &FieldTable, k: &str) -> FieldTable {
    match t.get(k) {
        Some(FieldValue::Table(x)) => x.clone(),
        _ => FieldTable::new(),
    }
}

fn tables<'a>(t: &'a FieldTable, k: &str) -> impl Iterator<Item = &'a FieldTable> {
    let items: &[FieldValue] = match t.get(k) {
        Some(FieldValue::Array(a)) => a,
        _ => &[],
    };
    items.iter().filter_map(|v| match v {
        FieldValue::Table(t) => Some(t),
        _ => None,
    })
}

fn st(x: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(x.as_bytes()))
}

fn text(t: &FieldTable, k: &str) -> String {
    String::from_utf8_lossy(&get_s(t, k)).into_owned()
}

fn exchange_table(x: &ExchangeDef) -> FieldTable {
    let mut t = FieldTable::new();
    t.insert("vhost", s(&x.vhost));
    t.insert("name", s(&x.name));
    t.insert("type", s(&x.kind));
    t.insert("auto_delete", FieldValue::Bool(x.auto_delete));
    t.insert("internal", FieldValue::Bool(x.internal));
    t.insert("arguments", FieldValue::Table(x.arguments.clone()));
    t
}

fn exchange_of(t: &FieldTable) -> ExchangeDef {
    ExchangeDef {
        vhost: get_s(t, "vhost"),
        name: get_s(t, "name"),
        kind: get_s(t, "type"),
        auto_delete: get_b(t, "auto_delete"),
        internal: get_b(t, "internal"),
        arguments: get_t(t, "arguments"),
    }
}

fn queue_table(q: &QueueDef) -> FieldTable {
    let mut t = FieldTable::new();
    t.insert("vhost", s(&q.vhost));
    t.insert("name", s(&q.name));
    t.insert("id", FieldValue::I64(q.id as i64));
    t.insert("auto_delete", FieldValue::Bool(q.auto_delete));
    t.insert("arguments", FieldValue::Table(q.arguments.clone()));
    t
}

fn queue_of(t: &FieldTable) -> QueueDef {
    QueueDef {
        vhost: get_s(t, "vhost"),
        name: get_s(t, "name"),
        id: t.get("id").and_then(|v| v.as_i64()).unwrap_or(0) as u64,
        auto_delete: get_b(t, "auto_delete"),
        arguments: get_t(t, "arguments"),
    }
}

fn binding_table(b: &BindingDef) -> FieldTable {
    let mut t = FieldTable::new();
    t.insert("vhost", s(&b.vhost));
    t.insert("source", s(&b.source));
    t.insert("to_queue", FieldValue::Bool(b.to_queue));
    t.insert("dest", s(&b.dest));
    t.insert("routing_key", s(&b.routing_key));
    t.insert("arguments", FieldValue::Table(b.arguments.clone()));
    t
}

fn binding_of(t: &FieldTable) -> BindingDef {
    BindingDef {
        vhost: get_s(t, "vhost"),
        source: get_s(t, "source"),
        to_queue: get_b(t, "to_queue"),
        dest: get_s(t, "dest"),
        routing_key: get_s(t, "routing_key"),
        arguments: get_t(t, "arguments"),
    }
}

const PARAM_KEYS: [&str; 3] = ["component", "owner", "name"];

fn param_table(p: &ParamDef) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in PARAM_KEYS.iter().zip([&p.component, &p.owner, &p.name]) {
        t.insert(*k, st(v));
    }
    t.insert("value", s(&p.value));
    t
}

fn param_of(t: &FieldTable) -> ParamDef {
    let [component, owner, name] = PARAM_KEYS.map(|k| text(t, k));
    ParamDef {
        component,
        owner,
        name,
        value: get_s(t, "value"),
    }
}

fn users_value(users: &[(String, String, Vec<String>)]) -> FieldValue {
    FieldValue::Array(
        users
            .iter()
            .map(|(name, hash, tags)| {
                let mut t = FieldTable::new();
                t.insert("name", st(name));
                t.insert("password_hash", st(hash));
                t.insert(
                    "tags",
                    FieldValue::Array(tags.iter().map(|x| st(x)).collect()),
                );
                FieldValue::Table(t)
            })
            .collect(),
    )
}

fn users_of(root: &FieldTable) -> Vec<(String, String, Vec<String>)> {
    tables(root, "users")
        .map(|t| {
            let tags = match t.get("tags") {
                Some(FieldValue::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_bytes())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
                _ => Vec::new(),
            };
            (text(t, "name"), text(t, "password_hash"), tags)
        })
        .collect()
}

const PERMISSION_KEYS: [&str; 5] = ["user", "vhost", "configure", "write", "read"];

fn permissions_value(perms: &[[String; 5]]) -> FieldValue {
    FieldValue::Array(
        perms
            .iter()
            .map(|p| {
                let mut t = FieldTable::new();
                for (k, v) in PERMISSION_KEYS.iter().zip(p.iter()) {
                    t.insert(*k, st(v));
                }
                FieldValue::Table(t)
            })
            .collect(),
    )
}

fn permissions_of(root: &FieldTable) -> Vec<[String; 5]> {
    tables(root, "permissions")
        .map(|t| PERMISSION_KEYS.map(|k| text(t, k)))
        .collect()
}

const TOPIC_KEYS: [&str; 5] = ["user", "vhost", "exchange", "write", "read"];

fn topic_permissions_value(perms: &[[String; 5]]) -> FieldValue {
    FieldValue::Array(
        perms
            .iter()
            .map(|p| {
                let mut t = FieldTable::new();
                for (k, v) in TOPIC_KEYS.iter().zip(p.iter()) {
                    t.insert(*k, st(v));
                }
                FieldValue::Table(t)
            })
            .collect(),
    )
}

fn topic_permissions_of(root: &FieldTable) -> Vec<[String; 5]> {
    tables(root, "topic_permissions")
        .map(|t| TOPIC_KEYS.map(|k| text(t, k)))
        .collect()
}

impl Definitions {
    fn to_table(&self, log_gen: u64) -> FieldTable {
        let mut root = FieldTable::new();
        root.insert("version", FieldValue::I32(1));
        root.insert("log_gen", FieldValue::I64(log_gen as i64));
        root.insert("next_queue_id", FieldValue::I64(self.next_queue_id as i64));
        root.insert(
            "vhosts",
            FieldValue::Array(self.vhosts.iter().map(s).collect()),
        );
        let table = |t| FieldValue::Table(t);
        let xs = self.exchanges.iter().map(exchange_table).map(table);
        root.insert("exchanges", FieldValue::Array(xs.collect()));
        let qs = self.queues.iter().map(queue_table).map(table);
        root.insert("queues", FieldValue::Array(qs.collect()));
        let bs = self.bindings.iter().map(binding_table).map(table);
        root.insert("bindings", FieldValue::Array(bs.collect()));
        root.insert("users", users_value(&self.users));
        root.insert("permissions", permissions_value(&self.permissions));
        root.insert(
            "topic_permissions",
            topic_permissions_value(&self.topic_permissions),
        );
        let ps = self.params.iter().map(param_table).map(table);
        root.insert("params", FieldValue::Array(ps.collect()));
        root
    }

    fn from_table(root: &FieldTable) -> Definitions {
        Definitions {
            users: users_of(root),
            permissions: permissions_of(root),
            topic_permissions: topic_permissions_of(root),
            params: tables(root, "params").map(param_of).collect(),
            next_queue_id: root
                .get("next_queue_id")
                .and_then(|v| v.as_i64())
                .unwrap_or(1) as u64,
            vhosts: match root.get("vhosts") {
                Some(FieldValue::Array(a)) => {
                    a.iter().filter_map(|v| v.as_bytes().cloned()).collect()
                }
                _ => Vec::new(),
            },
            exchanges: tables(root, "exchanges").map(exchange_of).collect(),
            queues: tables(root, "queues").map(queue_of).collect(),
            bindings: tables(root, "bindings").map(binding_of).collect(),
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// Write the snapshot atomically into `dir/definitions` (a fresh
    /// generation with no log behind it).
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let disk = Disk::default();
        let dir_file = disk.open_dir(dir)?;
        write_snapshot(&disk, &dir_file, dir, &self.to_table(0), 0).map(drop)
    }

    /// Load the snapshot `dir/definitions` and the generation of the log
    /// that extends it, and the snapshot's size; a missing file is an
    /// empty set. A corrupt file is an error: starting without the
    /// definitions would lose queues.
    fn load_snapshot(disk: &Disk, dir: &Path) -> io::Result<Option<(Definitions, u64, u64)>> {
        let data = match disk.read(&dir.join(SNAPSHOT)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("definitions file {what}"),
            )
        };
        let crc = data.get(..4).and_then(|c| <[u8; 4]>::try_from(c).ok());
        let crc = crc.ok_or_else(|| bad("is truncated"))?;
        let body = Bytes::copy_from_slice(data.get(4..).unwrap_or(&[]));
        if u32::from_be_bytes(crc) != crc32c(&body) {
            return Err(bad("fails its checksum"));
        }
        let t = FieldTable::decode(&mut Reader::new(&body)).map_err(|_| bad("does not parse"))?;
        let gen = t.get("log_gen").and_then(|v| v.as_i64()).unwrap_or(0) as u64;
        Ok(Some((Definitions::from_table(&t), gen, data.len() as u64)))
    }

    #[cfg(any(test, feature = "testing"))]
    /// Load `dir/definitions` and replay the changes logged after it.
    pub fn load(dir: &Path) -> io::Result<Option<Definitions>> {
        let disk = Disk::default();
        let Some((mut defs, gen, _)) = Definitions::load_snapshot(&disk, dir)? else {
            return Ok(None);
        };
        if let Ok(data) = disk.read(&dir.join(LOG)) {
            let (records, _) = read_log(&data, gen);
            let mut r = Replay::new(std::mem::take(&mut defs));
            records.iter().for_each(|t| r.apply(t));
            defs = r.finish();
        }
        Ok(Some(defs))
    }
}

/// Write `table` as the snapshot `dir/definitions` (whose old version took
/// `replaced` bytes): to a temporary file, synced, renamed over the old
/// one, and the directory (`dir_file`) synced. Returns the new size.
fn write_snapshot(
    disk: &Disk,
    dir_file: &File,
    dir: &Path,
    table: &FieldTable,
    replaced: u64,
) -> io::Result<u64> {
    let mut body = BytesMut::new();
    table.encode(&mut body);
    let mut data = Vec::with_capacity(4 + body.len());
    data.extend_from_slice(&crc32c(&body).to_be_bytes());
    data.extend_from_slice(&body);
    disk.replace(dir_file, &dir.join(SNAPSHOT), &data, replaced)?;
    Ok(data.len() as u64)
}

/// A change to the durable definitions, recorded where it happens and
/// written to the definitions log at the end of the turn.
#[derive(Debug, Clone, PartialEq)]
pub enum DefChange {
    /// A vhost was created.
    AddVhost(Bytes),
    /// A vhost was deleted with everything in it.
    DelVhost(Bytes),
    /// A durable exchange was declared.
    PutExchange(ExchangeDef),
    /// An exchange was deleted, with the bindings from and to it.
    DelExchange(Bytes, Bytes),
    /// A durable queue was declared.
    PutQueue(QueueDef),
    /// A queue was deleted, with the bindings to it.
    DelQueue(Bytes, Bytes),
    /// A binding between durable entities was made.
    PutBinding(BindingDef),
    /// A binding was removed.
    DelBinding(BindingDef),
    /// Users or permissions changed: write them all.
    Auth,
    /// A runtime parameter was set.
    PutParam(ParamDef),
    /// A runtime parameter was removed: component, owner, name.
    DelParam(String, String, String),
    /// Many changes at once (an import, the first start): write a snapshot.
    All,
}

/// The snapshot's file name.
const SNAPSHOT: &str = "definitions";
/// The log's file name.
const LOG: &str = "definitions.log";
/// Space reserved for the log, so definition changes (deleting a queue to
/// free space, say) still work when the disk is full.
const LOG_RESERVE: u64 = 1 << 20;
/// The log is folded into a snapshot once it is larger than this and than
/// twice the last snapshot.
const LOG_COMPACT_MIN: u64 = 1 << 20;

fn record(out: &mut Vec<u8>, t: &FieldTable) {
    let mut body = BytesMut::new();
    t.encode(&mut body);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

fn op_table(op: &str, mut t: FieldTable) -> FieldTable {
    t.insert("op", st(op));
    t
}

fn name_table(vhost: &Bytes, name: &Bytes) -> FieldTable {
    let mut t = FieldTable::new();
    t.insert("vhost", s(vhost));
    t.insert("name", s(name));
    t
}

/// The records of a log for snapshot generation `gen`, and the length of
/// its good prefix (a torn tail is cut there). A log of another generation
/// has no records.
fn read_log(data: &[u8], gen: u64) -> (Vec<FieldTable>, u64) {
    let mut out = Vec::new();
    let mut off = 0usize;
    let mut first = true;
    while let Some((len, crc)) = super::header(data, off) {
        let Some(body) = data.get(off + REC_HEADER..off + REC_HEADER + len) else {
            break;
        };
        if len == 0 || crc32c(body) != crc {
            break;
        }
        let Ok(t) = FieldTable::decode(&mut Reader::new(&Bytes::copy_from_slice(body))) else {
            break;
        };
        off += REC_HEADER + len;
        if first {
            first = false;
            let g = t.get("log_gen").and_then(|v| v.as_i64()).map(|g| g as u64);
            if g != Some(gen) {
                return (Vec::new(), 0);
            }
            continue;
        }
        out.push(t);
    }
    if off < data.len() {
        warn!(
            "definitions log: {} bytes after offset {off} are torn or damaged; ignored",
            data.len() - off
        );
    }
    (out, off as u64)
}

/// Definitions being rebuilt from a snapshot and log records.
struct Replay {
    vhosts: Vec<Bytes>,
    exchanges: BTreeMap<(Bytes, Bytes), ExchangeDef>,
    queues: BTreeMap<(Bytes, Bytes), QueueDef>,
    bindings: Vec<BindingDef>,
    next_queue_id: u64,
    users: Vec<(String, String, Vec<String>)>,
    permissions: Vec<[String; 5]>,
    topic_permissions: Vec<[String; 5]>,
    params: BTreeMap<(String, String, String), ParamDef>,
}

impl Replay {
    fn new(d: Definitions) -> Replay {
        Replay {
            vhosts: d.vhosts,
            exchanges: d
                .exchanges
                .into_iter()
                .map(|x| ((x.vhost.clone(), x.name.clone()), x))
                .collect(),
            queues: d
                .queues
                .into_iter()
                .map(|q| ((q.vhost.clone(), q.name.clone()), q))
                .collect(),
            bindings: d.bindings,
            next_queue_id: d.next_queue_id,
            users: d.users,
            permissions: d.permissions,
            topic_permissions: d.topic_permissions,
            params: d
                .params
                .into_iter()
                .map(|p| ((p.component.clone(), p.owner.clone(), p.name.clone()), p))
                .collect(),
        }
    }

    fn apply(&mut self, t: &FieldTable) {
        let key = || (get_s(t, "vhost"), get_s(t, "name"));
        match text(t, "op").as_str() {
            "add_vhost" => {
                let name = get_s(t, "name");
                if !self.vhosts.contains(&name) {
                    self.vhosts.push(name);
                }
            }
            "del_vhost" => {
                let v = get_s(t, "name");
                self.vhosts.retain(|x| *x != v);
                self.exchanges.retain(|(xv, _), _| *xv != v);
                self.queues.retain(|(qv, _), _| *qv != v);
                self.bindings.retain(|b| b.vhost != v);
                let vs = String::from_utf8_lossy(&v);
                self.permissions.retain(|p| p[1] != vs);
                self.topic_permissions.retain(|p| p[1] != vs);
            }
            "put_exchange" => {
                self.exchanges.insert(key(), exchange_of(t));
            }
            "del_exchange" => {
                let (v, n) = key();
                self.exchanges.remove(&(v.clone(), n.clone()));
                self.bindings
                    .retain(|b| b.vhost != v || (b.source != n && (b.to_queue || b.dest != n)));
            }
            "put_queue" => {
                let q = queue_of(t);
                self.next_queue_id = self.next_queue_id.max(q.id + 1);
                self.queues.insert(key(), q);
            }
            "del_queue" => {
                let (v, n) = key();
                self.queues.remove(&(v.clone(), n.clone()));
                self.bindings
                    .retain(|b| b.vhost != v || !b.to_queue || b.dest != n);
            }
            "put_binding" => {
                let b = binding_of(t);
                if !self.bindings.contains(&b) {
                    self.bindings.push(b);
                }
            }
            "del_binding" => {
                let b = binding_of(t);
                self.bindings.retain(|x| *x != b);
            }
            "auth" => {
                self.users = users_of(t);
                self.permissions = permissions_of(t);
                self.topic_permissions = topic_permissions_of(t);
            }
            "put_param" => {
                let p = param_of(t);
                self.params
                    .insert((p.component.clone(), p.owner.clone(), p.name.clone()), p);
            }
            "del_param" => {
                let [c, o, n] = PARAM_KEYS.map(|k| text(t, k));
                self.params.remove(&(c, o, n));
            }
            other => warn!("definitions log: unknown record '{other}' ignored"),
        }
    }

    fn finish(self) -> Definitions {
        Definitions {
            vhosts: self.vhosts,
            exchanges: self.exchanges.into_values().collect(),
            queues: self.queues.into_values().collect(),
            bindings: self.bindings,
            next_queue_id: self.next_queue_id,
            users: self.users,
            permissions: self.permissions,
            topic_permissions: self.topic_permissions,
            params: self.params.into_values().collect(),
        }
    }
}

/// The definitions on disk: the snapshot's generation and the log after it.
/// Changes are staged with [`DefsLog::stage`] and made durable by
/// [`DefsLog::commit`] (the end-of-turn group commit); a failed commit keeps
/// them staged and is retried.
#[derive(Debug)]
pub struct DefsLog {
    dir: PathBuf,
    /// The data directory, held open to sync it (see the store's).
    dir_file: File,
    /// Generation of the snapshot the log extends.
    gen: u64,
    log: LogFile,
    /// Size of the last snapshot written or loaded.
    snapshot_len: u64,
    /// A whole snapshot is wanted (an import, the first start).
    snapshot_due: bool,
    /// When a failed commit may be tried again.
    retry_at: Option<Instant>,
    log_throttle: Throttle,
    disk: Disk,
}

impl DefsLog {
    /// Open the definitions in `dir`: load the snapshot, replay the log
    /// (cutting a torn tail), and get ready to append.
    pub fn open(dir: &Path, faults: Option<Arc<Faults>>) -> io::Result<(DefsLog, Definitions)> {
        let disk = Disk::new(faults);
        let (defs, gen, snapshot_len, fresh) = match Definitions::load_snapshot(&disk, dir)? {
            Some((d, g, len)) => (d, g, len, false),
            None => (Definitions::default(), 0, 0, true),
        };
        let path = dir.join(LOG);
        let data = match disk.read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, good) = read_log(&data, gen);
        let mut r = Replay::new(defs);
        records.iter().for_each(|t| r.apply(t));
        let defs = r.finish();
        let log = if good > 0 {
            LogFile::open_at(&disk, &path, good, LOG_RESERVE)?
        } else {
            let mut log = match LogFile::create(&disk, &path, LOG_RESERVE, 0) {
                Ok(f) => f,
                Err(_) => LogFile::create(&disk, &path, 0, 0)?,
            };
            let mut head = FieldTable::new();
            head.insert("log_gen", FieldValue::I64(gen as i64));
            record(log.buf_mut(), &head);
            log
        };
        if !records.is_empty() {
            info!(
                "definitions: {} changes replayed from the log",
                records.len()
            );
        }
        Ok((
            DefsLog {
                dir_file: disk.open_dir(dir)?,
                dir: dir.to_path_buf(),
                gen,
                log,
                snapshot_len,
                snapshot_due: fresh,
                retry_at: None,
                log_throttle: Throttle::default(),
                disk,
            },
            defs,
        ))
    }

    /// Encode `changes` into the log (buffered until [`DefsLog::commit`]).
    /// `lookup_auth` gives the current users, permissions and topic
    /// permissions (a [`Definitions`] with only those) for
    /// [`DefChange::Auth`].
    pub fn stage(&mut self, changes: &[DefChange], lookup_auth: impl Fn() -> Definitions) {
        let out = self.log.buf_mut();
        for c in changes {
            let t = match c {
                DefChange::AddVhost(v) => {
                    let mut t = FieldTable::new();
                    t.insert("name", s(v));
                    op_table("add_vhost", t)
                }
                DefChange::DelVhost(v) => {
                    let mut t = FieldTable::new();
                    t.insert("name", s(v));
                    op_table("del_vhost", t)
                }
                DefChange::PutExchange(x) => op_table("put_exchange", exchange_table(x)),
                DefChange::DelExchange(v, n) => op_table("del_exchange", name_table(v, n)),
                DefChange::PutQueue(q) => op_table("put_queue", queue_table(q)),
                DefChange::DelQueue(v, n) => op_table("del_queue", name_table(v, n)),
                DefChange::PutBinding(b) => op_table("put_binding", binding_table(b)),
                DefChange::DelBinding(b) => op_table("del_binding", binding_table(b)),
                DefChange::Auth => {
                    let d = lookup_auth();
                    let mut t = FieldTable::new();
                    t.insert("users", users_value(&d.users));
                    t.insert("permissions", permissions_value(&d.permissions));
                    t.insert(
                        "topic_permissions",
                        topic_permissions_value(&d.topic_permissions),
                    );
                    op_table("auth", t)
                }
                DefChange::PutParam(p) => op_table("put_param", param_table(p)),
                DefChange::DelParam(c, o, n) => {
                    let mut t = FieldTable::new();
                    for (k, v) in PARAM_KEYS.iter().zip([c, o, n]) {
                        t.insert(*k, st(v));
                    }
                    op_table("del_param", t)
                }
                DefChange::All => {
                    self.snapshot_due = true;
                    continue;
                }
            };
            record(out, &t);
        }
    }

    /// True when changes are staged and not yet durable.
    pub fn pending(&self) -> bool {
        self.log.unsynced() > 0 || self.snapshot_due
    }

    /// True when a failed commit is due to be tried again.
    pub fn wants_commit(&self, now: Instant) -> bool {
        self.pending() && self.retry_at.is_none_or(|t| now >= t)
    }

    /// Make what is staged durable: sync the log, or, when a snapshot is
    /// due or the log has outgrown the last snapshot, write `current()` as
    /// a new snapshot and start an empty log for it. After an error nothing
    /// staged is lost; it is tried again after `now` + the retry interval.
    pub fn commit(&mut self, now: Instant, current: impl Fn() -> Definitions) -> io::Result<()> {
        if !self.pending() {
            return Ok(());
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return Err(io::Error::other(
                "the definitions could not be written (retrying)",
            ));
        }
        let compact = self.snapshot_due
            || self.log.len() > LOG_COMPACT_MIN.max(self.snapshot_len.saturating_mul(2));
        let res = if compact {
            match self.compact(&current()) {
                Ok(()) => Ok(()),
                // A due snapshot is needed; a size-driven one can wait.
                Err(e) if self.snapshot_due => Err(e),
                Err(_) => self.log.sync(),
            }
        } else {
            self.log.sync()
        };
        match res {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    info!("definitions are written again");
                    self.log_throttle = Throttle::default();
                }
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(now + super::RETRY_AFTER);
                if let Some(n) = self.log_throttle.hit(now) {
                    error!(
                        "cannot write the definitions in {}: {e}{}",
                        self.dir.display(),
                        repeats(n)
                    );
                }
                Err(e)
            }
        }
    }

    /// Write `defs` as the snapshot of the next generation and start its
    /// (empty) log.
    fn compact(&mut self, defs: &Definitions) -> io::Result<()> {
        let gen = self.gen + 1;
        let table = defs.to_table(gen);
        self.snapshot_len = write_snapshot(
            &self.disk,
            &self.dir_file,
            &self.dir,
            &table,
            self.snapshot_len,
        )?;
        self.gen = gen;
        self.snapshot_due = false;
        // The old log is obsolete now (its generation no longer matches);
        // it is cut and restarted, reserved and synced on the next commit.
        let path = self.dir.join(LOG);
        let freed = self.log.allocated();
        let log = match LogFile::create(&self.disk, &path, LOG_RESERVE, freed) {
            Ok(f) => Ok(f),
            Err(_) => LogFile::create(&self.disk, &path, 0, 0),
        };
        let mut log = match log {
            Ok(f) => f,
            Err(e) => {
                // Changes staged from now on must not go to the old log
                // (its generation is obsolete): the next commit writes a
                // snapshot again and retries the log.
                self.snapshot_due = true;
                return Err(e);
            }
        };
        let mut head = FieldTable::new();
        head.insert("log_gen", FieldValue::I64(gen as i64));
        record(log.buf_mut(), &head);
        self.log = log;
        // Best effort: the snapshot is durable; an unsynced empty log is fine.
        let _ = self.log.sync();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("warren-defs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut args = FieldTable::new();
        args.insert("x-max-length", FieldValue::I32(10));
        let d = Definitions {
            vhosts: vec![Bytes::from_static(b"/")],
            exchanges: vec![ExchangeDef {
                vhost: Bytes::from_static(b"/"),
                name: Bytes::from_static(b"logs"),
                kind: Bytes::from_static(b"fanout"),
                auto_delete: false,
                internal: true,
                arguments: FieldTable::new(),
            }],
            queues: vec![QueueDef {
                vhost: Bytes::from_static(b"/"),
                name: Bytes::from_static(b"task_queue"),
                id: 7,
                auto_delete: false,
                arguments: args,
            }],
            bindings: vec![BindingDef {
                vhost: Bytes::from_static(b"/"),
                source: Bytes::from_static(b"logs"),
                to_queue: true,
                dest: Bytes::from_static(b"task_queue"),
                routing_key: Bytes::from_static(b"k"),
                arguments: FieldTable::new(),
            }],
            next_queue_id: 8,
            users: vec![("bob".into(), "aGFzaA==".into(), vec!["management".into()])],
            permissions: vec![[
                "bob".into(),
                "/".into(),
                ".*".into(),
                "".into(),
                "^q$".into(),
            ]],
            topic_permissions: vec![[
                "bob".into(),
                "/".into(),
                "amq.topic".into(),
                "^{username}\\.".into(),
                "".into(),
            ]],
            params: vec![ParamDef {
                component: "policy".into(),
                owner: "/".into(),
                name: "ttl".into(),
                value: Bytes::from_static(b"{\"pattern\":\".*\"}"),
            }],
        };
        d.save(&dir).unwrap();
        assert_eq!(Definitions::load(&dir).unwrap(), Some(d));
        let mut raw = fs::read(dir.join("definitions")).unwrap();
        raw[10] ^= 0xff;
        fs::write(dir.join("definitions"), raw).unwrap();
        assert!(Definitions::load(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
