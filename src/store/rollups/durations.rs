//! Sorted duration blobs: the `durs` columns of the Apigee rollups and of the CircleCI job day
//! rows (schema.sql). A row keeps every duration of its jobs or runs in milliseconds,
//! ascending, in one blob, so that minimums, maximums and percentiles survive removals and
//! the rows of many days or hours combine exactly: `Durations` reads a blob, `encode` and
//! `merge` write one, `Ranks` picks the value of a rank among several blobs without merging
//! them, and `pipestat_durs` (`DursAgg`) builds one in SQL for the rebuilds.
//!
//! The format: empty when there are no durations; else one byte w, the least duration (8
//! bytes, big-endian two's complement, the base), then each duration less the base in w bytes
//! big-endian, w the fewest bytes that hold the greatest difference, so that any one is read by
//! its index and the same durations always make the same bytes.

use rusqlite::functions::{Aggregate, Context};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

/// The durations of a `durs` blob: ascending, each read by its index.
pub struct Durations<'a> {
    width: usize,
    base: i64,
    body: &'a [u8],
}

impl<'a> Durations<'a> {
    /// Reads a blob; one that is not in the format (never written by pipestat) reads as empty.
    pub fn of(blob: &'a [u8]) -> Durations<'a> {
        let empty = Durations {
            width: 8,
            base: 0,
            body: &[],
        };
        let Some((&width, rest)) = blob.split_first() else {
            return empty;
        };
        let width = usize::from(width);
        if !(1..=8).contains(&width) || rest.len() < 8 || (rest.len() - 8) % width != 0 {
            return empty;
        }
        let (base, body) = rest.split_at(8);
        Durations {
            width,
            base: i64::from_be_bytes(base.try_into().expect("8 bytes")),
            body,
        }
    }

    pub fn len(&self) -> usize {
        self.body.len() / self.width
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The `i`-th least duration (ms).
    pub fn get(&self, i: usize) -> i64 {
        let bytes = &self.body[i * self.width..(i + 1) * self.width];
        let offset = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        self.base.wrapping_add(offset as i64)
    }

    /// How many durations are at most `v`.
    pub fn count_le(&self, v: i64) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid) <= v {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// The blob of ascending durations `sorted`: empty when there are none; else one byte w, the
/// least duration as 8 bytes big-endian (the base), then each duration less the base as w bytes
/// big-endian, w the fewest bytes that hold the greatest such difference.
pub fn encode(sorted: &[i64]) -> Vec<u8> {
    let (Some(&base), Some(&last)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    let range = last.wrapping_sub(base) as u64;
    let width = (8 - range.leading_zeros() as usize / 8).max(1);
    let mut out = Vec::with_capacity(9 + width * sorted.len());
    out.push(width as u8);
    out.extend_from_slice(&base.to_be_bytes());
    for v in sorted {
        out.extend_from_slice(&(v.wrapping_sub(base) as u64).to_be_bytes()[8 - width..]);
    }
    out
}

/// `old` (a row's blob) without the durations of `del` and with those of `add`, encoded anew.
/// A duration to remove that the row does not hold means the rollup lost step with the rows:
/// an internal error, so that the write rolls back rather than store a wrong row.
pub fn merge(old: &[u8], mut add: Vec<i64>, mut del: Vec<i64>) -> Result<Vec<u8>> {
    add.sort_unstable();
    if del.is_empty() {
        if let Some(spliced) = splice(old, &add) {
            return Ok(spliced);
        }
    }
    let mut all: Vec<i64> = Durations::of(old).iter().chain(add).collect();
    all.sort_unstable();
    del.sort_unstable();
    // Both ascending: keep each value that is not the next one to delete.
    let mut dels = del.into_iter().peekable();
    all.retain(|v| dels.next_if_eq(v).is_none());
    if dels.next().is_some() {
        return Err(Error::Internal(
            "a rollup lost step with the stored rows (a duration to remove is missing)".into(),
        ));
    }
    Ok(encode(&all))
}

/// `merge` without decoding, for the usual case at ingest: durations only added (`sorted`,
/// ascending), none below the blob's base and none beyond what its width holds, so the base
/// and width stay those `encode` would choose. The new slots are spliced in among the stored
/// ones, whose bytes are copied as they are. None when that does not apply.
fn splice(old: &[u8], sorted: &[i64]) -> Option<Vec<u8>> {
    let stored = Durations::of(old);
    let (&least, &greatest) = (sorted.first()?, sorted.last()?);
    if stored.is_empty() || least < stored.base {
        return None;
    }
    let width = stored.width;
    let range = greatest.wrapping_sub(stored.base) as u64;
    if width < 8 && range >> (8 * width) != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(old.len() + width * sorted.len());
    out.extend_from_slice(&old[..old.len() - stored.body.len()]);
    let mut copied = 0;
    for &v in sorted {
        // The stored durations up to v go before it; `sorted` ascending keeps this monotone.
        let before = stored.count_le(v);
        out.extend_from_slice(&stored.body[copied * width..before * width]);
        copied = before;
        out.extend_from_slice(&(v.wrapping_sub(stored.base) as u64).to_be_bytes()[8 - width..]);
    }
    out.extend_from_slice(&stored.body[copied * width..]);
    Some(out)
}

/// The aggregate `pipestat_durs(ms)`: the blob of the non-NULL values of a group, for the
/// rollups' rebuilds (registered on every connection by `store::functions::register`).
pub const DURS_FN: &str = "pipestat_durs";

pub struct DursAgg;

impl Aggregate<Vec<i64>, Vec<u8>> for DursAgg {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<i64>> {
        Ok(Vec::new())
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut Vec<i64>) -> rusqlite::Result<()> {
        if let Some(v) = ctx.get::<Option<i64>>(0)? {
            acc.push(v);
        }
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, acc: Option<Vec<i64>>) -> rusqlite::Result<Vec<u8>> {
        let mut all = acc.unwrap_or_default();
        all.sort_unstable();
        Ok(encode(&all))
    }
}

/// The new blob of a row after adding `add` and removing `del` (None when both are empty, so
/// the row keeps its blob), from its stored one: `sql` with `key` reads it (no row: empty).
pub fn new_blob(
    conn: &Connection,
    sql: &str,
    key: &[&dyn rusqlite::ToSql],
    add: Vec<i64>,
    del: Vec<i64>,
) -> Result<Option<Vec<u8>>> {
    if add.is_empty() && del.is_empty() {
        return Ok(None);
    }
    let old: Option<Vec<u8>> = conn
        .prepare_cached(sql)?
        .query_row(key, |r| r.get(0))
        .optional()?;
    merge(old.as_deref().unwrap_or_default(), add, del).map(Some)
}

/// The durations of several blobs taken together (copied: SQLite owns a blob only while its
/// row is read), ranked without merging them.
#[derive(Default)]
pub struct Ranks {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Ranks {
    /// Adds the durations of one blob.
    pub fn push(&mut self, blob: &[u8]) {
        if !Durations::of(blob).is_empty() {
            self.bytes.extend_from_slice(blob);
            self.ends.push(self.bytes.len());
        }
    }

    fn each(&self) -> impl Iterator<Item = Durations<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(a, &b)| Durations::of(&self.bytes[a..b]))
    }

    /// How many durations there are.
    pub fn len(&self) -> usize {
        self.each().map(|d| d.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The value at 0-based rank `k` of all the durations (fewer than k + 1: None): the least
    /// v with at least k + 1 durations at most v, found by halving [least, greatest], each
    /// step counting by a binary search in every (sorted) blob.
    pub fn at_rank(&self, k: usize) -> Option<i64> {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let mut n = 0;
        for d in self.each() {
            lo = lo.min(d.get(0));
            hi = hi.max(d.get(d.len() - 1));
            n += d.len();
        }
        if k >= n {
            return None;
        }
        // Invariant: fewer than k + 1 durations are below lo; at least k + 1 are at most hi.
        while lo < hi {
            let mid = (i128::from(lo) + (i128::from(hi) - i128::from(lo)) / 2) as i64;
            if self.each().map(|d| d.count_le(mid)).sum::<usize>() > k {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(lo)
    }

    /// The value at rank k + 1, given `v` at rank k: `v` again when more than k + 1 durations
    /// are at most v, else the least duration above v (None when there is none).
    pub fn next_rank(&self, k: usize, v: i64) -> Option<i64> {
        if self.each().map(|d| d.count_le(v)).sum::<usize>() > k + 1 {
            return Some(v);
        }
        self.each()
            .filter_map(|d| {
                let i = d.count_le(v);
                (i < d.len()).then(|| d.get(i))
            })
            .min()
    }
}

/// The aggregate `pipestat_pct(durs, p)`: over the duration blobs of a group, the p-th
/// percentile (p in hundredths) in seconds, interpolated as docs/apigee.md defines; p = 0 is
/// the minimum and p = 100 the maximum. NULL over no durations.
pub const PCT_FN: &str = "pipestat_pct";

/// `pipestat_pct`: see [`PCT_FN`].
pub struct Pct;

/// One group so far: the blobs of its rows, or for p = 0 or 100 only the extreme so far.
pub struct Blobs {
    p: i64,
    ranks: Ranks,
    extreme: Option<i64>,
}

impl Aggregate<Blobs, Option<f64>> for Pct {
    fn init(&self, ctx: &mut Context<'_>) -> rusqlite::Result<Blobs> {
        Ok(Blobs {
            p: ctx.get(1)?,
            ranks: Ranks::default(),
            extreme: None,
        })
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut Blobs) -> rusqlite::Result<()> {
        let ValueRef::Blob(blob) = ctx.get_raw(0) else {
            return Ok(());
        };
        let d = Durations::of(blob);
        if d.is_empty() {
            return Ok(());
        }
        // A blob is sorted: its first duration is its least, its last its greatest.
        match acc.p {
            0 => acc.extreme = Some(acc.extreme.map_or(d.get(0), |e| e.min(d.get(0)))),
            100 => {
                let last = d.get(d.len() - 1);
                acc.extreme = Some(acc.extreme.map_or(last, |e| e.max(last)));
            }
            _ => acc.ranks.push(blob),
        }
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, acc: Option<Blobs>) -> rusqlite::Result<Option<f64>> {
        let Some(acc) = acc else {
            return Ok(None);
        };
        let secs = |ms: i64| ms as f64 / 1000.0;
        if acc.p == 0 || acc.p == 100 {
            return Ok(acc.extreme.map(secs));
        }
        if acc.ranks.is_empty() {
            return Ok(None);
        }
        let n = acc.ranks.len();
        // The same ranks and interpolation as the window-function path (run_sql): the values
        // at 0-based ranks floor((n - 1) p / 100) and the next, in seconds.
        let n = n as i64;
        let k = ((n - 1) * acc.p / 100) as usize;
        let Some(v) = acc.ranks.at_rank(k) else {
            return Ok(None);
        };
        let (lo, hi) = (secs(v), acc.ranks.next_rank(k, v).map(secs));
        let frac = ((n - 1) * acc.p % 100) as f64 / 100.0;
        Ok(Some(lo + frac * (hi.unwrap_or(lo) - lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_in_the_fewest_bytes() {
        for v in [
            vec![],
            vec![7],
            vec![-5, -5, 3, 250],
            vec![0, 255],
            vec![0, 256],
            vec![100, 16_777_315],
            vec![i64::MIN, -1, 0, i64::MAX],
        ] {
            let blob = encode(&v);
            let d = Durations::of(&blob);
            assert_eq!(d.iter().collect::<Vec<_>>(), v);
            for x in [-6, -5, 0, 3, 255, 256, 1_000_000] {
                assert_eq!(d.count_le(x), v.iter().filter(|&&y| y <= x).count());
            }
        }
        // One byte of width, eight of base, then the differences 0, 8, 255: one byte each.
        assert_eq!(encode(&[-5, 3, 250]).len(), 1 + 8 + 3);
        assert_eq!(encode(&[0, 256]).len(), 1 + 8 + 2 * 2);
        assert_eq!(encode(&[i64::MIN, i64::MAX]).len(), 1 + 8 + 2 * 8);
    }

    /// Every rank across several blobs is the value at that index of their sorted union.
    #[test]
    fn ranks_across_blobs_are_those_of_the_sorted_union() {
        let parts: [&[i64]; 4] = [&[5, 9, 9, 300], &[], &[-2, 9, 70_000], &[1]];
        let mut ranks = Ranks::default();
        for p in parts {
            ranks.push(&encode(p));
        }
        let union = [-2, 1, 5, 9, 9, 9, 300, 70_000];
        assert_eq!(ranks.len(), union.len());
        for (k, &v) in union.iter().enumerate() {
            assert_eq!(ranks.at_rank(k), Some(v), "rank {k}");
            assert_eq!(
                ranks.next_rank(k, v),
                union.get(k + 1).copied(),
                "after rank {k}"
            );
        }
        assert_eq!(ranks.at_rank(union.len()), None);
        assert!(Ranks::default().is_empty());
        assert_eq!(Ranks::default().at_rank(0), None);
    }

    #[test]
    fn merge_removes_adds_and_keeps_order() {
        let old = encode(&[-5, 3, 3, 40]);
        assert_eq!(
            merge(&old, vec![7, 3, -9], vec![40, 3]).unwrap(),
            encode(&[-9, -5, 3, 3, 7])
        );
        // Added and removed by the same transaction: no trace, even on an empty row.
        assert_eq!(merge(&[], vec![8], vec![8]).unwrap(), encode(&[]));
        assert!(merge(&old, vec![], vec![4]).is_err());
    }

    /// Additions take the splice whenever the base and width hold them, and the result is
    /// always the blob of the sorted union, as encoded from scratch.
    #[test]
    fn additions_spliced_in_equal_the_blob_encoded_anew() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut spliced = 0;
        for round in 0..2_000 {
            // Spans that need 1, 2, 3 or 8 bytes of width.
            let span = [200, 60_000, 16_000_000, u64::MAX / 4][round % 4];
            let base = next(1_000) as i64;
            let old: Vec<i64> = (0..next(40)).map(|_| base + next(span) as i64).collect();
            let add: Vec<i64> = (0..1 + next(5))
                .map(|_| base - 20 + next(span + span / 8) as i64)
                .collect();
            let mut sorted_old = old.clone();
            sorted_old.sort_unstable();
            let blob = encode(&sorted_old);
            let mut union: Vec<i64> = old.iter().chain(&add).copied().collect();
            union.sort_unstable();
            let mut sorted_add = add.clone();
            sorted_add.sort_unstable();
            spliced += usize::from(splice(&blob, &sorted_add).is_some());
            assert_eq!(
                merge(&blob, add, vec![]).unwrap(),
                encode(&union),
                "round {round}"
            );
        }
        // Both ways were taken often.
        assert!(
            (500..1_900).contains(&spliced),
            "{spliced} of 2,000 spliced"
        );
        // Below the base, or beyond the width: never spliced.
        let blob = encode(&[10, 20, 255]);
        assert!(splice(&blob, &[9]).is_none());
        assert!(splice(&blob, &[266]).is_none());
        assert_eq!(
            splice(&blob, &[10, 265]).unwrap(),
            encode(&[10, 10, 20, 255, 265])
        );
        assert!(splice(&[], &[1]).is_none());
    }
}
