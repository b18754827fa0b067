//! TEMPORARY STUB (replaced by the real dev module).
#![allow(dead_code)]
pub struct TempPostgres;
impl TempPostgres {
    pub fn port(&self) -> u16 {
        0
    }
}
pub struct DevEnv {
    pub pg: TempPostgres,
    pub ini_path: std::path::PathBuf,
    pub listen_port: u16,
}
impl DevEnv {
    pub fn psql_command(&self) -> String {
        String::new()
    }
}
#[derive(Debug, thiserror::Error)]
#[error("dev")]
pub struct DevError;
pub fn prepare_dev_env(_p: Option<u16>) -> Result<DevEnv, DevError> {
    todo!()
}
