//! Topic-exchange routing: owns the binding trie of one topic exchange.
//!
//! Binding keys and routing keys are words separated by `.`; in a binding
//! key `*` matches exactly one word and `#` matches zero or more words.
//! Words are split exactly as RabbitMQ splits them
//! (`rabbit_db_topic_exchange:split_topic_key_binary/1`): the empty key has
//! **zero** words, any other key has one more word than it has dots, and
//! empty words are words (`"a..b"` is three words, `"."` is two empty
//! words). So routing key `""` matches binding keys `""`, `"#"` and `"#.#"`,
//! but not `"*"`; in a routing key `*` and `#` are ordinary words.
//!
//! The trie is an arena of nodes, one per binding-key prefix, with a literal
//! child per word plus at most one `*` child and one `#` child. Routing runs
//! the trie as an NFA over the routing key's words, one word at a time: the
//! active set holds the nodes reached after `i` words; a `#` node, once
//! reached, stays active for every later word (it can swallow them) and is
//! never added twice, so every (node, word index) state is visited at most
//! once and routing is `O(words × active nodes)` even for binding keys such
//! as `#.#.#.#`. Each node's destinations are reported at most once per
//! route; a destination bound with several matching keys is reported once
//! per matching key, and deduplication is left to the caller.
//!
//! Nothing here recurses, allocates while routing typical keys (the active
//! sets live in fixed arrays on the stack and spill to the heap only past
//! [`INLINE`] nodes), or panics on any input.

use std::collections::{HashMap, HashSet};

/// Index of a node in the arena.
type NodeId = usize;

/// The root node (the empty binding-key prefix); never freed.
const ROOT: NodeId = 0;

/// A node's literal children are a vector scanned linearly up to this many
/// entries, then a hash map.
const SMALL_CHILDREN: usize = 8;

/// Active-set entries kept on the stack while routing before spilling to
/// the heap.
const INLINE: usize = 32;

/// One word of a binding key, classified.
#[derive(Debug, Clone, Copy)]
enum Edge<'a> {
    Word(&'a [u8]),
    Star,
    Hash,
}

/// The words of a key, RabbitMQ style: `""` has none, otherwise split on `.`.
fn words(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty = key.is_empty();
    key.split(|&b| b == b'.').filter(move |_| !empty)
}

/// The words of a binding key, with `*` and `#` recognised.
fn edges(pattern: &[u8]) -> impl Iterator<Item = Edge<'_>> {
    words(pattern).map(|w| match w {
        b"*" => Edge::Star,
        b"#" => Edge::Hash,
        w => Edge::Word(w),
    })
}

/// Literal-word children of a node.
#[derive(Debug, Clone)]
enum Children {
    Small(Vec<(Box<[u8]>, NodeId)>),
    Map(HashMap<Box<[u8]>, NodeId>),
}

impl Children {
    fn get(&self, word: &[u8]) -> Option<NodeId> {
        match self {
            Children::Small(v) => v.iter().find(|(w, _)| **w == *word).map(|&(_, id)| id),
            Children::Map(m) => m.get(word).copied(),
        }
    }

    /// Add a child; the caller has checked that `word` is absent.
    fn insert(&mut self, word: &[u8], id: NodeId) {
        match self {
            Children::Small(v) if v.len() < SMALL_CHILDREN => v.push((word.into(), id)),
            Children::Small(v) => {
                let mut m: HashMap<Box<[u8]>, NodeId> = v.drain(..).collect();
                m.insert(word.into(), id);
                *self = Children::Map(m);
            }
            Children::Map(m) => {
                m.insert(word.into(), id);
            }
        }
    }

