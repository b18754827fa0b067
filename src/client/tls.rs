//! TLS towards a client: the SSLRequest upgrade, PostgreSQL 17's direct TLS, and what the
//! client certificate says (for the `cert` method).

use super::{ClientConn, ClientError};
use crate::server::stream::Stream;
use std::os::fd::AsFd;
use tokio::io::AsyncWriteExt;

/// First byte of a TLS handshake record: a client starting TLS without an SSLRequest.
const TLS_HANDSHAKE: u8 = 0x16;

/// Direct TLS (sslnegotiation=direct): true when the client's first byte opens a TLS record.
pub async fn starts_with_tls(conn: &ClientConn) -> std::io::Result<bool> {
    let Stream::Tcp(s) = &conn.stream else {
        return Ok(false);
    };
    let mut b = [0u8; 1];
    let n = s.peek(&mut b).await?;
    Ok(n == 1 && b[0] == TLS_HANDSHAKE)
}

/// Run the TLS handshake on the client's TCP socket and continue the session over TLS.
/// `answer_s` writes the 'S' that accepts an SSLRequest first.
pub async fn upgrade(
    conn: &mut ClientConn,
    acceptor: &tokio_rustls::TlsAcceptor,
    answer_s: bool,
) -> Result<(), ClientError> {
    if !conn.rbuf.is_empty() {
        // bytes pipelined after SSLRequest would be read as plaintext: refuse, as PostgreSQL does
        return Err(ClientError::fatal(
            "received unencrypted data after SSL request",
        ));
    }
    let Stream::Tcp(tcp) = &mut conn.stream else {
        return Err(ClientError::fatal("bad packet"));
    };
    if answer_s {
        tcp.write_all(b"S").await?;
    }
    // the handshake takes the socket by value: give it a duplicate of the descriptor; the
    // original is dropped when the TLS stream replaces it
    let fd = tcp.as_fd().try_clone_to_owned()?;
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    let dup = tokio::net::TcpStream::from_std(std)?;
    let tls = match acceptor.accept(dup).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("{} TLS handshake failed: {e}", conn.prefix());
            return Err(ClientError::Io(e));
        }
    };
    conn.stream = Stream::tls(tokio_rustls::TlsStream::Server(tls));
    if let crate::config::hba::Peer::Tcp { tls, .. } = &mut conn.hba_peer {
        *tls = true;
    }
    Ok(())
}

/// The subject CN of the certificate the client presented, if any.
pub fn client_cert_user(conn: &ClientConn) -> Option<String> {
    match &conn.stream {
        Stream::Tls(t) => t
            .peer_certs
            .first()
            .and_then(|c| crate::tls::cert_common_name(c)),
        _ => None,
    }
}
