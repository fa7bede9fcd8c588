//! Files that are whole or absent, never half-written: written beside their place as
//! `NAME.tmp`, flushed to disk, then renamed over it, so the previous file stays valid until the
//! rename and a kill at any moment leaves one or the other.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file being written in place of `path`; it replaces `path` on [`AtomicFile::commit`] and is
/// never seen there before. Dropped without a commit, it leaves its temporary file behind and
/// `path` untouched.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: BufWriter<File>,
}

/// The temporary name of a file written in place of `path`: `path` with `.tmp` appended.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

impl AtomicFile {
    /// Starts writing the replacement of `path` (its temporary file is created now).
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let tmp = temp_path(path);
        let file = BufWriter::new(File::create(&tmp).map_err(|e| named(e, &tmp))?);
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file,
        })
    }

    /// Flushes the data to disk and moves it into place.
    pub fn commit(self) -> io::Result<()> {
        self.commit_after(Duration::ZERO)
    }

    /// [`commit`](Self::commit), waiting `pause` between the flush and the rename (the fault
    /// tests widen that window to kill the process inside it).
    pub fn commit_after(self, pause: Duration) -> io::Result<()> {
        let AtomicFile { path, tmp, file } = self;
        let file = file.into_inner().map_err(|e| named(e.into_error(), &tmp))?;
        file.sync_all().map_err(|e| named(e, &tmp))?;
        drop(file);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        std::fs::rename(&tmp, &path).map_err(|e| named(e, &path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes `bytes` to `path` atomically (see the module).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| named(e, &f.tmp))?;
    f.commit()
}

/// `error` with the file it happened to, so every message names it.
fn named(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_the_old_file_until_commit() {
        let dir = std::env::temp_dir().join(format!("pggan-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.bin");
        write_atomic(&path, b"old").unwrap();
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"new contents").unwrap();
        f.flush().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"old",
            "not replaced before the commit"
        );
        f.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert!(!temp_path(&path).exists());
        // A write that cannot happen names the file and leaves the old one.
        std::fs::create_dir(temp_path(&path)).unwrap();
        let err = write_atomic(&path, b"lost").unwrap_err().to_string();
        assert!(err.contains("a.bin.tmp"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
