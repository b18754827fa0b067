//! The ini grammar of pgbouncer.ini (PgBouncer's cfparser): sections, `key = value`, comments, `%include`.

use super::ConfigError;
use std::path::{Path, PathBuf};

/// One `key = value` line with where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

const MAX_INCLUDE_DEPTH: usize = 10;

/// Read a file (following `%include`) into entries.
pub fn read_file(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        file: path.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    let mut section = String::new();
    parse_into(&text, path, &mut section, &mut out, 0)?;
    Ok(out)
}

/// Parse text as if read from `file`.
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Entry>, ConfigError> {
    let mut out = Vec::new();
    let mut section = String::new();
    parse_into(text, file, &mut section, &mut out, 0)?;
    Ok(out)
}

fn parse_into(
    text: &str,
    file: &Path,
    section: &mut String,
    out: &mut Vec<Entry>,
    depth: usize,
) -> Result<(), ConfigError> {
    let syntax = |line: usize, msg: &str| ConfigError::Syntax {
        file: file.to_path_buf(),
        line,
        msg: msg.to_string(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("%include") {
            let target = rest.trim();
            if target.is_empty() || !rest.starts_with(char::is_whitespace) {
                return Err(syntax(line_no, "%include needs a file name"));
            }
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(syntax(line_no, "too many nested %include files"));
            }
            let p = Path::new(target);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                file.parent().unwrap_or(Path::new(".")).join(p)
            };
            let inc = std::fs::read_to_string(&p).map_err(|e| ConfigError::Io {
                file: p.clone(),
                source: e,
            })?;
            parse_into(&inc, &p, section, out, depth + 1)?;
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| syntax(line_no, "missing ']' in section header"))?;
            *section = name.trim().to_ascii_lowercase();
            continue;
        }
        let (key, value) =
            split_key_value(line).ok_or_else(|| syntax(line_no, "expected key = value"))?;
        if section.is_empty() {
            return Err(syntax(line_no, "key outside of any section"));
        }
        out.push(Entry {
            section: section.clone(),
            key,
            value: value.to_string(),
            file: file.to_path_buf(),
            line: line_no,
        });
    }
    Ok(())
}

/// `key = value`; the key may be double-quoted (database and user names).
fn split_key_value(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    key.push('"');
                    chars.next();
                    continue;
                }
                let after = rest[i + 1..].trim_start();
                let value = after.strip_prefix('=')?.trim();
                return Some((key, value));
            }
            key.push(c);
        }
        return None;
    }
    let eq = line.find('=')?;
    let key = line[..eq].trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    Some((key.to_string(), line[eq + 1..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let t = "\n; comment\n# also\n[databases]\n* = host=x\n\"my db\" = host=y\n[PgBouncer]\nauth_query = SELECT a = b; -- kept\n";
        let e = parse_str(t, Path::new("/x/p.ini")).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (
                e[0].section.as_str(),
                e[0].key.as_str(),
                e[0].value.as_str(),
                e[0].line
            ),
            ("databases", "*", "host=x", 5)
        );
        assert_eq!(e[1].key, "my db");
        assert_eq!(
            (e[2].section.as_str(), e[2].value.as_str()),
            ("pgbouncer", "SELECT a = b; -- kept")
        );
        assert!(parse_str("x = 1\n", Path::new("a")).is_err());
        assert!(parse_str("[a\n", Path::new("a")).is_err());
        assert!(parse_str("[a]\njunk\n", Path::new("a")).is_err());
    }

    #[test]
    fn include_is_relative_and_bounded() {
        let d = std::env::temp_dir().join(format!("pgmux-ini-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("inc.ini"), "listen_port = 7000\n").unwrap();
        std::fs::write(d.join("main.ini"), "[pgbouncer]\n%include inc.ini\n").unwrap();
        let e = read_file(&d.join("main.ini")).unwrap();
        assert_eq!(e[0].key, "listen_port");
        assert!(e[0].file.ends_with("inc.ini"));
        std::fs::write(d.join("loop.ini"), "[pgbouncer]\n%include loop.ini\n").unwrap();
        assert!(read_file(&d.join("loop.ini")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
