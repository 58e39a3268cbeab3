//! The bridge end to end, on the emulators: each scenario of BRIDGE.md as one test named as a
//! sentence, asserting the Taskcluster call log, the task's final status in the emulator, the
//! scheduler DB rows and the bridge DB rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cancel;
mod delivery;
mod faults;
mod harness;
mod invalid;
mod reflector;
mod results;
mod seeds;
