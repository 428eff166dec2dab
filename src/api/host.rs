//! `GET /v1/agent/host` (`operator:read`): the host the agent runs on, in
//! the shape Consul gives it (gopsutil's `Memory`, `CPU`, `Host` and
//! `Disk` objects, `CollectionTime` in Unix nanoseconds, and `Errors`),
//! read from `/proc` and `statvfs`. What cannot be read is left zero and
//! said in `Errors`, one sentence each.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use axum::Json;
use serde_json::{json, Value};

use super::context::{require_global, Api};
use super::error::ApiError;
use crate::acl::{Access, Global};
use crate::env::Env;

/// The file system whose usage `Disk` reports (Consul's `DiskUsagePath`).
const DISK_PATH: &str = "/";

/// `GET /v1/agent/host`.
pub async fn host<E: Env>(s: Api<E>) -> Result<Json<Value>, ApiError> {
    require_global(&s, Global::Operator, Access::Read).await?;
    let at = s
        .env
        .wall_clock()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut errors = Vec::new();
    let host = host_info(&mut errors);
    let memory = match read("/proc/meminfo") {
        Ok(text) => memory(&text),
        Err(e) => {
            errors.push(format!("Memory: {e}"));
            memory("")
        }
    };
    let disk = disk(DISK_PATH, &mut errors);
    let cpu = match read("/proc/cpuinfo") {
        Ok(text) => cpus(&text),
        Err(e) => {
            errors.push(format!("CPU: {e}"));
            Vec::new()
        }
    };
    Ok(Json(json!({
        "Memory": memory,
        "CPU": cpu,
        "Host": host,
        "Disk": disk,
        "CollectionTime": at.as_nanos() as u64,
        // Go's nil slice: null when nothing failed.
        "Errors": if errors.is_empty() { Value::Null } else { json!(errors) },
    })))
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// `name: value [kB]` lines (`/proc/meminfo`), values in bytes.
fn kv_bytes(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (k, rest) = line.split_once(':')?;
            let mut words = rest.split_whitespace();
            let n: u64 = words.next()?.parse().ok()?;
            let n = match words.next() {
                Some("kB") => n.saturating_mul(1024),
                _ => n,
            };
            Some((k.trim(), n))
        })
        .collect()
}

/// gopsutil's `VirtualMemoryStat` from `/proc/meminfo`'s text.
fn memory(text: &str) -> Value {
    let m = kv_bytes(text);
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    let total = get("MemTotal");
    let free = get("MemFree");
    let buffers = get("Buffers");
    // gopsutil counts reclaimable slab as cache.
    let cached = get("Cached") + get("SReclaimable");
    let used = total.saturating_sub(free + buffers + cached);
    let used_percent = if total == 0 {
        0.0
    } else {
        used as f64 / total as f64 * 100.0
    };
    json!({
        "total": total,
        "available": get("MemAvailable"),
        "used": used,
        "usedPercent": used_percent,
        "free": free,
        "active": get("Active"),
        "inactive": get("Inactive"),
        "wired": 0,
        "laundry": 0,
        "buffers": buffers,
        "cached": cached,
        "writeBack": get("Writeback"),
        "dirty": get("Dirty"),
        "writeBackTmp": get("WritebackTmp"),
        "shared": get("Shmem"),
        "slab": get("Slab"),
        "sreclaimable": get("SReclaimable"),
        "sunreclaim": get("SUnreclaim"),
        "pageTables": get("PageTables"),
        "swapCached": get("SwapCached"),
        "commitLimit": get("CommitLimit"),
        "committedAS": get("Committed_AS"),
        "highTotal": get("HighTotal"),
        "highFree": get("HighFree"),
        "lowTotal": get("LowTotal"),
        "lowFree": get("LowFree"),
        "swapTotal": get("SwapTotal"),
        "swapFree": get("SwapFree"),
        "mapped": get("Mapped"),
        "vmallocTotal": get("VmallocTotal"),
        "vmallocUsed": get("VmallocUsed"),
        "vmallocChunk": get("VmallocChunk"),
        "hugePagesTotal": get("HugePages_Total"),
        "hugePagesFree": get("HugePages_Free"),
        "hugePagesRsvd": get("HugePages_Rsvd"),
        "hugePagesSurp": get("HugePages_Surp"),
        "hugePageSize": get("Hugepagesize"),
        "anonHugePages": get("AnonHugePages"),
    })
}

/// gopsutil's `InfoStat`s, one per logical CPU, from `/proc/cpuinfo`.
fn cpus(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l.starts_with("processor")))
        .map(|block| {
            let f: HashMap<&str, &str> = block
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let s = |k: &str| f.get(k).copied().unwrap_or("");
            let int = |k: &str| s(k).split_whitespace().next()?.parse::<i64>().ok();
            json!({
                "cpu": int("processor").unwrap_or(0),
                "vendorId": s("vendor_id"),
                "family": s("cpu family"),
                "model": s("model"),
                "stepping": int("stepping").unwrap_or(0),
                "physicalId": s("physical id"),
                "coreId": s("core id"),
                "cores": int("cpu cores").unwrap_or(1),
                "modelName": s("model name"),
                "mhz": s("cpu MHz").parse::<f64>().unwrap_or(0.0),
                "cacheSize": int("cache size").unwrap_or(0),
                "flags": s("flags").split_whitespace().collect::<Vec<_>>(),
                "microcode": s("microcode"),
            })
        })
        .collect()
}

