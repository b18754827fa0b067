//! userlist.txt (`auth_file`): `"user" "secret"` per line, `""` escapes a quote, `;` starts a comment line.

use super::ConfigError;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct UserList {
    users: HashMap<String, String>,
}

impl UserList {
    pub fn load(path: &Path) -> Result<UserList, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: path.to_path_buf(),
            source: e,
        })?;
        Self::parse_str(&text, path)
    }

    pub fn parse_str(text: &str, file: &Path) -> Result<UserList, ConfigError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let err = |msg: &str| ConfigError::Syntax {
                file: file.to_path_buf(),
                line: i + 1,
                msg: msg.to_string(),
            };
            let (user, rest) = quoted(line).ok_or_else(|| err("expected \"user\" \"password\""))?;
            let (secret, _rest_ignored) =
                quoted(rest.trim_start()).ok_or_else(|| err("expected \"user\" \"password\""))?;
            if secret.len() > 65535 {
                return Err(err("password too long"));
            }
            users.insert(user, secret);
        }
        Ok(UserList { users })
    }

    pub fn get(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.users.keys().cloned()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A double-quoted token with `""` escapes; returns it and the rest of the line.
fn quoted(s: &str) -> Option<(String, &str)> {
    let rest = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut it = rest.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == '"' {
            if let Some(&(_, '"')) = it.peek() {
                out.push('"');
                it.next();
                continue;
            }
            return Some((out, &rest[i + 1..]));
        }
        out.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_secret_kinds() {
        let t = "; comment\n\"alice\" \"plain pw\"\n\"bob\" \"md5d2ffd3eb8f5ca9a5b31f4eb2a6ed7e0e\" extra ignored\n\"q\"\"uote\" \"a\"\"b\"\n\"s\" \"SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg==\"\n";
        let u = UserList::parse_str(t, Path::new("u.txt")).unwrap();
        assert_eq!(u.len(), 4);
        assert_eq!(u.get("alice"), Some("plain pw"));
        assert_eq!(u.get("bob"), Some("md5d2ffd3eb8f5ca9a5b31f4eb2a6ed7e0e"));
        assert_eq!(u.get("q\"uote"), Some("a\"b"));
        assert!(u.get("s").unwrap().starts_with("SCRAM-SHA-256$"));
        let e = UserList::parse_str("\"a\" \"b\"\nalice pw\n", Path::new("u.txt")).unwrap_err();
        assert!(e.to_string().contains("u.txt:2"), "{e}");
        assert!(UserList::parse_str("\"a\" \"unterminated\n", Path::new("u.txt")).is_err());
    }
}
