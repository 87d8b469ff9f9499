//! One anonymous (memfd) shared memory object with its header, mapped into this
//! process, and the names of named segments.

use std::io;
use std::os::fd::OwnedFd;

use super::header::{HEADER_SIZE, Header, Kind};
use crate::error::{Error, Result};
use crate::sys::{mem, mem::Mapping, procfs};

/// Prefix of the random names multiproc gives to the named segments it creates.
/// (`multiproc clean` recognizes them by their owner records, whatever their name.)
pub const NAME_PREFIX: &str = "mp-";

/// Largest payload accepted: mappings are limited by `isize::MAX`.
pub const MAX_PAYLOAD: u64 = (isize::MAX as u64) - HEADER_SIZE as u64;

/// A mapped memfd segment with its header (named `SharedMemory` files have none).
///
/// Invariant: the header has been written (by the creator).
///
/// The building block of the arena and of large objects; the payload starts after
/// the header, at [`HEADER_SIZE`].
#[derive(Debug)]
pub struct Segment {
    map: Mapping,
    // Held so that the object stays open for descriptor passing to spawned children.
    _fd: OwnedFd,
    /// (device, inode) of the memfd: its identity across processes (tokens).
    id: (u64, u64),
    header: Header,
}

fn check_size(size: u64) -> Result<usize> {
    if size == 0 {
        return Err(Error::ZeroSize {
            what: "segment size",
        });
    }
    if size > MAX_PAYLOAD {
        return Err(Error::SizeOverflow {
            what: "segment size",
            requested: size as u128,
            max: MAX_PAYLOAD as u128,
        });
    }
    Ok(HEADER_SIZE + size as usize)
}

/// A header naming this process as creator.
pub(crate) fn creator_header(kind: Kind, size: u64) -> Header {
    Header {
        kind,
        size,
        creator_pid: rustix::process::getpid().as_raw_nonzero().get() as u32,
        creator_start: procfs::current_process_start_time(),
        data_inode: 0,
    }
}

/// Checks a user-given segment name and returns it without a leading `/`.
///
/// Refused ([`Error::InvalidName`]): empty names, names over 255 bytes (the file
/// name limit), `/` or NUL after the optional leading `/`, `.` and `..`.
pub fn normalize_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let invalid = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    if bare.is_empty() {
        return Err(invalid(
            "it is empty; give a name such as \"my-data\" or none for a random one",
        ));
    }
    if bare.len() > 255 {
        return Err(invalid("it is longer than 255 bytes"));
    }
    if bare.contains('/') || bare.contains('\0') {
        return Err(invalid(
            "it contains '/' or a NUL byte after the optional leading '/'",
        ));
    }
    if bare == "." || bare == ".." {
        return Err(invalid("'.' and '..' are not names"));
    }
    Ok(bare.to_string())
}

/// An unpredictable name: the prefix and 64 random bits.
pub fn random_name() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::io(
            "reading random bytes for a segment name",
            io::Error::other(e.to_string()),
        )
    })?;
    Ok(format!("{NAME_PREFIX}{:016x}", u64::from_le_bytes(bytes)))
}

impl Segment {
    /// An anonymous memfd segment with a `size`-byte payload (zeroed), its header
    /// written; freed when the last handle or mapping goes.
    pub fn anonymous(kind: Kind, size: u64) -> Result<Segment> {
        let total = check_size(size)?;
        let fd = mem::memfd(&format!("multiproc-{}", kind.name()), total as u64)
            .map_err(|e| Error::io(format!("creating a {total}-byte memfd"), e))?;
        let map =
            Mapping::new(&fd, total).map_err(|e| Error::io(format!("mapping {total} bytes"), e))?;
        let header = creator_header(kind, size);
        header.write(&map);
        let id = crate::sys::transfer::file_id(&fd)
            .map_err(|e| Error::io("reading a new memfd's inode", e))?;
        Ok(Segment {
            map,
            _fd: fd,
            id,
            header,
        })
    }

