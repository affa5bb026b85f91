//! Capped exponential backoff for retries against NATS (binding a consumer, flushing an
//! outbox, recording a decision): quick when a failure is brief, gentle on the server when
//! it is not.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

/// The usual retry pause: 50 ms, doubling up to 2 s.
impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(2))
    }
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next try; each call doubles it up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay the next [`Backoff::next_delay`] gives, for a log line before it.
    pub fn upcoming(&self) -> Duration {
        self.next
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let seen: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seen, [100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
