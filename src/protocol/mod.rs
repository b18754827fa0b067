//! PostgreSQL wire protocol: framing, startup packets, the few messages pgmux inspects, and builders.

pub mod backend;
pub mod frontend;
pub mod scan;
pub mod startup;

use thiserror::Error;

/// Errors raised while reading or validating protocol data from a peer.
#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("bad packet header")]
    BadHeader,
    #[error("bad packet")]
    BadPacket,
    #[error("unknown pkt")]
    UnknownPacket(u8),
    #[error("connection closed")]
    Eof,
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// SQLSTATE used for every pooler-made error, as PgBouncer does (protocol_violation).
pub const SQLSTATE_PROTOCOL_VIOLATION: &str = "08P01";

/// Read a big-endian u32 from the first 4 bytes.
#[inline]
pub fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Read a big-endian i16 from the first 2 bytes.
#[inline]
pub fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

/// Split a NUL-terminated string off the front of `b`.
pub fn take_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    Some((&b[..nul], &b[nul + 1..]))
}

/// The fields of an ErrorResponse/NoticeResponse that pgmux needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// Parse the body of an ErrorResponse or NoticeResponse.
pub fn parse_error_fields(mut b: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    while let Some((&t, rest)) = b.split_first() {
        if t == 0 {
            break;
        }
        let Some((v, rest)) = take_cstr(rest) else {
            break;
        };
        let v = String::from_utf8_lossy(v).into_owned();
        match t {
            b'V' => f.severity = v,
            b'S' if f.severity.is_empty() => f.severity = v,
            b'C' => f.code = v,
            b'M' => f.message = v,
            _ => {}
        }
        b = rest;
    }
    f
}