    /// Maps the segment behind a received descriptor `fd` (a token's), checking
    /// its header as on attach: magic, version, `kind`, and a file at least as long
    /// as the header says. `exact`: the payload size it must have.
    pub(crate) fn from_fd(fd: OwnedFd, kind: Kind, exact: Option<u64>) -> Result<Segment> {
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("fstat on a received segment", e))?;
        let file_len = st.st_size as u64;
        let name = format!("received {}", kind.name());
        if file_len < HEADER_SIZE as u64 || file_len > isize::MAX as u64 {
            return Err(Error::Foreign {
                name,
                reason: format!("a file of {file_len} bytes"),
            });
        }
        let map = Mapping::new(&fd, file_len as usize)
            .map_err(|e| Error::io(format!("mapping a received {}", kind.name()), e))?;
        let header = Header::read(&map, &name, file_len)?;
        if header.kind != kind {
            return Err(Error::KindMismatch {
                name,
                found: header.kind.name().to_string(),
                expected: kind.name().to_string(),
            });
        }
        if exact.is_some_and(|size| size != header.size) {
            return Err(Error::Foreign {
                name,
                reason: format!("payload of {} bytes, expected {exact:?}", header.size),
            });
        }
        Ok(Segment {
            map,
            _fd: fd,
            id: (st.st_dev, st.st_ino),
            header,
        })
    }

    /// (device, inode) of the segment's file.
    pub(crate) fn id(&self) -> (u64, u64) {
        self.id
    }

    /// The segment's descriptor (for tokens).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self._fd.as_fd()
    }

    /// The payload size (from the header).
    pub(crate) fn payload_size(&self) -> u64 {
        self.header.size
    }

    /// The mapping (header included).
    pub fn map(&self) -> &Mapping {
        &self.map
    }

    #[cfg(test)]
    /// The header, as written or checked.
    pub fn header(&self) -> &Header {
        &self.header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memfd segment's size is sealed: no holder of its descriptor can shrink it
    /// (SIGBUS for every mapping) or grow it, nor lift the seals.
    #[test]
    fn memfd_segments_are_sealed_against_resizing() {
        let seg = Segment::anonymous(Kind::Large, 4096).unwrap();
        for len in [0, 64, (HEADER_SIZE + 8192) as u64] {
            let err = mem::set_len(&seg._fd, len).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "ftruncate to {len}");
        }
        let err = rustix::fs::fcntl_add_seals(&seg._fd, rustix::fs::SealFlags::WRITE).unwrap_err();
        assert_eq!(err, rustix::io::Errno::PERM, "the seals are sealed");
        assert_eq!(mem::stat(&seg._fd).unwrap().0, (HEADER_SIZE + 4096) as u64);
        // The bytes stay writable.
        seg.map().write::<u64>(HEADER_SIZE, 5);
        assert_eq!(seg.map().read::<u64>(HEADER_SIZE), 5);
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn name_prefix_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::segment::{NAME_PREFIX, random_name};
        assert!(random_name()?.starts_with(NAME_PREFIX));
        Ok(())
    }

    #[test]
    fn max_payload_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Error;
        use crate::shm::{
            header::{HEADER_SIZE, Kind},
            segment::{MAX_PAYLOAD, Segment},
        };
        assert_eq!(MAX_PAYLOAD + HEADER_SIZE as u64, isize::MAX as u64);
        let too_big = Segment::anonymous(Kind::Large, MAX_PAYLOAD + 1);
        assert!(matches!(too_big, Err(Error::SizeOverflow { .. })));
        Ok(())
    }

    #[test]
    fn segment_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::{
            header::{HEADER_SIZE, Kind},
            segment::Segment,
        };
        let seg = Segment::anonymous(Kind::Large, 4096)?;
        assert_eq!(seg.map().len(), HEADER_SIZE + 4096);
        seg.map().write::<u32>(HEADER_SIZE, 7);
        assert_eq!(seg.map().read::<u32>(HEADER_SIZE), 7);
        Ok(())
    }

    #[test]
    fn normalize_name_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::segment::normalize_name;
        assert_eq!(normalize_name("/my-data")?, "my-data");
        assert_eq!(normalize_name("my-data")?, "my-data");
        assert!(normalize_name("/").is_err());
        assert!(normalize_name("a/b").is_err());
        assert!(normalize_name("..").is_err());
        Ok(())
    }

    #[test]
    fn random_name_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::segment::{NAME_PREFIX, random_name};
        let (a, b) = (random_name()?, random_name()?);
        assert_ne!(a, b);
        assert_eq!(a.len(), NAME_PREFIX.len() + 16); // 16 hex digits
        Ok(())
    }

    #[test]
    fn anonymous_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::{header::Kind, segment::Segment};
        let seg = Segment::anonymous(Kind::Arena, 100)?;
        assert_eq!(seg.header().size, 100);
        assert!(Segment::anonymous(Kind::Arena, 0).is_err()); // zero size
        Ok(())
    }

    #[test]
    fn map_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::{
            header::{HEADER_SIZE, Kind, MAGIC},
            segment::Segment,
        };
        let seg = Segment::anonymous(Kind::Large, 16)?;
        assert_eq!(seg.map().len(), HEADER_SIZE + 16);
        assert_eq!(seg.map().read::<u64>(0), MAGIC); // the header comes first
        Ok(())
    }

    #[test]
    fn header_8() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::{header::Kind, segment::Segment};
        let h = *Segment::anonymous(Kind::Large, 10)?.header();
        assert_eq!((h.kind, h.size), (Kind::Large, 10));
        assert_eq!(h.creator_pid, std::process::id());
        Ok(())
    }
}
