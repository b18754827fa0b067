//! MD5 password authentication: stored `md5` secrets, salted client responses, and plaintext checks.

use super::secret::{ScramSecret, Secret, hmac, salted_password, sha256};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

pub fn md5_hex(data: &[u8]) -> String {
    let d = Md5::digest(data);
    let mut s = String::with_capacity(32);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `md5` + md5(password + user), as stored by PostgreSQL.
pub fn md5_secret(password: &str, user: &str) -> String {
    let mut v = password.as_bytes().to_vec();
    v.extend_from_slice(user.as_bytes());
    format!("md5{}", md5_hex(&v))
}

/// What a client answers to AuthenticationMD5Password: `md5` + md5(hex(secret) + salt).
pub fn md5_salted_response(secret_md5: &str, salt: [u8; 4]) -> String {
    let hex = secret_md5.strip_prefix("md5").unwrap_or(secret_md5);
    let mut v = hex.as_bytes().to_vec();
    v.extend_from_slice(&salt);
    format!("md5{}", md5_hex(&v))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Check a client's md5 response against a plaintext or md5 secret.
pub fn verify_md5(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let response = response.strip_suffix(&[0]).unwrap_or(response);
    let stored = match secret {
        Secret::Plain(p) if !p.is_empty() => md5_secret(p, user),
        Secret::Md5(m) => m.clone(),
        _ => return false,
    };
    ct_eq(md5_salted_response(&stored, salt).as_bytes(), response)
}

/// Check a cleartext password against any stored secret (SCRAM: PBKDF2, run on a blocking thread).
pub fn verify_plain(secret: &Secret, user: &str, password: &str) -> bool {
    match secret {
        Secret::Plain(p) => !p.is_empty() && ct_eq(p.as_bytes(), password.as_bytes()),
        Secret::Md5(m) => ct_eq(md5_secret(password, user).as_bytes(), m.as_bytes()),
        Secret::Scram(s) => verify_scram_plain(s, password),
    }
}

fn verify_scram_plain(s: &ScramSecret, password: &str) -> bool {
    let salted = salted_password(password, &s.salt, s.iterations);
    let stored = sha256(&hmac(&salted, b"Client Key"));
    ct_eq(&stored, &s.stored_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_vectors() {
        // python: "md5" + hashlib.md5(b"secretuser").hexdigest()
        assert_eq!(
            md5_secret("secret", "user"),
            "md520eb1b22a92b5c573dc1eb4331fc49ee"
        );
        let stored = md5_secret("secret", "user");
        let salt = [1, 2, 3, 4];
        let resp = md5_salted_response(&stored, salt);
        assert!(verify_md5(
            &Secret::Plain("secret".into()),
            "user",
            salt,
            resp.as_bytes()
        ));
        let mut with_nul = resp.clone().into_bytes();
        with_nul.push(0);
        assert!(verify_md5(
            &Secret::Md5(stored.clone()),
            "user",
            salt,
            &with_nul
        ));
        assert!(!verify_md5(
            &Secret::Plain("other".into()),
            "user",
            salt,
            resp.as_bytes()
        ));
        assert!(!verify_md5(
            &Secret::Md5(stored),
            "user",
            [9, 9, 9, 9],
            resp.as_bytes()
        ));
        let scram = Secret::Scram(ScramSecret::from_password("secret", b"salt", 4096));
        assert!(!verify_md5(&scram, "user", salt, resp.as_bytes()));
    }

    #[test]
    fn plain_against_every_secret_kind() {
        assert!(verify_plain(&Secret::Plain("pw".into()), "u", "pw"));
        assert!(!verify_plain(&Secret::Plain("".into()), "u", ""));
        assert!(verify_plain(&Secret::Md5(md5_secret("pw", "u")), "u", "pw"));
        assert!(!verify_plain(
            &Secret::Md5(md5_secret("pw", "u")),
            "v",
            "pw"
        ));
        let s = Secret::Scram(ScramSecret::from_password("pw", b"0123456789abcdef", 4096));
        assert!(verify_plain(&s, "u", "pw"));
        assert!(!verify_plain(&s, "u", "pX"));
    }
}
