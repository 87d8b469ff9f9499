//! The segment header: the first 64 bytes of every multiproc segment and of the
//! owner record of every named [`SharedMemory`](crate::SharedMemory).
//!
//! ```text
//! offset size field
//!      0    8 magic          b"MPROCSEG" (little-endian u64 0x4745_5343_4f52_504d),
//!                            stored last, with release ordering: a reader that
//!                            sees it sees the whole header
//!      8    4 version        layout version, currently 2
//!     12    4 kind           1 arena chunk, 2 SharedMemory owner record,
//!                            3 large block
//!     16    8 size           payload bytes after the header
//!     24    4 creator pid
//!     28    4 reserved       0
//!     32    8 creator start  creator's start time (clock ticks after boot), so
//!                            that `multiproc clean` can tell whether it still runs
//!     40    8 data inode     owner records: the inode of the SharedMemory file
//!                            they own; 0 in other segments
//!     48   16 reserved       0
//!     64      payload
//! ```
//! Integers are native-endian (all supported targets are little-endian). A reader
//! rejects a segment whose magic, version or kind differ, or whose file is shorter
//! than `64 + size`.
//!
//! A named `SharedMemory` itself has **no** header: its file holds the user's bytes
//! from offset 0, exactly as CPython's `multiprocessing.shared_memory` lays them
//! out, so both attach each other's segments. What `multiproc clean` needs to know
//! about it (who created it, which file) lives in a separate *owner record*, a
//! small `/dev/shm` file holding this header (kind 2) followed by the segment's
//! name as payload (see [`clean`](super::clean)). Version 1 put this header in
//! front of the `SharedMemory` bytes.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::sys::mem::Mapping;

/// Bytes taken by the header; the payload starts here.
pub const HEADER_SIZE: usize = 64;
/// `b"MPROCSEG"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSEG");
/// The layout version this build writes and reads.
///
/// A segment with another version is refused with [`Error::VersionMismatch`]:
pub const LAYOUT_VERSION: u32 = 2;

/// What a segment holds (the `kind` field, at offset 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// A chunk of the small-object arena.
    Arena = 1,
    /// The owner record of a user's named `SharedMemory`: the payload is the
    /// segment's name, the header's `data_inode` its file's inode.
    SharedMemory = 2,
    /// One large object (an Array too big for an arena block).
    Large = 3,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Arena),
            2 => Some(Kind::SharedMemory),
            3 => Some(Kind::Large),
            _ => None,
        }
    }

    /// The kind's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Arena => "arena chunk",
            Kind::SharedMemory => "SharedMemory",
            Kind::Large => "large block",
        }
    }
}

/// The fields of a header, as read or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the segment holds.
    pub kind: Kind,
    /// Payload size in bytes.
    pub size: u64,
    /// Pid of the creating process.
    pub creator_pid: u32,
    /// Start time of the creating process.
    pub creator_start: u64,
    /// Owner records: the inode of the `SharedMemory` file they own (0 otherwise).
    pub data_inode: u64,
}

impl Header {
    /// Writes the header into a fresh (all-zero) mapping; the magic goes last.
    pub fn write(&self, map: &Mapping) {
        map.write::<u32>(8, LAYOUT_VERSION);
        map.write::<u32>(12, self.kind as u32);
        map.write::<u64>(16, self.size);
        map.write::<u32>(24, self.creator_pid);
        map.write::<u64>(32, self.creator_start);
        map.write::<u64>(40, self.data_inode);
        map.atomic_u64(0).store(MAGIC, Ordering::Release);
    }