/// `KEY=value` lines (`/etc/os-release`), quotes taken off.
fn os_release(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect()
}

/// gopsutil's host `InfoStat`.
fn host_info(errors: &mut Vec<String>) -> Value {
    let mut one = |what: &str, path: &str| match read(path) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            errors.push(format!("Host {what}: {e}"));
            String::new()
        }
    };
    let hostname = one("hostname", "/proc/sys/kernel/hostname");
    let kernel = one("kernelVersion", "/proc/sys/kernel/osrelease");
    let uptime = one("uptime", "/proc/uptime");
    let uptime = uptime
        .split('.')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let stat = one("bootTime", "/proc/stat");
    let boot_time = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let os = os_release(&release);
    let platform = os.get("ID").copied().unwrap_or("");
    let family = os
        .get("ID_LIKE")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or(platform);
    let procs = match std::fs::read_dir("/proc") {
        Ok(dir) => dir
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .count(),
        Err(e) => {
            errors.push(format!("Host procs: cannot list /proc: {e}"));
            0
        }
    };
    let host_id = std::fs::read_to_string("/sys/class/dmi/id/product_uuid")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default();
    json!({
        "hostname": hostname,
        "uptime": uptime,
        "bootTime": boot_time,
        "procs": procs,
        "os": std::env::consts::OS,
        "platform": platform,
        "platformFamily": family,
        "platformVersion": os.get("VERSION_ID").copied().unwrap_or(""),
        "kernelVersion": kernel,
        "kernelArch": std::env::consts::ARCH,
        "virtualizationSystem": "",
        "virtualizationRole": "",
        "hostId": host_id,
    })
}

/// The file system type of mount point `path`, from `/proc/self/mounts`
/// (the last mount there is the one in effect).
fn fs_type(mounts: &str, path: &str) -> String {
    mounts
        .lines()
        .rev()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let (_dev, at, kind) = (w.next()?, w.next()?, w.next()?);
            (at == path).then(|| kind.to_string())
        })
        .unwrap_or_default()
}

/// gopsutil's `UsageStat` of the file system at `path`.
fn disk(path: &str, errors: &mut Vec<String>) -> Value {
    let fstype = fs_type(
        &std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(),
        path,
    );
    let (total, free, used, files, ffree) = match statvfs(path) {
        Ok(v) => v,
        Err(e) => {
            errors.push(format!("Disk: cannot statvfs {path}: {e}"));
            (0, 0, 0, 0, 0)
        }
    };
    let percent = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64 * 100.0
        }
    };
    let inodes_used = files.saturating_sub(ffree);
    json!({
        "path": path,
        "fstype": fstype,
        "total": total,
        "free": free,
        "used": used,
        "usedPercent": percent(used, used + free),
        "inodesTotal": files,
        "inodesUsed": inodes_used,
        "inodesFree": ffree,
        "inodesUsedPercent": percent(inodes_used, files),
    })
}

/// Total, free (to unprivileged users) and used bytes, total and free
/// inodes.
#[cfg(unix)]
fn statvfs(path: &str) -> Result<(u64, u64, u64, u64, u64), String> {
    let v = rustix::fs::statvfs(path).map_err(|e| e.to_string())?;
    let unit = v.f_frsize;
    Ok((
        v.f_blocks.saturating_mul(unit),
        v.f_bavail.saturating_mul(unit),
        v.f_blocks.saturating_sub(v.f_bfree).saturating_mul(unit),
        v.f_files,
        v.f_ffree,
    ))
}

#[cfg(not(unix))]
fn statvfs(_path: &str) -> Result<(u64, u64, u64, u64, u64), String> {
    Err("not supported on this system".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_meminfo_in_bytes() {
        let m = memory(
            "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    600 kB\n\
             Buffers:          50 kB\nCached:          200 kB\nSReclaimable:     50 kB\n\
             HugePages_Total:       2\n",
        );
        assert_eq!(m["total"], 1_024_000);
        assert_eq!(m["available"], 614_400);
        assert_eq!(m["cached"], 256_000);
        assert_eq!(m["used"], 600 * 1024);
        assert_eq!(m["usedPercent"], 60.0);
        assert_eq!(m["hugePagesTotal"], 2);
        // Nothing to read: zeros, never a panic.
        assert_eq!(memory("")["total"], 0);
        assert_eq!(memory("")["usedPercent"], 0.0);
    }

    #[test]
    fn cpus_are_one_per_processor() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
                    model name\t: Some CPU\ncpu MHz\t\t: 2400.000\ncache size\t: 512 KB\n\
                    flags\t\t: fpu vme\n\nprocessor\t: 1\nmodel name\t: Some CPU\n\n";
        let c = cpus(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["vendorId"], "GenuineIntel");
        assert_eq!(c[0]["family"], "6");
        assert_eq!(c[0]["mhz"], 2400.0);
        assert_eq!(c[0]["cacheSize"], 512);
        assert_eq!(c[0]["flags"], json!(["fpu", "vme"]));
        assert_eq!(c[1]["cpu"], 1);
        assert_eq!(c[1]["mhz"], 0.0);
    }

    #[test]
    fn the_last_mount_wins() {
        let mounts = "none / ext4 rw 0 0\noverlay / overlay rw 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(fs_type(mounts, "/"), "overlay");
        assert_eq!(fs_type(mounts, "/nowhere"), "");
        assert_eq!(
            os_release("ID=debian\nVERSION_ID=\"12\"\n")["VERSION_ID"],
            "12"
        );
    }
}
