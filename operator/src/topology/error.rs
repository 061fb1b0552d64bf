//! Errors of the topology module. Each names the node and the command, so an
//! event or a log line says where to look without a debugger.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("invalid desired topology: {0}")]
    InvalidDesired(String),

    /// The fence closed: leadership is no longer confirmed, so no command
    /// that changes Redis may be sent.
    #[error("{addr}: `{command}` not sent: leadership is not confirmed (lease may have expired)")]
    Fenced { addr: SocketAddr, command: String },

    #[error("{addr}: cannot connect: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: redis::RedisError,
    },

    /// The transport failed (connection reset, protocol error...).
    #[error("{addr}: `{command}` failed: {source}")]
    Command {
        addr: SocketAddr,
        command: String,
        #[source]
        source: redis::RedisError,
    },

    /// The server answered with an error we cannot safely ignore.
    #[error("{addr}: `{command}` was refused: {message}")]
    Refused {
        addr: SocketAddr,
        command: String,
        message: String,
    },

    #[error("{addr}: `{command}` timed out after {after:?}")]
    Timeout {
        addr: SocketAddr,
        command: String,
        after: Duration,
    },

    #[error("{addr}: unexpected reply to `{command}`: {detail}")]
    Reply {
        addr: SocketAddr,
        command: String,
        detail: String,
    },
}
