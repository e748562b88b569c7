//! The batching policy: how a window of waiting items is cut into plugin calls.
//!
//! A call costs about a fixed overhead plus its padded tokens (rows × longest row). On a CPU
//! the overhead is small and padding dominates, so a window of mixed lengths runs fastest as
//! several calls of similar lengths; on a GPU the overhead of a call is worth hundreds of
//! tokens, so it runs as few full calls. [`CallCost`] learns the overhead from the calls
//! measured, and [`cut`] splits a length-sorted window into the calls of least total cost
//! within the batch limits.

use std::collections::VecDeque;
use std::ops::Range;

/// What decides which items may share a call: the plugin call and, for images, the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Texts to embed.
    Embed,
    /// Query–document pairs to score.
    Score,
    /// Texts to classify.
    Classify,
    /// Images of one pixel size.
    Image {
        /// Height in pixels.
        height: u32,
        /// Width in pixels.
        width: u32,
    },
}

/// An item as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shape {
    /// The call it goes to.
    pub key: Key,
    /// Tokens it holds (an image counts one).
    pub tokens: usize,
}

/// The limits of one call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most items in one call.
    pub batch_size: usize,
    /// Most padded tokens (rows × longest row) in one call.
    pub max_batch_tokens: usize,
}

/// Cuts `shapes`, sorted by key and length, into consecutive calls of one key each, within
/// `limits`, that cost the least in total when each call costs `overhead` tokens plus its
/// padded tokens. Of cuts that cost the same, the one with the fullest first calls. An item
/// over the token budget on its own still runs, alone.
pub fn cut(shapes: &[Shape], limits: Limits, overhead: usize) -> Vec<Range<usize>> {
    let n = shapes.len();
    let batch_size = limits.batch_size.max(1);
    // best[i]: the least cost of items i.. and the end of the first call of that cut.
    let mut best: Vec<(usize, usize)> = vec![(0, n); n + 1];
    for start in (0..n).rev() {
        let key = shapes[start].key;
        let mut end = start + 1;
        // The calls that may start at `start`: each one item longer than the last.
        while end < n
            && end - start < batch_size
            && shapes[end].key == key
            && (end + 1 - start) * shapes[end].tokens <= limits.max_batch_tokens
        {
            end += 1;
        }
        // Longest first, so that a tie keeps the fuller call.
        best[start] = (start + 1..=end)
            .rev()
            .map(|stop| {
                let padded = (stop - start) * shapes[stop - 1].tokens;
                (overhead + padded + best[stop].0, stop)
            })
            .min_by_key(|(cost, _)| *cost)
            .expect("at least one item");
    }
    let mut calls = Vec::new();
    let mut start = 0;
    while start < n {
        let stop = best[start].1;
        calls.push(start..stop);
        start = stop;
    }
    calls
}

/// How many recent calls the overhead is learned from.
const SAMPLES: usize = 64;
/// Fewest calls measured before the learned overhead replaces the prior.
const MIN_SAMPLES: usize = 8;
/// The range the overhead is kept in, in tokens.
const OVERHEAD_RANGE: (f64, f64) = (1.0, 8192.0);

/// The overhead of one plugin call in padded tokens, learned by a least-squares fit of
/// call time against padded tokens over the recent calls.
#[derive(Debug, Clone)]
pub struct CallCost {
    /// (padded tokens, seconds) of the recent calls.
    samples: VecDeque<(f64, f64)>,
    /// The overhead assumed until the calls measured tell it.
    prior: usize,
}

impl CallCost {
    /// A model whose calls are assumed to cost `prior` tokens each until measured.
    pub fn new(prior: usize) -> CallCost {
        CallCost {
            samples: VecDeque::with_capacity(SAMPLES),
            prior,
        }
    }

    /// The prior for a model on `device` (`cpu`, `cuda:0`): a CPU spends little on a call
    /// besides its tokens, a GPU's kernel launches are worth hundreds of tokens.
    pub fn for_device(device: &str) -> CallCost {
        CallCost::new(if device.starts_with("cpu") { 32 } else { 1024 })
    }

