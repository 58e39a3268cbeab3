//! (scenarios in progress)
