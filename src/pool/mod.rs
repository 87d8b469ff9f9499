//! [`Pool`]: worker processes running plain functions on items (Python's
//! `multiprocessing.Pool`), where a worker's death fails only the task it held.

mod async_result;
mod codec;
#[allow(clippy::module_inception)]
mod pool;
mod star;
pub(crate) mod worker;

pub use async_result::{AsyncResult, IMapIterator};
pub use pool::{Pool, PoolBuilder};
pub use star::StarFn;
