//! Reading whole packets during the startup/login phase: untagged startup packets and tagged messages.

use super::{ProtocolError, be_u32, take_cstr};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SSL_REQUEST: u32 = 80877103;
pub const GSSENC_REQUEST: u32 = 80877104;
pub const CANCEL_REQUEST: u32 = 80877102;
/// The protocol 2.0 startup code.
pub const STARTUP_V2: u32 = 0x0002_0000;
/// Startup packets larger than this are refused (PostgreSQL uses 10000).
pub const MAX_STARTUP_PACKET: usize = 64 * 1024;

/// A packet that opens a connection.
#[derive(Debug)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel {
        key: [u8; 8],
    },
    /// A CancelRequest of the wrong length: dropped without an answer, as PgBouncer does.
    BadCancel,
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
        protocol_options: Vec<String>,
    },
    /// Protocol 2.0.
    OldProtocol,
}

/// Fill `buf` until it holds at least `n` bytes (cancel-safe: data stays in `buf`).
pub async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    n: usize,
) -> Result<(), ProtocolError> {
    while buf.len() < n {
        buf.reserve(n - buf.len());
        if r.read_buf(buf).await? == 0 {
            return Err(ProtocolError::Eof);
        }
    }
    Ok(())
}

/// Read one untagged startup-phase packet.
pub async fn read_startup<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<StartupPacket, ProtocolError> {
    fill(r, buf, 4).await?;
    let len = be_u32(&buf[..4]) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(ProtocolError::BadHeader);
    }
    fill(r, buf, len).await?;
    let pkt = buf.split_to(len);
    parse_startup(&pkt[4..])
}

/// Parse the body (after the length) of a startup-phase packet.
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    if body.len() < 4 {
        return Err(ProtocolError::BadPacket);
    }
    let code = be_u32(body);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST => Ok(match rest.try_into() {
            Ok(key) => StartupPacket::Cancel { key },
            Err(_) => StartupPacket::BadCancel,
        }),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if code == STARTUP_V2 {
                return Ok(StartupPacket::OldProtocol);
            }
            if major != 3 {
                // neither a request nor a protocol version: PgBouncer's "unknown special pkt"
                return Err(ProtocolError::BadHeader);
            }
            let mut params = Vec::new();
            let mut protocol_options = Vec::new();
            let mut p = rest;
            loop {
                let (k, r) = take_cstr(p).ok_or(ProtocolError::BadPacket)?;
                if k.is_empty() {
                    break;
                }
                let (v, r) = take_cstr(r).ok_or(ProtocolError::BadPacket)?;
                p = r;
                let k = String::from_utf8_lossy(k).into_owned();
                let v = String::from_utf8_lossy(v).into_owned();
                if k.starts_with("_pq_.") {
                    protocol_options.push(k);
                } else {
                    params.push((k, v));
                }
            }
            Ok(StartupPacket::Startup {
                minor,
                params,
                protocol_options,
            })
        }
    }
}

/// Read one whole tagged message (`tag`, body without the header), capped at `max` bytes.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(u8, BytesMut), ProtocolError> {
    fill(r, buf, 5).await?;
    let tag = buf[0];
    let len = be_u32(&buf[1..5]) as usize;
    if len < 4 || len > max {
        return Err(ProtocolError::BadHeader);
    }
    fill(r, buf, len + 1).await?;
    buf.advance(5);
    Ok((tag, buf.split_to(len - 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_startup_params_and_pq_options() {
        let mut b = Vec::new();
        b.extend_from_slice(&196610u32.to_be_bytes());
        b.extend_from_slice(b"user\0bob\0_pq_.x\0y\0database\0db\0\0");
        match parse_startup(&b).unwrap() {
            StartupPacket::Startup {
                minor,
                params,
                protocol_options,
            } => {
                assert_eq!(minor, 2);
                assert_eq!(
                    params,
                    vec![
                        ("user".into(), "bob".into()),
                        ("database".into(), "db".into())
                    ]
                );
                assert_eq!(protocol_options, vec!["_pq_.x".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_unterminated_and_old() {
        let mut b = Vec::new();
        b.extend_from_slice(&196608u32.to_be_bytes());
        b.extend_from_slice(b"user\0bob");
        assert!(parse_startup(&b).is_err());
        let v2 = 0x0002_0000u32.to_be_bytes();
        assert!(matches!(
            parse_startup(&v2).unwrap(),
            StartupPacket::OldProtocol
        ));
        assert!(matches!(
            parse_startup(&0x1234_5678u32.to_be_bytes()),
            Err(ProtocolError::BadHeader)
        ));
        let mut c = CANCEL_REQUEST.to_be_bytes().to_vec();
        c.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            parse_startup(&c).unwrap(),
            StartupPacket::BadCancel
        ));
    }

    #[test]
    fn short_body_is_an_error_not_a_panic() {
        // found by fuzz/fuzz_targets/startup.rs: a body shorter than the protocol code
        for b in [&[][..], &[0], &[0, 3, 0]] {
            assert!(matches!(parse_startup(b), Err(ProtocolError::BadPacket)));
        }
    }
}
