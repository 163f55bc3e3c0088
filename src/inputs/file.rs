//! Reading one input file: a regular file of bounded size, or an error.
//!
//! Owns what "readable" means for every file keysync takes in (inputs and
//! the API key file): the path, symbolic links followed, must end at a
//! regular file no larger than a cap. A directory, FIFO, socket or device,
//! a dangling or looping link, or a file over the cap is an error naming
//! what it is. Nothing here can block: the type is checked before the file
//! is opened, the open does not wait for a FIFO's writer, and the handle is
//! checked again after the open (the path may have been swapped meanwhile).
//! The cap holds while reading too, for a file that grows (or, like files
//! under `/proc`, reports no size).

use std::fmt;
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest input file keysync reads: 256 MiB. A pubkeys list of
/// 1,000,000 keys is ~98 MB, a records file of as many rows ~150 MB.
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// The largest API key file keysync reads: 64 KiB.
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system's reason (missing, permission denied, …).
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// Not a regular file: a directory, FIFO, socket or device.
    #[error("it is {0}, not a regular file")]
    NotRegular(FileType),
    /// A symbolic link to nothing (a volume not mounted, a target removed).
    #[error("it is a symbolic link to {}, which does not exist (a volume not mounted?)", .target.display())]
    Dangling { target: PathBuf },
    /// A symbolic link that cannot be followed (a loop, a target not
    /// accessible).
    #[error("it is a symbolic link that cannot be followed: {0}")]
    Link(#[source] std::io::Error),
    /// Over the cap, by its size or while reading.
    #[error("it is larger than the {} limit for this file", Bytes(*.limit))]
    TooLarge { limit: u64 },
}

impl FileError {
    /// The underlying I/O error kind, for a plain I/O failure.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            FileError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// What a path that is not a regular file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileType::Directory => "a directory",
            FileType::Fifo => "a FIFO (named pipe)",
            FileType::Socket => "a socket",
            FileType::CharDevice => "a character device",
            FileType::BlockDevice => "a block device",
            FileType::Other => "not a file",
        })
    }
}

impl FileType {
    fn of(m: &Metadata) -> FileType {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_dir() {
            FileType::Directory
        } else if t.is_fifo() {
            FileType::Fifo
        } else if t.is_socket() {
            FileType::Socket
        } else if t.is_char_device() {
            FileType::CharDevice
        } else if t.is_block_device() {
            FileType::BlockDevice
        } else {
            FileType::Other
        }
    }
}

/// A byte count in the largest whole unit: `256 MiB`, `64 KiB`, `100 bytes`.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{} {unit}", n / size);
            }
        }
        write!(f, "{n} bytes")
    }
}

/// Why `path` cannot be opened or stat'ed, told apart for a symbolic link.
fn classify(path: &Path, e: std::io::Error) -> FileError {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            if e.kind() == std::io::ErrorKind::NotFound {
                FileError::Dangling {
                    target: std::fs::read_link(path).unwrap_or_default(),
                }
            } else {
                FileError::Link(e)
            }
        }
        _ => FileError::Io(e),
    }
}

/// Checks what `m` describes: a regular file within `limit`.
fn check(m: &Metadata, limit: u64) -> Result<(), FileError> {
    if !m.is_file() {
        return Err(FileError::NotRegular(FileType::of(m)));
    }
    if m.len() > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(())
}

/// Opens `path` for reading without waiting on a FIFO (should one be
/// swapped in after the check) and without taking a terminal.
fn open(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

/// The whole content of the regular file at `path` (links followed), at
/// most `limit` bytes; anything else is an error saying what it is.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    // The type first: opening a FIFO or a device is never attempted.
    let before = std::fs::metadata(path).map_err(|e| classify(path, e))?;
    check(&before, limit)?;
    // Past the check, a failure is the file's own (permission denied, or
    // replaced meanwhile), not the link's.
    let file = open(path).map_err(FileError::Io)?;
    // The handle, again: the path may have been replaced since.
    let meta = file.metadata().map_err(FileError::Io)?;
    check(&meta, limit)?;
    // One allocation for a file that keeps its size; the extra byte sees
    // the end (or growth) without a second buffer.
    let mut buf = Vec::with_capacity(meta.len() as usize + 1);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(FileError::Io)?;
    if buf.len() as u64 > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_whole_units() {
        assert_eq!(Bytes(MAX_INPUT_BYTES).to_string(), "256 MiB");
        assert_eq!(Bytes(MAX_KEY_FILE_BYTES).to_string(), "64 KiB");
        assert_eq!(Bytes(100).to_string(), "100 bytes");
        assert_eq!(Bytes(1025).to_string(), "1025 bytes");
    }

    #[test]
    fn a_regular_file_is_read_and_links_are_followed() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert_eq!(read_regular(&f, 3).unwrap(), b"abc");
        assert_eq!(read_regular(&l, 3).unwrap(), b"abc");
        let e = read_regular(&f, 2).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { limit: 2 }), "{e}");
    }

    #[test]
    fn what_is_not_a_regular_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let e = read_regular(d.path(), 10).unwrap_err();
        assert_eq!(e.to_string(), "it is a directory, not a regular file");
        let e = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a character device, not a regular file"
        );
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        let e = read_regular(&dangling, 10).unwrap_err();
        assert!(matches!(e, FileError::Dangling { .. }), "{e}");
        assert!(e.to_string().contains("nowhere"), "{e}");
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = read_regular(&a, 10).unwrap_err();
        assert!(matches!(e, FileError::Link(_)), "{e}");
        let e = read_regular(&d.path().join("missing"), 10).unwrap_err();
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo here; the integration tests cover it
        }
        let e = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is a FIFO (named pipe), not a regular file"
        );
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let e = read_regular(&link, 10).unwrap_err();
        assert!(matches!(e, FileError::NotRegular(FileType::Fifo)), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_cap_holds_while_reading() {
        // A /proc file reports size 0 but has content: only the read sees it.
        let e = read_regular(Path::new("/proc/self/maps"), 16).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { limit: 16 }), "{e}");
    }
}
