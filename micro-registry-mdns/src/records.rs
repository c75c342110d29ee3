//! DNS messages in Go Micro's layout: building the records a node is published as, building
//! queries, and reading answers back into [`Service`]s.
//!
//! Encoding and decoding is `simple-dns`'s; this module only decides which records exist.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};

use micro_core::{Node, Service};
use simple_dns::rdata::{RData, A, AAAA, PTR, SRV, TXT};
use simple_dns::{
    CharacterString, Name, Packet, PacketFlag, Question as DnsQuestion, ResourceRecord, CLASS,
    QCLASS, QTYPE, TYPE,
};

use crate::txt::{self, TxtRecord};

/// The largest packet sent or read (mDNS allows 9000 bytes, RFC 6762 section 17).
pub(crate) const MAX_PACKET: usize = 9000;

/// The TTL of every record, as Go Micro writes it; 0 says goodbye.
pub(crate) const RECORD_TTL: u32 = 120;

/// The port Go Micro gives the `_services` listing entries.
const LIST_PORT: u16 = 9999;

/// The names of services and nodes under one domain (`micro`).
///
/// Node `greeter-1` of service `greeter` is the instance `greeter-1.greeter.micro.`, found
/// through the PTR `greeter.micro.`; service names are listed through the PTR
/// `_services.micro.` -> `greeter._services.micro.`. Names are kept without the final dot.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    domain: String,
}

impl Zone {
    pub(crate) fn new(domain: &str) -> Self {
        Zone {
            domain: domain.trim_matches('.').to_string(),
        }
    }

    /// `micro`: the domain, without dots around it.
    pub(crate) fn domain(&self) -> &str {
        &self.domain
    }

    /// `greeter.micro`: what a lookup asks for.
    pub(crate) fn service(&self, service: &str) -> String {
        format!("{}.{}", service, self.domain)
    }

    /// `<node id>.greeter.micro`: one node.
    pub(crate) fn instance(&self, service: &str, node_id: &str) -> String {
        format!("{}.{}.{}", node_id, service, self.domain)
    }

    /// `_services.micro`: what a listing asks for.
    pub(crate) fn list(&self) -> String {
        format!("_services.{}", self.domain)
    }

    /// `greeter._services.micro`: the listing entry of one service.
    pub(crate) fn list_instance(&self, service: &str) -> String {
        format!("{}._services.{}", service, self.domain)
    }

    /// `_services._dns-sd._udp.micro`: the DNS-SD enumeration name, answered as Go Micro does.
    pub(crate) fn enumeration(&self) -> String {
        format!("_services._dns-sd._udp.{}", self.domain)
    }

    /// The records of one node: PTR service -> instance, SRV (port, target), A or AAAA, TXT.
    ///
    /// The SRV target is the instance name itself, which carries the address record. Go
    /// Micro points at the host name instead, but one host runs many nodes, possibly with
    /// different addresses; a per-node target keeps them apart and Go clients read it as well.
    pub(crate) fn node_packet(
        &self,
        service: &str,
        node_id: &str,
        addr: SocketAddr,
        txt: &[String],
        ttl: u32,
    ) -> Result<Vec<u8>, String> {
        let instance = name(&self.instance(service, node_id))?;
        let mut text = TXT::new();
        for s in txt {
            let s = CharacterString::new(s.as_bytes())
                .map_err(|e| format!("TXT string too long: {e}"))?;
            text.add_char_string(s.into_owned());
        }
        let records = vec![
            record(
                name(&self.service(service))?,
                ttl,
                RData::PTR(PTR(instance.clone())),
            ),
            record(instance.clone(), ttl, srv(addr.port(), instance.clone())),
            record(instance.clone(), ttl, address(addr.ip())),
            record(instance, ttl, RData::TXT(text)),
        ];
        response(records)
    }

