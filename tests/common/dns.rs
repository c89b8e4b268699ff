//! A minimal authoritative DNS server on a loopback UDP port, for the tests of run-time
//! upstream resolution: it answers A queries for any name with the addresses currently set
//! (NXDOMAIN while none are), AAAA queries with no answer, and counts the queries. Only what a
//! resolver's A/AAAA lookup needs (RFC 1035 §4.1); it stops when dropped.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct DnsServer {
    pub addr: SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, q, s) = (answers.clone(), queries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                let ips = a.lock().unwrap().clone();
                if let Some(reply) = answer(&buf[..n], &ips) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            addr,
            answers,
            queries,
            stop,
        }
    }

    /// The A records every name resolves to from now on (none: NXDOMAIN).
    pub fn set(&self, ips: &[Ipv4Addr]) {
        *self.answers.lock().unwrap() = ips.to_vec();
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer(query: &[u8], ips: &[Ipv4Addr]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then QTYPE and QCLASS.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let records: &[Ipv4Addr] = if qtype == 1 { ips } else { &[] };
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[0..2]);
    // QR, opcode 0, AA, RD copied; RA; RCODE 3 (NXDOMAIN) when the name has no address at all.
    let rd = query[2] & 0x01;
    reply.push(0x84 | rd);
    reply.push(if ips.is_empty() { 0x83 } else { 0x80 });
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    for ip in records {
        // The name by pointer to the question, A, IN, TTL 0, four bytes.
        reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}
