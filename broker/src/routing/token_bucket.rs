//! A token bucket: `per_second` tokens a second, at most `burst` saved. The budgets of what a
//! connection may make new in the router (`topic_budget`, `filter_budget`) charge one each.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// Starts full. A `burst` of 0 is taken as 1, so that a budget that is on allows something.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { per_second: f64::from(per_second), burst, tokens: burst, refilled: Instant::now() }
    }

    /// Takes a token if one is there.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_spent_and_refills_at_the_rate() {
        let mut bucket = TokenBucket::new(1_000_000, 3);
        assert!(bucket.take() && bucket.take() && bucket.take());
        // A million a second: a microsecond later there is one again (Instant is monotonic).
        let until = Instant::now() + std::time::Duration::from_millis(5);
        while Instant::now() < until {}
        assert!(bucket.take());
        let mut slow = TokenBucket::new(0, 2);
        assert!(slow.take() && slow.take() && !slow.take() && !slow.take());
    }
}