    fn remove(&mut self, word: &[u8]) {
        match self {
            Children::Small(v) => v.retain(|(w, _)| **w != *word),
            Children::Map(m) => {
                m.remove(word);
                if m.is_empty() {
                    *self = Children::Small(Vec::new());
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Children::Small(v) => v.is_empty(),
            Children::Map(m) => m.is_empty(),
        }
    }

    #[cfg(test)]
    fn for_each(&self, mut f: impl FnMut(NodeId)) {
        match self {
            Children::Small(v) => v.iter().for_each(|&(_, id)| f(id)),
            Children::Map(m) => m.values().for_each(|&id| f(id)),
        }
    }

    #[cfg(test)]
    fn retain(&mut self, mut keep: impl FnMut(NodeId) -> bool) {
        match self {
            Children::Small(v) => v.retain(|&(_, id)| keep(id)),
            Children::Map(m) => m.retain(|_, id| keep(*id)),
        }
    }
}

/// One binding-key prefix.
#[derive(Debug, Clone)]
struct Node<D> {
    words: Children,
    star: Option<NodeId>,
    hash: Option<NodeId>,
    /// Destinations bound with exactly this key.
    dests: Vec<D>,
}

impl<D> Node<D> {
    fn new() -> Self {
        Node {
            words: Children::Small(Vec::new()),
            star: None,
            hash: None,
            dests: Vec::new(),
        }
    }

    /// No bindings here and no children: the node can be pruned.
    fn is_empty(&self) -> bool {
        self.dests.is_empty() && self.star.is_none() && self.hash.is_none() && self.words.is_empty()
    }

    fn child(&self, edge: Edge<'_>) -> Option<NodeId> {
        match edge {
            Edge::Word(w) => self.words.get(w),
            Edge::Star => self.star,
            Edge::Hash => self.hash,
        }
    }

    fn set_child(&mut self, edge: Edge<'_>, id: NodeId) {
        match edge {
            Edge::Word(w) => self.words.insert(w, id),
            Edge::Star => self.star = Some(id),
            Edge::Hash => self.hash = Some(id),
        }
    }

    fn unlink(&mut self, edge: Edge<'_>) {
        match edge {
            Edge::Word(w) => self.words.remove(w),
            Edge::Star => self.star = None,
            Edge::Hash => self.hash = None,
        }
    }

    #[cfg(test)]
    fn for_each_child(&self, mut f: impl FnMut(NodeId)) {
        self.words.for_each(&mut f);
        self.star.into_iter().chain(self.hash).for_each(f);
    }
}

/// A list of node ids: the first [`INLINE`] on the stack, the rest on the
/// heap.
struct IdList {
    inline: [NodeId; INLINE],
    len: usize,
    spill: Vec<NodeId>,
}

impl IdList {
    fn new() -> Self {
        IdList {
            inline: [0; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, id: NodeId) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
            }
            None => self.spill.push(id),
        }
    }

    fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.inline
            .iter()
            .take(self.len)
            .chain(self.spill.iter())
            .copied()
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len == INLINE
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
}

/// The set of active `#` nodes while routing: a list (scanned linearly
/// while it fits inline) plus a hash set once it spills.
struct HashNodes {
    list: IdList,
    big: HashSet<NodeId>,
}

impl HashNodes {
    fn new() -> Self {
        HashNodes {
            list: IdList::new(),
            big: HashSet::new(),
        }
    }

    /// Add `id`; false if it was already present.
    fn insert(&mut self, id: NodeId) -> bool {
        if self.list.is_full() {
            if self.big.is_empty() {
                self.big.extend(self.list.iter());
            }
            if !self.big.insert(id) {
                return false;
            }
        } else if self.list.iter().any(|x| x == id) {
            return false;
        }
        self.list.push(id);
        true
    }
}

/// The bindings of one topic exchange: (binding key, destination) pairs.
#[derive(Debug, Clone)]
pub struct TopicTrie<D> {
    /// Arena; `nodes[ROOT]` always exists. Freed slots are reset to empty
    /// nodes and listed in `free`.
    nodes: Vec<Node<D>>,
    free: Vec<NodeId>,
    /// Number of (binding key, destination) pairs.
    bindings: usize,
}

impl<D: Clone + PartialEq> Default for TopicTrie<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Clone + PartialEq> TopicTrie<D> {
    /// An empty trie.
    pub fn new() -> Self {
        TopicTrie {
            nodes: vec![Node::new()],
            free: Vec::new(),
            bindings: 0,
        }
    }

    /// Add the binding (`pattern`, `dest`); false if it was already present.
    pub fn insert(&mut self, pattern: &[u8], dest: D) -> bool {
        let mut cur = ROOT;
        for edge in edges(pattern) {
            let Some(node) = self.nodes.get(cur) else {
                return false;
            };
            cur = match node.child(edge) {
                Some(next) => next,
                None => {
                    let next = self.alloc();
                    let Some(node) = self.nodes.get_mut(cur) else {
                        return false;
                    };
                    node.set_child(edge, next);
                    next
                }
            };
        }
        let Some(node) = self.nodes.get_mut(cur) else {
            return false;
        };
        if node.dests.contains(&dest) {
            return false;
        }
        node.dests.push(dest);
        self.bindings += 1;
        true
    }

