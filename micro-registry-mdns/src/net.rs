//! The sockets: one listener on the group port shared by every process (SO_REUSEPORT), and
//! per interface one socket that sends queries and announcements and receives the unicast
//! answers to its queries.
//!
//! On loopback (the default) nothing is sent anywhere but to 224.0.0.251 through `lo` or to a
//! 127.0.0.0/8 address, and nothing from elsewhere is read: the multicast group is joined on
//! `lo` only, outgoing multicast is pinned to `lo`, and packets from or to other addresses are
//! dropped here as a last guard.
//!
//! # Packets from 0.0.0.0
//!
//! A socket bound to `0.0.0.0` that multicasts out of `lo` without naming a source address
//! (Go Micro's: it picks the interface by index, or leaves it to the route) sends with the
//! source 0.0.0.0 when the host has no address but 127.0.0.1: Linux does not choose the
//! host-scoped 127.0.0.1 for a link-scoped multicast destination. (When another interface has
//! an address, Linux takes that one instead; with `IP_MULTICAST_IF 127.0.0.1` it takes
//! 127.0.0.1.) Such queries and announcements come from this host, but a source of 0.0.0.0
//! says nothing about where a packet came from: the kernel also accepts it from the LAN, in a
//! limited broadcast (255.255.255.255) or a 224.0.0.x multicast. The listener on
//! `0.0.0.0:<port>` receives broadcasts, so it cannot tell.
//!
//! In loopback mode a second socket, the group listener, takes these packets. It is bound to
//! `224.0.0.251:<port>`, so it receives only datagrams addressed to the group (no unicast, no
//! broadcast), and it is a member of the group on `lo` alone with `IP_MULTICAST_ALL` off, so
//! Linux hands it only the group's datagrams that arrived on `lo`. Packets on `lo` are made
//! on this host, whatever source address they carry: 0.0.0.0, or the address of another
//! interface, which Linux picks for such a socket when the host has one (seen here: a
//! socket pinned to `lo` by index sent from the address of `eth0`). The group listener
//! handles every packet the shared listener refuses, and nothing else; the shared listener
//! handles those from 127.0.0.0/8, so each packet is handled once. The registry answers such
//! a querier at 127.0.0.1 on its port, which reaches a socket bound to `0.0.0.0:<port>`, so no
//! answer ever leaves `lo`. The group listener exists on Linux only, where the
//! membership filter is known; elsewhere packets from 0.0.0.0 are dropped as before. The
//! registry's sockets are IPv4, so `::` never shows up as a source.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

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

/// Which of the registry's sockets a packet was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The shared listener on `0.0.0.0:<port>`.
    Listener,
    /// The group listener on `224.0.0.251:<port>` (loopback mode, Linux): only the group's
    /// datagrams that arrived on `lo`.
    Group,
    /// The sending socket of the link with this index (unicast answers to its queries).
    Link(usize),
}

impl Via {
    /// Whether queries read here are answered (the links only get answers).
    pub(crate) fn answers_queries(self) -> bool {
        matches!(self, Via::Listener | Via::Group)
    }
}

