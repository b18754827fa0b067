//! Startup-phase input: `parse_startup` on arbitrary bodies, and the async readers
//! (`read_startup`, then `read_message` in a loop as the login code does) over a stream that
//! delivers the bytes in arbitrary chunks.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::protocol::startup::{
    MAX_STARTUP_PACKET, StartupPacket, parse_startup, read_message, read_startup,
};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};

/// An in-memory peer that hands out its bytes in the given chunk sizes, never Pending.
struct Chunks {
    data: Vec<u8>,
    pos: usize,
    splits: VecDeque<usize>,
}

impl AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let left = self.data.len() - self.pos;
        let want = self.splits.pop_front().unwrap_or(usize::MAX).max(1);
        let n = left.min(want).min(buf.remaining());
        let p = self.pos;
        buf.put_slice(&self.data[p..p + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory reader never returns Pending"),
    }
}

// Input: cap for read_message (2 bytes, big-endian), chunking seed (1 byte: 0 = everything
// in one read, n = reads of 1..=n bytes), then the peer's bytes: a startup packet and messages.
fuzz_target!(|data: &[u8]| {
    // the raw bytes as a startup packet body (the part after the length word), any length
    check(data, parse_startup(data));
    if data.len() < 3 {
        return;
    }
    let max = u16::from_be_bytes([data[0], data[1]]) as usize;
    let stream = data[3..].to_vec();
    if stream.len() >= 4 {
        check(&stream[4..], parse_startup(&stream[4..]));
    }
    let mut splits = VecDeque::new();
    let mut x = data[2] as u32;
    if x != 0 {
        let mut covered = 0;
        while covered < stream.len() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let n = 1 + (x % data[2] as u32) as usize;
            splits.push_back(n);
            covered += n;
        }
    }
    let mut r = Chunks {
        data: stream,
        pos: 0,
        splits,
    };
    let mut buf = BytesMut::new();
    let total = r.data.len();
    match run(read_startup(&mut r, &mut buf)) {
        Ok(p) => {
            let len = u32::from_be_bytes(r.data[..4].try_into().unwrap()) as usize;
            assert!((8..=MAX_STARTUP_PACKET).contains(&len));
            check(&r.data[4..len], Ok(p));
            assert!(r.pos >= len && buf.len() == r.pos - len);
        }
        Err(_) => return,
    }
    let mut left = total - r.pos + buf.len();
    // as the login code does: whole tagged messages until the peer stops or misbehaves
    while let Ok((_tag, body)) = run(read_message(&mut r, &mut buf, max)) {
        assert!(body.len() + 4 <= max, "message over the cap");
        let now = total - r.pos + buf.len();
        assert_eq!(now + 5 + body.len(), left, "bytes lost or duplicated");
        left = now;
    }
});

fn check(body: &[u8], res: Result<StartupPacket, pgmux::protocol::ProtocolError>) {
    if let Ok(StartupPacket::Startup {
        params,
        protocol_options,
        ..
    }) = res
    {
        assert!(protocol_options.iter().all(|o| o.starts_with("_pq_.")));
        // every key and value came out of a NUL-terminated string of the body
        let strings = params.len() * 2 + protocol_options.len();
        assert!(body.iter().filter(|&&b| b == 0).count() > strings);
    }
}