    /// Remove the binding (`pattern`, `dest`); true if it was present. Nodes
    /// left with no bindings and no children are freed.
    pub fn remove(&mut self, pattern: &[u8], dest: &D) -> bool {
        // (parent, edge) for every step of the path, to prune bottom-up.
        let mut path: Vec<(NodeId, Edge<'_>)> = Vec::new();
        let mut cur = ROOT;
        for edge in edges(pattern) {
            let Some(next) = self.nodes.get(cur).and_then(|n| n.child(edge)) else {
                return false;
            };
            path.push((cur, edge));
            cur = next;
        }
        let Some(node) = self.nodes.get_mut(cur) else {
            return false;
        };
        let Some(at) = node.dests.iter().position(|d| d == dest) else {
            return false;
        };
        node.dests.swap_remove(at);
        self.bindings -= 1;
        while let Some((parent, edge)) = path.pop() {
            if !self.nodes.get(cur).is_some_and(Node::is_empty) {
                break;
            }
            if let Some(p) = self.nodes.get_mut(parent) {
                p.unlink(edge);
            }
            self.release(cur);
            cur = parent;
        }
        true
    }

    /// Call `f` once for each destination bound with a key that matches
    /// routing key `key`. A destination bound with several matching keys is
    /// reported once per such key (deduplication is the caller's job); a
    /// destination bound once is reported once.
    pub fn route(&self, key: &[u8], f: &mut impl FnMut(&D)) {
        // Non-`#` nodes reached after exactly the words seen so far. They are
        // distinct: each is the literal or `*` child of a distinct node.
        let mut cur = IdList::new();
        let mut next = IdList::new();
        // `#` nodes reached so far: active for every remaining word.
        let mut hashes = HashNodes::new();
        cur.push(ROOT);
        self.activate_hashes(ROOT, &mut hashes);
        for word in words(key) {
            next.clear();
            for id in cur.iter().chain(hashes.list.iter()) {
                if let Some(node) = self.nodes.get(id) {
                    if let Some(c) = node.words.get(word) {
                        next.push(c);
                    }
                    if let Some(c) = node.star {
                        next.push(c);
                    }
                }
            }
            for id in next.iter() {
                self.activate_hashes(id, &mut hashes);
            }
            std::mem::swap(&mut cur, &mut next);
            if cur.is_empty() && hashes.list.is_empty() {
                return;
            }
        }
        for id in cur.iter().chain(hashes.list.iter()) {
            if let Some(node) = self.nodes.get(id) {
                node.dests.iter().for_each(&mut *f);
            }
        }
    }

    /// Keep only the bindings whose destination satisfies `keep` (as
    /// `Vec::retain`): to drop a deleted queue's bindings, pass
    /// `|d| d != &queue`. Nodes left empty are freed.
    #[cfg(test)]
    pub fn retain(&mut self, keep: &mut impl FnMut(&D) -> bool) {
        let before = self.bindings;
        for node in &mut self.nodes {
            let n = node.dests.len();
            node.dests.retain(|d| keep(d));
            self.bindings -= n - node.dests.len();
        }
        if self.bindings != before {
            self.prune();
        }
    }

    /// Number of (binding key, destination) pairs.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bindings
    }

    /// True when there are no bindings.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.bindings == 0
    }

    /// Mark the chain of `#` children below `id` active (`#` may match zero
    /// words, and `#.#` is a chain). Stops at the first one already active:
    /// its chain was activated with it.
    fn activate_hashes(&self, id: NodeId, hashes: &mut HashNodes) {
        let mut h = self.nodes.get(id).and_then(|n| n.hash);
        while let Some(hid) = h {
            if !hashes.insert(hid) {
                break;
            }
            h = self.nodes.get(hid).and_then(|n| n.hash);
        }
    }

