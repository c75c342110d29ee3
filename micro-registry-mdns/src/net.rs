//! The sockets: one listener on the group port shared by every process (SO_REUSEPORT), and
//! per interface one socket that sends queries and announcements and receives the unicast
//! answers to its queries.
//!
//! On loopback (the default) nothing is sent anywhere but to 224.0.0.251 through `lo` or to a
//! 127.0.0.0/8 address, and nothing from elsewhere is read: the multicast group is joined on
//! `lo` only, outgoing multicast is pinned to `lo`, and packets from or to other addresses are
//! dropped here as a last guard.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use micro_core::Error;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::options::{Interface, MdnsOptions};
use crate::ERROR_ID;

/// mDNS's IPv4 group.
pub(crate) const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// What to run when multicast does not work on loopback.
pub(crate) const LOOPBACK_SETUP: &str =
    "on Linux, as root: `ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo`";

/// One interface the registry uses, with its sending socket.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) name: String,
    pub(crate) addr: Ipv4Addr,
    pub(crate) socket: UdpSocket,
}

/// The registry's sockets.
#[derive(Debug)]
pub(crate) struct Net {
    /// Bound to `0.0.0.0:<port>`, member of the group on every link: receives queries and
    /// multicast answers, and sends unicast answers (from the mDNS port, as RFC 6762 wants).
    pub(crate) listener: UdpSocket,
    pub(crate) links: Vec<Link>,
    pub(crate) group: SocketAddr,
    loopback_only: bool,
}

impl Net {
    /// Opens the sockets for `opts`, or says which interface failed and why.
    pub(crate) fn open(opts: &MdnsOptions) -> Result<Net, Error> {
        let loopback_only = opts.interface == Interface::Loopback;
        let chosen = interfaces(&opts.interface)?;
        let listener = listener(opts.port).map_err(|e| {
            Error::internal(
                ERROR_ID,
                format!(
                    "mdns: cannot listen on UDP port {} (SO_REUSEADDR/SO_REUSEPORT): {e}",
                    opts.port
                ),
            )
        })?;
        let mut links = Vec::new();
        let mut failures = Vec::new();
        for (name, addr) in chosen {
            let joined = listener
                .join_multicast_v4(&GROUP, &addr)
                .and_then(|()| sender(addr));
            match joined {
                Ok(socket) => links.push((name, addr, socket)),
                Err(e) => {
                    let hint = if loopback_only {
                        format!("; {LOOPBACK_SETUP}")
                    } else {
                        String::new()
                    };
                    let why = format!(
                        "mdns: cannot use interface {name} ({addr}) for multicast {GROUP}: {e}{hint}"
                    );
                    if opts.interface != Interface::All {
                        return Err(Error::internal(ERROR_ID, why));
                    }
                    tracing::warn!("{why}");
                    failures.push(why);
                }
            }
        }
        if links.is_empty() {
            return Err(Error::internal(
                ERROR_ID,
                format!(
                    "mdns: no interface could join {GROUP}: {}",
                    failures.join("; ")
                ),
            ));
        }
        let tokio_socket = |s: Socket| UdpSocket::from_std(s.into());
        let listener =
            tokio_socket(listener).map_err(|e| Error::internal(ERROR_ID, format!("mdns: {e}")))?;
        let links = links
            .into_iter()
            .map(|(name, addr, s)| {
                tokio_socket(s)
                    .map(|socket| Link { name, addr, socket })
                    .map_err(|e| Error::internal(ERROR_ID, format!("mdns: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Net {
            listener,
            links,
            group: SocketAddr::V4(SocketAddrV4::new(GROUP, opts.port)),
            loopback_only,
        })
    }

    /// Whether packets from or to `addr` are allowed: on loopback only 127.0.0.0/8 (and the
    /// group).
    pub(crate) fn allowed(&self, addr: &SocketAddr) -> bool {
        !self.loopback_only || addr.ip().is_loopback() || *addr == self.group
    }

    /// Sends `packet` to the group on every link; fails only when no link could send it.
    pub(crate) async fn multicast(&self, packet: &[u8]) -> Result<(), Error> {
        let mut errors = Vec::new();
        for link in &self.links {
            if let Err(e) = link.socket.send_to(packet, self.group).await {
                errors.push(self.send_error(link, &e));
            }
        }
        if errors.len() == self.links.len() {
            return Err(Error::internal(ERROR_ID, errors.join("; ")));
        }
        for e in errors {
            tracing::warn!("{e}");
        }
        Ok(())
    }

    /// Sends `packet` to the group without waiting, for goodbyes while shutting down.
    pub(crate) fn try_multicast(&self, packet: &[u8]) {
        for link in &self.links {
            let _ = link.socket.try_send_to(packet, self.group);
        }
    }

    /// Sends `packet` to one querier, from the mDNS port.
    pub(crate) async fn unicast(&self, packet: &[u8], to: SocketAddr) {
        if !self.allowed(&to) {
            tracing::warn!(%to, "mdns: not answering a non-loopback address in loopback mode");
            return;
        }
        if let Err(e) = self.listener.send_to(packet, to).await {
            tracing::warn!(%to, "mdns: cannot answer: {e}");
        }
    }

    fn send_error(&self, link: &Link, e: &io::Error) -> String {
        let hint = if self.loopback_only {
            format!("; {LOOPBACK_SETUP}")
        } else {
            String::new()
        };
        format!(
            "mdns: cannot send to {} via {} ({}): {e}{hint}",
            self.group, link.name, link.addr
        )
    }
}

/// The interfaces `choice` stands for, by name and IPv4 address.
fn interfaces(choice: &Interface) -> Result<Vec<(String, Ipv4Addr)>, Error> {
    if *choice == Interface::Loopback {
        return Ok(vec![("lo".to_string(), Ipv4Addr::LOCALHOST)]);
    }
    let all = if_addrs::get_if_addrs().map_err(|e| {
        Error::internal(
            ERROR_ID,
            format!("mdns: cannot list network interfaces for {choice}: {e}"),
        )
    })?;
    let mut found: Vec<(String, Ipv4Addr)> = Vec::new();
    for i in &all {
        if let IpAddr::V4(v4) = i.ip() {
            let wanted = match choice {
                Interface::Name(n) => i.name == *n,
                _ => true,
            };
            if wanted && !found.iter().any(|(n, _)| *n == i.name) {
                found.push((i.name.clone(), v4));
            }
        }
    }
    if found.is_empty() {
        let mut names: Vec<&str> = Vec::new();
        for i in &all {
            if !names.contains(&i.name.as_str()) {
                names.push(&i.name);
            }
        }
        return Err(Error::internal(
            ERROR_ID,
            format!(
                "mdns: interface {choice} has no IPv4 address or does not exist (interfaces: {})",
                names.join(", ")
            ),
        ));
    }
    Ok(found)
}

/// The shared listener on `0.0.0.0:<port>`. It receives only the group memberships it joins
/// itself (IP_MULTICAST_ALL off), so a group joined on another interface by another program
/// does not leak in.
fn listener(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(true)?;
    #[cfg(target_os = "linux")]
    s.set_multicast_all_v4(false)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    s.set_multicast_loop_v4(true)?;
    Ok(s)
}

/// A socket that sends to the group through the interface with address `addr` only, bound to
/// that address so that answers to its queries come back to it alone.
fn sender(addr: Ipv4Addr) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(addr, 0).into())?;
    s.set_multicast_if_v4(&addr)?;
    s.set_multicast_loop_v4(true)?;
    // RFC 6762 asks for 255; the group is link-local, routers never forward it.
    s.set_multicast_ttl_v4(255)?;
    Ok(s)
}
