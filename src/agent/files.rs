//! The small files an agent keeps in its data directory (its node ID, the
//! tokens `enable_token_persistence` keeps): each written whole or not at
//! all, and on disk before the write counts, so a crash never leaves half a
//! file, or an old one, to start from.

use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` through a temporary file that is synced and
/// renamed over it; the directory is synced too, so the rename lasts.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_with(path, data, false)
}

/// [`write_atomically`], for a secret: the file is its owner's alone
/// (0600) from its creation, so no other user ever reads it.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_with(path, data, true)
}

fn write_with(path: &Path, data: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        // A temporary left by a crash keeps the mode it was made with.
        let _ = std::fs::remove_file(&tmp);
    }
    let _ = private;
    let mut f = opts.open(&tmp)?;
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

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        write_private(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    }
}