    /// The listing entry of a service, as Go Micro publishes it: PTR `_services.micro` ->
    /// `greeter._services.micro`, with SRV port 9999, A 0.0.0.0 and an empty TXT, so that Go
    /// clients see a complete entry.
    pub(crate) fn list_packet(&self, service: &str, ttl: u32) -> Result<Vec<u8>, String> {
        let instance = name(&self.list_instance(service))?;
        let records = vec![
            record(name(&self.list())?, ttl, RData::PTR(PTR(instance.clone()))),
            record(instance.clone(), ttl, srv(LIST_PORT, instance.clone())),
            record(
                instance.clone(),
                ttl,
                address(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            ),
            record(instance, ttl, RData::TXT(TXT::new())),
        ];
        response(records)
    }

    /// The answer to a DNS-SD enumeration: PTR `_services._dns-sd._udp.micro` -> each service.
    pub(crate) fn enumeration_packet<'s>(
        &self,
        services: impl IntoIterator<Item = &'s str>,
    ) -> Result<Vec<u8>, String> {
        let owner = name(&self.enumeration())?;
        let mut records = Vec::new();
        for s in services {
            let target = name(&self.service(s))?;
            records.push(record(owner.clone(), RECORD_TTL, RData::PTR(PTR(target))));
        }
        response(records)
    }

    /// A query for the PTR records of `names`.
    pub(crate) fn query_packet(names: &[String]) -> Result<Vec<u8>, String> {
        let mut p = Packet::new_query(0);
        for n in names {
            p.questions.push(DnsQuestion::new(
                name(n)?,
                QTYPE::TYPE(TYPE::PTR),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
        }
        p.build_bytes_vec_compressed()
            .map_err(|e| format!("cannot encode DNS query: {e}"))
    }

    /// The service a node answer describes, with that node only; `None` for records of other
    /// domains, listing entries, incomplete answers, goodbyes and TXT that does not decode
    /// (logged), or for another service than `want`.
    pub(crate) fn node(&self, inst: &Instance<'_>, want: Option<&str>) -> Option<Service> {
        if inst.gone {
            return None;
        }
        let under_domain = format!(".{}", self.domain.to_ascii_lowercase());
        let listing = format!("._services{under_domain}");
        if !inst.key.ends_with(&under_domain) || inst.key.ends_with(&listing) {
            return None;
        }
        if let Some(want) = want {
            let suffix = format!(".{}{}", want.to_ascii_lowercase(), under_domain);
            if !inst.key.ends_with(&suffix) {
                return None;
            }
        }
        let (port, ip, joined) = (inst.port?, inst.addr?, inst.txt?);
        let record = match txt::decode(joined) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(instance = inst.name, "mdns: skipping node: {e}");
                return None;
            }
        };
        if want.is_some_and(|w| w != record.service) {
            return None;
        }
        let suffix = format!(".{}{}", record.service.to_ascii_lowercase(), under_domain);
        if !inst.key.ends_with(&suffix) {
            tracing::warn!(
                instance = inst.name,
                service = record.service,
                "mdns: skipping node whose TXT names another service than its instance name"
            );
            return None;
        }
        let id = inst.name.get(..inst.name.len() - suffix.len())?;
        if id.is_empty() {
            return None;
        }
        let TxtRecord {
            service,
            version,
            endpoints,
            metadata,
        } = record;
        Some(Service {
            name: service,
            version,
            metadata: BTreeMap::new(),
            endpoints,
            nodes: vec![Node {
                id: id.to_string(),
                address: SocketAddr::new(ip, port).to_string(),
                metadata,
            }],
        })
    }

    /// Service names seen in listing answers, each with whether it is alive (TTL > 0).
    pub(crate) fn listed(&self, answers: &Answers) -> Vec<(String, bool)> {
        let owner = self.list().to_ascii_lowercase();
        let suffix = format!("._services.{}", self.domain.to_ascii_lowercase());
        answers
            .ptrs
            .iter()
            .filter(|((o, _), _)| *o == owner)
            .filter_map(|((_, target), ttl)| {
                let lower = target.to_ascii_lowercase();
                if !lower.ends_with(&suffix) || lower.len() == suffix.len() {
                    return None;
                }
                let name = target.get(..target.len() - suffix.len())?;
                Some((name.to_string(), *ttl > 0))
            })
            .collect()
    }
}

