//! SCRAM-SHA-256 exchanges (RFC 5802/7677, no channel binding): the server side that verifies
//! clients, and the client side pgmux uses to log in to PostgreSQL, with a password or with a
//! ClientKey recovered from a client's login (pass-through).

use super::secret::{ScramSecret, hmac, salted_password, sha256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message")]
    Malformed,
    #[error("unsupported SASL mechanism")]
    Mechanism,
    #[error("channel binding not supported")]
    ChannelBinding,
    #[error("SCRAM nonce mismatch")]
    Nonce,
    #[error("invalid SCRAM proof")]
    Proof,
    #[error("invalid server signature")]
    ServerSignature,
    #[error("SCRAM exchange out of order")]
    State,
}

/// Keys that let pgmux log in to PostgreSQL as a user without knowing the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramClientKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramClientKeys {
    /// ClientKey and ServerKey of `password` for a salt and iteration count (PBKDF2 runs here).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramClientKeys {
        let salted = salted_password(password, salt, iterations);
        ScramClientKeys {
            client_key: hmac(&salted, b"Client Key"),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

fn nonce() -> String {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).expect("OS random source");
    B64.encode(b)
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut o = [0u8; 32];
    for i in 0..32 {
        o[i] = a[i] ^ b[i];
    }
    o
}

/// Split `k=v,k=v` attributes; values may contain '='.
fn attrs(s: &str) -> Vec<(char, &str)> {
    s.split(',')
        .filter_map(|p| {
            let mut c = p.chars();
            let k = c.next()?;
            let rest = c.as_str().strip_prefix('=')?;
            Some((k, rest))
        })
        .collect()
}

/// Server side of one SCRAM-SHA-256 exchange.
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    client_first_bare: String,
    server_first: String,
    combined_nonce: String,
    gs2_header: String,
    done_first: bool,
}

impl ScramServer {
    pub fn new(secret: ScramSecret) -> ScramServer {
        ScramServer {
            secret,
            server_nonce: nonce(),
            client_first_bare: String::new(),
            server_first: String::new(),
            combined_nonce: String::new(),
            gs2_header: String::new(),
            done_first: false,
        }
    }

    /// SASLInitialResponse: returns the server-first-message.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if mechanism != "SCRAM-SHA-256" {
            return Err(ScramError::Mechanism);
        }
        if self.done_first {
            return Err(ScramError::State);
        }
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg.split_once(',').ok_or(ScramError::Malformed)?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed)?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed);
        }
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed);
        }
        let a = attrs(bare);
        // n= (user name, ignored: the startup packet's user counts), then r=
        if a.first().map(|x| x.0) != Some('n') {
            return Err(ScramError::Malformed);
        }
        let client_nonce = a
            .iter()
            .find(|x| x.0 == 'r')
            .map(|x| x.1)
            .ok_or(ScramError::Malformed)?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Malformed);
        }
        self.gs2_header = format!("{flag},{authzid},");
        self.client_first_bare = bare.to_string();
        self.combined_nonce = format!("{client_nonce}{}", self.server_nonce);
        self.server_first = format!(
            "r={},s={},i={}",
            self.combined_nonce,
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        self.done_first = true;
        Ok(self.server_first.clone().into_bytes())
    }

    /// SASLResponse: verifies the proof; returns (server-final-message, ClientKey).
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, [u8; 32]), ScramError> {
        if !self.done_first {
            return Err(ScramError::State);
        }
        self.done_first = false; // one attempt only
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let a = attrs(without_proof);
        let cbind = a
            .iter()
            .find(|x| x.0 == 'c')
            .map(|x| x.1)
            .ok_or(ScramError::Malformed)?;
        let cbind = B64.decode(cbind).map_err(|_| ScramError::Malformed)?;
        if cbind != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        let r = a
            .iter()
            .find(|x| x.0 == 'r')
            .map(|x| x.1)
            .ok_or(ScramError::Malformed)?;
        if r != self.combined_nonce {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed)?
            .try_into()
            .map_err(|_| ScramError::Malformed)?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.secret.stored_key)) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok((
            format!("v={}", B64.encode(server_signature)).into_bytes(),
            client_key,
        ))
    }
}

enum ClientCred {
    Password(String),
    Keys(ScramClientKeys),
}

/// Salt and iteration count of a server-first-message, if it is well formed.
pub fn server_first_salt(data: &[u8]) -> Option<(Vec<u8>, u32)> {
    let msg = std::str::from_utf8(data).ok()?;
    let a = attrs(msg);
    let salt = B64.decode(a.iter().find(|x| x.0 == 's')?.1).ok()?;
    let iterations = a.iter().find(|x| x.0 == 'i')?.1.parse().ok()?;
    Some((salt, iterations))
}

/// Client side of a SCRAM-SHA-256 exchange with PostgreSQL.
pub struct ScramClient {
    cred: ClientCred,
    client_nonce: String,
    auth_message: String,
    server_key: Option<[u8; 32]>,
}

impl ScramClient {
    pub fn with_password(password: &str) -> ScramClient {
        Self::new(ClientCred::Password(password.to_string()))
    }

    pub fn with_keys(keys: ScramClientKeys) -> ScramClient {
        Self::new(ClientCred::Keys(keys))
    }

    fn new(cred: ClientCred) -> ScramClient {
        ScramClient {
            cred,
            client_nonce: nonce(),
            auth_message: String::new(),
            server_key: None,
        }
    }

    /// Answer the coming server-first with these keys instead of the password (a client that
    /// learns the salt only from server-first and has the keys for it already).
    pub fn set_keys(&mut self, keys: ScramClientKeys) {
        self.cred = ClientCred::Keys(keys);
    }

