//! The admin console: the virtual database `pgbouncer`, its session loop, command grammar and permissions.

pub mod control;
pub mod show;
pub mod show_pools;

use crate::client::timers::{self, ClientTimers, Limits};
use crate::client::{ClientConn, ClientError};
use crate::protocol::backend;
use crate::protocol::startup::read_message;
use crate::state::Shared;
use bytes::BytesMut;
use std::sync::Arc;

/// The version PgBouncer-reading tools are told (SHOW VERSION, server_version).
pub const COMPAT_VERSION: &str = "1.25.2";
/// Longest admin command accepted.
const MAX_ADMIN_QUERY: usize = 64 * 1024;

/// Who is at the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// admin_users: every command.
    Admin,
    /// stats_users: SHOW only.
    Stats,
}

/// A parsed console command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `CMD [arg]` (the argument unquoted, keeping case only when it was quoted).
    Plain(String, String),
    Set(String, String),
}

/// PgBouncer's console grammar: `WORD [WORD] [;]` or `SET key (=|TO) value [;]`, where a WORD
/// is `[0-9a-z_]+` (case-insensitive) or a double-quoted name and a value may be single-quoted.
pub fn parse(q: &str) -> Option<Command> {
    let mut toks = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    let mut semi = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b';' {
            if semi {
                return None;
            }
            semi = true;
            i += 1;
        } else if semi {
            return None;
        } else if c == b'"' || c == b'\'' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                if j >= b.len() {
                    return None;
                }
                if b[j] == c {
                    if b.get(j + 1) == Some(&c) {
                        s.push(c as char);
                        j += 2;
                        continue;
                    }
                    break;
                }
                let ch = q[j..].chars().next()?;
                s.push(ch);
                j += ch.len_utf8();
            }
            if s.is_empty() && c == b'"' {
                return None;
            }
            toks.push((s, c));
            i = j + 1;
        } else if c == b'=' {
            toks.push(("=".into(), b'='));
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let st = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push((q[st..i].to_ascii_lowercase(), b'w'));
        } else {
            return None;
        }
    }
    let is_word = |t: &(String, u8)| t.1 == b'w' || t.1 == b'"';
    match toks.as_slice() {
        [cmd] if is_word(cmd) => Some(Command::Plain(cmd.0.clone(), String::new())),
        [set, key, op, val]
            if set.1 == b'w'
                && set.0 == "set"
                && is_word(key)
                && (op.0 == "=" || (op.1 == b'w' && op.0 == "to"))
                && (is_word(val) || val.1 == b'\'') =>
        {
            Some(Command::Set(key.0.clone(), val.0.clone()))
        }
        [cmd, arg] if is_word(cmd) && is_word(arg) => {
            Some(Command::Plain(cmd.0.clone(), arg.0.clone()))
        }
        _ => None,
    }
}

/// The role a user gets at the console, if any.
pub fn role_of(shared: &Shared, user: &str) -> Option<Role> {
    let cfg = shared.config();
    if cfg.general.admin_users.iter().any(|u| u == user) {
        Some(Role::Admin)
    } else if cfg.general.stats_users.iter().any(|u| u == user) {
        Some(Role::Stats)
    } else {
        None
    }
}

/// An error that leaves the console session open (ERROR + ReadyForQuery), as PgBouncer's admin_error.
pub fn error(out: &mut BytesMut, msg: &str) {
    error_code(out, "08P01", msg);
}

pub fn error_code(out: &mut BytesMut, code: &str, msg: &str) {
    tracing::error!("{msg}");
    backend::error_response(out, "ERROR", code, msg);
    backend::ready_for_query(out, b'I');
}

/// Finish a successful command: CommandComplete + ReadyForQuery.
pub fn ready(out: &mut BytesMut, tag: &str) {
    backend::command_complete(out, tag);
    backend::ready_for_query(out, b'I');
}

