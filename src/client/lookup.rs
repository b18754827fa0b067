//! Looking a user up with auth_query through the (auth database, auth_user) pool, with the optional cache.

use super::ClientError;
use crate::config::{Config, DatabaseConfig};
use crate::server::auth_query::{self, AuthQueryError, Lookup};
use crate::state::Shared;
use std::time::Duration;

/// Negative answers ("no such user") are never kept longer than this.
const NEGATIVE_TTL_CAP: Duration = Duration::from_secs(5);

/// The outcome of a lookup as clients see it.
#[derive(Debug, Clone)]
pub enum Found {
    Secret(String),
    /// NULL password: the login can never succeed.
    Null,
}

/// Cached per (auth database, user): the lookup outcome, or the client error it produced.
pub type CachedLookup = Result<Found, (String, String)>;

/// Whether auth_query applies to this database (it has, or inherits, an auth_user).
pub fn auth_user_for<'a>(cfg: &'a Config, db: &'a DatabaseConfig) -> Option<&'a str> {
    db.auth_user.as_deref().or(cfg.general.auth_user.as_deref())
}

/// Run (or reuse) the lookup of `user` for a client of database `db_name`.
/// Returns the outcome and whether it came from an earlier lookup (cache hit).
pub async fn lookup(
    shared: &Shared,
    cfg: &Config,
    db_name: &str,
    db: &DatabaseConfig,
    user: &str,
) -> Result<(Found, bool), ClientError> {
    let auth_user = auth_user_for(cfg, db).unwrap_or_default().to_string();
    let auth_dbname = db
        .auth_dbname
        .clone()
        .or(cfg.general.auth_dbname.clone())
        .unwrap_or_else(|| db_name.to_string());
    let query = db
        .auth_query
        .clone()
        .unwrap_or_else(|| cfg.general.auth_query.clone());
    let Some(auth_db) = cfg.database(&auth_dbname).cloned() else {
        tracing::error!("authentication database \"{auth_dbname}\" is not configured.");
        return Err(ClientError::fatal("bouncer config error"));
    };
    let ttl = cfg.general.auth_query_cache_ttl;
    let fetch = || async {
        let r = run_lookup(shared, &auth_dbname, &auth_db, &auth_user, &query, user).await;
        let keep = match &r {
            Ok(Found::Secret(_)) | Ok(Found::Null) => ttl,
            Err((_, m)) if m == "no such user" => ttl.min(NEGATIVE_TTL_CAP),
            Err(_) => Duration::ZERO,
        };
        (r, keep)
    };
    let (r, cached) = if ttl.is_zero() {
        (fetch().await.0, false)
    } else {
        shared
            .auth_cache
            .get_or_fetch((auth_dbname.clone(), user.to_string()), fetch)
            .await
    };
    match r {
        Ok(f) => Ok((f, cached)),
        Err((sqlstate, message)) => Err(ClientError::Fatal { sqlstate, message }),
    }
}

/// Forget a cached lookup (after a failed login against it).
pub fn invalidate(shared: &Shared, cfg: &Config, db_name: &str, db: &DatabaseConfig, user: &str) {
    let auth_dbname = db
        .auth_dbname
        .clone()
        .or(cfg.general.auth_dbname.clone())
        .unwrap_or_else(|| db_name.to_string());
    shared
        .auth_cache
        .invalidate(&(auth_dbname, user.to_string()));
}

async fn run_lookup(
    shared: &Shared,
    auth_dbname: &str,
    auth_db: &DatabaseConfig,
    auth_user: &str,
    query: &str,
    user: &str,
) -> CachedLookup {
    let pool = shared.pool_for(auth_dbname, auth_db, auth_user);
    // a plain checkout: no tracked-parameter SET is ever sent on the auth connection
    let mut server = pool.checkout().await.map_err(|e| match e {
        crate::pool::CheckoutError::Server(c, m) => (c, m),
        crate::pool::CheckoutError::WaitTimeout => ("08P01".into(), "query_wait_timeout".into()),
        crate::pool::CheckoutError::Closed => ("08P01".into(), "server shutting down".into()),
    })?;
    match auth_query::run(&mut server, query, user).await {
        Ok(found) => {
            pool.checkin(server, true);
            match found {
                Lookup::NoRow => Err(("08P01".into(), "no such user".into())),
                Lookup::NullPassword => Ok(Found::Null),
                Lookup::Secret(s) => Ok(Found::Secret(s)),
            }
        }
        Err(AuthQueryError::Server(e)) => {
            pool.close_active(server, "server conn crashed?");
            Err(e.client_error())
        }
        Err(e) => {
            tracing::error!("{}/{}: {e}", auth_dbname, auth_user);
            let reason = match &e {
                AuthQueryError::Query(_) => "error response from auth_query".to_string(),
                other => other.to_string(),
            };
            pool.close_active(server, &reason);
            Err(("08P01".into(), "bouncer config error".into()))
        }
    }
}
