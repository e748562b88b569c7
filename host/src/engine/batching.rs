//! The batching policy: how a window of waiting items is cut into plugin calls.
//!
//! A call costs about a fixed overhead plus its tokens: its padded tokens (rows × longest row)
//! for a backend that computes on the padded batch, its live tokens for one that skips the
//! padding (the torch encoders). On a CPU the overhead is small and padding, where it costs,
//! dominates, so a window of mixed lengths runs fastest as several calls of similar lengths;
//! on a GPU the overhead of a call is worth hundreds of tokens, and where padding is free,
//! so a window runs as few full calls. [`CallCost`] learns both from the calls measured, and
//! [`cut`] splits a length-sorted window into the calls of least total cost within the batch
//! limits.

use std::collections::VecDeque;
use std::ops::Range;

/// What decides which items may share a call: the plugin call and, for images, the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Texts to embed.
    Embed,
    /// Texts whose token states are asked for.
    States,
    /// Texts whose SPLADE weights are asked for.
    Sparse,
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

/// The tokens a call's time grows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Rows × the longest row: the backend computes on the padded batch.
    Padded,
    /// The rows' own tokens: the backend skips the padding.
    Live,
}

/// What a call costs, in tokens of its kind of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// The fixed part of a call.
    pub overhead: usize,
    /// What the rest grows with.
    pub work: Work,
}

impl Cost {
    /// A call that costs `overhead` plus its padded tokens.
    pub fn padded(overhead: usize) -> Cost {
        Cost {
            overhead,
            work: Work::Padded,
        }
    }
}

/// Cuts `shapes`, sorted by key and length, into consecutive calls of one key each, within
/// `limits`, that cost the least in total when each call costs `cost`. Of cuts that cost the
/// same, the one with the fullest first calls. An item over the token budget on its own
/// still runs, alone.
pub fn cut(shapes: &[Shape], limits: Limits, cost: Cost) -> Vec<Range<usize>> {
    let n = shapes.len();
    let batch_size = limits.batch_size.max(1);
    // live[i]: the tokens of items ..i.
    let live: Vec<usize> = std::iter::once(0)
        .chain(shapes.iter().scan(0, |sum, s| {
            *sum += s.tokens;
            Some(*sum)
        }))
        .collect();
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
                let work = match cost.work {
                    Work::Padded => (stop - start) * shapes[stop - 1].tokens,
                    Work::Live => live[stop] - live[start],
                };
                (cost.overhead + work + best[stop].0, stop)
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

/// How many recent calls the cost is learned from.
const SAMPLES: usize = 64;
/// Fewest calls measured before the learned cost replaces the prior.
const MIN_SAMPLES: usize = 8;
/// The range the overhead is kept in, in tokens.
const OVERHEAD_RANGE: (f64, f64) = (1.0, 8192.0);

/// One call measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    padded: f64,
    live: f64,
    seconds: f64,
}

/// The cost of one plugin call, learned by least-squares fits of call time against its
/// padded tokens and against its live tokens over the recent calls: the better fit says
/// what the calls' time grows with, its intercept over its slope the overhead.
#[derive(Debug, Clone)]
pub struct CallCost {
    /// The recent calls.
    samples: VecDeque<Sample>,
    /// The overhead (in padded tokens) assumed until the calls measured tell it.
    prior: usize,
}

/// A fit of call time against one measure of its tokens.
struct Fit {
    overhead: f64,
    /// Sum of squared residuals.
    residual: f64,
}

impl CallCost {
    /// A model whose calls are assumed to cost `prior` padded tokens each until measured.
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

