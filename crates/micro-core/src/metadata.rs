use std::collections::BTreeMap;
use std::fmt;

/// A case-insensitive map of string keys to string values: the metadata that flows from caller
/// to handler (and on to the next call) as request headers.
///
/// Keys keep the case they were first inserted with, so they go out on the wire as written
/// (`Micro-Id`), but lookups ignore case (`micro-id`, `MICRO-ID`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    // lower-cased key -> (key as given, value)
    entries: BTreeMap<String, (String, String)>,
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `key`, whatever its case.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .get(&key.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing any value under the same key in another case.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        self.entries
            .insert(key.to_ascii_lowercase(), (key, value.into()));
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries
            .remove(&key.to_ascii_lowercase())
            .map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(&key.to_ascii_lowercase())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, keys as first inserted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.values().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Copies every entry of `other` into this map, overwriting equal keys.
    pub fn extend_from(&mut self, other: &Metadata) {
        for (k, v) in other.iter() {
            self.insert(k, v);
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
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
}
