//! The downstream side of the relay protocol, written once: the TCP and WebSocket transports ([`Link`]),
//! the follower that keeps a copy of a broker's topics ([`follow`]: handshake, heartbeats, gathering,
//! RESET/READY order, ACK of what the copy made durable, reconnect with [`Backoff`]), and a plain
//! [`Consumer`] for applications and tests that drive the protocol themselves.
//!
//! The crate stores nothing: what a copy keeps, and when it is durable, belongs to the [`Sink`] a follower
//! is given.
//!
//! ```no_run
//! # async fn example() -> Result<(), client::Error> {
//! use client::{Consumer, ConsumerConfig, Event, topic_start};
//! use protocol::frame::StartPosition;
//!
//! let config = ConsumerConfig::new("till-7", "prices-app", vec![topic_start("prices", StartPosition::Committed)]);
//! let (mut consumer, _welcome) = Consumer::connect("127.0.0.1:9090", config).await?;
//! while let Event::Batch(batch) = consumer.next_event().await? {
//!     // Check and store the records durably first, then acknowledge them.
//!     consumer.ack(&batch.topic, batch.last_offset + 1).await?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod backoff;
pub mod consumer;
pub mod error;
pub mod follow;
pub mod link;
pub mod tcp;
pub mod ws;

pub use backoff::Backoff;
pub use consumer::{Consumer, ConsumerConfig, Event, topic_start};
pub use error::{Error, Result};
pub use follow::{Durable, Endpoint, Fault, FollowConfig, LinkEnd, Sink, Target, Upstream, Work, follow};
pub use link::Link;
