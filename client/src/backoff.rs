//! Exponential backoff with jitter, for everything that retries a remote peer: a follower reconnecting to
//! its parent or broker, and a broker's registration retrying the registry. This module owns the arithmetic
//! of delays only; the callers decide when to wait and when to start over.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each drawn at random between half and all of the
/// current step, so that many children cut off together do not all come back in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first step.
    initial: Duration,
    /// The largest step.
    max: Duration,
    /// The step the next delay is drawn from.
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff { initial, max, step: initial }
    }

    /// The next delay; the step after it is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let step_ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
        let half = step_ms / 2;
        Duration::from_millis(half + rand::random_range(0..=step_ms - half))
    }

    /// Starts again from the first step, after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_stay_in_bounds_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let steps = [100u64, 200, 400, 800, 1000, 1000];
        for step in steps {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!((step / 2..=step).contains(&delay), "delay {delay} outside step {step}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
