//! Finding and removing stale named segments: the library side of `multiproc clean`.
//!
//! Anonymous (memfd) segments cannot leak: the kernel frees them with the last
//! process that maps them, even after `kill -9`. A *named* segment (a file in
//! `/dev/shm`) lives until someone unlinks it, as in Python, so one whose creator was
//! killed before it could unlink stays behind. This module finds those.
//!
//! # Owner records
//! A named [`SharedMemory`](crate::SharedMemory) holds only the user's bytes (the
//! layout CPython shares), so what identifies it as multiproc's lives beside it:
//! its **owner record**, the file `/dev/shm/mp-owner-<inode>` ([`RECORD_PREFIX`]
//! and the segment file's inode number) holding a 64-byte header (see
//! `header` module; kind 2, the creator's pid and start time, the
//! segment's inode) followed by the segment's name. `create` writes it, `unlink`
//! removes it.
//!
//! A record is **this user's** when it is a regular file owned by the effective
//! uid, named after the inode its header gives, with a valid header and name;
//! nothing else is ever touched, and a segment without a record (CPython's, any
//! other program's) is never listed nor removed. A record is **stale** when
//! 1. its creator is gone: no process has the creator pid recorded in the header
//!    with the same start time (so a reused pid does not keep it alive), and
//! 2. no live process maps the segment's file (its inode, in `/proc/<pid>/maps`),
//!    so removing the name cannot surprise a program that still uses it.
//!
//! Unknown is not dead: both must be *known*. A creator's pid missing from `/proc`
//! counts as gone only when `/proc` speaks for this pid namespace
//! (`procfs::answers`), an unreadable stat keeps the creator alive, and a listing or
//! `maps` read that fails (the fd limit, say) leaves the mappers unknown; either
//! gives [`Status::Unknown`], and the segment is kept.
//!
//! Removing a stale record unlinks the segment only if the file under its name is
//! still the one the record owns (same inode): if CPython or anyone unlinked it and
//! made another file under that name, that file stays; the record goes either way.
//!
//! Records are read with `read(2)`, never mapped, so a truncated or hostile file
//! cannot fault the scanner. Removal re-checks just before unlinking; the
//! remaining window is the one every `rm` has, and names are 64 random bits.
//! (Inode numbers are unique among the live files of one `/dev/shm`, so a record
//! left for an inode that a new segment now has is stale, and is replaced.)

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

pub use super::header::Kind;
use super::header::{HEADER_SIZE, Header};
use super::segment::{creator_header, normalize_name};
use super::shared_memory::{link, unnamed_file};
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
    /// `/proc` could not tell whether the creator runs or whether a process maps
    /// the segment (it is not mounted, belongs to another pid namespace, or a read
    /// failed, at the fd limit say): the segment is kept, as if in use.
    Unknown,
}

/// Prefix of owner records' names: `mp-owner-<inode of the segment's file>`.
///
/// ```
/// use multiproc::shm::clean::{self, RECORD_PREFIX};
/// let shm = multiproc::SharedMemory::create(8)?;
/// let record = clean::status(shm.name())?.record;
/// shm.unlink()?; // removes the record too
/// assert!(record.starts_with(RECORD_PREFIX));
/// assert!(!std::path::Path::new(&format!("/dev/shm/{record}")).exists());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub const RECORD_PREFIX: &str = "mp-owner-";

/// A multiproc named segment of this user, found through its owner record.
///
/// ```
/// use multiproc::shm::clean::{self, Kind};
/// let shm = multiproc::SharedMemory::create(100)?;
/// let info = clean::status(shm.name())?;
/// assert_eq!(info.kind, Kind::SharedMemory);
/// assert_eq!(info.file_size, 100); // the user's bytes, nothing else
/// assert!(info.file_present);
/// assert_eq!(info.creator_pid, std::process::id());
/// shm.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's name (the file name in `/dev/shm`; attach with it).
    pub name: String,
    /// What it holds: [`Kind::SharedMemory`], or [`Kind::Directory`] for a
    /// directory of named objects (`crate::named`).
    pub kind: Kind,
    /// The segment file's size in bytes (0 when it is gone).
    pub file_size: u64,
    /// Whether the file the record owns is still there under `name` (CPython, or
    /// anyone, may have unlinked it, leaving the record alone).
    pub file_present: bool,
    /// The owner record's file name in `/dev/shm`.
    pub record: String,
    /// Pid of the process that created it.
    pub creator_pid: u32,
    /// Whether it may be removed.
    pub status: Status,
}

