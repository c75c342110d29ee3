//! Server only: h2load (nghttp2's HTTP/2 load generator, a client that is neither tonic nor
//! Micro) against raw tonic's echo server and against Micro's echo service on the grpc
//! transport, alternating in one run, so the ratio measures the servers alone.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use micro::core::Registry;
use micro::registry::MemoryRegistry;

use crate::report::{Section, Table, Target};
use crate::stats;
use crate::Settings;

/// h2load's connections and streams in flight on each.
const CONNECTIONS: usize = 4;
const STREAMS: usize = 16;
/// The request payload.
const PAYLOAD: usize = 128;

/// Runs the section, or says why it could not (h2load missing, a server that did not start).
pub(crate) fn run(settings: &Settings) -> Section {
    let (measure, passes) = match settings.quick {
        true => (Duration::from_secs(1), 1),
        false => (Duration::from_secs(3), 3),
    };
    let mut section = Section::new(
        "gRPC server under h2load",
        format!(
            "h2load (Debian's `nghttp2-client`) sends `echo.Echo/Call` with a {PAYLOAD} B \
             payload over {CONNECTIONS} h2c connections with {STREAMS} streams in flight on \
             each, for {:.0} s after a 0.5 s warm-up, to raw tonic's echo server and to a Micro \
             echo service on the grpc transport, both in this process on loopback. The two \
             alternate, {passes} run(s) each, and each keeps its fastest run; the ratio divides \
             Micro's requests/s by tonic's.",
            measure.as_secs_f64()
        ),
    );
    let body = match request_file() {
        Ok(path) => path,
        Err(e) => {
            section.failed("h2load", e);
            return section;
        }
    };
    let servers = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
        .and_then(|rt| {
            let addrs = rt.block_on(async {
                let tonic = crate::rpc::tonic_server().await?.to_string();
                let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
                let transport =
                    micro::plugins::transport("grpc").map_err(|e| format!("transport: {e}"))?;
                let micro = crate::rpc::micro_server(registry, transport).await?;
                Ok::<_, String>((tonic, micro))
            })?;
            Ok((rt, addrs))
        });
    let (_runtime, (tonic, micro)) = match servers {
        Ok(s) => s,
        Err(e) => {
            section.failed("h2load servers", e);
            return section;
        }
    };
    let mut best = [0.0f64; 2];
    for _ in 0..passes {
        for (i, addr) in [&tonic, &micro].into_iter().enumerate() {
            match h2load(addr, &body, measure) {
                Ok(rate) => best[i] = best[i].max(rate),
                Err(e) => {
                    section.failed("h2load", e);
                    return section;
                }
            }
        }
    }
    let mut table = Table::new(&["server", "requests/s", "vs tonic"]);
    table.row(vec![
        "raw tonic (baseline)".into(),
        stats::count(best[0]),
        "1.00x".into(),
    ]);
    table.row(vec![
        "Micro, grpc transport".into(),
        stats::count(best[1]),
        stats::ratio(best[1], best[0]),
    ]);
    section.tables.push(table);
    let ratio = if best[0] > 0.0 {
        best[1] / best[0]
    } else {
        0.0
    };
    section.targets.push(Target {
        goal: "Micro grpc server under h2load >= 0.95x raw tonic".into(),
        measured: format!("{ratio:.2}x"),
        met: Some(ratio >= 0.95),
    });
    section
}

/// Writes one gRPC request message (the 5-byte frame header, then `EchoRequest`) to a file
/// for h2load's `-d`.
fn request_file() -> Result<std::path::PathBuf, String> {
    // EchoRequest { payload: 1 => bytes }: tag 0x0a, a varint length, the bytes.
    let mut message = vec![0x0a];
    let mut len = PAYLOAD;
    while len >= 0x80 {
        message.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    message.push(len as u8);
    message.extend(std::iter::repeat_n(b'x', PAYLOAD));
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let path = std::env::temp_dir().join(format!("micro-bench-h2load-{}.bin", std::process::id()));
    std::fs::write(&path, frame).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// One h2load run against `addr`; its requests/s, or why there is none. Every request must
/// have succeeded.
fn h2load(addr: &str, body: &std::path::Path, measure: Duration) -> Result<f64, String> {
    let out = Command::new("h2load")
        .arg("-c")
        .arg(CONNECTIONS.to_string())
        .arg("-m")
        .arg(STREAMS.to_string())
        .arg("-D")
        .arg(format!("{}s", measure.as_secs()))
        .arg("--warm-up-time=500ms")
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("http://{addr}/echo.Echo/Call"))
        .output()
        .map_err(|e| {
            format!("cannot run h2load ({e}); install it with `apt-get install nghttp2-client`")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(format!("h2load failed: {}{}", why.trim(), text.trim()));
    }
    // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, ..."
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .ok_or_else(|| format!("h2load printed no request counts: {text}"))?;
    let count = |word: &str| -> Option<u64> {
        let at = requests.find(&format!(" {word}"))?;
        requests[..at].rsplit([' ', ',']).next()?.parse().ok()
    };
    let (done, ok) = (count("done"), count("succeeded"));
    if done.is_none() || done != ok || ok == Some(0) {
        return Err(format!("not every request succeeded: {requests}"));
    }
    // "finished in 3.00s, 41234.50 req/s, 4.52MB/s"
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("finished in ")?;
            let rate = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            rate.parse::<f64>().ok()
        })
        .ok_or_else(|| format!("h2load printed no rate: {text}"))
}