    /// Records a call of `tokens` padded tokens that took `seconds`.
    pub fn observe(&mut self, tokens: usize, seconds: f64) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((tokens as f64, seconds));
    }

    /// The overhead of a call in tokens: the fit's intercept over its slope once the calls
    /// measured span a range of sizes (the longest at least twice the shortest), the prior
    /// until then or when the fit is not meaningful.
    pub fn overhead(&self) -> usize {
        self.fitted().unwrap_or(self.prior)
    }

    fn fitted(&self) -> Option<usize> {
        let n = self.samples.len();
        if n < MIN_SAMPLES {
            return None;
        }
        let (lo, hi) = self
            .samples
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), (x, _)| {
                (lo.min(*x), hi.max(*x))
            });
        if hi < 2.0 * lo {
            return None;
        }
        let mean_x = self.samples.iter().map(|s| s.0).sum::<f64>() / n as f64;
        let mean_t = self.samples.iter().map(|s| s.1).sum::<f64>() / n as f64;
        let (sxx, sxt) = self.samples.iter().fold((0.0, 0.0), |(sxx, sxt), (x, t)| {
            let dx = x - mean_x;
            (sxx + dx * dx, sxt + dx * (t - mean_t))
        });
        let slope = sxt / sxx;
        if !slope.is_finite() || slope <= 0.0 {
            return None;
        }
        let overhead = (mean_t - slope * mean_x) / slope;
        Some(overhead.clamp(OVERHEAD_RANGE.0, OVERHEAD_RANGE.1).round() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lengths: &[usize]) -> Vec<Shape> {
        lengths
            .iter()
            .map(|&tokens| Shape {
                key: Key::Embed,
                tokens,
            })
            .collect()
    }

    fn sizes(calls: &[Range<usize>]) -> Vec<usize> {
        calls.iter().map(|r| r.len()).collect()
    }

    const WIDE: Limits = Limits {
        batch_size: 32,
        max_batch_tokens: 16384,
    };

    #[test]
    fn equal_lengths_fill_calls_up_to_the_batch_size_first_calls_full() {
        let shapes = texts(&[4; 10]);
        let limits = Limits {
            batch_size: 4,
            max_batch_tokens: 100,
        };
        for overhead in [1, 32, 1024] {
            assert_eq!(sizes(&cut(&shapes, limits, overhead)), [4, 4, 2]);
        }
    }

    #[test]
    fn the_token_budget_bounds_rows_times_the_longest() {
        let shapes = texts(&[4, 4, 4, 12, 20, 32]);
        let limits = Limits {
            batch_size: 4,
            max_batch_tokens: 30,
        };
        // 4+4+4+12 would pad to 48; 12+20 to 40; 32 alone is over the budget and runs alone.
        assert_eq!(sizes(&cut(&shapes, limits, 1024)), [3, 1, 1, 1]);
    }

    #[test]
    fn a_small_overhead_splits_mixed_lengths_a_large_one_keeps_them_together() {
        // Eight short and eight long texts: one call pads the short ones to 80 tokens.
        let mut lengths = vec![10; 8];
        lengths.extend([80; 8]);
        let shapes = texts(&lengths);
        // 16 * 80 = 1280 in one call, against 80 + 640 in two: split unless a call costs more
        // than the 560 tokens of padding saved.
        assert_eq!(sizes(&cut(&shapes, WIDE, 8)), [8, 8]);
        assert_eq!(sizes(&cut(&shapes, WIDE, 559)), [8, 8]);
        assert_eq!(sizes(&cut(&shapes, WIDE, 561)), [16]);
    }

    #[test]
    fn calls_hold_one_key_and_images_one_size() {
        let image = |height, width| Shape {
            key: Key::Image { height, width },
            tokens: 1,
        };
        let mut shapes = vec![
            Shape {
                key: Key::Embed,
                tokens: 5,
            },
            Shape {
                key: Key::Score,
                tokens: 5,
            },
            image(224, 224),
            image(336, 336),
            image(224, 224),
        ];
        shapes.sort();
        let calls = cut(&shapes, WIDE, 1_000_000);
        assert_eq!(sizes(&calls), [1, 1, 2, 1]);
        for call in calls {
            assert!(shapes[call.clone()]
                .iter()
                .all(|s| s.key == shapes[call.start].key));
        }
    }

    #[test]
    fn the_cut_costs_no_more_than_one_call_per_batch_size() {
        // Lengths spread like real sentences; the cut is never worse than the greedy one.
        let lengths: Vec<usize> = (0..128).map(|i| 8 + (i * 37) % 70).collect();
        let mut shapes = texts(&lengths);
        shapes.sort();
        let cost = |calls: &[Range<usize>], overhead: usize| -> usize {
            calls
                .iter()
                .map(|r| overhead + r.len() * shapes[r.end - 1].tokens)
                .sum()
        };
        for overhead in [1, 7, 32, 300, 5000] {
            let calls = cut(&shapes, WIDE, overhead);
            assert!(calls.iter().all(|r| r.len() <= 32));
            assert_eq!(calls.iter().map(|r| r.len()).sum::<usize>(), 128);
            let greedy: Vec<Range<usize>> = (0..4).map(|i| i * 32..i * 32 + 32).collect();
            assert!(cost(&calls, overhead) <= cost(&greedy, overhead));
        }
        assert!(cut(&shapes, WIDE, 1).len() > 4);
        assert_eq!(cut(&shapes, WIDE, 5000).len(), 4);
    }

    #[test]
    fn the_overhead_is_learned_from_calls_of_different_sizes() {
        let mut cost = CallCost::for_device("cpu");
        assert_eq!(cost.overhead(), 32);
        // 0.7 ms a call and 0.1 ms a token: an overhead of 7 tokens.
        for tokens in [50, 100, 400, 1600, 800, 200, 60, 1200, 90] {
            cost.observe(tokens, 0.0007 + 0.0001 * tokens as f64);
        }
        assert_eq!(cost.overhead(), 7);
        assert_eq!(CallCost::for_device("cuda:0").overhead(), 1024);
    }

    #[test]
    fn the_prior_holds_until_the_calls_span_a_range_of_sizes() {
        let mut cost = CallCost::new(32);
        for _ in 0..20 {
            cost.observe(100, 0.01);
        }
        assert_eq!(cost.overhead(), 32);
        // A fit that says calls get cheaper with more tokens means nothing: the prior stays.
        let mut noisy = CallCost::new(32);
        for tokens in [100, 200, 400, 800, 1600, 3200, 6400, 12800] {
            noisy.observe(tokens, 1.0 / tokens as f64);
        }
        assert_eq!(noisy.overhead(), 32);
        // A large intercept is kept within range.
        let mut gpu = CallCost::new(1024);
        for tokens in [100, 1000, 200, 2000, 300, 3000, 400, 4000] {
            gpu.observe(tokens, 5.0 + 1e-9 * tokens as f64);
        }
        assert_eq!(gpu.overhead(), 8192);
    }
}
