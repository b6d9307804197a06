//! Atomic file replacement with the permissions a plain write would give.

use std::io::{self, Write};
use std::path::Path;

/// Writes `path` atomically: `fill` writes the contents into a temporary file in the same
/// directory, which is flushed, fsynced and renamed over `path` (and the directory fsynced on
/// Unix). On any failure `path` is left as it was and the temporary file is removed.
///
/// Permissions: a new file gets what `File::create` would give it (0666 less the umask on Unix);
/// a replaced file keeps its mode (a symbolic link is replaced by a regular file with the mode of
/// the file it pointed to). Temporary files are created 0600 by default, so without this every
/// written file would be private and every replaced file would lose its mode.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let existing = std::fs::metadata(path).ok().filter(|m| m.is_file());
    let mut builder = tempfile::Builder::new();
    builder.prefix(".dgq-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode passed to open(2) is reduced by the umask, as File::create's 0666 is.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    if let Some(m) = &existing {
        // fchmod is not reduced by the umask: the replaced file's mode carries over exactly.
        tmp.as_file().set_permissions(m.permissions())?;
    }
    {
        let mut w = io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|pe| pe.error)?;
    // The rename is durable only once the directory entry is on disk.
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// What the process's umask makes of 0666, measured with a plain `File::create` (reading the
    /// umask itself would need libc and is racy).
    fn plain_create_mode(dir: &Path) -> u32 {
        let p = dir.join("plain");
        std::fs::File::create(&p).unwrap();
        mode(&p)
    }

    #[test]
    fn new_files_get_the_umask_default_and_replaced_files_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let want = plain_create_mode(dir.path());
        let p = dir.path().join("out.bin");
        write_atomic(&p, |w| w.write_all(b"one")).unwrap();
        assert_eq!(mode(&p), want);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");

        for m in [0o444, 0o640, 0o755] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
            write_atomic(&p, |w| w.write_all(b"two")).unwrap();
            assert_eq!(mode(&p), m, "replacing a {m:o} file");
            assert_eq!(std::fs::read(&p).unwrap(), b"two");
        }
    }

    #[test]
    fn a_failing_fill_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        std::fs::write(&p, b"old").unwrap();
        let e = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
    }
}
