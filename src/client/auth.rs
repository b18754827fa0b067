//! Client authentication against the userlist: trust, any, plain, md5 and SCRAM-SHA-256 (server side).

use super::{ClientConn, ClientError};
use crate::auth::{ScramClientKeys, ScramSecret, ScramServer, Secret, md5};
use crate::config::AuthType;
use crate::protocol::backend;
use crate::protocol::startup::read_message;
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
}

/// Run the authentication exchange for `user`; an `Err` carries PgBouncer's message.
pub async fn authenticate(
    conn: &mut ClientConn,
    shared: &Shared,
    user: &str,
    forced_user: bool,
) -> Result<AuthOutcome, ClientError> {
    let cfg = shared.config();
    let g = &cfg.general;
    let stored = shared.userlist().get(user).map(Secret::parse);
    let mut method = g.auth_type;
    if method == AuthType::Hba {
        // hba files arrive with the auth issue; until then hba behaves as md5.
        method = AuthType::Md5;
    }
    if method == AuthType::Md5 && matches!(stored, Some(Secret::Scram(_))) {
        method = AuthType::ScramSha256;
    }
    match method {
        AuthType::Any => {
            if !forced_user {
                tracing::error!("auth_type=any requires forced user");
                return Err(ClientError::fatal("bouncer config error"));
            }
            Ok(AuthOutcome::default())
        }
        AuthType::Trust => match stored {
            Some(_) => Ok(AuthOutcome::default()),
            None => Err(ClientError::fatal("\"trust\" authentication failed")),
        },
        AuthType::Plain => {
            let mut out = BytesMut::new();
            backend::auth_request(&mut out, backend::AUTH_CLEARTEXT, &[]);
            conn.write_all(&out).await?;
            let pw = read_password(conn).await?;
            if pw.is_empty() {
                return Err(ClientError::fatal("empty password returned by client"));
            }
            let ok = match stored {
                Some(Secret::Plain(p)) if p.is_empty() => false,
                Some(s) => {
                    let user = user.to_string();
                    tokio::task::spawn_blocking(move || md5::verify_plain(&s, &user, &pw))
                        .await
                        .unwrap_or(false)
                }
                None => false,
            };
            if ok {
                Ok(AuthOutcome::default())
            } else {
                Err(ClientError::fatal("password authentication failed"))
            }
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
            let ok = match &stored {
                Some(Secret::Plain(p)) if p.is_empty() => false,
                Some(s) => md5::verify_md5(s, user, salt, pw.as_bytes()),
                None => false,
            };
            if ok {
                Ok(AuthOutcome::default())
            } else {
                Err(ClientError::fatal("password authentication failed"))
            }
        }
        AuthType::ScramSha256 => scram(conn, shared, user, stored, g.scram_iterations).await,
        _ => Err(ClientError::fatal("login rejected")),
    }
}

async fn read_password(conn: &mut ClientConn) -> Result<String, ClientError> {
    let (tag, body) = read_message(&mut conn.stream, &mut conn.rbuf, MAX_AUTH_MSG).await?;
    if tag != b'p' {
        return Err(ClientError::fatal("bad packet"));
    }
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
    let mock = !matches!(shared.userlist().get(user), Some(p) if !p.is_empty());

    let (tag, body) = read_message(&mut conn.stream, &mut conn.rbuf, MAX_AUTH_MSG).await?;
    if tag != b'p' {
        return Err(ClientError::fatal("bad packet"));
    }
    let (mech, rest) = take_cstr(&body).ok_or_else(|| ClientError::fatal("bad packet"))?;
    if mech != b"SCRAM-SHA-256" {
        return Err(ClientError::fatal(
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    if rest.len() < 4 {
        return Err(ClientError::fatal("bad packet"));
    }
    let data = &rest[4..];
    let server_key = secret.server_key;
    let mut server = ScramServer::new(secret);
    let first = server
        .client_first("SCRAM-SHA-256", data)
        .map_err(|_| ClientError::fatal(FAILED))?;
    out.clear();
    backend::auth_request(&mut out, backend::AUTH_SASL_CONTINUE, &first);
    conn.write_all(&out).await?;

    let (tag, body) = read_message(&mut conn.stream, &mut conn.rbuf, MAX_AUTH_MSG).await?;
    if tag != b'p' {
        return Err(ClientError::fatal("bad packet"));
    }
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
    Ok(AuthOutcome { scram_keys })
}

/// SCRAM verifier for a plaintext userlist password, derived once and cached (PgBouncer does the same).
async fn adhoc_secret(
    shared: &Shared,
    user: &str,
    password: String,
    iterations: u32,
) -> ScramSecret {
    if let Some(e) = shared.adhoc_scram.get(user)
        && e.0 == password
    {
        return e.1.clone();
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