/// Serve an authenticated console session until the client leaves.
pub async fn session(
    conn: &mut ClientConn,
    shared: &Arc<Shared>,
    user: &str,
    role: Role,
) -> Result<(), ClientError> {
    let cfg = shared.config();
    let meta = crate::client::client_meta(conn, "pgbouncer", user, "", cfg.general.listen_port);
    let t = Arc::new(ClientTimers::with_meta(Limits::default(), meta));
    shared.timers.insert(conn.id, t.clone());
    let _unregister = Unregister(shared.clone(), conn.id);
    shared
        .admin_clients
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _count = AdminCount(shared.clone());

    let mut out = BytesMut::with_capacity(256);
    backend::auth_request(&mut out, backend::AUTH_OK, &[]);
    for (k, v) in [
        ("server_version", format!("{COMPAT_VERSION}/bouncer")),
        ("client_encoding", "UTF8".into()),
        ("server_encoding", "UTF8".into()),
        ("DateStyle", "ISO".into()),
        ("TimeZone", "GMT".into()),
        ("standard_conforming_strings", "on".into()),
        ("is_superuser", "on".into()),
    ] {
        backend::parameter_status(&mut out, k.as_bytes(), v.as_bytes());
    }
    let mut key = [0u8; 8];
    getrandom::fill(&mut key).expect("OS random source");
    backend::backend_key_data(
        &mut out,
        u32::from_be_bytes(key[0..4].try_into().unwrap()) & 0x7fff_ffff,
        u32::from_be_bytes(key[4..8].try_into().unwrap()),
    );
    backend::ready_for_query(&mut out, b'I');
    conn.write_all(&out).await?;

    loop {
        let msg = tokio::select! {
            m = read_message(&mut conn.stream, &mut conn.rbuf, MAX_ADMIN_QUERY) => m?,
            _ = killed(&t) => return Err(ClientError::fatal(t.killed().message())),
        };
        let (tag, body) = msg;
        match tag {
            b'Q' => {
                let text = body.strip_suffix(&[0]).unwrap_or(&body);
                let q = String::from_utf8_lossy(text).into_owned();
                tracing::debug!("got admin query: {q}");
                t.request_time
                    .store(timers::now_ms(), std::sync::atomic::Ordering::Relaxed);
                out.clear();
                let stop = control::execute(shared, conn.id, role, &q, &mut out).await;
                conn.write_all(&out).await?;
                if stop {
                    // SHUTDOWN: keep the connection open until the process exits
                    std::future::pending::<()>().await;
                }
            }
            b'X' => return Ok(()),
            b'P' | b'B' | b'E' => {
                out.clear();
                error(
                    &mut out,
                    "extended query protocol not supported by admin console",
                );
                let _ = conn.write_all(&out).await;
                return Err(ClientError::fatal("bad packet"));
            }
            other => {
                return Err(ClientError::fatal(format!(
                    "unsupported packet type for admin console: {}",
                    other as char
                )));
            }
        }
    }
}

async fn killed(t: &ClientTimers) {
    t.wait_killed().await
}

struct Unregister(Arc<Shared>, u64);

impl Drop for Unregister {
    fn drop(&mut self) {
        self.0.timers.remove(&self.1);
    }
}

struct AdminCount(Arc<Shared>);

impl Drop for AdminCount {
    fn drop(&mut self) {
        self.0
            .admin_clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(c: &str, a: &str) -> Option<Command> {
        Some(Command::Plain(c.into(), a.into()))
    }

    #[test]
    fn grammar() {
        assert_eq!(parse("SHOW POOLS;"), plain("show", "pools"));
        assert_eq!(parse("  show\tpools  ; "), plain("show", "pools"));
        assert_eq!(parse("pause"), plain("pause", ""));
        assert_eq!(parse("PAUSE \"MyDb\""), plain("pause", "MyDb"));
        assert_eq!(parse("kill_client 42"), plain("kill_client", "42"));
        assert_eq!(
            parse("SET default_pool_size = 7"),
            Some(Command::Set("default_pool_size".into(), "7".into()))
        );
        assert_eq!(
            parse("set server_check_query to 'select ''1'''"),
            Some(Command::Set(
                "server_check_query".into(),
                "select '1'".into()
            ))
        );
        assert_eq!(parse("show pools extra"), None);
        assert_eq!(parse("show pools;;"), None);
        assert_eq!(parse("show; pools"), None);
        assert_eq!(parse("drop table x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("show 'x'"), None);
    }
}
