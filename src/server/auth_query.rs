//! Running `auth_query` on an auth_user connection: extended protocol, the user name as a bound parameter.

use super::{ServerConn, ServerError};
use crate::protocol::startup::read_message;
use crate::protocol::{be_i16, be_u32, parse_error_fields};
use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

/// What the lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No row: PgBouncer answers `no such user`.
    NoRow,
    /// A row whose password is NULL (e.g. expired): the login can never succeed.
    NullPassword,
    Secret(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthQueryError {
    /// The query failed on the server (logged; the client gets `bouncer config error`).
    #[error("error in auth_query: {0}")]
    Query(String),
    #[error("expected 2 columns from auth_query, not {0}")]
    Columns(i16),
    #[error("auth_query response contained null user name")]
    NullUser,
    #[error("{0}")]
    Server(#[from] ServerError),
}

fn tagged(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Parse/Bind/Describe/Execute/Sync of `query` with `user` as $1 (text).
pub fn encode(query: &str, user: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(query.len() + user.len() + 64);
    tagged(&mut out, b'P', |b| {
        b.put_u8(0);
        b.put_slice(query.as_bytes());
        b.put_u8(0);
        b.put_i16(0);
    });
    tagged(&mut out, b'B', |b| {
        b.put_u8(0);
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(1);
        b.put_i32(user.len() as i32);
        b.put_slice(user.as_bytes());
        b.put_i16(0);
    });
    tagged(&mut out, b'D', |b| {
        b.put_u8(b'P');
        b.put_u8(0);
    });
    tagged(&mut out, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
    tagged(&mut out, b'S', |_| {});
    out
}

/// One text column of a DataRow: `None` for NULL.
fn column(b: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    if b.len() < 4 {
        return None;
    }
    let n = be_u32(b) as i32;
    if n < 0 {
        return Some((None, &b[4..]));
    }
    let n = n as usize;
    if b.len() < 4 + n {
        return None;
    }
    Some((Some(&b[4..4 + n]), &b[4 + n..]))
}

/// Run the lookup on an idle server; on success the server is idle again.
pub async fn run(conn: &mut ServerConn, query: &str, user: &str) -> Result<Lookup, AuthQueryError> {
    conn.stream
        .write_all(&encode(query, user))
        .await
        .map_err(ServerError::Io)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut result = Lookup::NoRow;
    let mut failure: Option<AuthQueryError> = None;
    loop {
        let (tag, body) = read_message(&mut conn.stream, &mut buf, 1 << 20)
            .await
            .map_err(|_| ServerError::Crashed)?;
        match tag {
            b'T' if failure.is_none() => {
                let n = if body.len() >= 2 { be_i16(&body) } else { -1 };
                if n != 2 {
                    failure = Some(AuthQueryError::Columns(n));
                }
            }
            b'D' if failure.is_none() && matches!(result, Lookup::NoRow) => {
                let n = if body.len() >= 2 { be_i16(&body) } else { -1 };
                if n != 2 {
                    failure = Some(AuthQueryError::Columns(n));
                    continue;
                }
                let parsed =
                    column(&body[2..]).and_then(|(name, rest)| Some((name, column(rest)?.0)));
                match parsed {
                    None => {
                        return Err(ServerError::Protocol(
                            crate::protocol::ProtocolError::BadPacket,
                        )
                        .into());
                    }
                    Some((None, _)) => failure = Some(AuthQueryError::NullUser),
                    Some((Some(_), None)) => result = Lookup::NullPassword,
                    Some((Some(_), Some(pw))) => {
                        result = Lookup::Secret(String::from_utf8_lossy(pw).into_owned())
                    }
                }
            }
            b'E' => {
                let f = parse_error_fields(&body);
                failure.get_or_insert(AuthQueryError::Query(format!("{} ({})", f.message, f.code)));
            }
            b'Z' => {
                return match failure {
                    Some(f) => Err(f),
                    None => Ok(result),
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_user_as_bound_parameter() {
        let b = encode("SELECT usename, passwd FROM user_search($1)", "o'hara");
        // Parse carries the query untouched, Bind carries the name as a parameter value
        let s = String::from_utf8_lossy(&b);
        assert!(s.contains("SELECT usename, passwd FROM user_search($1)"));
        assert!(!s.contains("'o''hara'"));
        assert_eq!(b[0], b'P');
        assert_eq!(*b.last().unwrap(), 4);
        assert_eq!(column(&[0xff, 0xff, 0xff, 0xff]).unwrap().0, None);
        assert!(column(&[0, 0, 0, 9, 1]).is_none());
    }
}
