//! The clock the XDP program stamps with: `bpf_ktime_get_tai_ns()` plus the
//! `CLOCK_REALTIME - CLOCK_TAI` offset kept here, and an honest RFC 8762 Error Estimate derived
//! from the kernel's own error bound (`adjtimex` maximum error, synchronisation status).

/// Clock facts pushed into the XDP program's config map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// `CLOCK_REALTIME - CLOCK_TAI` in nanoseconds (minus the kernel's TAI offset).
    pub utc_minus_tai_ns: i64,
    /// RFC 8762 §4.2.1 Error Estimate: S bit, Z = 0 (NTP format), Scale, Multiplier.
    pub error_estimate: u16,
}

/// Reads the clocks and the kernel's error bound now.
pub fn now_state() -> ClockState {
    let utc_minus_tai_ns = read_ns(libc::CLOCK_REALTIME) - read_ns(libc::CLOCK_TAI);
    // SAFETY: `timex` is plain old data; zeroed with modes = 0 is a read-only query.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&raw mut tx) };
    let synced = state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
    // maxerror is in microseconds; unknown → the kernel's own ceiling of 16 s.
    let max_error_ns = if state < 0 {
        16_000_000_000
    } else {
        u64::try_from(tx.maxerror).unwrap_or(16_000_000) * 1000
    };
    ClockState {
        utc_minus_tai_ns,
        error_estimate: error_estimate(synced, max_error_ns),
    }
}

fn read_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Encodes an error bound as the RFC 8762 Error Estimate: `Multiplier * 2^(Scale - 32)` seconds,
/// rounded up so the stated error is never smaller than the real bound; S set when synchronised.
pub fn error_estimate(synchronized: bool, error_ns: u64) -> u16 {
    let s: u16 = if synchronized { 0x8000 } else { 0 };
    // error in units of 2^-32 s: error_ns * 2^32 / 1e9, rounded up.
    let units: u128 = (u128::from(error_ns) << 32).div_ceil(1_000_000_000).max(1);
    for scale in 0_u16..64 {
        let mult = units.div_ceil(1_u128 << scale);
        if mult <= 255 {
            return s | (scale << 8) | u16::try_from(mult).unwrap_or(255);
        }
    }
    s | (63 << 8) | 255
}

#[cfg(test)]
mod tests {
    use super::error_estimate;

    fn decode(e: u16) -> f64 {
        let scale = i32::from((e >> 8) & 0x3f);
        f64::from(e & 0xff) * 2_f64.powi(scale - 32)
    }

    #[test]
    fn error_estimate_never_understates_and_is_tight() {
        for ns in [1_u64, 1_000, 500_000, 1_000_000, 16_000_000_000] {
            let e = error_estimate(true, ns);
            assert_eq!(e & 0x8000, 0x8000);
            assert_eq!(e & 0x4000, 0, "Z must be 0: NTP format");
            let secs = decode(e);
            let want = ns as f64 / 1e9;
            assert!(secs >= want, "{ns} ns encoded as {secs}");
            assert!(
                secs <= want * 2.0 + 2_f64.powi(-32),
                "{ns} ns encoded loosely as {secs}"
            );
        }
        assert_eq!(error_estimate(false, 1000) & 0x8000, 0);
    }
}
