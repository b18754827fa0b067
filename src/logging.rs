//! PgBouncer-style log lines (`2025-01-01 00:00:00.000 UTC [pid] LOG message`) to stderr or `logfile`.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

struct PgbFormat {
    pid: u32,
    json: bool,
}

impl<S, N> FormatEvent<S, N> for PgbFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "LOG",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "NOISE",
        };
        if self.json {
            let mut msg = String::new();
            ctx.field_format()
                .format_fields(Writer::new(&mut msg), event)?;
            return writeln!(
                w,
                "{{\"time\":\"{} UTC\",\"pid\":{},\"level\":\"{}\",\"message\":\"{}\"}}",
                timestamp(SystemTime::now()),
                self.pid,
                level,
                json_escape(&msg)
            );
        }
        write!(
            w,
            "{} UTC [{}] {} ",
            timestamp(SystemTime::now()),
            self.pid,
            level
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// A JSON string body: quotes, backslashes and control characters escaped.
pub fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC without a date library.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Where log lines go: stderr (unless quiet) and/or an append-only log file.
#[derive(Clone)]
struct Sink {
    file: Option<Arc<Mutex<std::fs::File>>>,
    stderr: bool,
}

struct SinkWriter(Sink);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.0.file {
            let _ = f.lock().unwrap().write_all(buf);
        }
        if self.0.stderr {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.clone())
    }
}

/// Install the global subscriber. `verbose` 0 = LOG, 1 = DEBUG, 2+ = NOISE.
pub fn init(
    logfile: Option<&std::path::Path>,
    quiet: bool,
    verbose: u32,
    json: bool,
) -> std::io::Result<()> {
    let file = match logfile {
        Some(p) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ))),
        None => None,
    };
    let level = match verbose {
        0 => Level::INFO,
        1 => Level::DEBUG,
        _ => Level::TRACE,
    };
    let sink = Sink {
        file,
        stderr: !quiet,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(sink)
        .event_format(PgbFormat {
            pid: std::process::id(),
            json,
        })
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_escaping() {
        assert_eq!(json_escape("a\"b\\c\nd\u{1}"), "a\\\"b\\\\c\\nd\\u0001");
    }

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14 22:13:20.123");
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00.000"
        );
    }
}
