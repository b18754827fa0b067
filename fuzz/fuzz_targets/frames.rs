//! The relay's zero-copy Scanner: arbitrary bytes arrive in arbitrary chunks, the caller scans,
//! forwards (take_scanned/consume) and sometimes rewinds, drops (discard_head) or cuts (truncate)
//! messages as the relay does. Never panics; every returned message is well formed and within
//! max_packet_size; an error only ever points at a header whose length is out of range; and
//! without drops or cuts, the forwarded bytes are exactly the input and the messages found are
//! exactly those of a straightforward reference parse.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::protocol::scan::Scanner;

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Append the next `n` input bytes.
    Feed(u8),
    /// Call next/next_need until it returns None (or an error); `after` picks a follow-up
    /// for a returned message: rewind it, discard it, truncate at it, or nothing.
    Scan {
        after: u8,
    },
    Take,
    Consume(u16),
}

/// Input: max_packet_size (2 bytes, big-endian), flags (bit 0: server-side max, bits 1-2: the
/// need mode), the prefix length held for 'B', the op count n, n op bytes (top 2 bits: feed,
/// scan, take, consume; low 6 bits: the argument), then the byte stream.
struct Input {
    max: u16,
    big_max: bool,
    mode: u8,
    prefix: u8,
    ops: Vec<Op>,
    stream: Vec<u8>,
}

fn decode(data: &[u8]) -> Option<Input> {
    if data.len() < 5 {
        return None;
    }
    let n = (data[4] as usize).min(data.len() - 5);
    let ops = data[5..5 + n]
        .iter()
        .map(|&b| {
            let arg = b & 0x3f;
            match b >> 6 {
                0 => Op::Feed(arg.wrapping_mul(4).wrapping_add(1)),
                1 => Op::Scan { after: arg },
                2 => Op::Take,
                _ => Op::Consume(arg as u16 * 8),
            }
        })
        .collect();
    Some(Input {
        max: u16::from_be_bytes([data[0], data[1]]),
        big_max: data[2] & 1 == 1,
        mode: (data[2] >> 1) & 3,
        prefix: data[3],
        ops,
        stream: data[5 + n..].to_vec(),
    })
}

/// What a straightforward parse of the whole stream finds: (tag, body_len) per message, and
/// whether it ends in a header with an out-of-range length.
fn reference(stream: &[u8], max: usize) -> (Vec<(u8, usize)>, bool) {
    let mut out = Vec::new();
    let mut o = 0;
    while stream.len() - o >= 5 {
        let len = u32::from_be_bytes(stream[o + 1..o + 5].try_into().unwrap()) as usize;
        if len < 4 || len > max {
            return (out, true);
        }
        out.push((stream[o], len - 4));
        o += 1 + len;
        if o > stream.len() {
            break;
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some(inp) = decode(data) else { return };
    let max = if inp.big_max {
        usize::MAX >> 1
    } else {
        inp.max as usize
    };
    let eff_max = max.max(5);
    let mut sc = Scanner::new(max);
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut out: Vec<u8> = Vec::new();
    let mut seen: Vec<(u8, usize)> = Vec::new();
    let mut altered = false;
    let mut failed = false;
    let prefix = inp.prefix as usize;
    let mode = inp.mode % 3;
    let need = |t: u8| match t {
        b'P' | b'D' | b'C' => usize::MAX,
        b'B' => prefix,
        _ => 0,
    };
    // feed everything at the end, then scan and take until done, so the stream is covered
    let tail = [Op::Feed(255), Op::Scan { after: 3 }, Op::Take];
    let ops = inp
        .ops
        .iter()
        .chain(std::iter::repeat_n(&tail, 1 + inp.stream.len() / 255).flatten());
    'ops: for op in ops {
        match *op {
            Op::Feed(n) => {
                let n = (n as usize).min(inp.stream.len() - fed);
                buf.extend_from_slice(&inp.stream[fed..fed + n]);
                fed += n;
            }
            Op::Scan { after } => loop {
                let before = sc.scanned();
                let r = match mode {
                    0 => sc.next(&mut buf, |_| false),
                    1 => sc.next(&mut buf, |t| t == b'Z' || t == b'S'),
                    _ => sc.next_need(&mut buf, need),
                };
                assert!(sc.scanned() <= buf.len());
                let m = match r {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => {
                        // the error names the header at the scanned position
                        let s = sc.scanned();
                        assert!(s >= before || altered);
                        assert!(buf.len() - s >= 5);
                        let len =
                            u32::from_be_bytes(buf[s + 1..s + 5].try_into().unwrap()) as usize;
                        assert!(len < 4 || len > eff_max, "error on a valid header");
                        failed = true;
                        break 'ops;
                    }
                };
                assert!(m.body_len + 4 <= eff_max, "message over max_packet_size");
                assert!(m.start + 5 <= buf.len());
                assert_eq!(buf[m.start], m.tag);
                let len = u32::from_be_bytes(buf[m.start + 1..m.start + 5].try_into().unwrap());
                assert_eq!(len as usize, m.body_len + 4);
                if let Some(b) = &m.body {
                    assert_eq!(b.start, m.start + 5);
                    assert!(b.end <= buf.len() && b.end - b.start <= m.body_len);
                }
                assert!(sc.scanned() > m.start && sc.scanned() <= m.start + 5 + m.body_len);
                seen.push((m.tag, m.body_len));
                match after % 8 {
                    0 => {
                        sc.rewind(m.start);
                        seen.pop();
                        break; // the relay waits for more before looking again
                    }
                    1 if m.start == 0 => {
                        sc.discard_head(&mut buf);
                        altered = true;
                    }
                    2 => {
                        sc.truncate(&mut buf, m.start);
                        altered = true;
                        break;
                    }
                    _ => {}
                }
            },
            Op::Take => out.extend_from_slice(&sc.take_scanned(&mut buf)),
            Op::Consume(n) => {
                let n = (n as usize).min(sc.scanned());
                out.extend_from_slice(&buf[..n]);
                sc.consume(&mut buf, n);
            }
        }
    }
    if altered {
        return;
    }
    // nothing dropped: forwarded + still buffered is the input so far, in order (all of it,
    // unless an error stopped the feeding)
    assert!(failed || fed == inp.stream.len());
    assert_eq!(out.len() + buf.len(), fed);
    assert_eq!(&out[..], &inp.stream[..out.len()]);
    assert_eq!(&buf[..], &inp.stream[out.len()..fed]);
    let (want, bad) = reference(&inp.stream[..fed], eff_max);
    if failed {
        assert!(bad, "scanner failed where the reference did not");
        assert_eq!(seen, want);
    } else {
        assert!(!bad, "scanner missed a bad header");
        // the last message may be incomplete and, when bodies are held, not yet returned
        assert!(
            seen.len() == want.len() || seen.len() + 1 == want.len(),
            "{seen:?} {want:?}"
        );
        assert_eq!(&seen[..], &want[..seen.len()]);
    }
});
