//! The small files an agent keeps in its data directory (its node ID, the
//! tokens `enable_token_persistence` keeps): each written whole or not at
//! all, so a crash mid-write never leaves half a file to start from.

use std::path::Path;

/// Writes `data` to `path` through a temporary file renamed over it.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
