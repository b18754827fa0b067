//! Zero-copy message-boundary tracking over a relay buffer: finds each message's tag without copying bodies.
//!
//! Bytes are appended to a `BytesMut` as they are read; the scanner walks message headers and marks
//! how much of the buffer is complete enough to forward (`scanned`). Bodies are never copied: only
//! messages the caller asks for (`need_body`) are held back until complete so they can be inspected.

use super::{ProtocolError, be_u32};
use bytes::{Buf, BytesMut};
use std::ops::Range;

/// One message header found by the scanner.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    /// Offset of the tag byte in the buffer.
    pub start: usize,
    /// Body length (without tag and length field).
    pub body_len: usize,
    /// The complete body, when `need_body(tag)` asked for it.
    pub body: Option<Range<usize>>,
}

#[derive(Debug)]
pub struct Scanner {
    /// Bytes at the front of the buffer that are ready to forward.
    scanned: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// When set, the remaining body bytes of the current message are dropped, not forwarded.
    discarding: bool,
    max: usize,
}

impl Scanner {
    pub fn new(max_packet_size: usize) -> Self {
        Scanner {
            scanned: 0,
            remaining: 0,
            discarding: false,
            max: max_packet_size.max(5),
        }
    }

    /// Bytes at the front of the buffer ready to be forwarded.
    #[inline]
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// True when the scanner is between messages (nothing partially forwarded).
    #[inline]
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// The caller wrote `n` scanned bytes; drop them from the buffer.
    #[inline]
    pub fn consume(&mut self, buf: &mut BytesMut, n: usize) {
        debug_assert!(n <= self.scanned);
        buf.advance(n);
        self.scanned -= n;
    }

    /// Split the scanned (complete, forwardable) bytes off the front of the buffer, without copying.
    #[inline]
    pub fn take_scanned(&mut self, buf: &mut BytesMut) -> BytesMut {
        let n = std::mem::take(&mut self.scanned);
        if n == 0 {
            // no split (a split shares the buffer: two atomic counts for nothing)
            return BytesMut::new();
        }
        buf.split_to(n)
    }

    /// Cut the buffer at `at` (e.g. to drop a Terminate and anything after it).
    pub fn truncate(&mut self, buf: &mut BytesMut, at: usize) {
        buf.truncate(at);
        self.scanned = self.scanned.min(at);
        self.remaining = 0;
        self.discarding = false;
    }

    /// Drop the message just returned by `next` (which must start at offset 0), including
    /// body bytes that have not arrived yet.
    pub fn discard_head(&mut self, buf: &mut BytesMut) {
        let n = self.scanned;
        buf.advance(n);
        self.scanned = 0;
        if self.remaining > 0 {
            self.discarding = true;
        }
    }