    /// The 64 header bytes, as [`write`](Self::write) lays them out, for a file
    /// that is written whole before it gets its name (an owner record).
    pub(crate) fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b[24..28].copy_from_slice(&self.creator_pid.to_le_bytes());
        b[32..40].copy_from_slice(&self.creator_start.to_le_bytes());
        b[40..48].copy_from_slice(&self.data_inode.to_le_bytes());
        b
    }

    /// Reads and checks the header of segment `name` (`file_len` is its size).
    ///
    /// A mapping whose creator has not written the magic yet (or that is not a
    /// segment) is [`Error::Foreign`].
    pub fn read(map: &Mapping, name: &str, file_len: u64) -> Result<Header> {
        if map.len() < HEADER_SIZE {
            return Err(Error::Foreign {
                name: name.to_string(),
                reason: "shorter than a header".to_string(),
            });
        }
        let mut bytes = [0u8; HEADER_SIZE];
        // The magic first, with acquire: seeing it means the rest is written.
        bytes[..8].copy_from_slice(&map.atomic_u64(0).load(Ordering::Acquire).to_le_bytes());
        map.read_slice(8, &mut bytes[8..]);
        Header::parse(&bytes, name, file_len)
    }

    /// Checks the 64 header bytes of segment `name` (`file_len` is its size), as read
    /// from the file without mapping it (what `multiproc clean` does).
    pub fn parse(bytes: &[u8; HEADER_SIZE], name: &str, file_len: u64) -> Result<Header> {
        let foreign = |reason: &str| Error::Foreign {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let magic = u64_at(0);
        if magic == 0 {
            return Err(foreign(
                "no header: empty, or its creator has not finished writing it",
            ));
        }
        if magic != MAGIC {
            return Err(foreign("bad magic number"));
        }
        let version = u32_at(8);
        if version != LAYOUT_VERSION {
            return Err(Error::VersionMismatch {
                name: name.to_string(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let kind = Kind::from_u32(u32_at(12)).ok_or_else(|| foreign("unknown kind in header"))?;
        let size = u64_at(16);
        let needed = (HEADER_SIZE as u64)
            .checked_add(size)
            .ok_or_else(|| foreign("size field overflows"))?;
        if file_len < needed {
            return Err(Error::Truncated {
                name: name.to_string(),
                actual: file_len,
                needed,
            });
        }
        Ok(Header {
            kind,
            size,
            creator_pid: u32_at(24),
            creator_start: u64_at(32),
            data_inode: u64_at(40),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `to_bytes` and `write` lay a header out the same way, and `parse` reads
    /// every field back.
    #[test]
    fn to_bytes_matches_write_and_parses_back() {
        let h = Header {
            kind: Kind::SharedMemory,
            size: 7,
            creator_pid: 1234,
            creator_start: 99,
            data_inode: 0x1122_3344_5566,
        };
        let fd = crate::sys::mem::memfd("test-header", HEADER_SIZE as u64).unwrap();
        let map = Mapping::new(&fd, HEADER_SIZE).unwrap();
        h.write(&map);
        let mut written = [0u8; HEADER_SIZE];
        map.read_slice(0, &mut written);
        assert_eq!(written, h.to_bytes());
        assert_eq!(Header::parse(&h.to_bytes(), "t", 71).unwrap(), h);
    }
}

/// The examples that documented these crate-private items, kept as tests.
#[cfg(test)]
mod examples {

    #[test]
    fn header_size_1() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::header::{HEADER_SIZE, Kind};
        use crate::shm::segment::Segment;
        let seg = Segment::anonymous(Kind::Large, 10)?;
        assert_eq!(seg.map().len(), HEADER_SIZE + 10);
        // A named SharedMemory has none: its file is the user's bytes (CPython's layout).
        let shm = crate::SharedMemory::create(10)?;
        let file_len = std::fs::metadata(format!("/dev/shm/{}", shm.name())).map(|m| m.len());
        shm.unlink()?;
        assert_eq!(file_len.ok(), Some(10));
        Ok(())
    }

    #[test]
    fn magic_2() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::header::MAGIC;
        assert_eq!(MAGIC, 0x4745_5343_4f52_504d);
        assert_eq!(&MAGIC.to_le_bytes(), b"MPROCSEG");
        Ok(())
    }

    #[test]
    fn layout_version_3() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Error;
        use crate::shm::header::{HEADER_SIZE, Header, LAYOUT_VERSION};
        let mut bytes = [0u8; HEADER_SIZE];
        bytes[..8].copy_from_slice(b"MPROCSEG");
        bytes[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_le_bytes());
        bytes[12..16].copy_from_slice(&2u32.to_le_bytes());
        let err = Header::parse(&bytes, "mp-future", 64).unwrap_err();
        assert!(matches!(
            err,
            Error::VersionMismatch {
                expected: LAYOUT_VERSION,
                ..
            }
        ));
        Ok(())
    }

    #[test]
    fn kind_4() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::{clean, header::Kind};
        let shm = crate::SharedMemory::create(1)?;
        let kind = clean::status(shm.name()).map(|info| info.kind);
        shm.unlink()?;
        assert_eq!(kind?, Kind::SharedMemory);
        assert_eq!(Kind::SharedMemory as u32, 2);
        Ok(())
    }

    #[test]
    fn name_5() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::header::Kind;
        assert_eq!(Kind::SharedMemory.name(), "SharedMemory");
        assert_eq!(Kind::Arena.name(), "arena chunk");
        assert_eq!(Kind::Large.name(), "large block");
        Ok(())
    }

    #[test]
    fn header_6() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::{header::Kind, segment::Segment};
        let seg = Segment::anonymous(Kind::Large, 256)?;
        let h = seg.header();
        assert_eq!((h.kind, h.size), (Kind::Large, 256));
        assert_eq!(h.creator_pid, std::process::id());
        assert_ne!(h.creator_start, 0);
        Ok(())
    }

    #[test]
    fn write_7() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::header::{HEADER_SIZE, Header, Kind};
        use crate::sys::mem::{Mapping, memfd};
        let fd = memfd("doc-header", HEADER_SIZE as u64 + 8).unwrap();
        let map = Mapping::new(&fd, HEADER_SIZE + 8).unwrap();
        let h = Header {
            kind: Kind::Large,
            size: 8,
            creator_pid: 1,
            creator_start: 2,
            data_inode: 0,
        };
        h.write(&map);
        assert_eq!(&map.read::<[u8; 8]>(0), b"MPROCSEG");
        assert_eq!(
            Header::read(&map, "doc-header", (HEADER_SIZE + 8) as u64)?,
            h
        );
        Ok(())
    }

    #[test]
    fn read_8() -> Result<(), Box<dyn std::error::Error>> {
        use crate::Error;
        use crate::shm::header::{HEADER_SIZE, Header, Kind};
        use crate::shm::segment::Segment;
        use crate::sys::mem::{Mapping, memfd};
        let seg = Segment::anonymous(Kind::Arena, 32)?;
        let h = Header::read(seg.map(), "chunk", seg.map().len() as u64)?;
        assert_eq!(h, *seg.header());
        // All zeros: no magic, no header.
        let fd = memfd("doc-zeros", HEADER_SIZE as u64).unwrap();
        let zeros = Mapping::new(&fd, HEADER_SIZE).unwrap();
        let err = Header::read(&zeros, "zeros", HEADER_SIZE as u64).unwrap_err();
        assert!(matches!(err, Error::Foreign { .. }));
        Ok(())
    }

    #[test]
    fn parse_9() -> Result<(), Box<dyn std::error::Error>> {
        use crate::shm::header::{HEADER_SIZE, Header, Kind};
        let mut bytes = [0u8; HEADER_SIZE];
        bytes[..8].copy_from_slice(b"MPROCSEG");
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes()); // version
        bytes[12..16].copy_from_slice(&2u32.to_le_bytes()); // SharedMemory
        bytes[16..24].copy_from_slice(&100u64.to_le_bytes()); // payload size
        let h = Header::parse(&bytes, "mp-example", 164)?;
        assert_eq!((h.kind, h.size), (Kind::SharedMemory, 100));
        // A file shorter than the header says is refused.
        assert!(matches!(
            Header::parse(&bytes, "mp-example", 100),
            Err(crate::Error::Truncated { .. })
        ));
        Ok(())
    }
}
