//! Per-member token bucket, refilled lazily from `now_ms` so the room needs no timer.

use crate::RateLimit;

/// One token is this many milli-tokens; integer units keep refills exact and deterministic.
const MILLI: u64 = 1000;

/// Tokens left and when they were last counted.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    milli_tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub(crate) fn full(limit: Option<RateLimit>, now_ms: u64) -> Self {
        TokenBucket {
            milli_tokens: limit.map_or(0, |l| u64::from(l.burst) * MILLI),
            last_ms: now_ms,
        }
    }

    /// The bucket as plain numbers, `(milli_tokens, last_ms)`, for a snapshot.
    pub(crate) fn to_parts(&self) -> (u64, u64) {
        (self.milli_tokens, self.last_ms)
    }

    /// A bucket from [`to_parts`](Self::to_parts); `None` if it holds more than `limit` ever
    /// lets it hold (no limit keeps buckets empty: they are never consulted).
    pub(crate) fn from_parts(
        limit: Option<RateLimit>,
        milli_tokens: u64,
        last_ms: u64,
    ) -> Option<Self> {
        let capacity = limit.map_or(0, |l| u64::from(l.burst) * MILLI);
        (milli_tokens <= capacity).then_some(TokenBucket {
            milli_tokens,
            last_ms,
        })
    }

    /// Takes one token if there is one. Time that runs backwards refills nothing.
    pub(crate) fn try_take(&mut self, limit: Option<RateLimit>, now_ms: u64) -> bool {
        let Some(limit) = limit else { return true };
        let capacity = u64::from(limit.burst) * MILLI;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        // `per_second` tokens per second is `per_second` milli-tokens per millisecond.
        let refill = elapsed.saturating_mul(u64::from(limit.per_second));
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(capacity);
        self.last_ms = self.last_ms.max(now_ms);
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Option<RateLimit> = Some(RateLimit {
        burst: 3,
        per_second: 2,
    });

    #[test]
    fn burst_then_refill_at_rate() {
        let mut b = TokenBucket::full(LIMIT, 0);
        assert!(b.try_take(LIMIT, 0));
        assert!(b.try_take(LIMIT, 0));
        assert!(b.try_take(LIMIT, 0));
        assert!(!b.try_take(LIMIT, 0));
        // 2 per second: one token every 500 ms.
        assert!(!b.try_take(LIMIT, 499));
        assert!(b.try_take(LIMIT, 500));
        assert!(!b.try_take(LIMIT, 500));
        // A long pause refills only up to the burst.
        for _ in 0..3 {
            assert!(b.try_take(LIMIT, 1_000_000));
        }
        assert!(!b.try_take(LIMIT, 1_000_000));
    }

    #[test]
    fn time_going_backwards_refills_nothing_and_never_panics() {
        let mut b = TokenBucket::full(LIMIT, u64::MAX);
        for _ in 0..3 {
            assert!(b.try_take(LIMIT, 5));
        }
        assert!(!b.try_take(LIMIT, 0));
        assert!(!b.try_take(LIMIT, u64::MAX));
    }

    #[test]
    fn no_limit_always_allows() {
        let mut b = TokenBucket::full(None, 0);
        for _ in 0..10_000 {
            assert!(b.try_take(None, 0));
        }
    }

    #[test]
    fn huge_rates_saturate_instead_of_overflowing() {
        let huge = Some(RateLimit {
            burst: u32::MAX,
            per_second: u32::MAX,
        });
        let mut b = TokenBucket::full(huge, 0);
        assert!(b.try_take(huge, u64::MAX));
    }
}
