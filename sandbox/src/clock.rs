//! The emulators' time source: real time plus an offset that tests move forward, so deadline
//! and claim-expiry scenarios run in milliseconds. Every emulator reads time from here, never
//! from the system clock directly.
use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }

    /// Epoch seconds, as Buildbot stores times.
    pub fn now_secs(&self) -> i64 {
        self.now().timestamp()
    }

    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves time forward (or back, with a negative duration) for every emulator at once.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_copy_of_the_clock() {
        let a = Clock::new();
        let b = a.clone();
        let before = b.now();
        a.advance(Duration::hours(2));
        assert!(b.now() - before >= Duration::hours(2));
        assert_eq!(b.offset(), Duration::hours(2));
    }
}
