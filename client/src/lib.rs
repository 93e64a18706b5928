//! An async consumer for relay brokers over the TCP consumer protocol: HELLO/WELCOME, pushed BATCH frames,
//! ACK, SEEK, full refresh (RESET...READY), TOPIC announcements and heartbeats.
//!
//! The client owns the connection and the protocol's timing (answering PINGs, sending its own, noticing a
//! silent broker). It does not store records, de-duplicate or retry: what a consumer does with a batch, and
//! when it is durable enough to ACK, is the application's business.
//!
//! ```no_run
//! # async fn example() -> Result<(), client::Error> {
//! use client::{Consumer, ConsumerConfig, Event, topic_start};
//! use protocol::frame::StartPosition;
//!
//! let config = ConsumerConfig::new("till-7", "prices-app", vec![topic_start("prices", StartPosition::Committed)]);
//! let (mut consumer, _welcome) = Consumer::connect("127.0.0.1:9090", config).await?;
//! while let Event::Batch(batch) = consumer.next_event().await? {
//!     // Store the records durably first, then acknowledge them.
//!     consumer.ack(&batch.topic, batch.last_offset + 1).await?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod consumer;
pub mod error;

pub use consumer::{Consumer, ConsumerConfig, Event, topic_start};
pub use error::{Error, Result};