    fn first_bare(&self) -> String {
        format!("n=,r={}", self.client_nonce)
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare()).into_bytes()
    }

    /// Handle server-first-message; returns client-final-message. PBKDF2 happens here for a password.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        let a = attrs(msg);
        let r = a
            .iter()
            .find(|x| x.0 == 'r')
            .map(|x| x.1)
            .ok_or(ScramError::Malformed)?;
        let s = a
            .iter()
            .find(|x| x.0 == 's')
            .map(|x| x.1)
            .ok_or(ScramError::Malformed)?;
        let i: u32 = a
            .iter()
            .find(|x| x.0 == 'i')
            .and_then(|x| x.1.parse().ok())
            .ok_or(ScramError::Malformed)?;
        if !r.starts_with(&self.client_nonce) || r.len() <= self.client_nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = B64.decode(s).map_err(|_| ScramError::Malformed)?;
        let (client_key, server_key) = match &self.cred {
            ClientCred::Password(p) => {
                if i == 0 {
                    return Err(ScramError::Malformed);
                }
                let salted = salted_password(p, &salt, i);
                (hmac(&salted, b"Client Key"), hmac(&salted, b"Server Key"))
            }
            ClientCred::Keys(k) => (k.client_key, k.server_key),
        };
        let without_proof = format!("c=biws,r={r}");
        self.auth_message = format!("{},{},{}", self.first_bare(), msg, without_proof);
        let stored = sha256(&client_key);
        let signature = hmac(&stored, self.auth_message.as_bytes());
        let proof = xor(&client_key, &signature);
        self.server_key = Some(server_key);
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Check server-final-message's signature.
    pub fn server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let key = self.server_key.ok_or(ScramError::State)?;
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Malformed)?;
        let v = msg.strip_prefix("v=").ok_or(ScramError::ServerSignature)?;
        let got = B64.decode(v).map_err(|_| ScramError::Malformed)?;
        let want = hmac(&key, self.auth_message.as_bytes());
        if got.len() == 32 && bool::from(got.as_slice().ct_eq(&want)) {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn secret() -> ScramSecret {
        ScramSecret::from_password("correct horse", b"saltsaltsaltsalt", 4096)
    }

    #[test]
    fn postgres_protocol_client_logs_in() {
        let mut client = ScramSha256::new(b"correct horse", ChannelBinding::unsupported());
        let mut server = ScramServer::new(secret());
        let first = server
            .client_first("SCRAM-SHA-256", client.message())
            .unwrap();
        client.update(&first).unwrap();
        let (fin, client_key) = server.client_final(client.message()).unwrap();
        client.finish(&fin).unwrap();
        let salted = salted_password("correct horse", b"saltsaltsaltsalt", 4096);
        assert_eq!(client_key, hmac(&salted, b"Client Key"));
    }

    #[test]
    fn wrong_password_is_refused() {
        let mut client = ScramSha256::new(b"wrong", ChannelBinding::unsupported());
        let mut server = ScramServer::new(secret());
        let first = server
            .client_first("SCRAM-SHA-256", client.message())
            .unwrap();
        client.update(&first).unwrap();
        assert_eq!(
            server.client_final(client.message()).unwrap_err(),
            ScramError::Proof
        );
    }

    #[test]
    fn own_client_with_password_and_with_recovered_keys() {
        let s = secret();
        let mut server = ScramServer::new(s.clone());
        let mut c = ScramClient::with_password("correct horse");
        let first = server
            .client_first("SCRAM-SHA-256", &c.client_first())
            .unwrap();
        let fin = c.server_first(&first).unwrap();
        let (sfin, client_key) = server.client_final(&fin).unwrap();
        c.server_final(&sfin).unwrap();
        // pass-through: the recovered ClientKey logs in again, no password needed
        let keys = ScramClientKeys {
            client_key,
            server_key: s.server_key,
        };
        let mut server2 = ScramServer::new(s);
        let mut c2 = ScramClient::with_keys(keys);
        let first = server2
            .client_first("SCRAM-SHA-256", &c2.client_first())
            .unwrap();
        let fin = c2.server_first(&first).unwrap();
        let (sfin, _) = server2.client_final(&fin).unwrap();
        c2.server_final(&sfin).unwrap();
        assert_eq!(c2.server_final(b"v=AAAA"), Err(ScramError::ServerSignature));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let inputs: [&[u8]; 9] = [
            b"",
            b"n",
            b"n,,",
            b"p=tls-server-end-point,,n=,r=abc",
            b"x,,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,n=,r=",
            &[0xff, 0xfe, 0x00],
            b"n,,n=u",
        ];
        for i in inputs {
            let mut s = ScramServer::new(secret());
            assert!(
                s.client_first("SCRAM-SHA-256", i).is_err(),
                "{:?}",
                String::from_utf8_lossy(i)
            );
        }
        let mut s = ScramServer::new(secret());
        assert_eq!(
            s.client_first("SCRAM-SHA-1", b"n,,n=,r=abc"),
            Err(ScramError::Mechanism)
        );
        s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc").unwrap();
        assert!(s.client_final(b"c=biws,r=abc,p=").is_err());
        let mut s = ScramServer::new(secret());
        s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc").unwrap();
        assert_eq!(
            s.client_final(b"c=biws,r=abcX,p=AAAA").unwrap_err(),
            ScramError::Nonce
        );
        let mut s = ScramServer::new(secret());
        assert_eq!(s.client_final(b"c=biws").unwrap_err(), ScramError::State);
        let mut c = ScramClient::with_password("x");
        assert!(c.server_first(b"r=zzz,s=AAAA,i=4096").is_err());
        assert!(c.server_first(&[0xff]).is_err());
    }
}
