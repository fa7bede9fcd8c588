//! The process's own memory, as the kernel counts it (`/proc/self/status`; Linux only).

/// A `kB` field of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Resident memory now, in MiB (`VmRSS`).
pub fn resident_mib() -> Option<f64> {
    status_mib("VmRSS")
}

/// The most resident memory the process has had, in MiB (`VmHWM`).
pub fn peak_resident_mib() -> Option<f64> {
    status_mib("VmHWM")
}
