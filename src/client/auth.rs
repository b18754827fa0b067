//! Client authentication against the userlist: trust, any, plain, md5 and SCRAM-SHA-256 (server side).

use super::{ClientConn, ClientError, lookup};
use crate::auth::{ScramClientKeys, ScramSecret, ScramServer, Secret, md5};
use crate::config::hba::HbaMethod;
use crate::config::{AuthType, DatabaseConfig};
use crate::protocol::backend;
use crate::protocol::startup::{fill, read_message};
use crate::protocol::take_cstr;
use crate::state::Shared;
use bytes::BytesMut;

/// Largest password/SASL message accepted from a client during login.
const MAX_AUTH_MSG: usize = 64 * 1024;

/// What a successful login leaves behind.
#[derive(Default)]
pub struct AuthOutcome {
    /// ClientKey/ServerKey recovered from a SCRAM login against a stored verifier (pass-through).
    pub scram_keys: Option<ScramClientKeys>,
    /// The secret auth_query returned, for the pool's server logins.
    pub looked_up: Option<String>,
}

/// Where the user's secret came from, for password rotation with the lookup cache.
struct Source<'a> {
    db: Option<(&'a str, &'a DatabaseConfig)>,
    cached: bool,
}

/// Run the authentication exchange for `user` connecting to `db` (None: unknown database, so
/// the exchange is mocked and fails). An `Err` carries PgBouncer's message.
pub async fn authenticate(
    conn: &mut ClientConn,
    shared: &Shared,
    user: &str,
    db_name: &str,
    db: Option<(&str, &DatabaseConfig)>,
) -> Result<AuthOutcome, ClientError> {
    let cfg = shared.config();
    let g = &cfg.general;
    let forced = db.is_some_and(|(_, d)| d.user.is_some());
    let mut method = g.auth_type;
    let mut peer_auth = false;
    if method == AuthType::Hba {
        method = match shared.hba().eval(conn.hba_peer, db_name, user) {
            HbaMethod::Trust => AuthType::Trust,
            HbaMethod::Password => AuthType::Plain,
            HbaMethod::Md5 => AuthType::Md5,
            HbaMethod::ScramSha256 => AuthType::ScramSha256,
            HbaMethod::Cert => AuthType::Cert,
            HbaMethod::Reject => return Err(ClientError::fatal("login rejected")),
            HbaMethod::Peer => {
                peer_auth = true;
                AuthType::Trust
            }
        };
    }
    let mut stored = shared.userlist().get(user).map(Secret::parse);
    let mut looked_up = None;
    // admin_users / stats_users exist for the console even without an auth_file entry (peer, trust)
    let mut known = stored.is_some()
        || (db_name == "pgbouncer" && crate::admin::role_of(shared, user).is_some());
    let mut src = Source { db, cached: false };
    if stored.is_none()
        && method != AuthType::Any
        && let Some((name, d)) = db
        && lookup::auth_user_for(&cfg, d).is_some()
    {
        match lookup::lookup(shared, &cfg, name, d, user).await {
            Ok((found, cached)) => {
                src.cached = cached;
                known = true;
                if let lookup::Found::Secret(s) = found {
                    stored = Some(Secret::parse(&s));
                    looked_up = Some(s);
                }
            }
            // pgmux option: answer unknown users with a mock SCRAM exchange, as PostgreSQL does,
            // instead of PgBouncer's revealing `no such user`
            Err(ClientError::Fatal { message, .. })
                if message == "no such user" && g.auth_unknown_user_mock =>
            {
                if matches!(method, AuthType::Md5 | AuthType::ScramSha256) {
                    method = AuthType::ScramSha256;
                }
            }
            Err(e) => return Err(e),
        }
    }
    if method == AuthType::Md5 && matches!(stored, Some(Secret::Scram(_))) {
        method = AuthType::ScramSha256;
    }
    let mut outcome = match method {
        AuthType::Any => {
            if !forced {
                tracing::error!("auth_type=any requires forced user");
                return Err(ClientError::fatal("bouncer config error"));
            }
            AuthOutcome::default()
        }
        AuthType::Trust if peer_auth => {
            // peer: the connecting OS user (SO_PEERCRED) must be the requested user
            let os_user = conn.peer_uid.and_then(crate::client::peer::user_name);
            if !known || os_user.as_deref() != Some(user) {
                return Err(ClientError::fatal("unix socket login rejected"));
            }
            AuthOutcome::default()
        }
        AuthType::Trust => {
            if !known {
                return Err(ClientError::fatal("\"trust\" authentication failed"));
            }
            AuthOutcome::default()
        }
        AuthType::Cert => {
            // the client certificate (verified against client_tls_ca_file) must name the user
            match crate::client::tls::client_cert_user(conn) {
                Some(cn) if cn == user => AuthOutcome::default(),
                Some(cn) => {
                    tracing::warn!(
                        "{} certificate CN {cn:?} does not match user {user:?}",
                        conn.prefix()
                    );
                    return Err(ClientError::fatal("certificate authentication failed"));
                }
                None => {
                    tracing::warn!("{} TLS client certificate required", conn.prefix());
                    return Err(ClientError::fatal("certificate authentication failed"));
                }
            }
        }
        AuthType::Plain => {
            let mut out = BytesMut::new();
            backend::auth_request(&mut out, backend::AUTH_CLEARTEXT, &[]);
            conn.write_all(&out).await?;
            let pw = read_password(conn).await?;
            if pw.is_empty() {
                return Err(ClientError::fatal("empty password returned by client"));
            }
            let check = |s: Option<Secret>, pw: String, user: String| async move {
                match s {
                    Some(Secret::Plain(p)) if p.is_empty() => false,
                    Some(s) => {
                        tokio::task::spawn_blocking(move || md5::verify_plain(&s, &user, &pw))
                            .await
                            .unwrap_or(false)
                    }
                    None => false,
                }
            };
            let mut ok = check(stored.clone(), pw.clone(), user.to_string()).await;
            if !ok && let Some(fresh) = refresh(shared, &cfg, &src, user, &mut looked_up).await? {
                ok = check(Some(fresh), pw, user.to_string()).await;
            }
            if !ok {
                return Err(ClientError::fatal("password authentication failed"));
            }
            AuthOutcome::default()
        }
        AuthType::Md5 => {
            let mut salt = [0u8; 4];
            getrandom::fill(&mut salt).expect("OS random source");
            let mut out = BytesMut::new();
            backend::auth_request(&mut out, backend::AUTH_MD5, &salt);
            conn.write_all(&out).await?;
            let pw = read_password(conn).await?;
            if pw.is_empty() {
                return Err(ClientError::fatal("empty password returned by client"));
            }
            let check = |s: &Option<Secret>| match s {
                Some(Secret::Plain(p)) if p.is_empty() => false,
                Some(s) => md5::verify_md5(s, user, salt, pw.as_bytes()),
                None => false,
            };
            let mut ok = check(&stored);
            if !ok && let Some(fresh) = refresh(shared, &cfg, &src, user, &mut looked_up).await? {
                ok = check(&Some(fresh));
            }
            if !ok {
                return Err(ClientError::fatal("password authentication failed"));
            }
            AuthOutcome::default()
        }
        AuthType::ScramSha256 => {
            let r = scram(conn, shared, user, stored, g.scram_iterations).await;
            if r.is_err()
                && src.cached
                && let Some((name, d)) = src.db
            {
                // the cached verifier may be stale (password rotated): the next login looks up afresh
                lookup::invalidate(shared, &cfg, name, d, user);
            }
            r?
        }
        _ => return Err(ClientError::fatal("login rejected")),
    };
    outcome.looked_up = looked_up;
    Ok(outcome)
}

