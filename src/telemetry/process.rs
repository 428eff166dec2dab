//! The process's own gauges under Consul's `consul.runtime.*` names. Go's
//! runtime reports its heap; a Rust process has none to ask, so the
//! kernel's accounting of this process stands in for it (Linux only; the
//! gauges are left out where `/proc` is not there).

/// `consul.runtime.*` gauges readable now: name and value.
pub fn runtime_gauges() -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    // Go's goroutines; tokio's tasks are the nearest thing.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        out.push((
            "consul.runtime.num_goroutines",
            rt.metrics().num_alive_tasks() as f64,
        ));
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let m = memory(&status);
        // Anonymous resident memory is what the heap (and stacks) occupy:
        // the closest to Go's bytes allocated and not yet freed.
        if let Some(anon) = m.anon {
            out.push(("consul.runtime.alloc_bytes", anon as f64));
        }
        // All resident memory: what the process holds from the system.
        if let Some(rss) = m.rss {
            out.push(("consul.runtime.sys_bytes", rss as f64));
        }
    }
    out
}

/// What `/proc/self/status` says of memory, in bytes.
#[derive(Debug, Default, PartialEq)]
struct Memory {
    rss: Option<u64>,
    anon: Option<u64>,
}

fn memory(status: &str) -> Memory {
    let mut m = Memory::default();
    for line in status.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(n) = words.next().and_then(|w| w.parse::<u64>().ok()) else {
            continue;
        };
        // Sizes are in kB ("VmRSS:  1234 kB").
        let bytes = match words.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        };
        match key {
            "VmRSS" => m.rss = Some(bytes),
            "RssAnon" => m.anon = Some(bytes),
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_memory_accounting() {
        let status =
            "Name:\tcairn\nVmRSS:\t   2048 kB\nRssAnon:\t    1024 kB\nThreads:\t5\nbogus\n";
        assert_eq!(
            memory(status),
            Memory {
                rss: Some(2 << 20),
                anon: Some(1 << 20),
            }
        );
        assert_eq!(memory(""), Memory::default());
    }
}