    /// Records a call of `padded` tokens (rows × longest), `live` of them real, that took
    /// `seconds`.
    pub fn observe(&mut self, padded: usize, live: usize, seconds: f64) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            padded: padded as f64,
            live: live as f64,
            seconds,
        });
    }

    /// The cost of a call: of the two fits that are meaningful (calls of a range of sizes,
    /// the longest at least twice the shortest, and time growing with tokens), the one with
    /// the smaller residual; the prior on padded tokens until then.
    pub fn cost(&self) -> Cost {
        let padded = self.fit(|s| s.padded);
        let live = self.fit(|s| s.live);
        let (fit, work) = match (padded, live) {
            (Some(p), Some(l)) if l.residual < p.residual => (l, Work::Live),
            (Some(p), _) => (p, Work::Padded),
            (None, Some(l)) => (l, Work::Live),
            (None, None) => return Cost::padded(self.prior),
        };
        Cost {
            overhead: fit
                .overhead
                .clamp(OVERHEAD_RANGE.0, OVERHEAD_RANGE.1)
                .round() as usize,
            work,
        }
    }

    fn fit(&self, x: impl Fn(&Sample) -> f64) -> Option<Fit> {
        let n = self.samples.len();
        if n < MIN_SAMPLES {
            return None;
        }
        let (lo, hi) = self
            .samples
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), s| (lo.min(x(s)), hi.max(x(s))));
        if hi < 2.0 * lo {
            return None;
        }
        let mean_x = self.samples.iter().map(&x).sum::<f64>() / n as f64;
        let mean_t = self.samples.iter().map(|s| s.seconds).sum::<f64>() / n as f64;
        let (sxx, sxt) = self.samples.iter().fold((0.0, 0.0), |(sxx, sxt), s| {
            let dx = x(s) - mean_x;
            (sxx + dx * dx, sxt + dx * (s.seconds - mean_t))
        });
        let slope = sxt / sxx;
        if !slope.is_finite() || slope <= 0.0 {
            return None;
        }
        let intercept = mean_t - slope * mean_x;
        let residual = self
            .samples
            .iter()
            .map(|s| (s.seconds - intercept - slope * x(s)).powi(2))
            .sum();
        Some(Fit {
            overhead: intercept / slope,
            residual,
        })
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
            assert_eq!(
                sizes(&cut(&shapes, limits, Cost::padded(overhead))),
                [4, 4, 2]
            );
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
        assert_eq!(
            sizes(&cut(&shapes, limits, Cost::padded(1024))),
            [3, 1, 1, 1]
        );
    }

    #[test]
    fn a_small_overhead_splits_mixed_lengths_a_large_one_keeps_them_together() {
        // Eight short and eight long texts: one call pads the short ones to 80 tokens.
        let mut lengths = vec![10; 8];
        lengths.extend([80; 8]);
        let shapes = texts(&lengths);
        // 16 * 80 = 1280 in one call, against 80 + 640 in two: split unless a call costs more
        // than the 560 tokens of padding saved.
        assert_eq!(sizes(&cut(&shapes, WIDE, Cost::padded(8))), [8, 8]);
        assert_eq!(sizes(&cut(&shapes, WIDE, Cost::padded(559))), [8, 8]);
        assert_eq!(sizes(&cut(&shapes, WIDE, Cost::padded(561))), [16]);
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
        let calls = cut(&shapes, WIDE, Cost::padded(1_000_000));
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
            let calls = cut(&shapes, WIDE, Cost::padded(overhead));
            assert!(calls.iter().all(|r| r.len() <= 32));
            assert_eq!(calls.iter().map(|r| r.len()).sum::<usize>(), 128);
            let greedy: Vec<Range<usize>> = (0..4).map(|i| i * 32..i * 32 + 32).collect();
            assert!(cost(&calls, overhead) <= cost(&greedy, overhead));
        }
        assert!(cut(&shapes, WIDE, Cost::padded(1)).len() > 4);
        assert_eq!(cut(&shapes, WIDE, Cost::padded(5000)).len(), 4);
    }

    #[test]
    fn the_overhead_is_learned_from_calls_of_different_sizes() {
        let mut cost = CallCost::for_device("cpu");
        assert_eq!(cost.cost(), Cost::padded(32));
        // 0.7 ms a call and 0.1 ms a token: an overhead of 7 tokens.
        for tokens in [50, 100, 400, 1600, 800, 200, 60, 1200, 90] {
            cost.observe(tokens, tokens, 0.0007 + 0.0001 * tokens as f64);
        }
        assert_eq!(cost.cost(), Cost::padded(7));
        assert_eq!(CallCost::for_device("cuda:0").cost(), Cost::padded(1024));
    }

    #[test]
    fn the_prior_holds_until_the_calls_span_a_range_of_sizes() {
        let mut cost = CallCost::new(32);
        for _ in 0..20 {
            cost.observe(100, 100, 0.01);
        }
        assert_eq!(cost.cost(), Cost::padded(32));
        // A fit that says calls get cheaper with more tokens means nothing: the prior stays.
        let mut noisy = CallCost::new(32);
        for tokens in [100, 200, 400, 800, 1600, 3200, 6400, 12800] {
            noisy.observe(tokens, tokens, 1.0 / tokens as f64);
        }
        assert_eq!(noisy.cost(), Cost::padded(32));
        // A large intercept is kept within range.
        let mut gpu = CallCost::new(1024);
        for tokens in [100, 1000, 200, 2000, 300, 3000, 400, 4000] {
            gpu.observe(tokens, tokens, 5.0 + 1e-9 * tokens as f64);
        }
        assert_eq!(gpu.cost(), Cost::padded(8192));
    }

    /// Calls whose padding varies from none to two thirds of their tokens.
    fn calls() -> impl Iterator<Item = (usize, usize)> {
        (0..24).map(|i| {
            let live = 100 + 97 * i;
            (live, live * (3 + i % 7) / 3)
        })
    }

    #[test]
    fn calls_that_skip_padding_are_learned_to_cost_their_live_tokens() {
        let mut cost = CallCost::new(32);
        // 2 ms a call and 0.1 ms a live token, whatever the padding.
        for (live, padded) in calls() {
            cost.observe(padded, live, 0.002 + 0.0001 * live as f64);
        }
        assert_eq!(
            cost.cost(),
            Cost {
                overhead: 20,
                work: Work::Live
            }
        );
        // The same calls taking time by their padded tokens are learned as such.
        let mut padded_cost = CallCost::new(32);
        for (live, padded) in calls() {
            padded_cost.observe(padded, live, 0.002 + 0.0001 * padded as f64);
        }
        assert_eq!(padded_cost.cost(), Cost::padded(20));
    }

    #[test]
    fn where_padding_is_free_mixed_lengths_share_full_calls() {
        let mut lengths = vec![10; 8];
        lengths.extend([80; 8]);
        lengths.extend([40; 20]);
        let mut shapes = texts(&lengths);
        shapes.sort();
        let live = |overhead| Cost {
            overhead,
            work: Work::Live,
        };
        // However small the overhead, fewer calls cost less; the first ones are full.
        for overhead in [1, 8, 1024] {
            assert_eq!(sizes(&cut(&shapes, WIDE, live(overhead))), [32, 4]);
        }
        // The token budget still bounds rows × the longest.
        let tight = Limits {
            batch_size: 32,
            max_batch_tokens: 800,
        };
        let calls = cut(&shapes, tight, live(1));
        assert!(calls
            .iter()
            .all(|r| r.len() * shapes[r.end - 1].tokens <= 800));
        assert_eq!(sizes(&calls), [20, 10, 6]);
    }
}
