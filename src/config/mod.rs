//! TEMPORARY STUB (replaced by the real config module).
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file:?}:{line}: {key}: {msg}")]
    Invalid {
        file: PathBuf,
        line: usize,
        key: String,
        msg: String,
    },
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Any,
    Trust,
    Plain,
    Md5,
    Cert,
    Hba,
    Ldap,
    Pam,
    ScramSha256,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}
#[derive(Debug, Clone)]
pub struct General {
    pub listen_addr: Vec<String>,
    pub listen_port: u16,
    pub listen_backlog: u32,
    pub unix_socket_dir: String,
    pub unix_socket_mode: u32,
    pub so_reuseport: bool,
    pub auth_type: AuthType,
    pub auth_file: Option<PathBuf>,
    pub scram_iterations: u32,
    pub pool_mode: PoolMode,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub server_round_robin: bool,
    pub server_reset_query: String,
    pub log_disconnections: bool,
    pub log_connections: bool,
    pub log_pooler_errors: bool,
    pub max_client_conn: u32,
    pub ignore_startup_parameters: Vec<String>,
    pub track_extra_parameters: Vec<String>,
    pub application_name_add_host: bool,
    pub client_login_timeout: Duration,
    pub max_packet_size: u32,
    pub disable_pqexec: bool,
    pub logfile: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub verbose: u32,
}
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub name: String,
    pub dbname: Option<String>,
    pub hosts: Vec<String>,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub server_lifetime: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub pool_mode: Option<PoolMode>,
    pub connect_query: Option<String>,
    pub client_encoding: Option<String>,
    pub datestyle: Option<String>,
    pub timezone: Option<String>,
    pub application_name: Option<String>,
}
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub query_wait_timeout: Option<Duration>,
}
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub general: General,
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub users: BTreeMap<String, UserConfig>,
    pub warnings: Vec<String>,
}
impl Config {
    pub fn load(_p: &Path) -> Result<Config, ConfigError> {
        todo!()
    }
    pub fn describe(&self) -> String {
        todo!()
    }
    pub fn database(&self, n: &str) -> Option<&DatabaseConfig> {
        self.databases.get(n).or_else(|| self.databases.get("*"))
    }
}
#[derive(Debug, Clone, Default)]
pub struct UserList;
impl UserList {
    pub fn load(_p: &Path) -> Result<UserList, ConfigError> {
        todo!()
    }
    pub fn parse_str(_t: &str, _p: &Path) -> Result<UserList, ConfigError> {
        todo!()
    }
    pub fn get(&self, _u: &str) -> Option<&str> {
        None
    }
    pub fn len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        true
    }
}
