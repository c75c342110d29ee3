//! [`Metadata`], the case-insensitive header map, and [`MetadataLimits`], the bounds on what a
//! peer may send in one message.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

use crate::{Error, Result};

/// A case-insensitive map of string keys to string values: the metadata that flows from caller
/// to handler (and on to the next call) as request headers.
///
/// Keys keep the case they were first inserted with, so they go out on the wire as written
/// (`Micro-Id`), but lookups ignore case (`micro-id`, `MICRO-ID`). Entries iterate in the
/// order they were first inserted.
///
/// Most messages carry a handful of headers: those sit in a vector and are compared without
/// allocating. Past [`INDEXED_FROM`] entries the map keeps a hash index beside the vector (keyed
/// by the ASCII-folded key, with std's randomly seeded hasher), so inserting n entries costs
/// O(n) and a lookup does not scan, however many entries a peer sends. Parsers of peer input
/// bound the count and size as well, with [`MetadataLimits`].
#[derive(Clone, Default)]
pub struct Metadata {
    // (key as given, value); no two keys equal ignoring ASCII case. Keys are mostly the
    // protocol's constant names, kept without copying them.
    entries: Vec<(Cow<'static, str>, String)>,
    // Folded-key hash -> positions in `entries` with that hash, once the map is large.
    index: Option<Box<Index>>,
}

/// From this many entries on, a [`Metadata`] keeps a hash index.
pub const INDEXED_FROM: usize = 16;

#[derive(Clone)]
struct Index {
    hasher: RandomState,
    // Collisions share a bucket; with a random seed a peer cannot aim for one.
    slots: HashMap<u64, Vec<usize>>,
}

impl Index {
    fn hash(&self, key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        for b in key.bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.write_usize(key.len());
        h.finish()
    }
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Metadata {
            entries: Vec::with_capacity(n),
            index: None,
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            None => self
                .entries
                .iter()
                .position(|(k, _)| k.eq_ignore_ascii_case(key)),
            Some(index) => index
                .slots
                .get(&index.hash(key))?
                .iter()
                .copied()
                .find(|&i| self.entries[i].0.eq_ignore_ascii_case(key)),
        }
    }

