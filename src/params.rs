//! Tracked session parameters (client_encoding, DateStyle, TimeZone, ...): per-connection values and the SET that syncs them.

use std::fmt::Write;
use std::sync::Arc;

/// The parameters that follow a client across server connections, in canonical spelling.
#[derive(Debug, Clone)]
pub struct Tracked {
    names: Vec<String>,
}

/// Always tracked, as PgBouncer does.
const BUILTIN: [&str; 5] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
];

impl Tracked {
    pub fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
        for e in extra {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(e)) {
                names.push(canonical(e));
            }
        }
        Tracked { names }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.names.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Index of a parameter name, case-insensitively.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn index_bytes(&self, name: &[u8]) -> Option<usize> {
        self.names
            .iter()
            .position(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn empty_set(&self) -> ParamSet {
        let mut set = ParamSet {
            vals: vec![None; self.names.len()],
            packed: Arc::from(Vec::new()),
        };
        set.repack();
        set
    }
}

/// PostgreSQL's own spelling of well-known GUC names that clients may send in lower case.
fn canonical(name: &str) -> String {
    const KNOWN: [&str; 4] = ["DateStyle", "TimeZone", "IntervalStyle", "search_path"];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(|k| k.to_string())
        .unwrap_or_else(|| name.to_string())
}

/// Values of the tracked parameters for one connection (client or server side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSet {
    vals: Vec<Option<String>>,
    /// All values in one buffer (per slot: 0 for none, or 1, the length and the bytes), kept
    /// in step with `vals`: two sets with equal `packed` hold equal values, which the
    /// per-transaction sync check finds with one compare of one small buffer each.
    packed: Arc<[u8]>,
}

impl ParamSet {
    pub fn get(&self, i: usize) -> Option<&str> {
        self.vals.get(i).and_then(|v| v.as_deref())
    }

    pub fn set(&mut self, i: usize, v: &str) {
        if let Some(slot) = self.vals.get_mut(i) {
            match slot {
                Some(cur) if cur == v => {}
                _ => {
                    *slot = Some(v.to_string());
                    self.repack();
                }
            }
        }
    }

    /// All values in one shared buffer: sets are equal exactly when these are.
    #[inline]
    pub fn packed(&self) -> &Arc<[u8]> {
        &self.packed
    }

    fn repack(&mut self) {
        // one allocation, not a growth per value
        let need: usize = self
            .vals
            .iter()
            .map(|v| v.as_ref().map_or(1, |v| 5 + v.len()))
            .sum();
        let mut packed = Vec::with_capacity(need);
        for v in &self.vals {
            match v {
                None => packed.push(0),
                Some(v) => {
                    packed.push(1);
                    packed.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    packed.extend_from_slice(v.as_bytes());
                }
            }
        }
        self.packed = packed.into();
    }

    /// Fill every value this set lacks from `other`.
    pub fn fill_from(&mut self, other: &ParamSet) {
        for (mine, theirs) in self.vals.iter_mut().zip(&other.vals) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        self.repack();
    }

    /// The `SET ...;` statements that make a server with `server` values match `self`, or None.
    pub fn sync_sql(&self, server: &ParamSet, tracked: &Tracked) -> Option<String> {
        if self.packed == server.packed {
            return None;
        }
        let mut sql = String::new();
        for (i, want) in self.vals.iter().enumerate() {
            let Some(want) = want else { continue };
            let same = server
                .vals
                .get(i)
                .and_then(|v| v.as_deref())
                .is_some_and(|have| have == want || have.eq_ignore_ascii_case(want));
            if !same {
                let _ = write!(
                    sql,
                    "SET {}={};",
                    quote_ident(tracked.name(i)),
                    quote_literal(want)
                );
            }
        }
        if sql.is_empty() { None } else { Some(sql) }
    }
}

/// Quote a parameter name only when it needs it.
fn quote_ident(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A SQL string literal, safe whatever standard_conforming_strings is.
pub fn quote_literal(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 3);
    if v.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in v.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_sql_quotes_and_skips_equal() {
        let t = Tracked::new(&["intervalstyle".to_string()]);
        assert_eq!(t.name(t.index("IntervalStyle").unwrap()), "IntervalStyle");
        let mut c = t.empty_set();
        let mut s = t.empty_set();
        c.set(t.index("timezone").unwrap(), "Europe/Paris");
        s.set(t.index("TimeZone").unwrap(), "UTC");
        c.set(t.index("application_name").unwrap(), "it's \\ app");
        c.set(t.index("DateStyle").unwrap(), "iso, mdy");
        s.set(t.index("DateStyle").unwrap(), "ISO, MDY");
        let sql = c.sync_sql(&s, &t).unwrap();
        assert_eq!(
            sql,
            "SET TimeZone='Europe/Paris';SET application_name=E'it''s \\\\ app';"
        );
        s.set(t.index("TimeZone").unwrap(), "Europe/Paris");
        c.set(t.index("application_name").unwrap(), "x");
        s.set(t.index("application_name").unwrap(), "x");
        assert_eq!(c.sync_sql(&s, &t), None);
        // equal values differently spelled still need no SET; a value the server lacks does
        s.set(t.index("DateStyle").unwrap(), "iso, mdy");
        c.set(t.index("DateStyle").unwrap(), "ISO, MDY");
        assert_ne!(c.packed, s.packed);
        assert_eq!(c.sync_sql(&s, &t), None);
        let mut c2 = t.empty_set();
        c2.fill_from(&c);
        assert_eq!(c2, c);
        c2.set(t.index("client_encoding").unwrap(), "UTF8");
        assert_eq!(
            c2.sync_sql(&s, &t).as_deref(),
            Some("SET client_encoding='UTF8';")
        );
        // a value moved between slots is not mistaken for an equal set
        let (mut a, mut b) = (t.empty_set(), t.empty_set());
        a.set(0, "x");
        b.set(1, "x");
        assert_ne!(a.packed, b.packed);
    }
}
