//! Message passing between processes: [`Pipe`] and its [`Connection`]s, and
//! [`wait`](connection::wait) over connections and process sentinels.

pub mod connection;
mod pipe;
mod wait;

pub use connection::Connection;
pub use pipe::Pipe;
