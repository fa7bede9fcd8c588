//! `sessions.jsonl` in a run folder: one line per training session — where it started and on what
//! hardware — so an export can say what its model was trained on.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// The machine this process runs on, for a backend: `"flex (CPU): AMD EPYC 7B13, 2 threads"`, or
/// `"vulkan: NVIDIA H200 (GPU, kernels: …), host …"` with the adapter's own description.
pub fn hardware_description(backend: &str, adapter: Option<&str>) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match backend {
        "flex" => format!("flex (CPU): {cpu}, {threads} threads"),
        gpu => match adapter {
            Some(adapter) => format!("{gpu}: {adapter}, host {cpu}"),
            None => format!("{gpu}, host {cpu}"),
        },
    }
}

/// Appends this session's line.
pub fn record_session(
    run: &Path,
    kimg: f64,
    backend: &str,
    adapter: Option<&str>,
    devices: usize,
) -> Result<()> {
    let line = serde_json::json!({"start_kimg": kimg, "backend": backend, "devices": devices, "hardware": hardware_description(backend, adapter)});
    let path = run.join("sessions.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The distinct values of `field` (`hardware` or `backend`) over a run's sessions up to
/// `until_kimg`, in order (empty when none were recorded).
pub fn used(run: &Path, until_kimg: f64, field: &str) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("sessions.jsonl")).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    let sessions = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    // Sessions that started before `until_kimg` (those after it trained nothing before it).
    for v in sessions.filter(|v| {
        v["start_kimg"]
            .as_f64()
            .is_none_or(|k| k < until_kimg + 1e-6)
    }) {
        if let Some(h) = v[field].as_str().filter(|h| !out.iter().any(|o| o == h)) {
            out.push(h.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_accumulate_distinct_hardware() {
        let dir = std::env::temp_dir().join(format!("pggan-sessions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(used(&dir, 100.0, "hardware").is_empty());
        record_session(&dir, 0.0, "flex", None, 1).unwrap();
        record_session(&dir, 10.0, "flex", None, 1).unwrap();
        record_session(&dir, 20.0, "vulkan", Some("NVIDIA H100 80GB HBM3 (GPU)"), 2).unwrap();
        let hardware = used(&dir, 100.0, "hardware");
        assert_eq!(hardware.len(), 2, "{hardware:?}");
        assert_eq!(
            used(&dir, 15.0, "hardware").len(),
            1,
            "the vulkan session started at 20 kimg"
        );
        assert!(
            hardware[0].starts_with("flex (CPU): ")
                && hardware[1].starts_with("vulkan: NVIDIA H100 80GB HBM3 (GPU), host "),
            "{hardware:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
