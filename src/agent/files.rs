//! The small files an agent keeps in its data directory (its node ID, the
//! tokens `enable_token_persistence` keeps): each written whole or not at
//! all, and on disk before the write counts, so a crash never leaves half a
//! file, or an old one, to start from.

use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` through a temporary file that is synced and
/// renamed over it; the directory is synced too, so the rename lasts.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node-id");
        write_atomically(&p, b"first, and longer").unwrap();
        write_atomically(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert!(!p.with_extension("tmp").exists());
    }
}
