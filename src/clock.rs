//! The process's monotonic clock as plain integers: microseconds and milliseconds of CLOCK_MONOTONIC, read once per I/O event, compared with u64 arithmetic after that.

/// Microseconds of the monotonic clock (time since boot: never 0, so 0 can mean "unset").
#[inline]
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every supported OS.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Milliseconds of the same clock.
#[inline]
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// A duration in the clock's microseconds (saturating).
#[inline]
pub fn us(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_monotonic_clock_in_step_with_instant() {
        let (a, i) = (now_us(), std::time::Instant::now());
        assert!(a > 0 && now_ms() >= a / 1000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (b, e) = (now_us(), i.elapsed());
        let d = b - a;
        // both read CLOCK_MONOTONIC: they agree to well under a millisecond
        assert!(d.abs_diff(us(e)) < 1000, "{d} vs {e:?}");
        assert!(d >= 20_000);
        assert_eq!(us(std::time::Duration::MAX), u64::MAX);
    }
}
