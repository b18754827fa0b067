//! Builders for the backend (server→client) messages pgmux generates itself.

use bytes::{BufMut, BytesMut};

/// Start a tagged message; returns the offset of the length field to patch.
#[inline]
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    at
}

#[inline]
fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// ErrorResponse (or NoticeResponse with `tag = b'N'`) with fields S, V, C, M.
pub fn error_response(buf: &mut BytesMut, severity: &str, sqlstate: &str, message: &str) {
    notice_like(buf, b'E', severity, sqlstate, message);
}

/// NoticeResponse with fields S, V, C, M.
pub fn notice_response(buf: &mut BytesMut, severity: &str, sqlstate: &str, message: &str) {
    notice_like(buf, b'N', severity, sqlstate, message);
}

fn notice_like(buf: &mut BytesMut, tag: u8, severity: &str, sqlstate: &str, message: &str) {
    let at = begin(buf, tag);
    buf.put_u8(b'S');
    put_cstr(buf, severity.as_bytes());
    buf.put_u8(b'V');
    put_cstr(buf, severity.as_bytes());
    buf.put_u8(b'C');
    put_cstr(buf, sqlstate.as_bytes());
    buf.put_u8(b'M');
    put_cstr(buf, message.as_bytes());
    buf.put_u8(0);
    finish(buf, at);
}

/// Authentication request with a code and optional payload.
pub fn auth_request(buf: &mut BytesMut, code: u32, payload: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_u32(code);
    buf.put_slice(payload);
    finish(buf, at);
}

pub const AUTH_OK: u32 = 0;
pub const AUTH_CLEARTEXT: u32 = 3;
pub const AUTH_MD5: u32 = 5;
pub const AUTH_SASL: u32 = 10;
pub const AUTH_SASL_CONTINUE: u32 = 11;
pub const AUTH_SASL_FINAL: u32 = 12;

/// AuthenticationSASL offering only SCRAM-SHA-256.
pub fn auth_sasl_scram(buf: &mut BytesMut) {
    auth_request(buf, AUTH_SASL, b"SCRAM-SHA-256\0\0");
}

pub fn parameter_status(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    let at = begin(buf, b'S');
    put_cstr(buf, name);
    put_cstr(buf, value);
    finish(buf, at);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: u32, secret: u32) {
    let at = begin(buf, b'K');
    buf.put_u32(pid);
    buf.put_u32(secret);
    finish(buf, at);
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    buf.put_u8(b'Z');
    buf.put_u32(5);
    buf.put_u8(status);
}

/// NegotiateProtocolVersion: newest minor version supported and the unrecognised options.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u32, unknown: &[&[u8]]) {
    let at = begin(buf, b'v');
    buf.put_u32(minor);
    buf.put_u32(unknown.len() as u32);
    for o in unknown {
        put_cstr(buf, o);
    }
    finish(buf, at);
}

/// Type OIDs used in admin-console RowDescriptions (PgBouncer's: text, int4, int8, numeric).
pub const OID_TEXT: u32 = 25;
pub const OID_INT4: u32 = 23;
pub const OID_INT8: u32 = 20;
pub const OID_NUMERIC: u32 = 1700;

/// RowDescription with text-format columns of the given names and type OIDs.
pub fn row_description(buf: &mut BytesMut, cols: &[(&str, u32)]) {
    let at = begin(buf, b'T');
    buf.put_u16(cols.len() as u16);
    for (name, oid) in cols {
        put_cstr(buf, name.as_bytes());
        buf.put_u32(0);
        buf.put_i16(0);
        buf.put_u32(*oid);
        buf.put_i16(match *oid {
            OID_INT4 => 4,
            OID_INT8 => 8,
            _ => -1,
        });
        buf.put_i32(-1);
        buf.put_i16(0);
    }
    finish(buf, at);
}

/// DataRow of text values (None = NULL).
pub fn data_row<S: AsRef<str>>(buf: &mut BytesMut, vals: &[Option<S>]) {
    let at = begin(buf, b'D');
    buf.put_u16(vals.len() as u16);
    for v in vals {
        match v {
            Some(v) => {
                buf.put_i32(v.as_ref().len() as i32);
                buf.put_slice(v.as_ref().as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag.as_bytes());
    finish(buf, at);
}

/// NoticeResponse with a detail field (SHOW HELP).
pub fn notice_with_detail(buf: &mut BytesMut, message: &str, detail: &str) {
    let at = begin(buf, b'N');
    for (f, v) in [
        (b'S', "NOTICE"),
        (b'V', "NOTICE"),
        (b'C', "00000"),
        (b'M', message),
        (b'D', detail),
    ] {
        buf.put_u8(f);
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}