/// After a failed check against a cached lookup: forget it, look up afresh, and return the new
/// secret if it differs (so a rotated password works at once).
async fn refresh(
    shared: &Shared,
    cfg: &crate::config::Config,
    src: &Source<'_>,
    user: &str,
    looked_up: &mut Option<String>,
) -> Result<Option<Secret>, ClientError> {
    let Some((name, d)) = src.db else {
        return Ok(None);
    };
    if !src.cached {
        return Ok(None);
    }
    lookup::invalidate(shared, cfg, name, d, user);
    let (found, _) = lookup::lookup(shared, cfg, name, d, user).await?;
    match found {
        lookup::Found::Secret(s) if looked_up.as_deref() != Some(s.as_str()) => {
            let parsed = Secret::parse(&s);
            *looked_up = Some(s);
            Ok(Some(parsed))
        }
        _ => Ok(None),
    }
}

/// Read the client's next PasswordMessage/SASL message ('p'). Anything else is refused from its
/// header alone, without waiting for a body it may never send.
async fn read_auth_message(conn: &mut ClientConn) -> Result<BytesMut, ClientError> {
    fill(&mut conn.stream, &mut conn.rbuf, 5).await?;
    match conn.rbuf[0] {
        b'p' => {}
        // a length's high byte: a startup packet, SSLRequest or CancelRequest
        0 => return Err(ClientError::fatal("client re-sent startup pkt")),
        _ => return Err(ClientError::fatal("bad packet")),
    }
    let (_, body) = read_message(&mut conn.stream, &mut conn.rbuf, MAX_AUTH_MSG).await?;
    Ok(body)
}

