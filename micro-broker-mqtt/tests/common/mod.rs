//! What the MQTT tests share: finding the server, test options, collecting handlers.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use micro_broker_mqtt::MqttOptions;
use micro_core::broker::{Delivery, Handler};
use tokio::sync::mpsc;

/// Where the tests expect Mosquitto (the project's machines run it there).
pub const ADDRESS: &str = "127.0.0.1:1883";
/// How long any single wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Whether an MQTT server answers on 127.0.0.1:1883. When it does not, the test fails if
/// MICRO_TEST_REQUIRE_SERVICES=1 and is skipped (saying why) otherwise.
pub fn mqtt_up() -> bool {
    let Ok(addr) = ADDRESS.parse::<SocketAddr>() else {
        return false;
    };
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
        return true;
    }
    let why = format!(
        "no MQTT server at {ADDRESS}: start Mosquitto on it (Debian package mosquitto; \
         scripts/test.sh does this)"
    );
    if micro_conformance::services_required() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// Options for the machine's Mosquitto.
pub fn options() -> MqttOptions {
    MqttOptions {
        client_id_prefix: "microtest".into(),
        connect_timeout: Duration::from_secs(3),
        ..MqttOptions::from_address(ADDRESS)
    }
}

/// A raw rumqttc client of the machine's Mosquitto, its event loop driven in the background;
/// what it receives goes to the returned channel.
pub fn raw(
    max_packet: usize,
) -> (
    rumqttc::AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::Publish>,
) {
    let id = format!("raw-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", 1883);
    opts.set_max_packet_size(max_packet, max_packet);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) if tx.is_closed() => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (client, rx)
}

/// A handler that forwards every delivery to a channel.
pub fn collector() -> (Handler, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, rx)
}

/// The next item, failing the test after [`PATIENCE`].
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: the sender went away"))
}

/// A topic of its own for one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}/{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
