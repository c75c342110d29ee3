//! Where the MQTT server is and how the broker uses it: [`MqttOptions`], from code or from
//! the environment.

use std::time::Duration;

use micro_core::{env, Error, MetadataLimits, Result};

use crate::ERROR_ID;

/// `host:port`, `tcp://host:port` or `mqtt://host:port` (Go Micro's address forms).
pub const ENV_ADDRESS: &str = "MICRO_BROKER_ADDRESS";
/// The prefix of the client ids the broker connects with, `micro`.
pub const ENV_CLIENT_ID: &str = "MICRO_MQTT_CLIENT_ID";
/// User name for the server.
pub const ENV_USERNAME: &str = "MICRO_MQTT_USERNAME";
/// Password for the server.
pub const ENV_PASSWORD: &str = "MICRO_MQTT_PASSWORD";
/// The QoS messages are published and subscribed with: `1` (Go Micro's) or `0`.
pub const ENV_QOS: &str = "MICRO_MQTT_QOS";
/// `true` (default): queue groups are shared subscriptions `$share/<queue>/<topic>`;
/// `false`: queue groups are ignored, as Go Micro does.
pub const ENV_SHARED_SUBSCRIPTIONS: &str = "MICRO_MQTT_SHARED_SUBSCRIPTIONS";
/// MQTT keep-alive interval, `30s`.
pub const ENV_KEEP_ALIVE: &str = "MICRO_MQTT_KEEP_ALIVE";
/// How long connecting (and a subscription's acknowledgement) may take, `5s`.
pub const ENV_CONNECT_TIMEOUT: &str = "MICRO_MQTT_CONNECT_TIMEOUT";
/// How long a publish may wait for the server's PUBACK, `5s`.
pub const ENV_PUBLISH_TIMEOUT: &str = "MICRO_MQTT_PUBLISH_TIMEOUT";
/// The largest payload published or received, `1MiB`.
pub const ENV_MAX_MESSAGE_SIZE: &str = "MICRO_MQTT_MAX_MESSAGE_SIZE";

/// The server used when none is given, as in Go Micro.
pub const DEFAULT_ADDRESS: &str = "tcp://127.0.0.1:1883";

/// How a [`MqttBroker`](crate::MqttBroker) reaches the MQTT server and uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttOptions {
    /// `host:port`, `tcp://host:port` or `mqtt://host:port`; port 1883 when left out.
    pub address: String,
    /// Client ids are `<prefix>-<random>`: one for publishing, one per subscription.
    pub client_id_prefix: String,
    /// User name, if the server wants one.
    pub username: Option<String>,
    /// Password, if the server wants one.
    pub password: Option<String>,
    /// `1` (at least once between client and server, Go Micro's) or `0`.
    pub qos: u8,
    /// Queue groups as shared subscriptions (`$share/<queue>/<topic>`, MQTT 5 and Mosquitto's
    /// 3.1.1), so each message reaches one member; `false` ignores queue groups, as Go Micro.
    pub shared_subscriptions: bool,
    /// MQTT keep-alive. Default 30 s.
    pub keep_alive: Duration,
    /// How long connecting, and a subscription's acknowledgement, may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long `publish` waits for the server's PUBACK (QoS 1). Default 5 s.
    pub publish_timeout: Duration,
    /// The largest payload (Go Micro's envelope) `publish` sends (413 past it) and a
    /// subscriber takes: a larger packet drops the subscriber's connection, which comes back
    /// without it. Default 1 MiB.
    pub max_message_size: usize,
    /// How many headers, and bytes of them, one received message may carry
    /// (`MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES`).
    pub header_limits: MetadataLimits,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            address: DEFAULT_ADDRESS.into(),
            client_id_prefix: "micro".into(),
            username: None,
            password: None,
            qos: 1,
            shared_subscriptions: true,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            max_message_size: 1 << 20,
            header_limits: MetadataLimits::default(),
        }
    }
}

impl std::fmt::Debug for MqttOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttOptions")
            .field("address", &self.address)
            .field("client_id_prefix", &self.client_id_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("qos", &self.qos)
            .field("shared_subscriptions", &self.shared_subscriptions)
            .field("keep_alive", &self.keep_alive)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("header_limits", &self.header_limits)
            .finish()
    }
}

impl MqttOptions {
    /// The defaults at `address`; empty keeps the default.
    pub fn from_address(address: &str) -> Self {
        let mut opts = MqttOptions::default();
        if !address.trim().is_empty() {
            opts.address = address.trim().to_string();
        }
        opts
    }

