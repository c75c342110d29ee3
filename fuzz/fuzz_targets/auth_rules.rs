//! The auth wrapper's access rules (`Greeter.Hello`, `Greeter.*`, `*`, the default) and the
//! checks of a rule against claims read from a token.
//!
//! Properties: for endpoints of the form `Type.Method`, the rule chosen is the most specific
//! one set (the latest setting of a pattern winning), as a model of the rule list says;
//! `allows` passes exactly when the claims carry one of the scopes or roles asked for;
//! claims read from any JSON object never panic.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_fuzz::text;
use micro_wrapper_auth::{Access, Claims, Rules};

fn access(u: &mut Unstructured<'_>) -> Result<Access> {
    let items = |u: &mut Unstructured<'_>| -> Result<Vec<String>> {
        (0..u.int_in_range(0..=3)?).map(|_| word(u)).collect()
    };
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Access::Public,
        1 => Access::Authenticated,
        2 => Access::AnyScope(items(u)?),
        _ => Access::AnyRole(items(u)?),
    })
}

fn word(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(u.choose(&[
        "a", "b", "A", "Greeter", "Debug", "Health", "Hello", "x.y", "",
    ])?
    .to_string())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut rules = Rules::default();
    // The model: every setting in order.
    let mut set: Vec<(String, Access)> = vec![("Debug.Health".into(), Access::Public)];
    let mut default = Access::Authenticated;
    for _ in 0..u.int_in_range(0..=12)? {
        let a = access(u)?;
        match u.int_in_range(0..=4u8)? {
            0 => {
                rules.set_default(a.clone());
                default = a;
            }
            1 => {
                rules.set("*", a.clone());
                set.push(("*".into(), a));
            }
            2 => {
                let p = format!("{}.*", word(u)?);
                rules.set(&p, a.clone());
                set.push((p, a));
            }
            3 => {
                let p = format!("{}.{}", word(u)?, word(u)?);
                rules.set(&p, a.clone());
                set.push((p, a));
            }
            _ => {
                let p = text(u)?;
                rules.set(&p, a.clone());
                set.push((p, a));
            }
        }
    }
    for _ in 0..8 {
        let (kind, method) = (word(u)?, word(u)?);
        let endpoint = format!("{kind}.{method}");
        let latest = |pattern: &str| set.iter().rev().find(|(p, _)| p == pattern).map(|(_, a)| a);
        let want = if kind.contains('.') || method.contains('.') {
            None
        } else {
            Some(
                latest(&endpoint)
                    .or_else(|| latest(&format!("{kind}.*")))
                    .or_else(|| latest("*"))
                    .unwrap_or(&default),
            )
        };
        let got = rules.access(&endpoint);
        if let Some(want) = want {
            assert_eq!(got, want, "{endpoint}");
        }
        let _ = rules.access(&text(u)?);

        let mut claims = Claims::new(word(u)?);
        claims.scopes = (0..u.int_in_range(0..=2)?)
            .map(|_| word(u))
            .collect::<Result<_>>()?;
        claims.roles = (0..u.int_in_range(0..=2)?)
            .map(|_| word(u))
            .collect::<Result<_>>()?;
        let ok = match got {
            Access::Public | Access::Authenticated => true,
            Access::AnyScope(s) => s.iter().any(|s| claims.scopes.contains(s)),
            Access::AnyRole(r) => r.iter().any(|r| claims.roles.contains(r)),
        };
        assert_eq!(got.allows(&claims).is_ok(), ok);
    }
    if let Ok(serde_json::Value::Object(raw)) =
        serde_json::from_slice(u.peek_bytes(u.len()).unwrap_or_default())
    {
        if let Ok(c) = Claims::from_jwt(raw) {
            assert!(!c.subject.is_empty());
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