    /// A fresh empty node.
    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(Node::new());
                self.nodes.len() - 1
            }
        }
    }

    /// Return a node (already unlinked from its parent) to the free list.
    fn release(&mut self, id: NodeId) {
        if id == ROOT {
            return;
        }
        if let Some(node) = self.nodes.get_mut(id) {
            *node = Node::new();
            self.free.push(id);
        }
    }

    /// Free every node with no bindings at or below it (root excepted).
    #[cfg(test)]
    fn prune(&mut self) {
        // Preorder walk from the root: parents before children.
        let mut order = Vec::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            order.push(id);
            if let Some(node) = self.nodes.get(id) {
                node.for_each_child(|c| stack.push(c));
            }
        }
        // Children before parents: alive = has bindings or a live child.
        let mut alive = vec![false; self.nodes.len()];
        for &id in order.iter().rev() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            let mut live = !node.dests.is_empty();
            node.for_each_child(|c| live |= alive.get(c).copied().unwrap_or(false));
            if let Some(slot) = alive.get_mut(id) {
                *slot = live;
            }
        }
        let is_alive = |id: NodeId| alive.get(id).copied().unwrap_or(false);
        for &id in &order {
            if id != ROOT && !is_alive(id) {
                self.release(id);
                continue;
            }
            if let Some(node) = self.nodes.get_mut(id) {
                node.words.retain(is_alive);
                node.star = node.star.filter(|&c| is_alive(c));
                node.hash = node.hash.filter(|&c| is_alive(c));
            }
        }
    }

    /// Nodes in use, root included.
    #[cfg(test)]
    fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Destinations reported for `key`, in report order.
    fn routed<D: Clone + PartialEq>(t: &TopicTrie<D>, key: &str) -> Vec<D> {
        let mut out = Vec::new();
        t.route(key.as_bytes(), &mut |d: &D| out.push(d.clone()));
        out
    }

    /// Bind each pattern to itself and return the sorted patterns matching.
    fn matching(bindings: &[&'static str], key: &str) -> Vec<&'static str> {
        let mut t = TopicTrie::new();
        for b in bindings {
            t.insert(b.as_bytes(), *b);
        }
        let mut out = routed(&t, key);
        let n = out.len();
        out.sort();
        out.dedup();
        assert_eq!(n, out.len(), "duplicate report for {key:?}");
        out
    }

    const ALL: &[&str] = &[
        "", "#", "*", ".", "#.", ".#", "#.#", "*.*", "*.#", "#.*", "a", "b", "a.b", "a.*", "*.b",
        "a.#", "#.a", "#.b", "a.#.b", "a.*.#", "a..b", "a.*.b", "a.", "#.#.#", "*.#.*", "a.b.c",
        "#.a.#", "*",
    ];

    #[test]
    fn rabbitmq_semantics_table() {
        let cases: &[(&str, &[&str])] = &[
            // the empty routing key has zero words
            ("", &["", "#", "#.#", "#.#.#"]),
            (
                "a",
                &[
                    "#", "*", "#.#", "*.#", "#.*", "a", "a.#", "#.a", "#.#.#", "#.a.#",
                ],
            ),
            (
                "a.b",
                &[
                    "#", "#.#", "*.*", "*.#", "#.*", "a.b", "a.*", "*.b", "a.#", "#.b", "a.#.b",
                    "a.*.#", "#.#.#", "*.#.*", "#.a.#",
                ],
            ),
            // two empty words
            (
                ".",
                &[
                    "#", ".", "#.", ".#", "#.#", "*.*", "*.#", "#.*", "#.#.#", "*.#.*",
                ],
            ),
            (
                "a.",
                &[
                    "#", "#.", "#.#", "*.*", "*.#", "#.*", "a.*", "a.#", "a.*.#", "a.", "#.#.#",
                    "*.#.*", "#.a.#",
                ],
            ),
            (
                "a..b",
                &[
                    "#", "#.#", "*.#", "#.*", "#.b", "a.#", "a.#.b", "a.*.#", "a..b", "a.*.b",
                    "#.#.#", "*.#.*", "#.a.#",
                ],
            ),
            (
                "a.x.y.b",
                &[
                    "#", "#.#", "*.#", "#.*", "#.b", "a.#", "a.#.b", "a.*.#", "#.#.#", "*.#.*",
                    "#.a.#",
                ],
            ),
            (
                "b.a",
                &[
                    "#", "#.#", "*.*", "*.#", "#.*", "#.a", "#.#.#", "*.#.*", "#.a.#",
                ],
            ),
            // `*` and `#` in a routing key are ordinary words
            ("*", &["#", "*", "#.#", "*.#", "#.*", "#.#.#"]),
            ("#.#", &["#", "#.#", "*.*", "*.#", "#.*", "#.#.#", "*.#.*"]),
        ];
        for (key, want) in cases {
            let mut want: Vec<&str> = want.to_vec();
            want.sort();
            want.dedup();
            assert_eq!(matching(ALL, key), want, "routing key {key:?}");
        }
    }

    #[test]
    fn single_binding_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("#", "", true),
            ("#", "a.b.c", true),
            ("", "", true),
            ("", "a", false),
            ("", ".", false),
            ("*", "", false),
            ("*", "a", true),
            ("*", ".", false),
            ("*.*", "a.b", true),
            ("*.*", "a", false),
            ("*.*", "a.b.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c.d", true),
            ("a.#", "b.a", false),
            ("a.#", "", false),
            ("#.a", "a", true),
            ("#.a", "x.y.a", true),
            ("#.a", "a.x", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.b.b", true),
            ("a.#.b", "a.b.c", false),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("a.*.#", "a.b.c.d", true),
            ("#.#", "", true),
            ("#.#", "x", true),
            ("#.#", "x.y.z", true),
            ("a.b.c", "a.b", false),
            ("a.b", "a.b.c", false),
            ("a..b", "a.b", false),
            ("a..b", "a..b", true),
        ];
        for &(pattern, key, want) in cases {
            let mut t = TopicTrie::new();
            t.insert(pattern.as_bytes(), 1u32);
            assert_eq!(
                routed(&t, key) == vec![1],
                want,
                "binding {pattern:?} vs routing key {key:?}"
            );
        }
    }

    #[test]
    fn many_hashes_against_a_long_key_is_fast() {
        let mut t = TopicTrie::new();
        t.insert(b"#.#.#.#.#.#.#.#.x", "x");
        t.insert(b"#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.y.#", "y");
        t.insert(b"*.#.*.#.*.#.*.#.z", "z");
        let mut key = vec!["w"; 99];
        key.push("x");
        let hit = key.join(".");
        let miss = vec!["w"; 100].join(".");
        let start = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(routed(&t, &hit), vec!["x"]);
            assert!(routed(&t, &miss).is_empty());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // a 255-word key of `y`s reaches the `y` binding once
        assert_eq!(routed(&t, &vec!["y"; 128].join(".")), vec!["y"]);
    }

    #[test]
    fn insert_remove_len() {
        let mut t = TopicTrie::new();
        assert!(t.is_empty());
        assert!(t.insert(b"a.b", 1));
        assert!(!t.insert(b"a.b", 1), "duplicate binding");
        assert!(t.insert(b"a.b", 2));
        assert!(t.insert(b"a.*", 1));
        assert!(t.insert(b"#", 3));
        assert_eq!(t.len(), 4);
        let mut got = routed(&t, "a.b");
        got.sort();
        // dest 1 is bound twice and matches twice
        assert_eq!(got, vec![1, 1, 2, 3]);
        assert!(!t.remove(b"a.b", &7));
        assert!(!t.remove(b"a.c", &1));
        assert!(!t.remove(b"a", &1));
        assert!(t.remove(b"a.b", &1));
        assert!(!t.remove(b"a.b", &1));
        assert_eq!(t.len(), 3);
        let mut got = routed(&t, "a.b");
        got.sort();
        assert_eq!(got, vec![1, 2, 3]);
        assert!(t.remove(b"a.b", &2));
        assert!(t.remove(b"a.*", &1));
        assert!(t.remove(b"#", &3));
        assert!(t.is_empty());
        assert_eq!(t.live_nodes(), 1, "all nodes pruned");
        assert!(routed(&t, "a.b").is_empty());
    }

    #[test]
    fn removal_prunes_only_empty_nodes() {
        let mut t = TopicTrie::new();
        t.insert(b"a.b.c.d", 1);
        t.insert(b"a.b", 2);
        t.insert(b"a.#.*", 3);
        assert_eq!(t.live_nodes(), 1 + 4 + 2);
        assert!(t.remove(b"a.b.c.d", &1));
        // "c" and "d" go; "a.b" still has a binding
        assert_eq!(t.live_nodes(), 1 + 2 + 2);
        assert_eq!(routed(&t, "a.b"), vec![2, 3]);
        assert!(t.remove(b"a.b", &2));
        assert_eq!(t.live_nodes(), 1 + 1 + 2);
        assert!(t.remove(b"a.#.*", &3));
        assert_eq!(t.live_nodes(), 1);
        // freed nodes are reused
        t.insert(b"x.y.z", 4);
        assert_eq!(t.nodes.len(), 7);
        assert_eq!(routed(&t, "x.y.z"), vec![4]);
    }

    #[test]
    fn retain_drops_a_destination_and_prunes() {
        let mut t = TopicTrie::new();
        let mut reference = TopicTrie::new();
        for (p, d) in [
            ("a.b", "q1"),
            ("a.b", "q2"),
            ("a.#", "q1"),
            ("x.y.z", "q1"),
            ("#", "q2"),
            ("*.*.*.*", "q1"),
        ] {
            t.insert(p.as_bytes(), d);
            if d != "q1" {
                reference.insert(p.as_bytes(), d);
            }
        }
        assert_eq!(t.len(), 6);
        t.retain(&mut |d: &&str| *d != "q1");
        assert_eq!(t.len(), 2);
        assert_eq!(t.live_nodes(), reference.live_nodes());
        let mut got = routed(&t, "a.b");
        got.sort();
        assert_eq!(got, vec!["q2", "q2"]);
        assert_eq!(routed(&t, "x.y.z"), vec!["q2"]);
        t.retain(&mut |_: &&str| true);
        assert_eq!(t.len(), 2);
        t.retain(&mut |_: &&str| false);
        assert!(t.is_empty());
        assert_eq!(t.live_nodes(), 1);
    }

    #[test]
    fn wide_fan_out_uses_maps_and_spills() {
        let mut t = TopicTrie::new();
        for i in 0..1000u32 {
            t.insert(format!("w{i}.#").as_bytes(), i);
            t.insert(format!("#.w{i}.#").as_bytes(), 10_000 + i);
            t.insert(format!("*.w{i}").as_bytes(), 20_000 + i);
        }
        let key: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        let mut got = routed(&t, &key.join("."));
        got.sort();
        let mut want: Vec<u32> = vec![0];
        want.extend(10_000..10_100);
        assert_eq!(got, want);
        let mut got = routed(&t, "w5.w7");
        got.sort();
        assert_eq!(got, vec![5, 10_005, 10_007, 20_007]);
        for i in 0..1000u32 {
            assert!(t.remove(format!("w{i}.#").as_bytes(), &i));
            assert!(t.remove(format!("#.w{i}.#").as_bytes(), &(10_000 + i)));
            assert!(t.remove(format!("*.w{i}").as_bytes(), &(20_000 + i)));
        }
        assert_eq!(t.live_nodes(), 1);
    }

    // ---- randomized comparison against a straightforward matcher ----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn split(s: &str) -> Vec<&str> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split('.').collect()
        }
    }

    fn reference_match(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| reference_match(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && reference_match(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && reference_match(rest, &k[1..]),
        }
    }

    fn random_key(rng: &mut XorShift, alphabet: &[&str], max_words: usize) -> String {
        let n = rng.below(max_words + 1);
        (0..n)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect::<Vec<_>>()
            .join(".")
    }

    #[test]
    fn randomized_against_reference() {
        let pattern_words = ["a", "b", "", "*", "#", "#"];
        let key_words = ["a", "b", "", "*", "#"];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut checked = 0usize;
        for _round in 0..200 {
            let mut t = TopicTrie::new();
            let mut bound: Vec<(String, usize)> = Vec::new();
            for dest in 0..40 {
                let p = random_key(&mut rng, &pattern_words, 5);
                assert!(t.insert(p.as_bytes(), dest));
                bound.push((p, dest));
            }
            assert_eq!(t.len(), bound.len());
            for phase in 0..3 {
                for _ in 0..30 {
                    let key = random_key(&mut rng, &key_words, 6);
                    let kw = split(&key);
                    let want: BTreeSet<usize> = bound
                        .iter()
                        .filter(|(p, _)| reference_match(&split(p), &kw))
                        .map(|&(_, d)| d)
                        .collect();
                    let got = routed(&t, &key);
                    let got_set: BTreeSet<usize> = got.iter().copied().collect();
                    assert_eq!(got.len(), got_set.len(), "duplicates for {key:?}");
                    assert_eq!(got_set, want, "key {key:?} bindings {bound:?}");
                    checked += 1;
                }
                match phase {
                    0 => {
                        // remove about half, one at a time
                        let mut i = 0;
                        while i < bound.len() {
                            if rng.below(2) == 0 {
                                let (p, d) = bound.swap_remove(i);
                                assert!(t.remove(p.as_bytes(), &d));
                                assert!(!t.remove(p.as_bytes(), &d));
                            } else {
                                i += 1;
                            }
                        }
                    }
                    _ => {
                        // drop the odd destinations in one sweep
                        t.retain(&mut |d: &usize| d.is_multiple_of(2));
                        bound.retain(|(_, d)| d.is_multiple_of(2));
                    }
                }
                assert_eq!(t.len(), bound.len());
            }
            for (p, d) in &bound {
                assert!(t.remove(p.as_bytes(), d));
            }
            assert!(t.is_empty());
            assert_eq!(t.live_nodes(), 1);
        }
        assert_eq!(checked, 200 * 3 * 30);
    }
}
