//! A DNS server for tests, on UDP loopback: A queries for the given names answer 127.0.0.1, other names NXDOMAIN.

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// Serve `names` (fully qualified, with the final dot). Returns the port and the number of A
/// queries answered with an address.
pub fn serve(names: &[&str]) -> (u16, Arc<AtomicUsize>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.queries.first() else {
                continue;
            };
            let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.queries = q.queries.clone();
            if names.contains(&query.name().to_ascii().to_ascii_lowercase()) {
                if query.query_type() == RecordType::A {
                    h.fetch_add(1, SeqCst);
                    r.answers.push(Record::from_rdata(
                        query.name().clone(),
                        300,
                        RData::A(A::new(127, 0, 0, 1)),
                    ));
                }
            } else {
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    (port, hits)
}