/// An owner record as read from `/dev/shm`.
#[derive(Debug)]
struct Record {
    /// Its own file name.
    file: String,
    /// The segment's name.
    name: String,
    header: Header,
}

fn record_file(inode: u64) -> String {
    format!("{RECORD_PREFIX}{inode}")
}

/// Reads `/dev/shm/<file>` if it is an owner record of this user (see the module
/// docs); `None` for anything else.
fn read_record(file: &str) -> Option<Record> {
    // O_NOFOLLOW: a symlink is not a record; O_NONBLOCK: a FIFO does not block us.
    let mut f: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(format!("{SHM_DIR}/{file}"))
        .ok()?;
    let meta = f.metadata().ok()?;
    let len = meta.len();
    if !meta.file_type().is_file()
        || meta.uid() != mem::euid()
        || len <= HEADER_SIZE as u64
        || len > (HEADER_SIZE + 255) as u64
    {
        return None;
    }
    let mut bytes = vec![0u8; len as usize];
    f.read_exact(&mut bytes).ok()?;
    let head: &[u8; HEADER_SIZE] = bytes[..HEADER_SIZE].try_into().ok()?;
    let header = Header::parse(head, file, len).ok()?;
    if header.kind != Kind::SharedMemory
        || header.size != len - HEADER_SIZE as u64
        || record_file(header.data_inode) != file
    {
        return None;
    }
    let name = String::from_utf8(bytes[HEADER_SIZE..].to_vec()).ok()?;
    if normalize_name(&name).ok()? != name {
        return None;
    }
    Some(Record {
        file: file.to_string(),
        name,
        header,
    })
}

/// Writes the owner record of the segment `name` whose (still unnamed) file has
/// inode `inode`, naming this process as its creator.
///
/// The record is written whole into an unnamed file, then linked under its name:
/// no one ever reads half a record. A record already under that name owns an
/// inode that no live file has any more (ours has it): it is stale and replaced.
pub(crate) fn write_record(name: &str, inode: u64) -> Result<()> {
    let file = record_file(inode);
    let what = || format!("the owner record {file:?} of shared memory {name:?}");
    let mut header = creator_header(Kind::SharedMemory, name.len() as u64);
    header.data_inode = inode;
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(name.as_bytes());
    let fd = File::from(unnamed_file(&what())?);
    (&fd)
        .write_all(&bytes)
        .map_err(|e| Error::io(format!("writing {}", what()), e))?;
    let mut replaced = false;
    loop {
        match link(&fd, &file) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !replaced => {
                if read_record(&file).is_none() {
                    // Not a record: someone else's file; leave it alone.
                    return Err(Error::AlreadyExists { name: file });
                }
                let _ = std::fs::remove_file(format!("{SHM_DIR}/{file}"));
                replaced = true;
            }
            Err(e) => return Err(Error::io(format!("naming {}", what()), e)),
        }
    }
}

/// Removes the owner record of the segment `name` with inode `inode`, if there is
/// one (a segment CPython made has none). Best effort: a record left behind is
/// found by [`scan`] once its creator is gone.
pub(crate) fn remove_record(name: &str, inode: u64) {
    let file = record_file(inode);
    if read_record(&file).is_some_and(|r| r.name == name) {
        let _ = std::fs::remove_file(format!("{SHM_DIR}/{file}"));
    }
}

/// Inode and size of `/dev/shm/<name>`, if it is a regular file of this user.
fn segment_file(name: &str) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(format!("{SHM_DIR}/{name}")).ok()?;
    (meta.file_type().is_file() && meta.uid() == mem::euid()).then(|| (meta.ino(), meta.len()))
}

/// What the `/proc` probes say of a process that may keep a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Alive,
    Gone,
    /// The probe could not tell: treated as alive (the segment is kept).
    Unknown,
}

fn creator_liveness(header: &Header) -> Liveness {
    creator_liveness_by(header, procfs::probe, procfs::answers)
}

fn creator_liveness_by(
    header: &Header,
    probe: impl Fn(u32) -> procfs::Probe,
    answers: impl Fn() -> bool,
) -> Liveness {
    match probe(header.creator_pid) {
        procfs::Probe::Found(s) if !s.is_dead() && s.start_time == header.creator_start => {
            Liveness::Alive
        }
        procfs::Probe::Found(_) => Liveness::Gone,
        // "No such pid" means gone only if `/proc` speaks for this pid namespace.
        procfs::Probe::Gone if answers() => Liveness::Gone,
        procfs::Probe::Gone | procfs::Probe::Unknown => Liveness::Unknown,
    }
}

