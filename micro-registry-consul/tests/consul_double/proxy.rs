//! `OutageProxy`: a TCP forwarder in front of a real Consul agent, so that the outage test can
//! take "the agent" away and bring it back without touching the agent itself. (The double is
//! stopped and restarted directly; this is only for runs against a real agent.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

use super::{rebind, Running};

/// Forwards 127.0.0.1:<port> to `upstream` while started.
#[derive(Clone)]
pub(crate) struct OutageProxy {
    addr: SocketAddr,
    upstream: String,
    running: Arc<Mutex<Option<Running>>>,
}

impl OutageProxy {
    /// Starts forwarding from a free loopback port to `upstream` (`host:port`).
    pub(crate) async fn start(upstream: &str) -> OutageProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let proxy = OutageProxy {
            addr: listener.local_addr().expect("the proxy's address"),
            upstream: upstream.to_string(),
            running: Arc::new(Mutex::new(None)),
        };
        proxy.serve(listener);
        proxy
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Closes the port and every forwarded connection; returns once they are.
    pub(crate) async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(running) = running {
            running.stop().await;
        }
    }

    /// Forwards again on the same port.
    pub(crate) async fn restart(&self) {
        self.stop().await;
        let listener = rebind(self.addr).await;
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let running = Running::spawn(listener, move |mut client| {
            let upstream = upstream.clone();
            async move {
                if let Ok(mut server) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            }
        });
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(running);
    }
}