    /// The value for `key`, whatever its case.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.entries[i].1.as_str())
    }

    /// Sets `key` to `value`, replacing any value under the same key in another case (the key
    /// then takes the case given here).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.set(Cow::Owned(key.into()), value.into());
    }

    /// [`insert`](Self::insert) for a key known at compile time (the protocol's header
    /// names): the key is not copied.
    pub fn insert_static(&mut self, key: &'static str, value: impl Into<String>) {
        self.set(Cow::Borrowed(key), value.into());
    }

    fn set(&mut self, key: Cow<'static, str>, value: String) {
        if let Some(i) = self.position(&key) {
            self.entries[i] = (key, value);
            return;
        }
        let i = self.entries.len();
        if let Some(index) = &mut self.index {
            let h = index.hash(&key);
            index.slots.entry(h).or_default().push(i);
        }
        self.entries.push((key, value));
        if self.index.is_none() && self.entries.len() >= INDEXED_FROM {
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        if self.entries.len() < INDEXED_FROM {
            self.index = None;
            return;
        }
        let mut index = match self.index.take() {
            Some(mut index) => {
                index.slots.clear();
                index
            }
            None => Box::new(Index {
                hasher: RandomState::new(),
                slots: HashMap::with_capacity(self.entries.len()),
            }),
        };
        for (i, (k, _)) in self.entries.iter().enumerate() {
            let h = index.hash(k);
            index.slots.entry(h).or_default().push(i);
        }
        self.index = Some(index);
    }

    /// Removes `key` and returns its value. This costs O(n); to remove many keys use
    /// [`retain`](Self::retain).
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.position(key)?;
        let (_, value) = self.entries.remove(i);
        if self.index.is_some() {
            self.reindex();
        }
        Some(value)
    }

    /// Keeps only the entries for which `keep(key, value)` is true, in one pass.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|(k, v)| keep(k, v));
        if self.entries.len() != before && self.index.is_some() {
            self.reindex();
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, keys as first inserted, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// Copies every entry of `other` into this map, overwriting equal keys.
    pub fn extend_from(&mut self, other: &Metadata) {
        self.entries.reserve(other.len());
        for (k, v) in &other.entries {
            self.set(k.clone(), v.clone());
        }
    }

    /// The bytes of every key and value, as counted against [`MetadataLimits::max_bytes`].
    pub fn byte_len(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// Equal when both hold the same keys (ignoring case) with the same values, in any order.
impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Eq for Metadata {}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        m.extend(iter);
        m
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Metadata {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

/// How many header entries, and how many bytes of keys and values, one message from a peer may
/// carry. Every parser of peer headers (transports, brokers) reads through
/// [`MetadataLimits::reader`], so a message past either bound is refused with a clear error as
/// soon as the bound is crossed, before the rest is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataLimits {
    /// The most entries in one message (default 512).
    pub max_entries: usize,
    /// The most bytes of keys plus values in one message (default 64 KiB).
    pub max_bytes: usize,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        MetadataLimits {
            max_entries: 512,
            max_bytes: 64 * 1024,
        }
    }
}

impl MetadataLimits {
    /// The limits from `MICRO_MAX_HEADERS` (a count) and `MICRO_MAX_HEADER_BYTES` (a size such
    /// as `64KiB`), each defaulting as [`Default`] says; a value that does not read is an error
    /// naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), with variables looked up through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut limits = MetadataLimits::default();
        let text = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = text(MAX_HEADERS_ENV) {
            limits.max_entries = v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| crate::env::invalid(MAX_HEADERS_ENV, &v, "a positive count"))?;
        }
        if let Some(v) = text(MAX_HEADER_BYTES_ENV) {
            limits.max_bytes = crate::env::parse_size(&v)
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    crate::env::invalid(MAX_HEADER_BYTES_ENV, &v, "a size such as 64KiB")
                })?;
        }
        Ok(limits)
    }

    /// A reader that collects one message's headers within these limits; `what` names the
    /// message in errors (`"http broker envelope"`, `"NATS message"`).
    pub fn reader(self, what: &'static str) -> MetadataReader {
        MetadataReader {
            metadata: Metadata::new(),
            bytes: 0,
            limits: self,
            what,
        }
    }

    /// Checks a message's header count and size before it is read entry by entry (for
    /// parsers that know the count up front, such as a Kafka record's).
    pub fn check(&self, what: &str, entries: usize, bytes: usize) -> Result<()> {
        if entries > self.max_entries {
            return Err(too_many(what, entries, self.max_entries));
        }
        if bytes > self.max_bytes {
            return Err(too_large(what, bytes, self.max_bytes));
        }
        Ok(())
    }
}

/// The variable for [`MetadataLimits::max_entries`].
pub const MAX_HEADERS_ENV: &str = "MICRO_MAX_HEADERS";

/// The variable for [`MetadataLimits::max_bytes`].
pub const MAX_HEADER_BYTES_ENV: &str = "MICRO_MAX_HEADER_BYTES";

/// The error id of a message whose headers cross [`MetadataLimits`].
pub const TOO_MANY_HEADERS: &str = "micro.headers";

/// The code of that error: HTTP's 431 Request Header Fields Too Large.
pub const HEADERS_TOO_LARGE: i32 = 431;

fn too_many(what: &str, entries: usize, max: usize) -> Error {
    Error::new(
        TOO_MANY_HEADERS,
        HEADERS_TOO_LARGE,
        format!("{what} carries {entries} or more header entries, more than the {max} allowed (MICRO_MAX_HEADERS)"),
    )
}

fn too_large(what: &str, bytes: usize, max: usize) -> Error {
    Error::new(
        TOO_MANY_HEADERS,
        HEADERS_TOO_LARGE,
        format!("{what} carries {bytes} or more bytes of headers, more than the {max} allowed (MICRO_MAX_HEADER_BYTES)"),
    )
}

/// Collects one message's headers within [`MetadataLimits`]; see [`MetadataLimits::reader`].
#[derive(Debug)]
pub struct MetadataReader {
    metadata: Metadata,
    bytes: usize,
    limits: MetadataLimits,
    what: &'static str,
}