fn name(text: &str) -> Result<Name<'static>, String> {
    Name::new(text)
        .map(Name::into_owned)
        .map_err(|e| format!("{text:?} is not a valid DNS name ({e}); labels are at most 63 bytes"))
}

fn record(owner: Name<'static>, ttl: u32, data: RData<'static>) -> ResourceRecord<'static> {
    ResourceRecord::new(owner, CLASS::IN, ttl, data)
}

fn srv(port: u16, target: Name<'static>) -> RData<'static> {
    RData::SRV(SRV {
        priority: 10,
        weight: 1,
        port,
        target,
    })
}

fn address(ip: IpAddr) -> RData<'static> {
    match ip {
        IpAddr::V4(v4) => RData::A(A {
            address: u32::from(v4),
        }),
        IpAddr::V6(v6) => RData::AAAA(AAAA {
            address: u128::from(v6),
        }),
    }
}

fn response(records: Vec<ResourceRecord<'static>>) -> Result<Vec<u8>, String> {
    let mut p = Packet::new_reply(0);
    p.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    p.answers = records;
    let bytes = p
        .build_bytes_vec_compressed()
        .map_err(|e| format!("cannot encode DNS answer: {e}"))?;
    if bytes.len() > MAX_PACKET {
        return Err(format!(
            "the DNS answer is {} bytes, more than mDNS's {MAX_PACKET}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// One question of a query: the name asked for and whether a unicast answer is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Question {
    pub(crate) name: String,
    pub(crate) unicast: bool,
}

/// What a record holds, for the record types the registry reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    Ptr(String),
    Srv {
        port: u16,
        target: String,
    },
    /// The record's strings joined; `None` when they are not UTF-8 (so not Go Micro's hex).
    Txt(Option<String>),
    Addr(IpAddr),
}

/// A record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) ttl: u32,
    pub(crate) data: Data,
}

/// A received message, reduced to what the registry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) id: u16,
    pub(crate) response: bool,
    pub(crate) questions: Vec<Question>,
    pub(crate) records: Vec<Record>,
}

/// Reads a packet; the error says why it is not a DNS message.
pub(crate) fn parse(bytes: &[u8]) -> Result<Message, String> {
    let p = Packet::parse(bytes).map_err(|e| format!("not a DNS message: {e}"))?;
    let questions = p
        .questions
        .iter()
        .map(|q| Question {
            name: text(&q.qname),
            unicast: q.unicast_response,
        })
        .collect();
    let records = p
        .answers
        .iter()
        .chain(&p.additional_records)
        .chain(&p.name_servers)
        .filter_map(|rr| {
            let data = match &rr.rdata {
                RData::PTR(ptr) => Data::Ptr(text(&ptr.0)),
                RData::SRV(s) => Data::Srv {
                    port: s.port,
                    target: text(&s.target),
                },
                RData::TXT(t) => Data::Txt(String::try_from(t.clone()).ok()),
                RData::A(a) => Data::Addr(IpAddr::V4(a.address.into())),
                RData::AAAA(a) => Data::Addr(IpAddr::V6(a.address.into())),
                _ => return None,
            };
            Some(Record {
                name: text(&rr.name),
                ttl: rr.ttl,
                data,
            })
        })
        .collect();
    Ok(Message {
        id: p.id(),
        response: p.has_flags(PacketFlag::RESPONSE),
        questions,
        records,
    })
}

/// A name as dotted text without the final dot; labels are taken as they are.
fn text(n: &Name<'_>) -> String {
    let labels: Vec<String> = n
        .get_labels()
        .iter()
        .map(|l| String::from_utf8_lossy(l.as_ref()).into_owned())
        .collect();
    labels.join(".")
}