/// For each inode of a `/dev/shm` file mapped by some live process, one such pid;
/// `None` when that cannot be told (see [`mapped_inodes_by`]).
fn mapped_inodes() -> Option<HashMap<u64, u32>> {
    if !procfs::answers() {
        return None;
    }
    let dir = std::fs::read_dir("/proc").ok()?;
    let pids = dir.map(|entry| {
        let entry = entry.ok()?;
        Some(
            entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok()),
        )
    });
    mapped_inodes_by(pids, |pid| {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
    })
}

/// [`mapped_inodes`] over a listing of `/proc` (`None` items: an entry that could
/// not be read; `Some(None)`: not a process) and a reader of `maps` files.
///
/// Unknown is not dead: a listing that fails part-way, or a `maps` read that fails
/// for another reason than "no such process" (`ENOENT`/`ESRCH`: it exited) or "not
/// yours" (`EACCES`/`EPERM`: another user's process, which cannot map our 0600
/// segments unless it is root, and root's own scan reads every process), makes the
/// whole answer `None`: a segment is then kept, never called stale.
fn mapped_inodes_by(
    pids: impl Iterator<Item = Option<Option<u32>>>,
    read_maps: impl Fn(u32) -> std::io::Result<String>,
) -> Option<HashMap<u64, u32>> {
    let mut mapped = HashMap::new();
    for pid in pids {
        let Some(pid) = pid? else {
            continue;
        };
        let maps = match read_maps(pid) {
            Ok(maps) => maps,
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT | libc::ESRCH | libc::EACCES | libc::EPERM) => continue,
                _ => return None,
            },
        };
        // "start-end perms offset dev inode /dev/shm/name": the inode is exact,
        // whatever happened to the name since.
        for line in maps.lines().filter(|l| l.contains(" /dev/shm/")) {
            if let Some(inode) = line.split_whitespace().nth(4).and_then(|i| i.parse().ok()) {
                mapped.entry(inode).or_insert(pid);
            }
        }
    }
    Some(mapped)
}

/// A record's status from what the probes said of its creator and of the
/// processes that map its segment (`None`: could not tell). Only a creator known
/// gone and a segment known unmapped make it [`Status::Stale`].
fn status_of(creator: Liveness, inode: u64, mapped: Option<&HashMap<u64, u32>>) -> Status {
    match (creator, mapped) {
        (Liveness::Alive, _) => Status::CreatorAlive,
        (Liveness::Unknown, _) | (Liveness::Gone, None) => Status::Unknown,
        (Liveness::Gone, Some(m)) => m
            .get(&inode)
            .map_or(Status::Stale, |&pid| Status::InUse { pid }),
    }
}

fn info(r: Record, mapped: Option<&HashMap<u64, u32>>) -> SegmentInfo {
    let present = segment_file(&r.name).filter(|&(inode, _)| inode == r.header.data_inode);
    let status = status_of(creator_liveness(&r.header), r.header.data_inode, mapped);
    // A directory of named objects carries its own header (kind 4): say so.
    let kind = match present.and_then(|_| file_kind(&r.name)) {
        Some(Kind::Directory) => Kind::Directory,
        _ => r.header.kind,
    };
    SegmentInfo {
        name: r.name,
        kind,
        file_size: present.map_or(0, |(_, len)| len),
        file_present: present.is_some(),
        record: r.file,
        creator_pid: r.header.creator_pid,
        status,
    }
}

/// The kind in the header at the start of `/dev/shm/<name>`, if it has one (read
/// with `read(2)`, never mapped; a named SharedMemory has none).
fn file_kind(name: &str) -> Option<Kind> {
    let mut f: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(format!("{SHM_DIR}/{name}"))
        .ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = [0u8; HEADER_SIZE];
    f.read_exact(&mut head).ok()?;
    Header::parse(&head, name, len).ok().map(|h| h.kind)
}

fn records() -> Result<Vec<Record>> {
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| Error::io(format!("listing {SHM_DIR}"), e))?;
    let mut found: Vec<Record> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|f| f.starts_with(RECORD_PREFIX))
        .filter_map(|f| read_record(&f))
        .collect();
    found.sort_by(|a, b| (&a.name, &a.file).cmp(&(&b.name, &b.file)));
    Ok(found)
}

