//! RabbitMQ message headers as a subscriber reads them: an AMQP field table in its wire
//! encoding (parsed by lapin's own parser, as for a delivery), from any publisher on the
//! broker, with every AMQP value type and nesting.
//!
//! Properties: nothing panics; what is delivered stays within the header limits and carries
//! the AMQP content type when no header names one; a message's headers published and received
//! come back as they were sent.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_broker_rabbitmq::fuzzing::{from_wire, round_trip};
use micro_core::MetadataLimits;
use micro_fuzz::{limits, metadata};

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    // The whole input as a header table, as a delivery carries it.
    let table = u.peek_bytes(u.len()).unwrap_or_default();
    for (lim, content_type) in [
        (MetadataLimits::default(), Some("application/json")),
        (
            MetadataLimits {
                max_entries: 2,
                max_bytes: 64,
            },
            None,
        ),
    ] {
        if let Some(Ok(md)) = from_wire(table, content_type, lim) {
            assert!(md.len() <= lim.max_entries + 1);
            if content_type.is_some() {
                assert!(
                    md.contains_key("Content-Type"),
                    "the AMQP content type was lost"
                );
            }
        }
    }
    let _ = limits(u)?;
    let header = metadata(u, 20)?;
    let big = MetadataLimits {
        max_entries: 1 << 20,
        max_bytes: 1 << 30,
    };
    if header.iter().all(|(k, _)| k.len() <= 255) {
        assert_eq!(round_trip(&header, big), Ok(header));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
