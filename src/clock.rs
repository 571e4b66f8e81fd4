//! The one place that reads the wall clock. Stored times are milliseconds since the
//! Unix epoch (`u64`); certificates use seconds (`i64`).

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch, signed (certificate validity can predate 1970 in
/// principle).
pub fn now_unix() -> i64 {
    (now_ms() / 1000) as i64
}

/// Whole seconds since the Unix epoch, for per-second rate limits.
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}