/// Records gathered from the answers to one query (or one announcement), keyed by lower-case
/// name, the later record winning. At most `limit` names are kept in each kind of record, so
/// that a lookup's memory does not grow with whatever the network sends during it.
#[derive(Debug)]
pub(crate) struct Answers {
    /// instance -> (name as sent, port, lower-case target, ttl)
    srv: BTreeMap<String, (String, u16, String, u32)>,
    /// instance -> (joined strings, ttl)
    txt: BTreeMap<String, (String, Option<String>, u32)>,
    /// name -> addresses
    addrs: BTreeMap<String, Vec<IpAddr>>,
    /// (lower-case owner, target as sent) -> ttl
    ptrs: BTreeMap<(String, String), u32>,
    limit: usize,
    /// Records left out for the limit.
    pub(crate) dropped: usize,
}

impl Default for Answers {
    fn default() -> Self {
        Answers::bounded(usize::MAX)
    }
}

/// One instance seen in [`Answers`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Instance<'a> {
    /// As sent.
    pub(crate) name: &'a str,
    /// Lower case.
    pub(crate) key: &'a str,
    /// A record of it came with TTL 0.
    pub(crate) gone: bool,
    pub(crate) port: Option<u16>,
    pub(crate) addr: Option<IpAddr>,
    pub(crate) txt: Option<&'a str>,
}

impl Answers {
    /// Answers keeping at most `limit` names of each kind of record.
    pub(crate) fn bounded(limit: usize) -> Self {
        Answers {
            srv: BTreeMap::new(),
            txt: BTreeMap::new(),
            addrs: BTreeMap::new(),
            ptrs: BTreeMap::new(),
            limit,
            dropped: 0,
        }
    }

    /// Adds the records of one packet.
    pub(crate) fn add(&mut self, records: &[Record]) {
        // A responder sends all addresses of a name together: they replace earlier ones.
        let mut fresh = HashSet::new();
        for r in records {
            let key = r.name.to_ascii_lowercase();
            let (known, held) = match &r.data {
                Data::Ptr(target) => (
                    self.ptrs.contains_key(&(key.clone(), target.clone())),
                    self.ptrs.len(),
                ),
                Data::Srv { .. } => (self.srv.contains_key(&key), self.srv.len()),
                Data::Txt(_) => (self.txt.contains_key(&key), self.txt.len()),
                Data::Addr(_) => (self.addrs.contains_key(&key), self.addrs.len()),
            };
            if !known && held >= self.limit {
                self.dropped = self.dropped.saturating_add(1);
                continue;
            }
            match &r.data {
                Data::Ptr(target) => {
                    self.ptrs.insert((key, target.clone()), r.ttl);
                }
                Data::Srv { port, target } => {
                    let target = target.to_ascii_lowercase();
                    self.srv.insert(key, (r.name.clone(), *port, target, r.ttl));
                }
                Data::Txt(joined) => {
                    self.txt
                        .insert(key, (r.name.clone(), joined.clone(), r.ttl));
                }
                Data::Addr(ip) => {
                    let list = self.addrs.entry(key.clone()).or_default();
                    if fresh.insert(key) {
                        list.clear();
                    }
                    if r.ttl > 0 {
                        list.push(*ip);
                    }
                }
            }
        }
    }

