//! The client side of the relay protocol, written once: the TCP and WebSocket transports ([`Link`]), the
//! follower that keeps a copy of a broker's topics ([`follow`]: handshake, heartbeats, gathering,
//! RESET/READY order, ACK of what the copy made durable, reconnect with [`Backoff`]), a plain [`Consumer`]
//! for applications and tests that drive the protocol themselves, and the [`Producer`] that publishes to
//! ROOT in the binary producer layout, many publishes in flight.
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
//!
//! ```no_run
//! # async fn example() -> Result<(), client::Error> {
//! use client::{Producer, ProducerConfig};
//! use protocol::NewRecord;
//!
//! let (producer, _welcome) = Producer::connect("127.0.0.1:9090", ProducerConfig::new("feed-1")).await?;
//! let mut acks = Vec::new();
//! for price in ["1.50", "1.51", "1.52"] {
//!     // Returns once the PUBLISH is queued; several are in flight at once.
//!     acks.push(producer.publish("prices", &[NewRecord::new(b"AAPL", price.as_bytes())]).await?);
//! }
//! for ack in acks {
//!     let ack = ack.await?; // the records are durable at ROOT
//!     println!("stored at offsets {}..={}", ack.first_offset, ack.last_offset);
//! }
//! producer.close().await?;
//! # Ok(())
//! # }
//! ```

pub mod backoff;
pub mod consumer;
pub mod error;
pub mod follow;
pub mod link;
pub mod producer;
pub mod tcp;
pub mod ws;

pub use backoff::Backoff;
pub use consumer::{Consumer, ConsumerConfig, Event, topic_start};
pub use error::{Error, Result};
pub use follow::{Durable, Endpoint, Fault, FollowConfig, LinkEnd, Sink, Target, Upstream, Work, follow};
pub use link::Link;
pub use producer::{PendingAck, Producer, ProducerConfig};
