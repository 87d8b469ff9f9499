//! PLACEHOLDER until the lead's `inherit:` commit lands on main: the API of
//! `inherit_spec.md`, with no effect (every handle counts as owned, no hook runs).
//! Replaced wholesale by main's file at the merge.
#![allow(dead_code)]

/// One per handle value (placeholder: does nothing).
pub(crate) struct Registration;

impl Registration {
    /// Placeholder: the hook is dropped and never runs.
    pub(crate) fn new(hook: Option<Box<dyn Fn() + Send + Sync>>) -> Registration {
        drop(hook);
        Registration
    }
    /// Placeholder: always owned.
    pub(crate) fn owned(&self) -> bool {
        true
    }
}
