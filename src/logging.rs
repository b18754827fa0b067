//! PgBouncer-style log lines (`2025-01-01 00:00:00.000 UTC [pid] LOG message`) to stderr or `logfile`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
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
        write_timestamp(&mut w, SystemTime::now())?;
        write!(w, " UTC [{}] {} ", self.pid, level)?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The event's fields as PgBouncer-style text: the message as is, other fields as ` key=value`,
/// terminal control characters escaped (as tracing-subscriber's default formatter does, but
/// without going through it character by character when there are none).
struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = PlainVisitor {
            w: NoControl(&mut writer),
            res: Ok(()),
            first: true,
        };
        fields.record(&mut v);
        v.res
    }
}

struct PlainVisitor<'a, 'w> {
    w: NoControl<'a, Writer<'w>>,
    res: fmt::Result,
    first: bool,
}

impl PlainVisitor<'_, '_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        // tracing-log's metadata of records bridged from the `log` crate (as the default
        // formatter, which skips them too)
        if self.res.is_err() || field.name().starts_with("log.") {
            return;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.res = if field.name() == "message" {
            write!(self.w, "{sep}{value}")
        } else {
            write!(self.w, "{sep}{}={value}", field.name())
        };
    }
}

impl Visit for PlainVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

/// Escapes ESC, BEL, BS, FF, DEL and C1 controls (tracing-subscriber's set); text without them
/// is passed on in one piece.
struct NoControl<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for NoControl<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // C1 controls are U+0080..U+009F, encoded 0xC2 0x80..0x9F
        if !s
            .bytes()
            .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", ch as u32)?
                }
                ch if ('\u{80}'..='\u{9f}').contains(&ch) => {
                    write!(self.0, "\\u{{{:x}}}", ch as u32)?
                }
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
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
    let mut s = String::with_capacity(23);
    let _ = write_timestamp(&mut s, t);
    s
}

/// `timestamp` written in place; the part up to the seconds is formatted once a second per
/// thread (every log line has one).
fn write_timestamp(w: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let (days, rem) = (secs / 86400, secs % 86400);
            let (y, m, dd) = civil_from_days(days as i64);
            c.1.clear();
            write!(
                c.1,
                "{y:04}-{m:02}-{dd:02} {:02}:{:02}:{:02}",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            )?;
            c.0 = secs;
        }
        w.write_str(&c.1)
    })?;
    let ms = d.subsec_millis();
    let digits = [
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ];
    w.write_str(std::str::from_utf8(&digits).unwrap_or(".000"))
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
        .fmt_fields(PlainFields)
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
    fn control_characters_are_escaped_and_the_rest_passed_on() {
        let mut s = String::new();
        write!(NoControl(&mut s), "user \x1b[31mred\x07 é \u{85}ok").unwrap();
        assert_eq!(s, "user \\x1b[31mred\\x07 é \\u{85}ok");
        let mut s = String::new();
        write!(NoControl(&mut s), "plain text: 1 2 3").unwrap();
        assert_eq!(s, "plain text: 1 2 3");
    }

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14 22:13:20.123");
        // the same second again (cached part), other milliseconds
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_007);
        assert_eq!(timestamp(t), "2023-11-14 22:13:20.007");
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00.000"
        );
    }
}
