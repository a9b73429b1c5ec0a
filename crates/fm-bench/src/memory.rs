//! Resident memory of this process, from `/proc/self/status` (Linux).

/// `(current, peak)` resident set size in KiB (`VmRSS`, `VmHWM`), or `None`
/// where `/proc` is not available.
pub fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets the peak (`VmHWM`) to the current RSS, where the kernel allows it
/// (writing `5` to `/proc/self/clear_refs`); returns whether it did.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
