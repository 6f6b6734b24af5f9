//! Durable definitions (vhosts, exchanges, queues, bindings) as one snapshot
//! file, replaced atomically: write `definitions.tmp`, fsync, rename over
//! `definitions`, fsync the directory. Encoded as an AMQP field table with a
//! CRC in front, so the codec we already trust does the parsing.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use bytes::{Bytes, BytesMut};

use super::crc::crc32c;
use super::sync_dir;
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

impl Definitions {
    fn to_table(&self) -> FieldTable {
        let mut root = FieldTable::new();
        root.insert("version", FieldValue::I32(1));
        root.insert("next_queue_id", FieldValue::I64(self.next_queue_id as i64));
        root.insert(
            "vhosts",
            FieldValue::Array(self.vhosts.iter().map(s).collect()),
        );
        let xs = self
            .exchanges
            .iter()
            .map(|x| {
                let mut t = FieldTable::new();
                t.insert("vhost", s(&x.vhost));
                t.insert("name", s(&x.name));
                t.insert("type", s(&x.kind));
                t.insert("auto_delete", FieldValue::Bool(x.auto_delete));
                t.insert("internal", FieldValue::Bool(x.internal));
                t.insert("arguments", FieldValue::Table(x.arguments.clone()));
                FieldValue::Table(t)
            })
            .collect();
        root.insert("exchanges", FieldValue::Array(xs));
        let qs = self
            .queues
            .iter()
            .map(|q| {
                let mut t = FieldTable::new();
                t.insert("vhost", s(&q.vhost));
                t.insert("name", s(&q.name));
                t.insert("id", FieldValue::I64(q.id as i64));
                t.insert("auto_delete", FieldValue::Bool(q.auto_delete));
                t.insert("arguments", FieldValue::Table(q.arguments.clone()));
                FieldValue::Table(t)
            })
            .collect();
        root.insert("queues", FieldValue::Array(qs));
        let bs = self
            .bindings
            .iter()
            .map(|b| {
                let mut t = FieldTable::new();
                t.insert("vhost", s(&b.vhost));
                t.insert("source", s(&b.source));
                t.insert("to_queue", FieldValue::Bool(b.to_queue));
                t.insert("dest", s(&b.dest));
                t.insert("routing_key", s(&b.routing_key));
                t.insert("arguments", FieldValue::Table(b.arguments.clone()));
                FieldValue::Table(t)
            })
            .collect();
        root.insert("bindings", FieldValue::Array(bs));
        let st = |x: &str| FieldValue::LongStr(Bytes::copy_from_slice(x.as_bytes()));
        let us = self
            .users
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
            .collect();
        root.insert("users", FieldValue::Array(us));
        let ps = self
            .permissions
            .iter()
            .map(|p| {
                let mut t = FieldTable::new();
                for (k, v) in ["user", "vhost", "configure", "write", "read"]
                    .iter()
                    .zip(p.iter())
                {
                    t.insert(*k, st(v));
                }
                FieldValue::Table(t)
            })
            .collect();
        root.insert("permissions", FieldValue::Array(ps));
        root
    }

    fn from_table(root: &FieldTable) -> Definitions {
        let text = |t: &FieldTable, k: &str| String::from_utf8_lossy(&get_s(t, k)).into_owned();
        Definitions {
            users: tables(root, "users")
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
                .collect(),
            permissions: tables(root, "permissions")
                .map(|t| {
                    [
                        text(t, "user"),
                        text(t, "vhost"),
                        text(t, "configure"),
                        text(t, "write"),
                        text(t, "read"),
                    ]
                })
                .collect(),
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
            exchanges: tables(root, "exchanges")
                .map(|t| ExchangeDef {
                    vhost: get_s(t, "vhost"),
                    name: get_s(t, "name"),
                    kind: get_s(t, "type"),
                    auto_delete: get_b(t, "auto_delete"),
                    internal: get_b(t, "internal"),
                    arguments: get_t(t, "arguments"),
                })
                .collect(),
            queues: tables(root, "queues")
                .map(|t| QueueDef {
                    vhost: get_s(t, "vhost"),
                    name: get_s(t, "name"),
                    id: t.get("id").and_then(|v| v.as_i64()).unwrap_or(0) as u64,
                    auto_delete: get_b(t, "auto_delete"),
                    arguments: get_t(t, "arguments"),
                })
                .collect(),
            bindings: tables(root, "bindings")
                .map(|t| BindingDef {
                    vhost: get_s(t, "vhost"),
                    source: get_s(t, "source"),
                    to_queue: get_b(t, "to_queue"),
                    dest: get_s(t, "dest"),
                    routing_key: get_s(t, "routing_key"),
                    arguments: get_t(t, "arguments"),
                })
                .collect(),
        }
    }

    /// Write the snapshot atomically into `dir/definitions`.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let mut body = BytesMut::new();
        self.to_table().encode(&mut body);
        let tmp = dir.join("definitions.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&crc32c(&body).to_be_bytes())?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join("definitions"))?;
        sync_dir(dir)
    }

    /// Load `dir/definitions`; a missing file is an empty set. A corrupt file
    /// is an error: starting without the definitions would lose queues.
    pub fn load(dir: &Path) -> io::Result<Option<Definitions>> {
        let data = match fs::read(dir.join("definitions")) {
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
        let crc = data.get(..4).ok_or_else(|| bad("is truncated"))?;
        let body = Bytes::copy_from_slice(data.get(4..).unwrap_or(&[]));
        if u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) != crc32c(&body) {
            return Err(bad("fails its checksum"));
        }
        let t = FieldTable::decode(&mut Reader::new(&body)).map_err(|_| bad("does not parse"))?;
        Ok(Some(Definitions::from_table(&t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
