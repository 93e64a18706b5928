//! One broker for every level of the relay tree. At ROOT it takes new records (over HTTP, or from producer
//! connections on the consumer port) and gives them offsets; at every level it stores topics in the
//! `storage` engine and pushes them to TCP consumers, with group offsets, full refresh, heartbeats and
//! bounded memory. Below ROOT, the pipe (`pipe/`) copies the parent's topics verbatim over a WebSocket, and
//! every node registers with the registry (`registration.rs`), which tells it where its parent is.
//!
//! [`run`] (or [`Broker::bind`] then [`Broker::run`], which lets a caller learn the bound addresses)
//! starts everything; `main.rs` only parses the command line and wires signals.
//!
//! Architecture invariant: the broker writes segment files only through `storage`, and every byte a
//! consumer receives is framed by `protocol`.

pub mod config;
pub mod connection;
pub mod consumers;
pub mod cursor;
pub mod error;
pub mod groups;
pub mod http;
pub mod members;
pub mod metrics;
pub mod node;
pub mod pipe;
pub mod producer;
pub mod publish;
pub mod registration;
pub mod repair;
mod server;
pub mod session;

pub use config::{Cli, Config, Level};
pub use error::{ApiError, Error, RegistryError};
pub use node::{Node, Shutdown};
pub use server::{Broker, run};
