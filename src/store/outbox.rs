//! The outbox's layout: a batch's records in pages keyed by shard and sequence, and the relay's
//! reads and deletes on them.
//!
//! A page holds consecutive records of one shard (`first..=last`, in `seq` order) and is keyed by
//! [`page_id`]. One document per batch instead of one per record: a batch inserts, and the relay
//! later deletes, one document where it did hundreds (each an index entry and an oplog entry).
//! Measured in the benchmark's Mongo ceiling loop: 7,276 and 7,605 events/s with pages against
//! 5,556 and 6,210 with a document per record, before counting the deletes.

use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, DateTime, Document, doc};

/// Most records in one page: a reader that wants the records up to `seq` finds them in the pages
/// whose `last` is below `seq + PAGE_MAX_RECORDS`.
pub const PAGE_MAX_RECORDS: usize = 1_000;
/// A page is closed before its records pass this many bytes (a BSON document holds 16 MiB).
const PAGE_MAX_BYTES: usize = 8 << 20;

/// The `_id` of `shard`'s page ending at `last`: the shard, then `i64::MAX - last` in 19 digits.
///
/// A shard's pages are one contiguous range of the primary index, newest first, so reads and
/// deletes need no secondary index (a unique (shard, seq) index cost the ceiling loop ~9%).
/// Newest first: an insert lands in front of its own shard's live pages, away from the tombstones
/// the relay's deletes leave at the shard's old end, which a neighbour's inserts would otherwise
/// walk (profiled with an ascending index: batch transactions 3-5× slower with the relay on).
pub fn page_id(shard: &str, last: i64) -> String {
    format!("{shard}/{:019}", i64::MAX - last.max(0))
}

/// The `_id` filter of `shard`'s pages whose `last` is in `low..=high`.
fn last_between(shard: &str, low: i64, high: i64) -> Document {
    doc! { "$gte": page_id(shard, high), "$lte": page_id(shard, low) }
}

/// The sort that yields a shard's pages in `seq` order (their `_id` counts down).
fn oldest_first() -> Document {
    doc! { "_id": -1 }
}

/// Groups records (each from [`super::documents::outbox_doc`], in `seq` order, consecutive) into
/// pages of at most [`PAGE_MAX_RECORDS`] records and about [`PAGE_MAX_BYTES`].
pub fn pages(
    shard: &str,
    records: impl IntoIterator<Item = Document>,
    now: DateTime,
) -> Vec<Document> {
    let mut pages = Vec::new();
    let mut current: Vec<Bson> = Vec::new();
    let mut bytes = 0;
    let mut first = 0;
    let mut last = 0;
    for record in records {
        let size = approx_size(&record);
        if !current.is_empty()
            && (current.len() >= PAGE_MAX_RECORDS || bytes + size > PAGE_MAX_BYTES)
        {
            pages.push(page(
                shard,
                (first, last),
                std::mem::take(&mut current),
                now,
            ));
            bytes = 0;
        }
        let seq = record.get_i64("seq").unwrap_or(0);
        if current.is_empty() {
            first = seq;
        }
        last = seq;
        bytes += size;
        current.push(Bson::Document(record));
    }
    if !current.is_empty() {
        pages.push(page(shard, (first, last), current, now));
    }
    pages
}

fn page(shard: &str, (first, last): (i64, i64), records: Vec<Bson>, now: DateTime) -> Document {
    doc! {
        "_id": page_id(shard, last),
        "shard": shard,
        "first": first,
        "last": last,
        "createdAt": now,
        "records": records,
    }
}

/// Roughly a document's BSON size: its strings and binaries, plus a little per field.
fn approx_size(doc: &Document) -> usize {
    doc.iter()
        .map(|(key, value)| {
            key.len()
                + 8
                + match value {
                    Bson::String(s) => s.len(),
                    Bson::Binary(b) => b.bytes.len(),
                    Bson::Document(d) => approx_size(d),
                    _ => 8,
                }
        })
        .sum()
}

/// The records of a page with `seq` in `after+1..=upto`, in order.
fn records_in(mut page: Document, after: i64, upto: i64) -> impl Iterator<Item = Document> {
    let records = match page.remove("records") {
        Some(Bson::Array(records)) => records,
        _ => Vec::new(),
    };
    records.into_iter().filter_map(move |r| match r {
        Bson::Document(d) if d.get_i64("seq").is_ok_and(|s| s > after && s <= upto) => Some(d),
        _ => None,
    })
}

