//! One shared memory object with its header, mapped into this process.

use std::io;
use std::os::fd::OwnedFd;

use super::header::{HEADER_SIZE, Header, Kind};
use crate::error::{Error, Result};
use crate::sys::{mem, mem::Mapping, procfs};

/// Prefix of the random names multiproc gives to the named segments it creates.
/// (`multiproc clean` recognizes segments by their header, whatever their name.)
pub const NAME_PREFIX: &str = "mp-";

/// Largest payload accepted: mappings are limited by `isize::MAX`.
pub const MAX_PAYLOAD: u64 = (isize::MAX as u64) - HEADER_SIZE as u64;

/// A mapped segment: memfd (anonymous) or `/dev/shm` (named).
///
/// Invariant: the header has been written (by the creator) or checked (on attach).
#[derive(Debug)]
pub struct Segment {
    map: Mapping,
    // Held so that the object stays open for descriptor passing to spawned children.
    _fd: OwnedFd,
    name: Option<String>,
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

fn creator_header(kind: Kind, size: u64) -> Header {
    Header {
        kind,
        size,
        creator_pid: rustix::process::getpid().as_raw_nonzero().get() as u32,
        creator_start: procfs::current_process_start_time(),
    }
}

/// Checks a user-given segment name and returns it without a leading `/`.
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
    if bare.len() > 250 {
        return Err(invalid("it is longer than 250 bytes"));
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
    /// An anonymous memfd segment with a `size`-byte payload.
    pub fn anonymous(kind: Kind, size: u64) -> Result<Segment> {
        let total = check_size(size)?;
        let fd = mem::memfd(&format!("multiproc-{}", kind.name()), total as u64)
            .map_err(|e| Error::io(format!("creating a {total}-byte memfd"), e))?;
        let map =
            Mapping::new(&fd, total).map_err(|e| Error::io(format!("mapping {total} bytes"), e))?;
        let header = creator_header(kind, size);
        header.write(&map);
        Ok(Segment {
            map,
            _fd: fd,
            name: None,
            header,
        })
    }

    /// Creates the named segment `name` (already normalized), failing if it exists.
    pub fn create_named(name: &str, kind: Kind, size: u64) -> Result<Segment> {
        let total = check_size(size)?;
        let path = format!("/{name}");
        let fd = mem::shm_create(&path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                name: name.to_string(),
            },
            _ => Error::io(format!("creating shared memory {name:?}"), e),
        })?;
        let made = (|| {
            mem::set_len(&fd, total as u64).map_err(|e| {
                Error::io(format!("sizing shared memory {name:?} to {total} bytes"), e)
            })?;
            let map = Mapping::new(&fd, total)
                .map_err(|e| Error::io(format!("mapping shared memory {name:?}"), e))?;
            let header = creator_header(kind, size);
            header.write(&map);
            Ok((map, header))
        })();
        match made {
            Ok((map, header)) => Ok(Segment {
                map,
                _fd: fd,
                name: Some(name.to_string()),
                header,
            }),
            Err(e) => {
                let _ = mem::shm_unlink(&path);
                Err(e)
            }
        }
    }

    /// Attaches to the named segment `name` (already normalized) holding `kind`.
    pub fn open_named(name: &str, kind: Kind) -> Result<Segment> {
        let path = format!("/{name}");
        let fd = mem::shm_open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                name: name.to_string(),
            },
            _ if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EISDIR)) => {
                Error::Foreign {
                    name: name.to_string(),
                    reason: "a symbolic link or a directory, not a segment".to_string(),
                }
            }
            io::ErrorKind::PermissionDenied => Error::Permission {
                name: name.to_string(),
                reason: "permission denied: it belongs to another user".to_string(),
            },
            _ => Error::io(format!("opening shared memory {name:?}"), e),
        })?;
        let (len, uid, mode) =
            mem::stat(&fd).map_err(|e| Error::io(format!("reading the size of {name:?}"), e))?;
        if uid != mem::euid() {
            return Err(Error::Permission {
                name: name.to_string(),
                reason: format!(
                    "it belongs to uid {uid}, not to this user ({})",
                    mem::euid()
                ),
            });
        }
        if mode & 0o077 != 0 {
            return Err(Error::Permission {
                name: name.to_string(),
                reason: format!(
                    "its mode {mode:o} lets other users in; multiproc segments are 0600"
                ),
            });
        }
        if (len as usize) < HEADER_SIZE {
            return Err(Error::Foreign {
                name: name.to_string(),
                reason: format!("{len} bytes, shorter than the {HEADER_SIZE}-byte header"),
            });
        }
        let map = Mapping::new(&fd, len as usize)
            .map_err(|e| Error::io(format!("mapping shared memory {name:?}"), e))?;
        let header = Header::read(&map, name, len)?;
        if header.kind != kind {
            return Err(Error::KindMismatch {
                name: name.to_string(),
                expected: kind.name().to_string(),
                found: header.kind.name().to_string(),
            });
        }
        Ok(Segment {
            map,
            _fd: fd,
            name: Some(name.to_string()),
            header,
        })
    }

    /// The mapping (header included).
    pub fn map(&self) -> &Mapping {
        &self.map
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The name, for named segments.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}
