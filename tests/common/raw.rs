//! A client speaking the PostgreSQL protocol by hand (cleartext password login), so a test can
//! make it vanish at any point: mid-query, mid-COPY, mid-pipeline, half-way through a message.

use super::faults::OP_LIMIT;
use super::{error_fields, startup_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A client speaking the protocol by hand, so it can vanish at any point.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn q(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'P', &b)
}

/// Bind the unnamed portal to `stmt` with no parameters, text results.
pub fn bind(stmt: &str) -> Vec<u8> {
    let mut b = cstr("");
    b.extend(cstr(stmt));
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    msg(b'B', &b)
}

pub fn execute() -> Vec<u8> {
    let mut b = cstr("");
    b.extend_from_slice(&0u32.to_be_bytes());
    msg(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

pub fn flush() -> Vec<u8> {
    msg(b'H', &[])
}

impl Raw {
    /// Log in with a cleartext password (auth_type = plain) and wait for ReadyForQuery.
    pub async fn login(port: u16, db: &str, user: &str, password: &str) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut r = Raw { s, buf: Vec::new() };
        r.send(&startup_packet(user, db)).await;
        let (tag, body) = r.recv().await;
        assert_eq!((tag, &body[..4]), (b'R', &3u32.to_be_bytes()[..]));
        r.send(&msg(b'p', &cstr(password))).await;
        r.until(b'Z').await;
        r
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next message (tag, body).
    pub async fn recv(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let m: Vec<u8> = self.buf.drain(..len + 1).collect();
                    return (m[0], m[5..].to_vec());
                }
            }
            let mut chunk = [0u8; 8192];
            let n = timeout(OP_LIMIT, self.s.read(&mut chunk))
                .await
                .expect("no reply")
                .unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Messages up to and including the first with `tag`.
    pub async fn until(&mut self, tag: u8) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            let last = m.0 == tag;
            out.push(m);
            if last {
                return out;
            }
        }
    }

    /// Vanish without a Terminate: a reset (`rst`) or a plain close.
    pub fn kill(self, rst: bool) {
        if rst {
            self.s.set_zero_linger().unwrap();
        }
        drop(self.s);
    }
}

/// What a request up to ReadyForQuery returned: first column of each row, the first error
/// (severity, SQLSTATE, message), the transaction status.
pub struct Reply {
    pub rows: Vec<Option<String>>,
    pub error: Option<(String, String, String)>,
    pub status: u8,
}

impl Raw {
    pub async fn request(&mut self, bytes: &[u8]) -> Reply {
        self.send(bytes).await;
        let mut reply = Reply {
            rows: Vec::new(),
            error: None,
            status: 0,
        };
        for (tag, body) in self.until(b'Z').await {
            match tag {
                b'D' => {
                    let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
                    reply.rows.push(
                        (len >= 0).then(|| {
                            String::from_utf8(body[6..6 + len as usize].to_vec()).unwrap()
                        }),
                    );
                }
                b'E' if reply.error.is_none() => reply.error = Some(error_fields(&body)),
                b'Z' => reply.status = body[0],
                _ => {}
            }
        }
        reply
    }

    pub async fn simple(&mut self, sql: &str) -> Reply {
        self.request(&q(sql)).await
    }

    /// Bind + Execute + Sync of a named statement.
    pub async fn run_named(&mut self, stmt: &str) -> Reply {
        let mut b = bind(stmt);
        b.extend(execute());
        b.extend(sync());
        self.request(&b).await
    }

    /// The first message after the connection is told to go away, and that it then closes.
    pub async fn fatal(&mut self) -> (String, String, String) {
        let (tag, body) = self.recv().await;
        assert_eq!(tag, b'E');
        let mut rest = [0u8; 1];
        let n = timeout(OP_LIMIT, self.s.read(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection stays open after a FATAL");
        error_fields(&body)
    }
}