/// Up to `n` records of `shard` after `after`, in `seq` order. A shard's sequence has no gaps
/// (each commit takes the next numbers), so they are the records `after+1..=after+n`, all in the
/// pages whose `last` is in `after+1..after+n+PAGE_MAX_RECORDS`: an index range the store reads
/// exactly, where an open range with a limit made SecantusDB walk the whole rest of the shard
/// (profiled: the relay's reads starved the processor). The open query runs only when the range
/// is empty, in case the numbering ever jumped.
pub async fn read(
    outbox: &Collection<Document>,
    shard: &str,
    after: i64,
    n: i64,
) -> Result<Vec<Document>, mongodb::error::Error> {
    let upto = after + n;
    let pages: Vec<Document> = outbox
        .find(doc! {
            "_id": last_between(shard, after + 1, upto + PAGE_MAX_RECORDS as i64 - 1),
            "first": { "$lte": upto },
        })
        .sort(oldest_first())
        .await?
        .try_collect()
        .await?;
    let mut records: Vec<Document> = pages
        .into_iter()
        .flat_map(|p| records_in(p, after, upto))
        .collect();
    if records.is_empty() {
        let next = outbox
            .find_one(doc! { "_id": last_between(shard, after + 1, i64::MAX) })
            .sort(oldest_first())
            .await?;
        records = next
            .into_iter()
            .flat_map(|p| records_in(p, after, i64::MAX))
            .take(n as usize)
            .collect();
    }
    Ok(records)
}

/// Deletes `shard`'s pages whose records are all in `first..=upto` (published).
pub async fn delete_published(
    outbox: &Collection<Document>,
    shard: &str,
    first: i64,
    upto: i64,
) -> Result<u64, mongodb::error::Error> {
    let deleted = outbox
        .delete_many(doc! { "_id": last_between(shard, first, upto) })
        .await?;
    Ok(deleted.deleted_count)
}

/// How many records of `shard` come after `upto` (not yet published), and when the oldest page
/// holding any of them was written.
pub async fn unpublished(
    outbox: &Collection<Document>,
    shard: &str,
    upto: i64,
) -> Result<(u64, Option<DateTime>), mongodb::error::Error> {
    let filter = doc! { "_id": last_between(shard, upto + 1, i64::MAX) };
    let newest = outbox
        .find_one(filter.clone())
        .sort(doc! { "_id": 1 })
        .projection(doc! { "last": 1 })
        .await?;
    let Some(last) = newest.and_then(|p| p.get_i64("last").ok()) else {
        return Ok((0, None));
    };
    let oldest = outbox
        .find_one(filter)
        .sort(oldest_first())
        .projection(doc! { "createdAt": 1 })
        .await?
        .and_then(|p| p.get_datetime("createdAt").ok().copied());
    Ok(((last - upto).max(0) as u64, oldest))
}

#[cfg(test)]
mod tests {
    use super::{PAGE_MAX_RECORDS, last_between, page_id, pages, records_in};
    use crate::store::documents::shard_of;
    use mongodb::bson::{DateTime, Document, doc};

    fn records(seqs: std::ops::RangeInclusive<i64>) -> Vec<Document> {
        seqs.map(|seq| doc! { "id": format!("r{seq}"), "seq": seq })
            .collect()
    }

    #[test]
    fn page_ids_keep_each_shard_contiguous_and_newest_first() {
        let (one, ten) = (shard_of("t", 1), shard_of("t", 10));
        assert!(page_id(&one, 2) < page_id(&one, 1));
        assert!(page_id(&one, 1) < page_id(&one, 0));
        // every page of shard t:1 sorts before every page of t:10, whatever its seq
        assert!(page_id(&one, 0) < page_id(&ten, i64::MAX));
        let range = last_between(&one, 5, 9);
        let (low, high) = (
            range.get_str("$gte").unwrap_or_default(),
            range.get_str("$lte").unwrap_or_default(),
        );
        let inside = |seq| {
            let id = page_id(&one, seq);
            low <= id.as_str() && id.as_str() <= high
        };
        assert!((5..=9).all(inside));
        assert!(![4, 10].into_iter().any(inside));
    }

    #[test]
    fn a_batch_splits_into_pages_of_consecutive_records() {
        let batch = records(1..=2_500);
        let pages = pages("t:0", batch, DateTime::now());
        let bounds: Vec<(i64, i64)> = pages
            .iter()
            .map(|p| {
                (
                    p.get_i64("first").unwrap_or(-1),
                    p.get_i64("last").unwrap_or(-1),
                )
            })
            .collect();
        let max = PAGE_MAX_RECORDS as i64;
        assert_eq!(bounds, [(1, max), (max + 1, 2 * max), (2 * max + 1, 2_500)]);
        assert_eq!(
            pages[2].get_str("_id").ok(),
            Some(page_id("t:0", 2_500).as_str())
        );
    }

    #[test]
    fn a_large_batch_splits_by_bytes() {
        let big = mongodb::bson::Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Generic,
            bytes: vec![0; 3 << 20],
        };
        let batch: Vec<Document> = (1..=5_i64)
            .map(|seq| doc! { "seq": seq, "payload": big.clone() })
            .collect();
        let pages = pages("t:0", batch, DateTime::now());
        assert_eq!(pages.len(), 3, "two 3 MiB records per page at most");
    }

    #[test]
    fn a_read_takes_only_the_records_in_its_range() {
        let page = pages("t:0", records(11..=20), DateTime::now()).remove(0);
        let seqs: Vec<i64> = records_in(page, 14, 17)
            .filter_map(|r| r.get_i64("seq").ok())
            .collect();
        assert_eq!(seqs, [15, 16, 17]);
    }
}
