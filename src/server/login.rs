//! Opening a server connection: TCP/unix connect, StartupMessage, answering the server's auth request, connect_query.

use super::stream::Stream;
use super::{ServerAddr, ServerConn, ServerError, ServerTarget};
use crate::auth::{ScramClient, ScramClientKeys, Secret, md5};
use crate::params::Tracked;
use crate::protocol::startup::read_message;
use crate::protocol::{backend, be_u32, frontend, parse_error_fields, take_cstr};
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

/// What a successful login returns besides the connection: every ParameterStatus the server sent.
pub type WelcomeParams = Vec<(String, String)>;

/// Messages during login are small; refuse anything absurd.
const MAX_LOGIN_MSG: usize = 1 << 20;

async fn open_socket(target: &ServerTarget) -> Result<(Stream, ServerAddr, String), ServerError> {
    let host = if target.hosts.is_empty() {
        target.default_unix_dir.clone()
    } else {
        let i = target.next_host.fetch_add(1, Ordering::Relaxed) % target.hosts.len();
        target.hosts[i].clone()
    };
    if host.starts_with('/') {
        let path = std::path::PathBuf::from(format!("{}/.s.PGSQL.{}", host, target.port));
        let s = UnixStream::connect(&path)
            .await
            .map_err(ServerError::ConnectFailed)?;
        return Ok((Stream::Unix(s), ServerAddr::Unix(path), "unix".to_string()));
    }
    let addrs = target
        .dns
        .resolve(&host, target.port)
        .await
        .map_err(ServerError::ConnectFailed)?;
    let mut s = connect_any(&addrs)
        .await
        .map_err(ServerError::ConnectFailed)?;
    s.set_nodelay(true)?;
    target.tcp.apply_or_warn(&s, "server connection");
    let peer = s.peer_addr()?;
    let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let tls = target.tls.server();
    let Some(cfg) = &tls.config else {
        return Ok((Stream::Tcp(s), ServerAddr::Tcp(peer), local));
    };
    // SSLRequest; 'S' → TLS handshake, 'N' → plaintext unless TLS is required
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| ServerError::Auth(format!("invalid server name {host:?}")))?,
            };
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, s)
                .await
                .map_err(|e| ServerError::Tls(e.to_string()))?;
            Ok((
                Stream::tls(tokio_rustls::TlsStream::Client(tls)),
                ServerAddr::Tcp(peer),
                local,
            ))
        }
        b'N' if !tls.mode.required() => Ok((Stream::Tcp(s), ServerAddr::Tcp(peer), local)),
        b'N' => Err(ServerError::Tls("server does not support SSL".into())),
        _ => Err(ServerError::Protocol(
            crate::protocol::ProtocolError::BadPacket,
        )),
    }
}