impl MetadataReader {
    /// Adds one entry (a repeated key overwrites, and still counts); an error once the message
    /// has crossed a limit.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let (key, value) = (key.into(), value.into());
        self.bytes = self.bytes.saturating_add(key.len() + value.len());
        if self.bytes > self.limits.max_bytes {
            return Err(too_large(self.what, self.bytes, self.limits.max_bytes));
        }
        if self.metadata.len() >= self.limits.max_entries {
            return Err(too_many(
                self.what,
                self.metadata.len() + 1,
                self.limits.max_entries,
            ));
        }
        self.metadata.insert(key, value);
        Ok(())
    }

    /// The headers read.
    pub fn finish(self) -> Metadata {
        self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_keep_the_written_key() {
        let mut m = Metadata::new();
        m.insert("Micro-Id", "1");
        assert_eq!(m.get("micro-id"), Some("1"));
        assert_eq!(m.get("MICRO-ID"), Some("1"));
        m.insert("MICRO-ID", "2");
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("Micro-Id"), Some("2"));
        assert_eq!(m.iter().next(), Some(("MICRO-ID", "2")));
        assert_eq!(m.remove("micro-ID"), Some("2".to_string()));
        assert!(m.is_empty());
    }

    #[test]
    fn collects_and_extends() {
        let a: Metadata = [("Trace-Id", "t-1"), ("User", "bob")].into_iter().collect();
        let mut b: Metadata = [("trace-id", "old")].into_iter().collect();
        b.extend_from(&a);
        assert_eq!(b.get("TRACE-ID"), Some("t-1"));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn equality_ignores_order_and_key_case() {
        let a: Metadata = [("A", "1"), ("b", "2")].into_iter().collect();
        let b: Metadata = [("B", "2"), ("a", "1")].into_iter().collect();
        let c: Metadata = [("a", "1"), ("b", "3")].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, Metadata::new());
        let keys: Vec<&str> = a.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["A", "b"]);
    }

    #[test]
    fn large_maps_stay_case_insensitive_and_ordered_through_the_index() {
        let mut m = Metadata::new();
        for i in 0..1000 {
            m.insert(format!("Key-{i}"), i.to_string());
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get("KEY-999"), Some("999"));
        assert_eq!(m.get("key-0"), Some("0"));
        assert_eq!(m.get("key-1000"), None);
        m.insert("KEY-5", "five");
        assert_eq!(m.len(), 1000, "a key in another case replaces");
        assert_eq!(m.get("key-5"), Some("five"));
        assert_eq!(m.remove("key-3"), Some("3".to_string()));
        assert_eq!(
            m.get("Key-4"),
            Some("4"),
            "positions after a removal still resolve"
        );
        m.retain(|k, _| !k.ends_with('7'));
        assert_eq!(m.get("key-17"), None);
        assert_eq!(m.get("key-18"), Some("18"));
        let keys: Vec<&str> = m.iter().take(3).map(|(k, _)| k).collect();
        assert_eq!(keys, ["Key-0", "Key-1", "Key-2"]);
        m.retain(|k, _| k == "Key-1");
        assert_eq!(m.get("key-1"), Some("1"));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn the_reader_refuses_past_either_limit() {
        let limits = MetadataLimits {
            max_entries: 3,
            max_bytes: 20,
        };
        let mut r = limits.reader("test message");
        for k in ["a", "b", "c"] {
            r.push(k, "1").expect("within the limits");
        }
        let e = r.push("d", "1").expect_err("a fourth entry");
        assert_eq!(e.code, HEADERS_TOO_LARGE);
        assert!(e.detail.contains("test message"), "{}", e.detail);
        let mut r = limits.reader("test message");
        let e = r.push("key", "x".repeat(30)).expect_err("too many bytes");
        assert!(e.detail.contains("bytes"), "{}", e.detail);
        assert!(limits.check("m", 3, 20).is_ok());
        assert!(limits.check("m", 4, 0).is_err());
        assert!(limits.check("m", 0, 21).is_err());
    }

    #[test]
    fn limits_read_from_variables() {
        let vars = |n: &str| match n {
            MAX_HEADERS_ENV => Some("10".to_string()),
            MAX_HEADER_BYTES_ENV => Some("1KiB".to_string()),
            _ => None,
        };
        let l = MetadataLimits::from_vars(vars).expect("valid values");
        assert_eq!((l.max_entries, l.max_bytes), (10, 1024));
        assert_eq!(
            MetadataLimits::from_vars(|_| None).expect("defaults"),
            MetadataLimits::default()
        );
        let bad = MetadataLimits::from_vars(|n| (n == MAX_HEADERS_ENV).then(|| "0".into()));
        assert!(bad.expect_err("zero").detail.contains(MAX_HEADERS_ENV));
    }
}