    /// The instances seen, in name order: those with an SRV or a TXT record.
    pub(crate) fn instances(&self) -> Vec<Instance<'_>> {
        let keys: BTreeSet<&String> = self.srv.keys().chain(self.txt.keys()).collect();
        keys.into_iter()
            .filter_map(|key| {
                let srv = self.srv.get(key);
                let txt = self.txt.get(key);
                let name = srv.map(|s| s.0.as_str()).or(txt.map(|t| t.0.as_str()))?;
                let gone = srv.is_some_and(|s| s.3 == 0) || txt.is_some_and(|t| t.2 == 0);
                // The address belongs to the SRV target; Go Micro's own nodes name it so.
                let addr = srv
                    .and_then(|s| self.addrs.get(&s.2))
                    .or_else(|| self.addrs.get(key))
                    .and_then(|list| {
                        list.iter()
                            .find(|ip| ip.is_ipv4())
                            .or_else(|| list.first())
                            .copied()
                    });
                Some(Instance {
                    name,
                    key: key.as_str(),
                    gone,
                    port: srv.map(|s| s.1),
                    addr,
                    txt: txt.and_then(|t| t.1.as_deref()),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeter_txt() -> Vec<String> {
        txt::encode(&TxtRecord {
            service: "greeter".into(),
            version: "latest".into(),
            metadata: BTreeMap::from([("protocol".into(), "mucp".into())]),
            ..Default::default()
        })
        .expect("encode")
    }

    #[test]
    fn node_packet_reads_back() {
        let zone = Zone::new("micro.");
        let addr: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
        let bytes = zone
            .node_packet("greeter", "greeter-1", addr, &greeter_txt(), RECORD_TTL)
            .expect("packet");
        let msg = parse(&bytes).expect("parse");
        assert!(msg.response);
        assert_eq!(msg.records[0].name, "greeter.micro");
        assert_eq!(
            msg.records[0].data,
            Data::Ptr("greeter-1.greeter.micro".into())
        );
        let mut answers = Answers::default();
        answers.add(&msg.records);
        let inst = answers.instances();
        assert_eq!(inst.len(), 1);
        let svc = zone.node(&inst[0], Some("greeter")).expect("node");
        assert_eq!(svc.version, "latest");
        assert_eq!(svc.nodes[0].id, "greeter-1");
        assert_eq!(svc.nodes[0].address, "127.0.0.1:9090");
        assert_eq!(svc.nodes[0].metadata["protocol"], "mucp");
        assert!(zone.node(&inst[0], Some("other")).is_none());
    }

    #[test]
    fn go_micro_layout_with_host_name_target() {
        // Go Micro names the A record after the host and points SRV at it.
        let zone = Zone::new("micro");
        let joined = greeter_txt().concat();
        let records = vec![
            Record {
                name: "greeter.micro".into(),
                ttl: 120,
                data: Data::Ptr("go.node.1.greeter.micro".into()),
            },
            Record {
                name: "go.node.1.greeter.micro".into(),
                ttl: 120,
                data: Data::Srv {
                    port: 8080,
                    target: "MyHost".into(),
                },
            },
            Record {
                name: "myhost".into(),
                ttl: 120,
                data: Data::Addr("10.1.2.3".parse().expect("ip")),
            },
            Record {
                name: "go.node.1.greeter.micro".into(),
                ttl: 120,
                data: Data::Txt(Some(joined)),
            },
        ];
        let mut answers = Answers::default();
        answers.add(&records);
        let inst = answers.instances();
        let svc = zone.node(&inst[0], Some("greeter")).expect("node");
        assert_eq!(svc.nodes[0].id, "go.node.1");
        assert_eq!(svc.nodes[0].address, "10.1.2.3:8080");
    }

    #[test]
    fn goodbyes_are_gone() {
        let zone = Zone::new("micro");
        let addr: SocketAddr = "[::1]:9090".parse().expect("addr");
        let bytes = zone
            .node_packet("greeter", "n", addr, &greeter_txt(), 0)
            .expect("packet");
        let mut answers = Answers::default();
        answers.add(&parse(&bytes).expect("parse").records);
        let inst = answers.instances();
        assert!(inst[0].gone);
        assert!(zone.node(&inst[0], None).is_none());
    }

    #[test]
    fn ipv6_nodes_use_aaaa() {
        let zone = Zone::new("micro");
        let addr: SocketAddr = "[::1]:9090".parse().expect("addr");
        let bytes = zone
            .node_packet("greeter", "n", addr, &greeter_txt(), RECORD_TTL)
            .expect("packet");
        let msg = parse(&bytes).expect("parse");
        assert!(msg.records.iter().any(|r| r.data == Data::Addr(addr.ip())));
        let mut answers = Answers::default();
        answers.add(&msg.records);
        let svc = zone.node(&answers.instances()[0], None).expect("node");
        assert_eq!(svc.nodes[0].address, "[::1]:9090");
    }

    #[test]
    fn listing_entries() {
        let zone = Zone::new("micro");
        let mut answers = Answers::default();
        for (svc, ttl) in [
            ("greeter", RECORD_TTL),
            ("go.micro.api", RECORD_TTL),
            ("old", 0),
        ] {
            let bytes = zone.list_packet(svc, ttl).expect("packet");
            answers.add(&parse(&bytes).expect("parse").records);
        }
        let listed = zone.listed(&answers);
        assert!(listed.contains(&("greeter".to_string(), true)));
        assert!(listed.contains(&("go.micro.api".to_string(), true)));
        assert!(listed.contains(&("old".to_string(), false)));
        // Listing entries are never read as nodes.
        assert!(answers
            .instances()
            .iter()
            .all(|i| zone.node(i, None).is_none()));
    }

    #[test]
    fn queries_read_back() {
        let bytes =
            Zone::query_packet(&["greeter.micro".into(), "_services.micro".into()]).expect("query");
        let msg = parse(&bytes).expect("parse");
        assert!(!msg.response);
        let names: Vec<_> = msg.questions.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["greeter.micro", "_services.micro"]);
    }

    #[test]
    fn over_long_labels_are_errors() {
        let zone = Zone::new("micro");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let id = "x".repeat(64);
        let err = zone
            .node_packet("greeter", &id, addr, &[], RECORD_TTL)
            .expect_err("too long");
        assert!(err.contains("63"), "{err}");
    }

    #[test]
    fn answers_keep_at_most_their_limit_of_names() {
        let zone = Zone::new("micro");
        let mut answers = Answers::bounded(2);
        for id in ["a", "b", "c"] {
            let addr: SocketAddr = "127.0.0.1:4000".parse().expect("address");
            let packet = zone
                .node_packet("greeter", id, addr, &greeter_txt(), RECORD_TTL)
                .expect("packet");
            answers.add(&parse(&packet).expect("parse").records);
        }
        // Each node is a PTR, an SRV, an A and a TXT record: the third node's are left out,
        // and what is known of the first two can still change.
        assert_eq!(answers.dropped, 4);
        let ids: Vec<&str> = answers.instances().iter().map(|i| i.key).collect();
        assert_eq!(ids, ["a.greeter.micro", "b.greeter.micro"]);
        let addr: SocketAddr = "127.0.0.1:4001".parse().expect("address");
        let again = zone
            .node_packet("greeter", "a", addr, &greeter_txt(), RECORD_TTL)
            .expect("packet");
        answers.add(&parse(&again).expect("parse").records);
        assert_eq!(answers.dropped, 4);
        assert_eq!(answers.instances()[0].port, Some(4001));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random bytes and mangled valid packets.
        let zone = Zone::new("micro");
        let addr: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
        let valid = zone
            .node_packet("greeter", "n", addr, &greeter_txt(), RECORD_TTL)
            .expect("packet");
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let mut bytes = if round % 2 == 0 {
                valid.clone()
            } else {
                (0..(next() % 600) as usize).map(|_| next() as u8).collect()
            };
            if !bytes.is_empty() {
                for _ in 0..4 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
                bytes.truncate((next() as usize) % (bytes.len() + 1));
            }
            if let Ok(msg) = parse(&bytes) {
                let mut answers = Answers::default();
                answers.add(&msg.records);
                for i in answers.instances() {
                    let _ = zone.node(&i, None);
                }
            }
        }
    }
}
