//! Micro headers to AMQP message properties and back.
//!
//! Going out, every header is an AMQP header with a long-string value, which is what Go Micro's
//! plugin sends too. Coming in, anything a foreign client may have put there is read without
//! failing: strings as they are (invalid UTF-8 replaced), numbers and booleans as text, nested
//! tables and arrays as JSON.

use lapin::types::{AMQPValue, DecimalValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use micro_core::{Metadata, MetadataLimits, Result};

/// AMQP delivery mode of messages that durable queues keep on disk.
const PERSISTENT: u8 = 2;

/// The properties of an outgoing message: its headers, plus `content_type` and `message_id`
/// from `Content-Type` and `Micro-Id` for AMQP tools that show those. Errors name the header
/// that AMQP cannot carry.
pub(crate) fn to_properties(
    header: &Metadata,
    persistent: bool,
) -> Result<BasicProperties, String> {
    let mut table = FieldTable::default();
    for (key, value) in header.iter() {
        let name = ShortString::try_new(key).map_err(|_| {
            format!(
                "header name {:?}... is {} bytes; AMQP allows 255",
                truncate(key, 40),
                key.len()
            )
        })?;
        table.insert(name, AMQPValue::LongString(LongString::from(value)));
    }
    let mut props = BasicProperties::default().with_headers(table);
    if persistent {
        props = props.with_delivery_mode(PERSISTENT);
    }
    if let Some(ct) = header.get("Content-Type").and_then(short) {
        props = props.with_content_type(ct);
    }
    if let Some(id) = header.get("Micro-Id").and_then(short) {
        props = props.with_message_id(id);
    }
    Ok(props)
}

/// The headers of an incoming message. The AMQP `content_type` property becomes `Content-Type`
/// when no header says it already, so foreign publishers can name their codec the AMQP way.
/// More headers than `limits` allow is an error.
pub(crate) fn from_properties(props: &BasicProperties, limits: MetadataLimits) -> Result<Metadata> {
    let mut md = limits.reader("a RabbitMQ message");
    if let Some(table) = props.headers() {
        for (key, value) in table {
            md.push(key.as_str(), text(value))?;
        }
    }
    let mut md = md.finish();
    if !md.contains_key("Content-Type") {
        if let Some(ct) = props.content_type() {
            md.insert("Content-Type", ct.as_str());
        }
    }
    Ok(md)
}

fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
}

/// The first `max` bytes of `s` at most, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A header value as text.
fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::DecimalValue(d) => decimal(d),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::Void => String::new(),
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => json(value).to_string(),
    }
}

/// `value / 10^scale`, written out exactly.
fn decimal(d: &DecimalValue) -> String {
    let scale = usize::from(d.scale);
    if scale == 0 {
        return d.value.to_string();
    }
    let digits = format!("{:0width$}", d.value, width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{whole}.{fraction}")
}

fn json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(json).collect()),
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), json(v)))
                .collect(),
        ),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        // NaN and infinities have no JSON number: null.
        AMQPValue::Float(n) => Value::from(f64::from(*n)),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::Void => Value::Null,
        other => Value::String(text(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{ByteArray, FieldArray};

    #[test]
    fn headers_go_out_as_long_strings() {
        let md: Metadata = [
            ("Content-Type", "application/json"),
            ("Micro-Id", "id-1"),
            ("Trace-Id", "t"),
        ]
        .into_iter()
        .collect();
        let props = to_properties(&md, true).expect("fits");
        let table = props.headers().clone().expect("headers");
        assert_eq!(
            table.inner().get("Trace-Id"),
            Some(&AMQPValue::LongString("t".into()))
        );
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(
            from_properties(&props, MetadataLimits::default()).expect("within limits"),
            md
        );
    }

    #[test]
    fn overlong_header_names_are_refused() {
        let long = "k".repeat(300);
        let md: Metadata = [(long.as_str(), "v")].into_iter().collect();
        let err = to_properties(&md, false).expect_err("too long");
        assert!(err.contains("300 bytes"), "{err}");
    }

    #[test]
    fn odd_values_read_as_text() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongInt(-3));
        let mut table = FieldTable::default();
        let cases: Vec<(&str, AMQPValue, &str)> = vec![
            ("bool", AMQPValue::Boolean(true), "true"),
            ("i64", AMQPValue::LongLongInt(-42), "-42"),
            ("f64", AMQPValue::Double(1.5), "1.5"),
            (
                "dec",
                AMQPValue::DecimalValue(DecimalValue {
                    scale: 3,
                    value: 1234,
                }),
                "1.234",
            ),
            (
                "dec-small",
                AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 }),
                "0.05",
            ),
            ("void", AMQPValue::Void, ""),
            (
                "bytes",
                AMQPValue::ByteArray(ByteArray::from(vec![b'h', b'i'])),
                "hi",
            ),
            (
                "bad-utf8",
                AMQPValue::LongString(vec![b'a', 0xff].into()),
                "a\u{fffd}",
            ),
            (
                "array",
                AMQPValue::FieldArray(FieldArray::from(vec![
                    AMQPValue::LongString("x".into()),
                    AMQPValue::ShortShortUInt(7),
                    AMQPValue::FieldTable(inner),
                ])),
                r#"["x",7,{"n":-3}]"#,
            ),
            ("ts", AMQPValue::Timestamp(1_700_000_000), "1700000000"),
        ];
        for (k, v, _) in &cases {
            table.insert((*k).into(), v.clone());
        }
        let props = BasicProperties::default()
            .with_headers(table)
            .with_content_type("text/plain".into());
        let md = from_properties(&props, MetadataLimits::default()).expect("within limits");
        for (k, _, want) in &cases {
            assert_eq!(md.get(k), Some(*want), "header {k}");
        }
        assert_eq!(md.get("content-type"), Some("text/plain"));
        assert!(
            from_properties(&BasicProperties::default(), MetadataLimits::default())
                .expect("no headers")
                .is_empty()
        );
    }

    #[test]
    fn more_headers_than_the_limits_allow_are_refused() {
        let mut table = FieldTable::default();
        for i in 0..600 {
            table.insert(
                ShortString::from(format!("h{i}")),
                AMQPValue::LongString("v".into()),
            );
        }
        let props = BasicProperties::default().with_headers(table);
        let e = from_properties(&props, MetadataLimits::default()).expect_err("600 headers");
        assert_eq!(e.code, 431);
    }
}
