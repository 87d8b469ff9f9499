//! Finding and removing stale named segments: the library side of `multiproc clean`.
//!
//! Anonymous (memfd) segments cannot leak: the kernel frees them with the last
//! process that maps them, even after `kill -9`. A *named* segment (a file in
//! `/dev/shm`) lives until someone unlinks it, as in Python, so one whose creator was
//! killed before it could unlink stays behind. This module finds those.
//!
//! A `/dev/shm` entry is a **multiproc segment of this user** when it is a regular
//! file owned by the effective uid whose first 64 bytes are a valid multiproc header
//! (see the `header` module); nothing else is ever touched. Such a segment is
//! **stale** when
//! 1. its creator is gone: no process has the creator pid recorded in the header
//!    with the same start time (so a reused pid does not keep it alive), and
//! 2. no live process maps it (checked in `/proc/<pid>/maps`), so removing the name
//!    cannot surprise a program that still uses the segment.
//!
//! Headers are read with `read(2)`, never mapped, so a truncated or hostile file
//! cannot fault the scanner. Removal re-checks the segment just before `shm_unlink`;
//! the remaining window is the one every `rm` has, and names are 64 random bits.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

pub use super::header::Kind;
use super::header::{HEADER_SIZE, Header};
use crate::error::{Error, Result};
use crate::sys::{mem, procfs};

/// Where POSIX shared memory objects live on Linux.
///
/// ```
/// let shm = multiproc::SharedMemory::create(8)?;
/// let path = format!("{}/{}", multiproc::shm::clean::SHM_DIR, shm.name());
/// assert!(std::path::Path::new(&path).exists());
/// shm.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub const SHM_DIR: &str = "/dev/shm";

/// Why a segment is kept or may be removed.
///
/// ```
/// use multiproc::shm::clean::Status;
/// let s = Status::InUse { pid: 42 };
/// assert_ne!(s, Status::Stale);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Creator gone and no process maps it: safe to remove.
    Stale,
    /// The creating process still runs.
    CreatorAlive,
    /// The creator is gone, but this live process maps the segment.
    InUse {
        /// A process that maps it.
        pid: u32,
    },
}

/// A multiproc segment of this user found in `/dev/shm`.
///
/// ```
/// use multiproc::shm::clean::{self, Kind};
/// let shm = multiproc::SharedMemory::create(100)?;
/// let info = clean::status(shm.name())?;
/// assert_eq!(info.kind, Kind::SharedMemory);
/// assert_eq!(info.file_size, 64 + 100); // the header, then the payload
/// assert_eq!(info.creator_pid, std::process::id());
/// shm.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its name (the file name in `/dev/shm`; attach with it).
    pub name: String,
    /// What it holds.
    pub kind: Kind,
    /// Bytes on disk, header included.
    pub file_size: u64,
    /// Pid of the process that created it.
    pub creator_pid: u32,
    /// Whether it may be removed.
    pub status: Status,
}

/// Reads the header of `/dev/shm/<name>` if it is a multiproc segment of this user.
fn read_header(name: &str) -> Option<(Header, u64)> {
    // O_NOFOLLOW: a symlink is not a segment; O_NONBLOCK: a FIFO does not block us.
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(format!("{SHM_DIR}/{name}"))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.uid() != mem::euid() || meta.len() < HEADER_SIZE as u64 {
        return None;
    }
    let mut bytes = [0u8; HEADER_SIZE];
    file.read_exact(&mut bytes).ok()?;
    let header = Header::parse(&bytes, name, meta.len()).ok()?;
    Some((header, meta.len()))
}

fn creator_alive(header: &Header) -> bool {
    // Unknown is not dead: a read that failed for another reason than "no such
    // process" (the fd limit, say) keeps the segment.
    match procfs::probe(header.creator_pid) {
        procfs::Probe::Found(s) => !s.is_dead() && s.start_time == header.creator_start,
        procfs::Probe::Gone => false,
        procfs::Probe::Unknown => true,
    }
}

/// For each `/dev/shm` name mapped by some live process, one such pid.
fn mapped_names() -> HashMap<String, u32> {
    let mut mapped = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return mapped;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process we may not read (another user's) cannot map our 0600 segments
        // unless it is root; root's own scan reads every process.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for line in maps.lines() {
            if let Some(i) = line.find("/dev/shm/") {
                let rest = &line[i + "/dev/shm/".len()..];
                let name = rest.strip_suffix(" (deleted)").unwrap_or(rest);
                mapped.entry(name.to_string()).or_insert(pid);
            }
        }
    }
    mapped
}

