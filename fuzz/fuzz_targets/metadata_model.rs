//! `Metadata` against a model: a vector of entries in insertion order with ASCII-case-folded
//! lookups, and a `BTreeMap` keyed by the lower-cased key. Random sequences of every mutating
//! operation, on small maps and on maps past the hash index's threshold; after each, every
//! lookup and the iteration order must agree with the model.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_core::Metadata;
use micro_fuzz::{text, NAMES};

#[derive(Default)]
struct Model {
    entries: Vec<(String, String)>,
}

impl Model {
    fn position(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(key))
    }

    fn insert(&mut self, key: &str, value: &str) {
        match self.position(key) {
            Some(i) => self.entries[i] = (key.to_string(), value.to_string()),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }

    fn folded(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    }
}

fn check(m: &Metadata, model: &Model, probes: &[String]) {
    let got: Vec<(&str, &str)> = m.iter().collect();
    let want: Vec<(&str, &str)> = model
        .entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, want, "entries or their order differ");
    assert_eq!(m.len(), model.entries.len());
    assert_eq!(m.is_empty(), model.entries.is_empty());
    let folded = model.folded();
    assert_eq!(
        folded.len(),
        model.entries.len(),
        "model holds a case duplicate"
    );
    for key in probes.iter().chain(model.entries.iter().map(|(k, _)| k)) {
        let want = folded.get(&key.to_ascii_lowercase()).map(String::as_str);
        assert_eq!(m.get(key), want, "get({key:?})");
        assert_eq!(m.contains_key(key), want.is_some());
        let upper = key.to_ascii_uppercase();
        assert_eq!(m.get(&upper), want, "get({upper:?})");
    }
    let bytes: usize = model.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert_eq!(m.byte_len(), bytes);
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut m = Metadata::new();
    let mut model = Model::default();
    let mut probes = Vec::new();
    // Each step checks the whole map against the model, so the steps are bounded: the cost
    // of an input stays linear in its length and the fuzzer keeps its pace.
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=7u8)? {
            0 | 1 => {
                let (k, v) = (text(u)?, text(u)?);
                m.insert(k.clone(), v.clone());
                model.insert(&k, &v);
            }
            2 => {
                let k = *u.choose(NAMES)?;
                let v = text(u)?;
                m.insert_static(k, v.clone());
                model.insert(k, &v);
            }
            3 => {
                let k = text(u)?;
                let want = model.position(&k).map(|i| model.entries.remove(i).1);
                assert_eq!(m.remove(&k), want, "remove({k:?})");
                if probes.len() < 16 {
                    probes.push(k);
                }
            }
            4 => {
                // Keep the entries whose key and value lengths have a parity drawn here.
                let parity = u.int_in_range(0..=1usize)?;
                m.retain(|k, v| (k.len() + v.len()) % 2 == parity);
                model
                    .entries
                    .retain(|(k, v)| (k.len() + v.len()) % 2 == parity);
            }
            5 => {
                let n = u.int_in_range(0..=20usize)?;
                let mut other = Metadata::new();
                let mut other_model = Model::default();
                for _ in 0..n {
                    let (k, v) = (text(u)?, text(u)?);
                    other.insert(k.clone(), v.clone());
                    other_model.insert(&k, &v);
                }
                m.extend_from(&other);
                for (k, v) in &other_model.entries {
                    model.insert(k, v);
                }
            }
            6 => {
                // Many entries at once, past the index threshold.
                let n = u.int_in_range(0..=40usize)?;
                let base: u16 = u.arbitrary()?;
                for i in 0..n {
                    let k = format!("k{}", usize::from(base) + i);
                    m.insert(k.clone(), "v");
                    model.insert(&k, "v");
                }
            }
            _ => {
                let clone = m.clone();
                assert_eq!(clone, m);
                let mut reversed = Metadata::new();
                for (k, v) in m.iter().collect::<Vec<_>>().into_iter().rev() {
                    reversed.insert(k.to_ascii_uppercase(), v);
                }
                assert_eq!(reversed, m, "equality must ignore order and key case");
                if probes.len() < 16 {
                    probes.push(text(u)?);
                }
            }
        }
        // Every lookup after each step while the map is small; past that the order and
        // length after each step and every lookup at the end, so that a large map does not
        // make each input cost its square.
        if model.entries.len() <= 48 {
            check(&m, &model, &probes);
        } else {
            assert_eq!(m.len(), model.entries.len());
            assert!(m
                .iter()
                .map(|(k, _)| k)
                .eq(model.entries.iter().map(|(k, _)| k.as_str())));
        }
    }
    check(&m, &model, &probes);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
