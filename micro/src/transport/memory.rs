//! [`MemoryTransport`]: calls and streams between services of one process, with no sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use micro_core::rpc::{self, AttemptError};
use micro_core::transport::{CallHandler, CallParams, Listener, Message, Socket, Transport};
use micro_core::{Error, Result};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

const ID: &str = "micro.transport.memory";

/// How many messages a stream holds in each direction before a sender waits for the reader.
const STREAM_BUFFER: usize = 16;

/// In-process RPC: a server's listener is a name in a process-wide table, a unary call is a
/// function call into its handler, and a stream is a pair of bounded channels. For tests and
/// for single-process applications (`MICRO_TRANSPORT=memory`, with the memory registry).
///
/// Nodes register `protocol=memory` and addresses `memory:<n>`, which mean nothing outside the
/// process: any other process's client fails to reach them, as it should. Messages are handed
/// over as they are, never encoded on a wire, so nothing bounds their size but memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryTransport;

/// The listeners of this process, by address.
fn listeners() -> &'static Mutex<HashMap<String, Arc<Served>>> {
    static LISTENERS: OnceLock<Mutex<HashMap<String, Arc<Served>>>> = OnceLock::new();
    LISTENERS.get_or_init(Mutex::default)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a listener serves: its handler, and the calls under way, for a shutdown to wait on.
struct Served {
    handler: Arc<dyn CallHandler>,
    calls: TaskTracker,
}

fn find(addr: &str) -> Result<Arc<Served>> {
    lock(listeners()).get(addr).cloned().ok_or_else(|| {
        Error::new(
            ID,
            503,
            format!("nothing listens at {addr} in this process (the memory transport)"),
        )
    })
}

#[async_trait::async_trait]
impl Transport for MemoryTransport {
    fn name(&self) -> &str {
        "memory"
    }

    fn protocol(&self) -> &str {
        "memory"
    }

    async fn call(
        &self,
        addr: &str,
        req: &rpc::Request,
        params: CallParams,
    ) -> std::result::Result<rpc::Response, AttemptError> {
        let served = find(addr).map_err(AttemptError::Unreachable)?;
        let mut admitted = served.handler.admit().map_err(AttemptError::Answered)?;
        admitted
            .hold(req.body.len())
            .map_err(AttemptError::Answered)?;
        let call = served.handler.unary(req.clone(), Some(params.timeout));
        let answer = served.calls.track_future(call).await;
        drop(admitted);
        answer.map_err(AttemptError::Answered)
    }

    async fn stream(
        &self,
        addr: &str,
        req: &rpc::Request,
        _connect_timeout: Duration,
    ) -> Result<Box<dyn Socket>> {
        let served = find(addr)?;
        let admitted = served.handler.admit()?;
        let (mut client, server) = pair(addr);
        // The first message opens the stream, as the header of a stream on the wire does.
        let mut header = micro_core::headers::request_header(req, None);
        header.insert_static(micro_core::headers::STREAM, req.id.clone());
        client
            .send(Message {
                header,
                body: bytes::Bytes::new(),
            })
            .await?;
        let serve = served.handler.stream(Box::new(server));
        served.calls.spawn(async move {
            serve.await;
            drop(admitted);
        });
        Ok(Box::new(client))
    }

    async fn listen(&self, addr: &str, handler: Arc<dyn CallHandler>) -> Result<Box<dyn Listener>> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let port = addr.rsplit_once(':').map_or("0", |(_, port)| port);
        let address = match port {
            "" | "0" => format!("memory:{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            port => format!("memory:{port}"),
        };
        let served = Arc::new(Served {
            handler,
            calls: TaskTracker::new(),
        });
        let mut table = lock(listeners());
        if table.contains_key(&address) {
            return Err(Error::internal(
                ID,
                format!("{address} is already listening"),
            ));
        }
        table.insert(address.clone(), served.clone());
        Ok(Box::new(MemoryListener { address, served }))
    }
}

/// A memory transport's listener: its address stays taken until it shuts down.
#[derive(Debug)]
struct MemoryListener {
    address: String,
    served: Arc<Served>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Listener for MemoryListener {
    fn local_addr(&self) -> String {
        self.address.clone()
    }

    async fn shutdown(&self) {
        lock(listeners()).remove(&self.address);
        self.served.calls.close();
        self.served.calls.wait().await;
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        let mut table = lock(listeners());
        if table
            .get(&self.address)
            .is_some_and(|served| Arc::ptr_eq(served, &self.served))
        {
            table.remove(&self.address);
        }
    }
}

/// Two ends of a stream: what one sends the other receives, in order.
fn pair(addr: &str) -> (MemorySocket, MemorySocket) {
    let (to_server, from_client) = mpsc::channel(STREAM_BUFFER);
    let (to_client, from_server) = mpsc::channel(STREAM_BUFFER);
    let client_closed = Arc::new(AtomicBool::new(false));
    let server_closed = Arc::new(AtomicBool::new(false));
    let client = MemorySocket {
        tx: Some(to_server),
        rx: from_server,
        closed: client_closed.clone(),
        peer_closed: server_closed.clone(),
        peer: addr.to_string(),
    };
    let server = MemorySocket {
        tx: Some(to_client),
        rx: from_client,
        closed: server_closed,
        peer_closed: client_closed,
        peer: "memory client".to_string(),
    };
    (client, server)
}

/// One end of a stream.
#[derive(Debug)]
struct MemorySocket {
    /// `None` once this side closed.
    tx: Option<mpsc::Sender<Message>>,
    rx: mpsc::Receiver<Message>,
    /// Set when this side closes, so that the peer can tell an end from a drop.
    closed: Arc<AtomicBool>,
    peer_closed: Arc<AtomicBool>,
    peer: String,
}

#[async_trait::async_trait]
impl Socket for MemorySocket {
    async fn send(&mut self, msg: Message) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(Error::internal(ID, "the stream is closed for sending"));
        };
        tx.send(msg)
            .await
            .map_err(|_| Error::new(ID, 503, format!("{} went away from the stream", self.peer)))
    }

    async fn recv(&mut self) -> Result<Option<Message>> {
        // An mpsc receive is cancel-safe: a dropped `recv` takes nothing off the channel.
        match self.rx.recv().await {
            Some(msg) => Ok(Some(msg)),
            None if self.peer_closed.load(Ordering::Acquire) => Ok(None),
            None => Err(Error::new(
                ID,
                503,
                format!("{} went away from the stream", self.peer),
            )),
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.tx = None;
        Ok(())
    }

    fn remote_addr(&self) -> String {
        self.peer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_tells_an_end_from_a_drop() -> Result<()> {
        let (mut a, mut b) = pair("memory:test");
        a.send(Message::default()).await?;
        a.close().await?;
        assert_eq!(b.recv().await?, Some(Message::default()));
        assert_eq!(b.recv().await?, None);

        let (a, mut b) = pair("memory:test");
        drop(a);
        assert_eq!(b.recv().await.map_err(|e| e.code), Err(503));
        Ok(())
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        let result = MemoryTransport
            .call("memory:0", &rpc::Request::default(), CallParams::default())
            .await;
        assert!(matches!(result, Err(AttemptError::Unreachable(e)) if e.code == 503));
    }
}