/// The registry's sockets.
#[derive(Debug)]
pub(crate) struct Net {
    /// Bound to `0.0.0.0:<port>`, member of the group on every link: receives queries and
    /// multicast answers, and sends unicast answers (from the mDNS port, as RFC 6762 wants).
    pub(crate) listener: UdpSocket,
    /// In loopback mode on Linux: bound to `224.0.0.251:<port>`, member of the group on `lo`
    /// only, for the packets with source 0.0.0.0 (see the module documentation).
    pub(crate) group_listener: Option<UdpSocket>,
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
        let group_listener = if loopback_only {
            // Without it the registry still works with peers that send from 127.0.0.1; only
            // sockets that send from 0.0.0.0 (Go Micro's) go unheard, so this is no failure.
            match group_listener(opts.port).and_then(|s| s.map(tokio_socket).transpose()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(
                        "mdns: cannot listen on {GROUP}:{} via lo, so packets from 0.0.0.0 \
                         (Go Micro's) are not heard: {e}",
                        opts.port
                    );
                    None
                }
            }
        } else {
            None
        };
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
            group_listener,
            links,
            group: SocketAddr::V4(SocketAddrV4::new(GROUP, opts.port)),
            loopback_only,
        })
    }

    /// Whether packets from or to `addr` are allowed: on loopback only 127.0.0.0/8 (and the
    /// group).
    pub(crate) fn allowed(&self, addr: &SocketAddr) -> bool {
        allowed(self.loopback_only, self.group, addr)
    }

    /// Whether a packet from `from`, read from `via`, is handled.
    pub(crate) fn admits(&self, from: &SocketAddr, via: Via) -> bool {
        admits(self.loopback_only, self.group, from, via)
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

    /// Sends `packet` to one querier, from the mDNS port. A querier seen as `0.0.0.0:<port>`
    /// is on this host and is answered at 127.0.0.1.
    pub(crate) async fn unicast(&self, packet: &[u8], to: SocketAddr) {
        let to = reply_address(to);
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

fn allowed(loopback_only: bool, group: SocketAddr, addr: &SocketAddr) -> bool {
    !loopback_only || addr.ip().is_loopback() || *addr == group
}

/// The packets each socket handles. The group listener exists in loopback mode only and
/// receives only the group's datagrams that arrived on `lo` (see the module documentation):
/// it takes those whose source the other sockets refuse in loopback mode (0.0.0.0, another
/// interface's address), and leaves the rest to the shared listener, which receives them too.
fn admits(loopback_only: bool, group: SocketAddr, from: &SocketAddr, via: Via) -> bool {
    match via {
        Via::Group => loopback_only && !allowed(loopback_only, group, from),
        Via::Listener | Via::Link(_) => allowed(loopback_only, group, from),
    }
}

/// Where a unicast answer to a querier seen as `from` goes: an unspecified source becomes
/// the loopback address, where a socket bound to the unspecified address receives it.
pub(crate) fn reply_address(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, a.port(), 0, 0))
        }
        other => other,
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

/// The group listener: bound to `224.0.0.251:<port>` so that it receives only datagrams sent
/// to the group, and a member of the group on `lo` only, with IP_MULTICAST_ALL off, so that
/// Linux delivers to it only the group's datagrams that arrived on `lo`. It never sends.
#[cfg(target_os = "linux")]
fn group_listener(port: u16) -> io::Result<Option<Socket>> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_multicast_all_v4(false)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(GROUP, port).into())?;
    s.join_multicast_v4(&GROUP, &Ipv4Addr::LOCALHOST)?;
    Ok(Some(s))
}

/// Elsewhere the membership filter is not known to be per interface: no group listener, and
/// packets from 0.0.0.0 stay refused.
#[cfg(not(target_os = "linux"))]
fn group_listener(_port: u16) -> io::Result<Option<Socket>> {
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(a), port))
    }

    #[test]
    fn loopback_mode_takes_other_sources_on_the_group_listener_only() {
        let group = v4([224, 0, 0, 251], 5353);
        let unspecified = v4([0, 0, 0, 0], 40000);
        let local = v4([127, 0, 0, 1], 40000);
        let lan = v4([192, 0, 2, 7], 40000);
        for via in [Via::Listener, Via::Link(0)] {
            assert!(admits(true, group, &local, via));
            assert!(!admits(true, group, &unspecified, via), "{via:?}");
            assert!(!admits(true, group, &lan, via), "{via:?}");
        }
        // Exactly one socket handles each packet the group listener also receives.
        assert!(admits(true, group, &unspecified, Via::Group));
        assert!(!admits(true, group, &local, Via::Group));
        // What arrived on lo with another interface's address came from this host too.
        assert!(admits(true, group, &lan, Via::Group));
        assert!(!admits(false, group, &lan, Via::Group));
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 40000));
        assert!(!admits(true, group, &v6, Via::Listener));
        // Other modes refuse nothing on the usual sockets.
        assert!(admits(false, group, &lan, Via::Listener));
        assert!(admits(false, group, &unspecified, Via::Listener));
    }

    #[test]
    fn unspecified_queriers_are_answered_at_loopback() {
        assert_eq!(
            reply_address(v4([0, 0, 0, 0], 40001)),
            v4([127, 0, 0, 1], 40001)
        );
        assert_eq!(
            reply_address(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 40002))),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 40002))
        );
        assert_eq!(
            reply_address(v4([127, 0, 0, 9], 40003)),
            v4([127, 0, 0, 9], 40003)
        );
        assert_eq!(
            reply_address(v4([192, 0, 2, 7], 40004)),
            v4([192, 0, 2, 7], 40004)
        );
        // The loopback answer passes the loopback guard; 0.0.0.0 itself would not.
        let group = v4([224, 0, 0, 251], 5353);
        assert!(allowed(
            true,
            group,
            &reply_address(v4([0, 0, 0, 0], 40005))
        ));
        assert!(!allowed(true, group, &v4([0, 0, 0, 0], 40005)));
    }
}
