//! The consumer-app: what a store or a till runs to hold its own durable copy of relay topics.
//!
//! A broker pushes batches over TCP (`sync`); each one is appended verbatim to the local segment log (the
//! same `storage` engine as the brokers), its keys indexed in `app.sqlite` (`db`) in one transaction, then
//! handed to the configured handler (`handler`) and acknowledged. A full refresh builds the new copy beside
//! the old one and swaps both the log and the key index at READY (`refresh`), so queries (`http`) only ever
//! see a complete copy.

pub mod app;
pub mod config;
pub mod copy;
pub mod db;
pub mod error;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod refresh;
pub mod sync;

pub use error::Error;

pub use protocol::now_ms;
