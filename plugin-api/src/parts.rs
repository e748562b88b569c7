//! Cutting a call into parts that run at once: a plugin whose engine gains more from running
//! independent calls side by side than from threads inside each op (small matrices, few
//! cores) cuts a call's rows into consecutive parts of about equal work, runs them at once and
//! puts their rows back in order.

use crate::TokenBatch;
use std::borrow::Cow;
use std::ops::Range;

/// Cuts `tokens` into `count` consecutive non-empty ranges (as many as there are rows at most,
/// one at least), each ending where the running sum comes nearest its share of the total.
pub fn even(tokens: &[usize], count: usize) -> Vec<Range<usize>> {
    let count = count.min(tokens.len()).max(1);
    if tokens.len() <= 1 {
        return std::iter::once(0..tokens.len()).collect();
    }
    let total: usize = tokens.iter().sum();
    let mut parts = Vec::with_capacity(count);
    let (mut start, mut sum) = (0, 0usize);
    for part in 1..count {
        let target = total as f64 * part as f64 / count as f64;
        // At least one row in this part, and one left for each part after it.
        let mut end = start + 1;
        sum += tokens[start];
        while end < tokens.len() - (count - part) {
            let next = sum + tokens[end];
            if (next as f64 - target).abs() >= (sum as f64 - target).abs() {
                break;
            }
            sum = next;
            end += 1;
        }
        parts.push(start..end);
        start = end;
    }
    parts.push(start..tokens.len());
    parts
}

/// Rows `rows` of `batch` as a batch of their own, without the trailing positions that none of
/// them attends or pools (the batch is right-padded, so they change nothing).
pub fn rows(batch: &TokenBatch, rows: Range<usize>) -> Cow<'_, TokenBatch> {
    if rows == (0..batch.rows as usize) {
        return Cow::Borrowed(batch);
    }
    let seq = batch.seq_len as usize;
    let used = |mask: &[i64]| {
        rows.clone()
            .filter_map(|r| mask[r * seq..(r + 1) * seq].iter().rposition(|&m| m != 0))
            .max()
            .map_or(1, |last| last + 1)
    };
    let width = used(&batch.attention_mask)
        .max(used(batch.pooling_mask()))
        .min(seq);
    let take = |values: &[i64]| -> Vec<i64> {
        match values.is_empty() {
            true => Vec::new(),
            false => rows
                .clone()
                .flat_map(|r| values[r * seq..r * seq + width].iter().copied())
                .collect(),
        }
    };
    Cow::Owned(TokenBatch {
        rows: rows.len() as u32,
        seq_len: width as u32,
        input_ids: take(&batch.input_ids).into(),
        attention_mask: take(&batch.attention_mask).into(),
        token_type_ids: take(&batch.token_type_ids).into(),
        pooling_mask: take(&batch.pooling_mask).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_end_nearest_their_share_of_the_tokens() {
        assert_eq!(even(&[10, 10, 10, 10], 2), vec![0..2, 2..4]);
        assert_eq!(even(&[1; 6], 3), vec![0..2, 2..4, 4..6]);
        // Sorted rows: the part of long rows holds fewer of them.
        assert_eq!(even(&[5, 5, 5, 5, 20], 2), vec![0..4, 4..5]);
        // Every part holds a row, however uneven.
        assert_eq!(even(&[1, 1, 1, 100], 3), vec![0..2, 2..3, 3..4]);
        assert_eq!(even(&[100, 1, 1], 3), vec![0..1, 1..2, 2..3]);
        assert_eq!(even(&[7, 9], 2), vec![0..1, 1..2]);
        assert_eq!(even(&[7, 9, 4], 1), vec![0..3]);
        // More parts than rows: one row each; none asked: one part; no rows: one empty part.
        assert_eq!(even(&[7, 9], 5), vec![0..1, 1..2]);
        assert_eq!(even(&[7, 9], 0), vec![0..2]);
        assert_eq!(even(&[], 2), vec![0..0]);
    }

    #[test]
    fn a_part_is_its_rows_without_trailing_padding() {
        // Rows of 3, 1 and 2 tokens, right-padded to 4.
        let mask = [1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0];
        let batch = TokenBatch {
            rows: 3,
            seq_len: 4,
            input_ids: (0..12).collect::<Vec<i64>>().into(),
            attention_mask: mask.to_vec().into(),
            token_type_ids: vec![0; 12].into(),
            pooling_mask: Vec::new().into(),
        };
        let part = rows(&batch, 1..3);
        assert_eq!((part.rows, part.seq_len), (2, 2));
        assert_eq!(&part.input_ids[..], &[4, 5, 8, 9]);
        assert_eq!(&part.attention_mask[..], &[1, 0, 1, 1]);
        assert_eq!(part.token_type_ids.len(), 4);
        assert!(part.pooling_mask.is_empty());
        assert_eq!(*rows(&batch, 0..3), batch);
    }
}