    /// Find the next message header in `buf` past the scanned region.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        need_body: impl Fn(u8) -> bool,
    ) -> Result<Option<Msg>, ProtocolError> {
        self.next_need(buf, |t| if need_body(t) { usize::MAX } else { 0 })
    }

    /// Un-scan the message just returned by `next`/`next_need` (it starts at `start` and none of
    /// it has been taken), so the next call returns it again.
    pub fn rewind(&mut self, start: usize) {
        self.scanned = start;
        self.remaining = 0;
        self.discarding = false;
    }

    /// Like `next`, but `need(tag)` says how many body bytes must be present before the message
    /// is returned: 0 = none (streamed), `usize::MAX` = the whole body, n = the first n bytes
    /// (or the whole body if shorter); `body` then covers what is held, the rest streams.
    pub fn next_need(
        &mut self,
        buf: &mut BytesMut,
        need: impl Fn(u8) -> usize,
    ) -> Result<Option<Msg>, ProtocolError> {
        if self.remaining > 0 {
            let avail = buf.len() - self.scanned;
            let t = avail.min(self.remaining);
            if self.discarding {
                let s = self.scanned;
                if s == 0 {
                    buf.advance(t);
                } else {
                    let mut tail = buf.split_off(s);
                    tail.advance(t);
                    buf.unsplit(tail);
                }
                self.remaining -= t;
                if self.remaining > 0 {
                    return Ok(None);
                }
                self.discarding = false;
            } else {
                self.scanned += t;
                self.remaining -= t;
                if self.remaining > 0 {
                    return Ok(None);
                }
            }
        }
        let s = self.scanned;
        if buf.len() - s < 5 {
            return Ok(None);
        }
        let tag = buf[s];
        let len = be_u32(&buf[s + 1..s + 5]) as usize;
        if len < 4 || len > self.max {
            return Err(ProtocolError::BadHeader);
        }
        let body_len = len - 4;
        let want = need(tag).min(body_len);
        if want == body_len && want > 0 || need(tag) == usize::MAX {
            if buf.len() - s - 5 < body_len {
                return Ok(None);
            }
            self.scanned = s + 5 + body_len;
            return Ok(Some(Msg {
                tag,
                start: s,
                body_len,
                body: Some(s + 5..s + 5 + body_len),
            }));
        }
        if want > 0 {
            if buf.len() - s - 5 < want {
                return Ok(None);
            }
            self.scanned = s + 5 + want;
            self.remaining = body_len - want;
            return Ok(Some(Msg {
                tag,
                start: s,
                body_len,
                body: Some(s + 5..s + 5 + want),
            }));
        }
        let avail = buf.len() - s - 5;
        let t = avail.min(body_len);
        self.scanned = s + 5 + t;
        self.remaining = body_len - t;
        Ok(Some(Msg {
            tag,
            start: s,
            body_len,
            body: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn walks_messages_split_byte_by_byte() {
        let mut stream = msg(b'D', &[7u8; 100]);
        stream.extend(msg(b'Z', b"I"));
        stream.extend(msg(b'C', b"SELECT 1\0"));
        let mut buf = BytesMut::new();
        let mut sc = Scanner::new(1 << 20);
        let mut seen = Vec::new();
        for b in &stream {
            buf.extend_from_slice(&[*b]);
            while let Some(m) = sc.next(&mut buf, |t| t == b'Z').unwrap() {
                if m.tag == b'Z' {
                    assert_eq!(&buf[m.body.clone().unwrap()], b"I");
                }
                seen.push(m.tag);
            }
        }
        assert_eq!(seen, vec![b'D', b'Z', b'C']);
        assert_eq!(sc.scanned(), stream.len());
        assert!(sc.at_boundary());
    }

    #[test]
    fn prefix_then_stream() {
        let stream = msg(b'B', &[9u8; 300]);
        let mut buf = BytesMut::from(&stream[..50]);
        let mut sc = Scanner::new(1 << 20);
        assert!(sc.next_need(&mut buf, |_| 100).unwrap().is_none());
        buf.extend_from_slice(&stream[50..120]);
        let m = sc.next_need(&mut buf, |_| 100).unwrap().unwrap();
        assert_eq!(m.body, Some(5..105));
        assert!(!sc.at_boundary());
        assert_eq!(sc.scanned(), 105);
        buf.extend_from_slice(&stream[120..]);
        assert!(sc.next_need(&mut buf, |_| 100).unwrap().is_none());
        assert!(sc.at_boundary());
        assert_eq!(sc.scanned(), stream.len());
        // a short message is held whole
        let short = msg(b'B', b"ab");
        let mut buf = BytesMut::from(&short[..]);
        let mut sc = Scanner::new(1 << 20);
        let m = sc.next_need(&mut buf, |_| 100).unwrap().unwrap();
        assert_eq!(m.body, Some(5..7));
        assert!(sc.at_boundary());
        sc.rewind(0);
        assert_eq!(sc.scanned(), 0);
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut sc = Scanner::new(1000);
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 2][..]);
        assert!(sc.next(&mut buf, |_| false).is_err());
        let mut sc = Scanner::new(1000);
        let mut buf = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(sc.next(&mut buf, |_| false).is_err());
    }

    #[test]
    fn discards_head_message_across_reads() {
        let big = msg(b'd', &[1u8; 50]);
        let q = msg(b'Q', b"select 1\0");
        let mut buf = BytesMut::from(&big[..20]);
        let mut sc = Scanner::new(1 << 20);
        let m = sc.next(&mut buf, |_| false).unwrap().unwrap();
        assert_eq!(m.tag, b'd');
        sc.discard_head(&mut buf);
        assert!(buf.is_empty());
        buf.extend_from_slice(&big[20..]);
        buf.extend_from_slice(&q);
        let m = sc.next(&mut buf, |_| false).unwrap().unwrap();
        assert_eq!(m.tag, b'Q');
        assert_eq!(m.start, 0);
        assert_eq!(&buf[..], &q[..]);
    }
}
