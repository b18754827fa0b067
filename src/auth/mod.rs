//! TEMPORARY STUB (replaced by the real auth module).
#![allow(dead_code, unused_variables)]
#[derive(Debug, Clone)]
pub enum Secret {
    Plain(String),
    Md5(String),
    Scram(ScramSecret),
}
impl Secret {
    pub fn parse(raw: &str) -> Secret {
        todo!()
    }
}
#[derive(Debug, Clone)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}
impl ScramSecret {
    pub fn from_password(p: &str, s: &[u8], i: u32) -> ScramSecret {
        todo!()
    }
    pub fn mock(u: &str, s: &[u8]) -> ScramSecret {
        todo!()
    }
}
#[derive(Debug, Clone)]
pub struct ScramClientKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}
#[derive(Debug, thiserror::Error)]
#[error("scram")]
pub struct ScramError;
pub struct ScramServer;
impl ScramServer {
    pub fn new(s: ScramSecret) -> Self {
        todo!()
    }
    pub fn client_first(&mut self, m: &str, d: &[u8]) -> Result<Vec<u8>, ScramError> {
        todo!()
    }
    pub fn client_final(&mut self, d: &[u8]) -> Result<(Vec<u8>, [u8; 32]), ScramError> {
        todo!()
    }
}
pub struct ScramClient;
impl ScramClient {
    pub fn with_password(p: &str) -> Self {
        todo!()
    }
    pub fn with_keys(k: ScramClientKeys) -> Self {
        todo!()
    }
    pub fn client_first(&self) -> Vec<u8> {
        todo!()
    }
    pub fn server_first(&mut self, d: &[u8]) -> Result<Vec<u8>, ScramError> {
        todo!()
    }
    pub fn server_final(&self, d: &[u8]) -> Result<(), ScramError> {
        todo!()
    }
}
pub mod md5 {
    use super::Secret;
    pub fn md5_secret(p: &str, u: &str) -> String {
        todo!()
    }
    pub fn md5_salted_response(s: &str, salt: [u8; 4]) -> String {
        todo!()
    }
    pub fn verify_md5(s: &Secret, u: &str, salt: [u8; 4], r: &[u8]) -> bool {
        todo!()
    }
    pub fn verify_plain(s: &Secret, u: &str, p: &str) -> bool {
        todo!()
    }
}
