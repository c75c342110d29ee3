use std::borrow::Cow;
use std::fmt;

/// A case-insensitive map of string keys to string values: the metadata that flows from caller
/// to handler (and on to the next call) as request headers.
///
/// Keys keep the case they were first inserted with, so they go out on the wire as written
/// (`Micro-Id`), but lookups ignore case (`micro-id`, `MICRO-ID`). Entries iterate in the
/// order they were first inserted. A message carries a handful of headers, so the entries sit
/// in a vector and lookups compare without allocating.
#[derive(Clone, Default)]
pub struct Metadata {
    // (key as given, value); no two keys equal ignoring ASCII case. Keys are mostly the
    // protocol's constant names, kept without copying them.
    entries: Vec<(Cow<'static, str>, String)>,
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
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))
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
        match self.position(&key) {
            Some(i) => self.entries[i] = (key, value),
            None => self.entries.push((key, value)),
        }
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.position(key).map(|i| self.entries.remove(i).1)
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
}
