//! Descriptors between Python ints and `OwnedFd`: the one `unsafe` of the bindings.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Takes ownership of descriptors the Python layer hands over (from
/// `DupFd.detach()`, which gives its caller the descriptor to own, as CPython's
/// own `rebuild_connection` takes it).
pub(crate) fn take(fds: Vec<i32>) -> PyResult<Vec<OwnedFd>> {
    if fds.iter().any(|&fd| fd < 0) {
        return Err(PyValueError::new_err("a descriptor must be >= 0"));
    }
    // Two `OwnedFd`s of one descriptor would close it twice (the second close
    // could close a descriptor opened meanwhile by someone else): refuse a list
    // that names one twice, before taking any.
    let mut sorted = fds.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(PyValueError::new_err(format!(
            "descriptor {} is listed twice in a token's descriptors",
            w[0]
        )));
    }
    Ok(fds
        .into_iter()
        // SAFETY: each fd is open and owned by the caller, who hands it over and
        // never uses or closes it again (`reduction._rebuild` passes what
        // `DupFd.detach()` returned and keeps no copy); the list has no
        // duplicates (checked above).
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

/// Gives descriptors to the Python layer, which then owns (and closes) them.
pub(crate) fn give(fds: Vec<OwnedFd>) -> Vec<i32> {
    fds.into_iter().map(IntoRawFd::into_raw_fd).collect()
}

/// `(bytes, fds)` of a handle, for `__reduce__`.
pub(crate) fn export<T: serde::Serialize>(h: &T) -> PyResult<(Vec<u8>, Vec<i32>)> {
    let e = multiproc::token::export(h).map_err(crate::errors::to_py)?;
    Ok((e.bytes, give(e.fds)))
}

/// The handle a `(bytes, fds)` token names.
pub(crate) fn import<T: serde::de::DeserializeOwned>(token: (Vec<u8>, Vec<i32>)) -> PyResult<T> {
    let (bytes, fds) = token;
    let fds = take(fds)?;
    multiproc::token::import(multiproc::token::Exported { bytes, fds })
        .map_err(crate::errors::to_py)
}
