//! PgBouncer's startup-packet rules: database/user defaults, tracked parameters, `options`, ignored and unsupported keys.

use crate::params::{ParamSet, Tracked};

/// What a startup packet asks for, once validated.
#[derive(Debug)]
pub struct StartupInfo {
    pub user: String,
    pub database: String,
    pub params: ParamSet,
}

/// Apply the startup parameters; `Err` carries PgBouncer's exact message.
pub fn decide(
    pairs: &[(String, String)],
    tracked: &Tracked,
    ignore: &[String],
    app_name_add_host: Option<&str>,
) -> Result<StartupInfo, String> {
    let mut user = None;
    let mut database = None;
    let mut params = tracked.empty_set();
    let mut app_name = None;
    let ignored = |k: &str| ignore.iter().any(|i| i.eq_ignore_ascii_case(k));
    for (k, v) in pairs {
        match k.as_str() {
            "database" => database = Some(v.clone()),
            "user" => user = Some(v.clone()),
            "options" => apply_options(v, tracked, &mut params, &ignored)?,
            "application_name" => app_name = Some(v.clone()),
            _ => {
                if let Some(i) = tracked.index(k) {
                    params.set(i, v);
                } else if !ignored(k) {
                    return Err(format!("unsupported startup parameter: {k}"));
                }
            }
        }
    }
    let user = match user {
        Some(u) if !u.is_empty() => u,
        _ => return Err("no username supplied".into()),
    };
    let database = match database {
        Some(d) if !d.is_empty() => d,
        _ => user.clone(),
    };
    if let Some(addr) = app_name_add_host {
        app_name = Some(format!(
            "{} - {}",
            app_name.as_deref().unwrap_or("app"),
            addr
        ));
    }
    if let Some(a) = app_name
        && let Some(i) = tracked.index("application_name")
    {
        params.set(i, &a);
    }
    Ok(StartupInfo {
        user,
        database,
        params,
    })
}

/// Parse `options` the way PgBouncer does: only `-c key=value` (and `--key=value`) are allowed;
/// tracked keys are applied, ignored ones dropped, others rejected unless `options` is ignored.
fn apply_options(
    opts: &str,
    tracked: &Tracked,
    params: &mut ParamSet,
    ignored: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    const ONLY: &str = "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed";
    let mut rest = opts.trim_start();
    while !rest.is_empty() {
        let token_start = if let Some(r) = rest.strip_prefix("--") {
            r
        } else if let Some(r) = rest.strip_prefix("-c") {
            r.trim_start()
        } else {
            return Err(ONLY.into());
        };
        let (token, after) = read_escaped_token(token_start);
        rest = after.trim_start();
        let Some((k, v)) = token.split_once('=') else {
            return Err(ONLY.into());
        };
        if let Some(i) = tracked.index(k) {
            params.set(i, v);
        } else if ignored(k) || ignored("options") {
            tracing::debug!("ignoring startup parameter from options: {k}={v}");
        } else {
            return Err(format!("unsupported startup parameter in options: {k}"));
        }
    }
    Ok(())
}

/// A whitespace-terminated token where backslash escapes the next character.
fn read_escaped_token(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            if let Some((_, n)) = chars.next() {
                out.push(n);
            }
        } else if c.is_whitespace() {
            return (out, &s[i..]);
        } else {
            out.push(c);
        }
    }
    (out, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn rules() {
        let t = Tracked::new(&[]);
        let ign = vec!["extra_float_digits".to_string()];
        let s = decide(
            &p(&[
                ("user", "u"),
                ("extra_float_digits", "2"),
                ("TimeZone", "UTC"),
            ]),
            &t,
            &ign,
            None,
        )
        .unwrap();
        assert_eq!(s.database, "u");
        assert_eq!(s.params.get(t.index("timezone").unwrap()), Some("UTC"));
        assert_eq!(
            decide(&p(&[("user", "u"), ("foo", "1")]), &t, &ign, None).unwrap_err(),
            "unsupported startup parameter: foo"
        );
        assert_eq!(
            decide(&p(&[("database", "d")]), &t, &ign, None).unwrap_err(),
            "no username supplied"
        );
        let s = decide(
            &p(&[
                ("user", "u"),
                ("options", "-c DateStyle=ISO --TimeZone=Europe/Paris"),
            ]),
            &t,
            &ign,
            None,
        )
        .unwrap();
        assert_eq!(
            s.params.get(t.index("timezone").unwrap()),
            Some("Europe/Paris")
        );
        assert_eq!(s.params.get(t.index("datestyle").unwrap()), Some("ISO"));
        assert_eq!(
            decide(
                &p(&[("user", "u"), ("options", "-c statement_timeout=5")]),
                &t,
                &ign,
                None
            )
            .unwrap_err(),
            "unsupported startup parameter in options: statement_timeout"
        );
        let ign2 = vec!["options".to_string()];
        assert!(
            decide(
                &p(&[("user", "u"), ("options", "-c statement_timeout=5")]),
                &t,
                &ign2,
                None
            )
            .is_ok()
        );
        assert!(
            decide(&p(&[("user", "u"), ("options", "-X")]), &t, &ign, None)
                .unwrap_err()
                .starts_with("unsupported options")
        );
        let s = decide(
            &p(&[("user", "u"), ("options", r"-c application_name=a\ b")]),
            &t,
            &ign,
            Some("1.2.3.4:5"),
        )
        .unwrap();
        assert_eq!(
            s.params.get(t.index("application_name").unwrap()),
            Some("app - 1.2.3.4:5")
        );
    }
}
