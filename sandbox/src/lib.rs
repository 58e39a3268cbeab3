//! `bbb-sandbox`: faithful local emulators of the three peers that cannot run here, talking
//! over real HTTP, real RabbitMQ and the real scheduler database, so that the bridge cannot
//! tell them from the real services. End-to-end tests, the demo and the benchmarks run on them.
//!
//! # Layout
//! - [`clock`]: the one time source every emulator uses; tests move it forward.
//! - [`pulse`]: publishing on RabbitMQ topic exchanges, as Taskcluster and the masters do.
//! - [`settings`]: the optional `sandbox` section of the bridge's config file.
//! - [`tc`]: the Taskcluster queue (state machine, Hawk, scopes, artifacts, Pulse messages,
//!   control API).
//! - [`buildbot`]: Buildbot 0.8 masters acting on the scheduler DB and publishing build events.
//! - [`system`]: all three together, configured from the bridge's config file (`bbb sandbox`).
//! - [`selfserve`]: BuildAPI self-serve (cancel requests and builds) and `allthethings.json`.
pub mod buildbot;
pub mod clock;
pub mod pulse;
pub mod selfserve;
pub mod settings;
pub mod system;
pub mod tc;