    /// Host and port of [`address`](Self::address): `tcp://` and `mqtt://` (or none) with
    /// port 1883 by default; a list keeps its first entry, as Go Micro connects to one.
    pub fn host_port(&self) -> Result<(String, u16)> {
        let first = self.address.split(',').next().unwrap_or_default().trim();
        let rest = match first.split_once("://") {
            None => first,
            Some(("tcp" | "mqtt", rest)) => rest,
            Some((scheme, _)) => {
                return Err(Error::bad_request(
                    ERROR_ID,
                    format!(
                        "MQTT address {first:?}: scheme {scheme}:// is not supported (use tcp:// \
                         or mqtt://; TLS and websockets are not built in)"
                    ),
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => {
                let port = port.parse::<u16>().map_err(|_| {
                    Error::bad_request(ERROR_ID, format!("MQTT address {first:?}: bad port"))
                })?;
                (host, port)
            }
            _ => (rest, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(Error::bad_request(
                ERROR_ID,
                format!("MQTT address {first:?} has no host"),
            ));
        }
        Ok((host.to_string(), port))
    }

    /// The options in the environment (the table in the crate documentation) over the
    /// defaults. A value that does not read is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables (tests use a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let invalid =
            |name: &str, v: &str, expected: &str| env::invalid_from(ERROR_ID, name, v, expected);
        let duration = |name: &str| -> Result<Option<Duration>> {
            get(name)
                .map(|v| {
                    env::parse_duration(&v)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| invalid(name, &v, "a duration such as 500ms, 5s or 2m"))
                })
                .transpose()
        };
        let mut opts = MqttOptions::default();
        if let Some(a) = get(ENV_ADDRESS) {
            opts.address = a;
        }
        if let Some(v) = get(ENV_CLIENT_ID) {
            opts.client_id_prefix = v;
        }
        opts.username = get(ENV_USERNAME);
        opts.password = get(ENV_PASSWORD);
        if let Some(v) = get(ENV_QOS) {
            opts.qos = match v.as_str() {
                "0" => 0,
                "1" => 1,
                _ => return Err(invalid(ENV_QOS, &v, "0 or 1")),
            };
        }
        if let Some(v) = get(ENV_SHARED_SUBSCRIPTIONS) {
            opts.shared_subscriptions = env::parse_bool(&v)
                .ok_or_else(|| invalid(ENV_SHARED_SUBSCRIPTIONS, &v, "true or false"))?;
        }
        if let Some(d) = duration(ENV_KEEP_ALIVE)? {
            opts.keep_alive = d;
        }
        if let Some(d) = duration(ENV_CONNECT_TIMEOUT)? {
            opts.connect_timeout = d;
        }
        if let Some(d) = duration(ENV_PUBLISH_TIMEOUT)? {
            opts.publish_timeout = d;
        }
        if let Some(v) = get(ENV_MAX_MESSAGE_SIZE) {
            opts.max_message_size = env::parse_size(&v)
                .filter(|n| (1..=268_435_455).contains(n))
                .ok_or_else(|| {
                    invalid(
                        ENV_MAX_MESSAGE_SIZE,
                        &v,
                        "a size such as 1MiB, at most MQTT's 256 MiB",
                    )
                })?;
        }
        opts.header_limits = MetadataLimits::from_vars(get)?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<MqttOptions> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MqttOptions::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_are_go_micros() {
        let opts = from(&[]).expect("defaults");
        assert_eq!(opts, MqttOptions::default());
        assert_eq!(
            opts.host_port().expect("address"),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(opts.qos, 1);
    }

    #[test]
    fn reads_every_variable() {
        let opts = from(&[
            (ENV_ADDRESS, "mqtt://broker.local:1884"),
            (ENV_CLIENT_ID, "billing"),
            (ENV_USERNAME, "bob"),
            (ENV_PASSWORD, "s3cret"),
            (ENV_QOS, "0"),
            (ENV_SHARED_SUBSCRIPTIONS, "false"),
            (ENV_KEEP_ALIVE, "10s"),
            (ENV_CONNECT_TIMEOUT, "2s"),
            (ENV_PUBLISH_TIMEOUT, "750ms"),
            (ENV_MAX_MESSAGE_SIZE, "64KiB"),
            ("MICRO_MAX_HEADER_BYTES", "1KiB"),
        ])
        .expect("all set");
        assert_eq!(
            opts.host_port().expect("address"),
            ("broker.local".into(), 1884)
        );
        assert_eq!(opts.client_id_prefix, "billing");
        assert_eq!(opts.username.as_deref(), Some("bob"));
        assert_eq!(opts.password.as_deref(), Some("s3cret"));
        assert_eq!(opts.qos, 0);
        assert!(!opts.shared_subscriptions);
        assert_eq!(opts.keep_alive, Duration::from_secs(10));
        assert_eq!(opts.connect_timeout, Duration::from_secs(2));
        assert_eq!(opts.publish_timeout, Duration::from_millis(750));
        assert_eq!(opts.max_message_size, 64 * 1024);
        assert_eq!(opts.header_limits.max_bytes, 1024);
        assert!(!format!("{opts:?}").contains("s3cret"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            (ENV_QOS, "2"),
            (ENV_SHARED_SUBSCRIPTIONS, "maybe"),
            (ENV_KEEP_ALIVE, "soon"),
            (ENV_MAX_MESSAGE_SIZE, "1GiB"),
        ] {
            let err = from(&[(var, value)]).expect_err(var);
            assert!(err.detail.contains(var), "{}", err.detail);
        }
    }

    #[test]
    fn addresses_as_go_micro_writes_them() {
        let hp = |a: &str| MqttOptions::from_address(a).host_port();
        assert_eq!(hp("127.0.0.1").expect("host"), ("127.0.0.1".into(), 1883));
        assert_eq!(
            hp("tcp://10.0.0.1:1999").expect("tcp"),
            ("10.0.0.1".into(), 1999)
        );
        assert_eq!(hp("a:1,b:2").expect("list"), ("a".into(), 1));
        assert_eq!(hp("[::1]:1883").expect("v6"), ("::1".into(), 1883));
        for bad in ["ssl://h:8883", "ws://h", "tcp://:1883", "h:notaport"] {
            assert_eq!(hp(bad).expect_err(bad).code, 400, "{bad}");
        }
    }
}
