//! Stored secrets as found in userlist.txt or pg_authid: plaintext, `md5…`, `SCRAM-SHA-256$…` verifiers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub type HmacSha256 = Hmac<Sha256>;

/// A password as stored for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// `md5` + 32 lower-case hex digits.
    Md5(String),
    Scram(ScramSecret),
}

impl Secret {
    /// Classify a stored value the way PgBouncer's get_password_type does.
    pub fn parse(raw: &str) -> Secret {
        if raw.len() == 35
            && raw.starts_with("md5")
            && raw[3..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Secret::Md5(raw.to_ascii_lowercase());
        }
        if let Some(s) = ScramSecret::parse(raw) {
            return Secret::Scram(s);
        }
        Secret::Plain(raw.to_string())
    }
}

/// A SCRAM-SHA-256 verifier: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SASLprep the password as PostgreSQL does, falling back to the raw bytes when it is not valid.
pub fn prepare_password(password: &str) -> String {
    match stringprep::saslprep(password) {
        Ok(p) => p.into_owned(),
        Err(_) => password.to_string(),
    }
}

/// SaltedPassword = PBKDF2-HMAC-SHA256(SASLprep(password), salt, iterations). CPU-heavy.
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let pw = prepare_password(password);
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(pw.as_bytes(), salt, iterations, &mut out);
    out
}

impl ScramSecret {
    pub fn parse(s: &str) -> Option<ScramSecret> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iter.parse().ok().filter(|&i| i > 0)?;
        let salt = B64.decode(salt).ok()?;
        let stored_key: [u8; 32] = B64.decode(stored).ok()?.try_into().ok()?;
        let server_key: [u8; 32] = B64.decode(server).ok()?.try_into().ok()?;
        Some(ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derive a verifier from a plaintext password (PBKDF2: run it on a blocking thread).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = salted_password(password, salt, iterations);
        Self::from_salted(&salted, salt, iterations)
    }

    pub fn from_salted(salted: &[u8; 32], salt: &[u8], iterations: u32) -> ScramSecret {
        let client_key = hmac(salted, b"Client Key");
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(salted, b"Server Key"),
        }
    }

    /// A deterministic fake verifier for an unknown user, so a login attempt looks the same
    /// whether or not the user exists. Nobody knows a password for it.
    pub fn mock(user: &str, seed: &[u8]) -> ScramSecret {
        let salt = hmac(seed, user.as_bytes())[..16].to_vec();
        let k = hmac(seed, b"mock keys");
        ScramSecret {
            iterations: 4096,
            salt,
            stored_key: hmac(&k, b"stored"),
            server_key: hmac(&k, b"server"),
        }
    }
}

impl std::fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_round_trips() {
        assert_eq!(Secret::parse("hunter2"), Secret::Plain("hunter2".into()));
        assert!(matches!(
            Secret::parse("md5ae2b1fca515949e5d54fb22b8ed95575"),
            Secret::Md5(_)
        ));
        assert!(matches!(Secret::parse("md5nothex"), Secret::Plain(_)));
        let s = ScramSecret::from_password("pencil", b"0123456789abcdef", 4096);
        let text = s.to_string();
        assert_eq!(Secret::parse(&text), Secret::Scram(s));
        assert!(ScramSecret::parse("SCRAM-SHA-256$0:AAAA$AAAA:AAAA").is_none());
        assert!(ScramSecret::parse("SCRAM-SHA-256$4096:!!$x:y").is_none());
    }

    #[test]
    fn matches_postgres_verifier() {
        // computed independently (Python hashlib) for password "pencil", salt "0123456789abcdef", 4096 rounds
        let s = ScramSecret::from_password("pencil", b"0123456789abcdef", 4096);
        assert_eq!(
            s.to_string(),
            "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
        );
    }
}