/// The first of `addrs` that accepts a connection (the last error otherwise).
pub async fn connect_any(addrs: &[std::net::SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The SCRAM keys of the pool's plaintext password for the salt in `server_first`: PBKDF2 runs
/// once per pool (off the async workers) and the result is kept in `target.scram_keys`.
async fn derived_keys(
    target: &ServerTarget,
    password: String,
    server_first: &[u8],
) -> Result<ScramClientKeys, ServerError> {
    let (salt, iters) = crate::auth::scram::server_first_salt(server_first)
        .filter(|(_, i)| *i > 0)
        .ok_or_else(|| ServerError::Auth("malformed SCRAM message".into()))?;
    if let Some((p, s, i, k)) = target.scram_keys.lock().unwrap().as_ref()
        && *p == password
        && *s == salt
        && *i == iters
    {
        return Ok(k.clone());
    }
    let (pw, s) = (password.clone(), salt.clone());
    let keys = tokio::task::spawn_blocking(move || ScramClientKeys::from_password(&pw, &s, iters))
        .await
        .map_err(|e| ServerError::Auth(e.to_string()))?;
    *target.scram_keys.lock().unwrap() = Some((password, salt, iters, keys.clone()));
    Ok(keys)
}

/// Connect and log in, within `target.connect_timeout`.
pub async fn connect(
    target: &ServerTarget,
    tracked: &Tracked,
    scram_keys: Option<ScramClientKeys>,
) -> Result<(ServerConn, WelcomeParams), ServerError> {
    let fut = connect_inner(target, tracked, scram_keys);
    if target.connect_timeout.is_zero() {
        return fut.await;
    }
    match tokio::time::timeout(target.connect_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ServerError::Timeout),
    }
}

async fn connect_inner(
    target: &ServerTarget,
    tracked: &Tracked,
    scram_keys: Option<ScramClientKeys>,
) -> Result<(ServerConn, WelcomeParams), ServerError> {
    let (mut stream, addr, local) = open_socket(target).await?;
    let mut out = BytesMut::with_capacity(256);
    let mut params: Vec<(&str, &str)> = vec![("user", &target.user), ("database", &target.dbname)];
    for (k, v) in &target.startup {
        params.push((k, v));
    }
    frontend::startup_message(&mut out, &params);
    stream.write_all(&out).await?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut welcome = Vec::new();
    let mut key = (0, 0);
    let mut scram: Option<ScramClient> = None;
    loop {
        let (tag, body) = read_message(&mut stream, &mut buf, MAX_LOGIN_MSG).await?;
        match tag {
            b'R' => {
                if body.len() < 4 {
                    return Err(ServerError::Protocol(
                        crate::protocol::ProtocolError::BadPacket,
                    ));
                }
                let code = be_u32(&body);
                out.clear();
                match code {
                    backend::AUTH_OK => continue,
                    backend::AUTH_CLEARTEXT => {
                        let pw = match secret(target) {
                            Some(Secret::Plain(p)) => p,
                            Some(_) => return Err(ServerError::Auth("wrong password type".into())),
                            None => return Err(ServerError::Auth("no password".into())),
                        };
                        frontend::password(&mut out, pw.as_bytes());
                    }
                    backend::AUTH_MD5 => {
                        let salt: [u8; 4] = body.get(4..8).and_then(|s| s.try_into().ok()).ok_or(
                            ServerError::Protocol(crate::protocol::ProtocolError::BadPacket),
                        )?;
                        let stored = match secret(target) {
                            Some(Secret::Plain(p)) => md5::md5_secret(&p, &target.user),
                            Some(Secret::Md5(m)) => m,
                            Some(_) => return Err(ServerError::Auth("wrong password type".into())),
                            None => return Err(ServerError::Auth("no password".into())),
                        };
                        frontend::password(
                            &mut out,
                            md5::md5_salted_response(&stored, salt).as_bytes(),
                        );
                    }
                    backend::AUTH_SASL => {
                        let mut mechs = &body[4..];
                        let mut ok = false;
                        while let Some((m, rest)) = take_cstr(mechs) {
                            if m.is_empty() {
                                break;
                            }
                            ok |= m == b"SCRAM-SHA-256";
                            mechs = rest;
                        }
                        if !ok {
                            return Err(ServerError::Auth(
                                "none of the server's SASL authentication mechanisms are supported"
                                    .into(),
                            ));
                        }
                        let client = match (secret(target), scram_keys.clone()) {
                            (Some(Secret::Plain(p)), _) => ScramClient::with_password(&p),
                            (Some(Secret::Scram(_)), Some(keys)) => ScramClient::with_keys(keys),
                            (Some(Secret::Scram(_)), None) => {
                                return Err(ServerError::Auth(
                                    "cannot do SCRAM authentication: password is SCRAM secret but client authentication did not provide SCRAM keys".into(),
                                ));
                            }
                            (Some(Secret::Md5(_)), _) => {
                                return Err(ServerError::Auth("wrong password type".into()));
                            }
                            (None, _) => return Err(ServerError::Auth("no password".into())),
                        };
                        frontend::sasl_initial_response(
                            &mut out,
                            "SCRAM-SHA-256",
                            &client.client_first(),
                        );
                        scram = Some(client);
                    }
                    backend::AUTH_SASL_CONTINUE => {
                        let mut client = scram
                            .take()
                            .ok_or(ServerError::Auth("unexpected SASL continue".into()))?;
                        let data = body[4..].to_vec();
                        if let Some(Secret::Plain(p)) = secret(target) {
                            client.set_keys(derived_keys(target, p, &data).await?);
                        }
                        let reply = client
                            .server_first(&data)
                            .map_err(|e| ServerError::Auth(e.to_string()))?;
                        frontend::sasl_response(&mut out, &reply);
                        scram = Some(client);
                    }
                    backend::AUTH_SASL_FINAL => {
                        let client = scram
                            .take()
                            .ok_or(ServerError::Auth("unexpected SASL final".into()))?;
                        client
                            .server_final(&body[4..])
                            .map_err(|e| ServerError::Auth(e.to_string()))?;
                        continue;
                    }
                    other => {
                        return Err(ServerError::Auth(format!(
                            "unsupported authentication request {other}"
                        )));
                    }
                }
                stream.write_all(&out).await?;
            }
            b'E' => {
                let f = parse_error_fields(&body);
                return Err(ServerError::Login {
                    sqlstate: f.code,
                    message: f.message,
                });
            }
            b'S' => {
                if let Some((k, rest)) = take_cstr(&body)
                    && let Some((v, _)) = take_cstr(rest)
                {
                    welcome.push((
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    ));
                }
            }
            b'K' if body.len() >= 8 => key = (be_u32(&body[0..4]), be_u32(&body[4..8])),
            b'Z' => break,
            _ => {} // NoticeResponse, NegotiateProtocolVersion: nothing to do
        }
    }

    let mut set = tracked.empty_set();
    for (k, v) in &welcome {
        if let Some(i) = tracked.index(k) {
            set.set(i, v);
        }
    }
    let now = crate::clock::now_us();
    let mut conn: ServerConn = crate::server::ServerState {
        id: crate::server::ServerState::new_id(),
        stream,
        addr,
        local,
        key,
        params: set,
        created: now,
        last_used: now,
        epoch: 0,
        prepared: Default::default(),
        rbuf: bytes::BytesMut::new(),
        // the connect runs on the shard that asked for it: the socket is registered there
        shard: crate::shard::current(),
    }
    .into();
    if let Some(q) = &target.connect_query
        && let Err(e) = run_simple(&mut conn, q, tracked).await
    {
        tracing::warn!("connect_query failed: {e}");
    }
    Ok((conn, welcome))
}

fn secret(target: &ServerTarget) -> Option<Secret> {
    target
        .password
        .read()
        .unwrap()
        .as_deref()
        .map(Secret::parse)
}

/// Run a simple Query on an idle server and wait for ReadyForQuery; tracked ParameterStatus
/// updates are applied. Returns the server's error text if the query failed.
pub async fn run_simple(
    conn: &mut ServerConn,
    sql: &str,
    tracked: &Tracked,
) -> Result<(), ServerError> {
    let mut out = BytesMut::with_capacity(sql.len() + 8);
    frontend::query(&mut out, sql);
    conn.stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(512);
    let mut err = None;
    loop {
        let (tag, body) = read_message(&mut conn.stream, &mut buf, MAX_LOGIN_MSG)
            .await
            .map_err(|e| match e {
                crate::protocol::ProtocolError::Eof => ServerError::Crashed,
                e => ServerError::Protocol(e),
            })?;
        match tag {
            b'E' => {
                let f = parse_error_fields(&body);
                err = Some(ServerError::Login {
                    sqlstate: f.code,
                    message: f.message,
                });
            }
            b'S' => {
                if let Some((k, rest)) = take_cstr(&body)
                    && let Some((v, _)) = take_cstr(rest)
                    && let Some(i) = tracked.index_bytes(k)
                {
                    conn.params.set(i, &String::from_utf8_lossy(v));
                }
            }
            b'Z' => {
                if !buf.is_empty() {
                    return Err(ServerError::Protocol(
                        crate::protocol::ProtocolError::BadPacket,
                    ));
                }
                return match err {
                    Some(e) => Err(e),
                    None if body.first() == Some(&b'I') => Ok(()),
                    None => Err(ServerError::Auth(
                        "query left the server inside a transaction".into(),
                    )),
                };
            }
            _ => {}
        }
    }
}
