//! `bbb-ingest`: thin consumers that turn Pulse (AMQP) messages into jobs on Redis.
//!
//! # Layout
//! - [`parse`]: a message becomes a typed job, an ignored event, or a dead letter's reason.
//! - [`consumer`]: the AMQP side: connection, queues and bindings, the ack discipline,
//!   reconnection with capped backoff, drain on shutdown.
//!
//! The ingest does no database or Taskcluster work. Its one invariant: **a message is acked
//! only once its job (or its dead letter) is durably in Redis.** If Redis fails, the message
//! is nacked with requeue after a backoff, so nothing is lost; duplicates that this creates
//! are absorbed by the jobs' idempotency keys.
pub mod consumer;
pub mod parse;

pub use consumer::{Binding, Consuming, IngestSettings, bindings_from_config, run};