async fn read_password(conn: &mut ClientConn) -> Result<String, ClientError> {
    let body = read_auth_message(conn).await?;
    let (pw, _) = take_cstr(&body).ok_or_else(|| ClientError::fatal("bad packet"))?;
    Ok(String::from_utf8_lossy(pw).into_owned())
}

async fn scram(
    conn: &mut ClientConn,
    shared: &Shared,
    user: &str,
    stored: Option<Secret>,
    iterations: u32,
) -> Result<AuthOutcome, ClientError> {
    const FAILED: &str = "SASL authentication failed";
    let mut out = BytesMut::new();
    backend::auth_sasl_scram(&mut out);
    conn.write_all(&out).await?;

    // Pick the verifier before reading the client's answer; PBKDF2 for plaintext runs off the workers.
    let mock = !matches!(&stored, Some(Secret::Scram(_)))
        && !matches!(&stored, Some(Secret::Plain(p)) if !p.is_empty());
    let (secret, passthrough) = match stored {
        Some(Secret::Scram(s)) => (s, true),
        Some(Secret::Plain(p)) if !p.is_empty() => {
            (adhoc_secret(shared, user, p, iterations).await, false)
        }
        Some(Secret::Md5(_)) => {
            tracing::error!("SCRAM authentication failed: user has MD5 secret");
            return Err(ClientError::fatal(FAILED));
        }
        // Unknown user or empty password: run a mock exchange so users cannot be enumerated.
        _ => (ScramSecret::mock(user, &shared.mock_seed), false),
    };

    let body = read_auth_message(conn).await?;
    let (mech, rest) = take_cstr(&body).ok_or_else(|| ClientError::fatal("bad packet"))?;
    if mech != b"SCRAM-SHA-256" {
        return Err(ClientError::fatal(
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    if rest.len() < 4 {
        return Err(ClientError::fatal("bad packet"));
    }
    // the data length must match the bytes that follow (-1: no data)
    let (len, data) = rest.split_at(4);
    let len = i32::from_be_bytes(len.try_into().unwrap());
    if !(len == -1 && data.is_empty() || usize::try_from(len) == Ok(data.len())) {
        return Err(ClientError::fatal("bad packet"));
    }
    let server_key = secret.server_key;
    let mut server = ScramServer::new(secret);
    let first = server
        .client_first("SCRAM-SHA-256", data)
        .map_err(|_| ClientError::fatal(FAILED))?;
    out.clear();
    backend::auth_request(&mut out, backend::AUTH_SASL_CONTINUE, &first);
    conn.write_all(&out).await?;

    let body = read_auth_message(conn).await?;
    let (fin, client_key) = server
        .client_final(&body)
        .map_err(|_| ClientError::fatal(FAILED))?;
    if mock {
        return Err(ClientError::fatal(FAILED));
    }
    out.clear();
    backend::auth_request(&mut out, backend::AUTH_SASL_FINAL, &fin);
    conn.write_all(&out).await?;
    let scram_keys = passthrough.then_some(ScramClientKeys {
        client_key,
        server_key,
    });
    Ok(AuthOutcome {
        scram_keys,
        looked_up: None,
    })
}

/// SCRAM verifier for a plaintext userlist password, derived once and cached (PgBouncer does the same).
async fn adhoc_secret(
    shared: &Shared,
    user: &str,
    password: String,
    iterations: u32,
) -> ScramSecret {
    let cached = || {
        shared
            .adhoc_scram
            .get(user)
            .filter(|e| e.0 == password)
            .map(|e| e.1.clone())
    };
    if let Some(s) = cached() {
        return s;
    }
    // clients that missed together wait for the first one's derivation instead of each running it
    let stripe = user
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31) ^ b as usize);
    let _gate = shared.adhoc_gate[stripe % shared.adhoc_gate.len()]
        .lock()
        .await;
    if let Some(s) = cached() {
        return s;
    }
    let pw = password.clone();
    let secret = tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("OS random source");
        ScramSecret::from_password(&pw, &salt, iterations)
    })
    .await
    .expect("PBKDF2 task");
    shared
        .adhoc_scram
        .insert(user.to_string(), (password, secret.clone()));
    secret
}