fn info(name: &str, header: Header, file_size: u64, mapped: &HashMap<String, u32>) -> SegmentInfo {
    let status = if creator_alive(&header) {
        Status::CreatorAlive
    } else if let Some(&pid) = mapped.get(name) {
        Status::InUse { pid }
    } else {
        Status::Stale
    };
    SegmentInfo {
        name: name.to_string(),
        kind: header.kind,
        file_size,
        creator_pid: header.creator_pid,
        status,
    }
}

/// Every multiproc segment of this user in `/dev/shm`, sorted by name, with its
/// status. Files that are not multiproc segments, or belong to other users, are not
/// listed.
///
/// ```
/// use multiproc::SharedMemory;
/// use multiproc::shm::clean::{self, Status};
/// let shm = SharedMemory::create(8)?;
/// let mine = clean::scan()?.into_iter().find(|s| s.name == shm.name()).unwrap();
/// assert_eq!(mine.status, Status::CreatorAlive);
/// shm.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn scan() -> Result<Vec<SegmentInfo>> {
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| Error::io(format!("listing {SHM_DIR}"), e))?;
    let mut found: Vec<(String, Header, u64)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|name| read_header(&name).map(|(h, len)| (name, h, len)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mapped = if found.is_empty() {
        HashMap::new()
    } else {
        mapped_names()
    };
    Ok(found
        .into_iter()
        .map(|(name, h, len)| info(&name, h, len, &mapped))
        .collect())
}

/// The stale segments: [`scan`] filtered to [`Status::Stale`].
///
/// ```
/// for seg in multiproc::shm::clean::stale_segments()? {
///     println!("{} ({} bytes) was left by pid {}", seg.name, seg.file_size, seg.creator_pid);
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn stale_segments() -> Result<Vec<SegmentInfo>> {
    Ok(scan()?
        .into_iter()
        .filter(|s| s.status == Status::Stale)
        .collect())
}

/// The status of the multiproc segment `name` (with or without a leading `/`).
///
/// [`Error::NotFound`] when no multiproc segment of this user has that name.
///
/// ```
/// use multiproc::shm::clean::{self, Status};
/// let shm = multiproc::SharedMemory::create(8)?;
/// assert_eq!(clean::status(shm.name())?.status, Status::CreatorAlive);
/// shm.unlink()?;
/// assert!(matches!(clean::status(shm.name()), Err(multiproc::Error::NotFound { .. })));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn status(name: &str) -> Result<SegmentInfo> {
    let name = super::segment::normalize_name(name)?;
    let (header, len) = read_header(&name).ok_or_else(|| Error::NotFound { name: name.clone() })?;
    let mapped = if creator_alive(&header) {
        HashMap::new()
    } else {
        mapped_names()
    };
    Ok(info(&name, header, len, &mapped))
}

/// Unlinks the segment `name` if it is stale, checking again first; returns what was
/// removed. A segment that is not stale (any more) is
/// [`Error::InvalidArgument`], and stays.
///
/// ```
/// use multiproc::shm::clean;
/// let shm = multiproc::SharedMemory::create(8)?;
/// // Its creator (this process) runs: it is kept.
/// assert!(clean::remove_stale(shm.name()).is_err());
/// shm.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn remove_stale(name: &str) -> Result<SegmentInfo> {
    let info = status(name)?;
    if info.status != Status::Stale {
        return Err(Error::InvalidArgument(format!(
            "segment {:?} is not stale ({}): it was kept",
            info.name,
            describe(info.status)
        )));
    }
    mem::shm_unlink(&format!("/{}", info.name)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            name: info.name.clone(),
        },
        _ => Error::io(format!("unlinking shared memory {:?}", info.name), e),
    })?;
    Ok(info)
}

/// A short phrase for a status, as `multiproc clean` prints it.
///
/// ```
/// use multiproc::shm::clean::{describe, Status};
/// assert_eq!(describe(Status::InUse { pid: 7 }), "creator gone, still mapped by pid 7");
/// ```
pub fn describe(status: Status) -> String {
    match status {
        Status::Stale => "creator gone, not mapped by any process".to_string(),
        Status::CreatorAlive => "creator still runs".to_string(),
        Status::InUse { pid } => format!("creator gone, still mapped by pid {pid}"),
    }
}