/// Every multiproc named segment of this user (every owner record in
/// `/dev/shm`), sorted by name, with its status. Files without a record (CPython's
/// segments, anything else) and other users' are not listed.
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
    let found = records()?;
    let mapped = if found.is_empty() {
        Some(HashMap::new())
    } else {
        mapped_inodes()
    };
    Ok(found
        .into_iter()
        .map(|r| info(r, mapped.as_ref()))
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

/// The status of the multiproc segment `name` (with or without a leading `/`): the
/// record of the file under that name, or else a record left for a file of that
/// name that is gone.
///
/// [`Error::NotFound`] when no owner record of this user names it (a segment
/// CPython made has none).
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
    let name = normalize_name(name)?;
    let own = segment_file(&name)
        .and_then(|(inode, _)| read_record(&record_file(inode)))
        .filter(|r| r.name == name);
    let record = match own {
        Some(r) => r,
        None => records()?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::NotFound { name: name.clone() })?,
    };
    // The maps of every process are read only when the creator is known gone.
    let mapped = match creator_liveness(&record.header) {
        Liveness::Gone => mapped_inodes(),
        Liveness::Alive | Liveness::Unknown => Some(HashMap::new()),
    };
    Ok(info(record, mapped.as_ref()))
}

/// Removes the segment `name` and its owner record if they are stale, checking
/// again first; returns what was removed. The segment's file is unlinked only if
/// it is still the one the record owns (same inode). A segment that is not stale
/// (any more) is [`Error::InvalidArgument`], and stays.
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
    let record = read_record(&info.record).ok_or_else(|| Error::NotFound {
        name: info.name.clone(),
    })?;
    let owned =
        segment_file(&info.name).is_some_and(|(inode, _)| inode == record.header.data_inode);
    if owned {
        mem::shm_unlink(&format!("/{}", info.name)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                name: info.name.clone(),
            },
            _ => Error::io(format!("unlinking shared memory {:?}", info.name), e),
        })?;
    }
    std::fs::remove_file(format!("{SHM_DIR}/{}", info.record)).map_err(|e| {
        Error::io(
            format!(
                "removing the owner record {:?} of {:?}",
                info.record, info.name
            ),
            e,
        )
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
        Status::Unknown => "cannot tell whether it is in use (/proc did not answer)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::spin::test_procs::{join, spawn};
    use crate::{Event, RawValue};

    fn header(pid: u32, start: u64) -> Header {
        Header {
            kind: Kind::SharedMemory,
            size: 0,
            creator_pid: pid,
            creator_start: start,
            data_inode: 99,
        }
    }

    const RUNNING: procfs::TaskStat = procfs::TaskStat {
        state: b'S',
        start_time: 1234,
        threads: 1,
    };

    /// Unknown is not dead: a creator whose pid `/proc` does not list counts as gone
    /// only when `/proc` answers for this process at all (it may be unmounted, or
    /// of another pid namespace), and an unreadable stat keeps it alive.
    #[test]
    fn a_creator_is_gone_only_when_proc_can_tell() {
        let h = header(4242, 1234);
        let found = |s: procfs::TaskStat| move |_: u32| procfs::Probe::Found(s);
        let gone = |_: u32| procfs::Probe::Gone;
        let unknown = |_: u32| procfs::Probe::Unknown;
        assert_eq!(
            creator_liveness_by(&h, found(RUNNING), || true),
            Liveness::Alive
        );
        let reused = procfs::TaskStat {
            start_time: 99,
            ..RUNNING
        };
        assert_eq!(
            creator_liveness_by(&h, found(reused), || true),
            Liveness::Gone
        );
        let zombie = procfs::TaskStat {
            state: b'Z',
            ..RUNNING
        };
        assert_eq!(
            creator_liveness_by(&h, found(zombie), || true),
            Liveness::Gone
        );
        assert_eq!(creator_liveness_by(&h, gone, || true), Liveness::Gone);
        assert_eq!(creator_liveness_by(&h, gone, || false), Liveness::Unknown);
        assert_eq!(creator_liveness_by(&h, unknown, || true), Liveness::Unknown);
    }

    /// Unknown is not dead, for mappers: a `/proc` listing or `maps` read that fails
    /// otherwise than "exited" or "another user's" means nobody can say the segment
    /// is unmapped, so it is never stale.
    #[test]
    fn a_segment_is_unmapped_only_when_every_process_could_be_read() {
        let maps = "7f00-7f01 rw-s 00000000 00:1a 99 /dev/shm/psm_x\n".to_string();
        let io = |code: i32| std::io::Error::from_raw_os_error(code);
        let read = |pid: u32| match pid {
            1 => Ok(String::new()),
            2 => Ok(maps.clone()),
            3 => Err(io(libc::ENOENT)),
            4 => Err(io(libc::EACCES)),
            _ => Err(io(libc::EMFILE)),
        };
        let list = |pids: &[u32]| pids.iter().map(|&p| Some(Some(p))).collect::<Vec<_>>();
        let seen = mapped_inodes_by(list(&[1, 2, 3, 4]).into_iter(), read).unwrap();
        assert_eq!(seen.get(&99), Some(&2));
        let none = mapped_inodes_by(list(&[1, 3, 4]).into_iter(), read).unwrap();
        assert!(none.is_empty());
        assert_eq!(
            mapped_inodes_by(list(&[1, 5]).into_iter(), read),
            None,
            "EMFILE"
        );
        let broken_listing = vec![Some(Some(1)), None];
        assert_eq!(mapped_inodes_by(broken_listing.into_iter(), read), None);

        assert_eq!(status_of(Liveness::Gone, 99, Some(&none)), Status::Stale);
        assert_eq!(
            status_of(Liveness::Gone, 99, Some(&seen)),
            Status::InUse { pid: 2 }
        );
        assert_eq!(status_of(Liveness::Gone, 99, None), Status::Unknown);
        assert_eq!(
            status_of(Liveness::Unknown, 99, Some(&none)),
            Status::Unknown
        );
        assert_eq!(status_of(Liveness::Alive, 99, None), Status::CreatorAlive);
    }

    /// Removes a `/dev/shm` path when dropped, so a failing test leaves nothing.
    struct Remove(String);

    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The one state a SIGKILL during `SharedMemory::create` can leave: the owner
    /// record linked, the segment's file still unnamed (freed by the kernel with
    /// the killed process). `clean` finds the record stale, says the file is gone,
    /// and removes it: nothing is left.
    #[test]
    fn a_creator_killed_between_the_two_links_leaves_a_record_clean_removes() {
        let name = super::super::segment::random_name().unwrap();
        let inode = RawValue::new(0u64).unwrap();
        let (ready, never) = (Event::new().unwrap(), Event::new().unwrap());
        let (n, i, r, w) = (name.clone(), inode.clone(), ready.clone(), never.clone());
        let child = spawn(move || {
            // What create does up to the record; the file never gets its name.
            let fd = unnamed_file("a test segment").unwrap();
            mem::set_len(&fd, 4096).unwrap();
            let ino = super::super::shared_memory::inode(&fd).unwrap();
            write_record(&n, ino).unwrap();
            i.set(ino);
            r.set();
            w.wait(Some(std::time::Duration::from_secs(30))).unwrap();
        });
        assert!(
            ready
                .wait(Some(std::time::Duration::from_secs(30)))
                .unwrap()
        );
        let pid = child.pid().unwrap();
        child.kill().unwrap();
        assert_eq!(join(child), Some(-9));

        let record = record_file(inode.get());
        let _guard = Remove(format!("{SHM_DIR}/{record}"));
        let info = status(&name).unwrap();
        assert_eq!(info.record, record);
        assert_eq!(info.creator_pid, pid);
        assert_eq!((info.status, info.file_present), (Status::Stale, false));
        assert!(scan().unwrap().iter().any(|s| s.record == record));
        remove_stale(&name).unwrap();
        assert!(!std::path::Path::new(&format!("{SHM_DIR}/{record}")).exists());
        assert!(!std::path::Path::new(&format!("{SHM_DIR}/{name}")).exists());
        assert!(matches!(status(&name), Err(Error::NotFound { .. })));
    }

    /// A record left under the inode a new segment now has (the old file is gone,
    /// the inode reused) is stale by construction: `write_record` replaces it. A
    /// file there that is not a record is left alone, and creation fails.
    #[test]
    fn write_record_replaces_a_stale_record_and_refuses_a_foreign_file() {
        let fd = unnamed_file("a test segment").unwrap();
        let ino = super::super::shared_memory::inode(&fd).unwrap();
        let path = format!("{SHM_DIR}/{}", record_file(ino));
        let _guard = Remove(path.clone());
        // A stale record for this inode, naming another segment.
        let mut old = creator_header(Kind::SharedMemory, 6);
        old.data_inode = ino;
        let mut bytes = old.to_bytes().to_vec();
        bytes.extend_from_slice(b"mp-old");
        std::fs::write(&path, &bytes).unwrap();
        write_record("mp-new", ino).unwrap();
        let now = read_record(&record_file(ino)).map(|r| r.name);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(now.as_deref(), Some("mp-new"));

        std::fs::write(&path, b"not a record").unwrap();
        let refused = write_record("mp-new", ino);
        let kept = std::fs::read(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(refused, Err(Error::AlreadyExists { .. })),
            "{refused:?}"
        );
        assert_eq!(kept.unwrap(), b"not a record");
    }
}
