//! What the driver reads from `/proc`: memory of the processes it started,
//! their children, and the machine's description.

use std::path::Path;

/// One `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB;
/// 0 when the process is gone.
pub(crate) fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident set size now, KiB.
pub(crate) fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// Peak resident set size since start or the last [`reset_peak`], KiB.
pub(crate) fn peak_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// Resets the kernel's peak-RSS counter of `pid` (`clear_refs` value 5,
/// Linux 4.0+), so [`peak_kb`] afterwards is the exact peak of what follows
/// without sampling.
pub(crate) fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Direct children of `pid` (all its threads).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

/// The shim processes of the daemon `daemon`: its children that run
/// `sandboxd shim` (the warm pool's template among them) and the shims
/// the template forked.
pub(crate) fn shims_of(daemon: u32) -> Vec<u32> {
    let shims: Vec<u32> = children(daemon)
        .into_iter()
        .filter(|c| is_shim(*c))
        .collect();
    let forked: Vec<u32> = shims
        .iter()
        .flat_map(|pid| children(*pid).into_iter().filter(|c| is_shim(*c)))
        .collect();
    shims.into_iter().chain(forked).collect()
}

/// Whether `pid` runs `sandboxd shim` (its second argument is `shim`).
pub(crate) fn is_shim(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(b"shim"))
        .unwrap_or(false)
}

/// `/proc/loadavg`'s three load averages.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The machine, in words.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) memory_gib: f64,
    pub(crate) kernel: String,
    pub(crate) scratch: String,
}

pub(crate) fn machine(scratch: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let fs = mount_fs(scratch).unwrap_or_else(|| "unknown fs".into());
    Machine {
        cpu,
        cores,
        memory_gib: memory_kb as f64 / (1024.0 * 1024.0),
        kernel,
        scratch: format!("{} ({fs})", scratch.display()),
    }
}

/// The filesystem type of the longest mount point holding `path`.
fn mount_fs(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}
