//! A shard publisher's inbox: what wakes it, how far its shard is known to reach, and the records
//! this process's processor just committed, so the relay need not read them back from Mongo.
//!
//! Reading back what was just written cost the store about a tenth of its CPU in the benchmark
//! (profiled: the outbox range reads), and a wake-up that found nothing new cost two queries.
//! A handed record is a copy of a committed outbox document: a shard's `seq` numbers are unique
//! and a committed record never changes, so the copy is exactly what a read would return. Mongo
//! stays the source of truth: whatever was not handed (another process wrote it, a rebuild
//! emitted it, the inbox overflowed, the relay restarted from an older checkpoint) is read there.
//! Records are kept only while this process publishes the shard: with several processes, a
//! shard's lease and its partition need not be in the same one, and nobody would take them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use mongodb::bson::Document;
use tokio::sync::Notify;

/// Every shard's inbox of one process.
#[derive(Debug)]
pub struct Inboxes {
    shards: HashMap<String, Arc<Inbox>>,
}

impl Inboxes {
    /// One inbox per shard, each holding at most `capacity` handed records (the oldest go first).
    pub fn new(shards: &[String], capacity: usize) -> Arc<Self> {
        let shards = shards
            .iter()
            .map(|s| (s.clone(), Arc::new(Inbox::new(capacity))))
            .collect();
        Arc::new(Self { shards })
    }

    pub(crate) fn get(&self, shard: &str) -> Option<&Arc<Inbox>> {
        self.shards.get(shard)
    }

    /// A batch of `shard` committed these outbox records, in `seq` order: hands them to the
    /// shard's publisher and wakes it.
    pub fn committed(&self, shard: &str, records: Vec<Document>) {
        if let Some(inbox) = self.shards.get(shard) {
            inbox.hand(records);
        }
    }
}

/// One shard's inbox.
#[derive(Debug)]
pub(crate) struct Inbox {
    wake: Notify,
    /// The highest `seq` known to be committed in the shard (offsets poll or hand-over).
    announced: AtomicI64,
    /// Something may be in Mongo that nothing announced: when the shard's publishing starts,
    /// after an announcement that did not say how far, after a read that filled a whole batch.
    must_read: AtomicBool,
    handed: Mutex<VecDeque<(i64, Document)>>,
    capacity: usize,
    /// This process publishes the shard (holds its lease): only then are records kept.
    open: AtomicBool,
}

impl Inbox {
    fn new(capacity: usize) -> Self {
        Self {
            wake: Notify::new(),
            announced: AtomicI64::new(i64::MIN),
            must_read: AtomicBool::new(true),
            handed: Mutex::new(VecDeque::new()),
            capacity,
            open: AtomicBool::new(false),
        }
    }

    /// This process starts publishing the shard: keep what is handed over from now on.
    pub(crate) fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.must_read.store(true, Ordering::Release);
    }

    /// This process stopped publishing the shard: drop what was kept, keep nothing more.
    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::Release);
        if let Ok(mut handed) = self.handed.lock() {
            handed.clear();
        }
    }

    /// The shard reaches `seq` (`None`: it changed, how far is unknown); wakes the publisher
    /// unless that was known already.
    pub(crate) fn announce(&self, seq: Option<i64>) {
        let news = match seq {
            Some(seq) => self.announced.fetch_max(seq, Ordering::AcqRel) < seq,
            None => {
                self.must_read.store(true, Ordering::Release);
                true
            }
        };
        if news {
            self.wake.notify_one();
        }
    }

    /// Mongo must be read on the next turn, whatever was announced.
    pub(crate) fn read_store(&self) {
        self.must_read.store(true, Ordering::Release);
    }

    fn hand(&self, records: Vec<Document>) {
        let last = records.last().and_then(|r| r.get_i64("seq").ok());
        if self.open.load(Ordering::Acquire)
            && let Ok(mut handed) = self.handed.lock()
        {
            for record in records {
                if let Ok(seq) = record.get_i64("seq") {
                    handed.push_back((seq, record));
                }
            }
            let excess = handed.len().saturating_sub(self.capacity);
            handed.drain(..excess);
        }
        if let Some(seq) = last {
            self.announce(Some(seq));
        }
    }

    /// Up to `max` handed records from `after + 1` on, with no gap; drops those at or below `after`.
    pub(crate) fn take(&self, after: i64, max: usize) -> Vec<Document> {
        let Ok(mut handed) = self.handed.lock() else {
            return Vec::new();
        };
        while handed.front().is_some_and(|(seq, _)| *seq <= after) {
            handed.pop_front();
        }
        let mut next = after + 1;
        let mut taken = Vec::new();
        while taken.len() < max && handed.front().is_some_and(|(seq, _)| *seq == next) {
            if let Some((_, record)) = handed.pop_front() {
                taken.push(record);
            }
            next += 1;
        }
        taken
    }

    /// Whether the store may hold records after `after` that were not handed over; clears the
    /// must-read mark, which the caller sets again when its read filled a whole batch.
    pub(crate) fn needs_read(&self, after: i64) -> bool {
        self.must_read.swap(false, Ordering::AcqRel)
            || self.announced.load(Ordering::Acquire) > after
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn records(seqs: std::ops::RangeInclusive<i64>) -> Vec<Document> {
        seqs.map(|seq| doc! { "seq": seq }).collect()
    }

    fn seqs(docs: &[Document]) -> Vec<i64> {
        docs.iter().filter_map(|d| d.get_i64("seq").ok()).collect()
    }

    #[test]
    fn takes_only_the_gapless_run_after_the_checkpoint() {
        let inboxes = Inboxes::new(&["s".into()], 100);
        let inbox = &inboxes.shards["s"];
        inbox.open();
        assert!(inbox.needs_read(0), "an opened inbox reads the store once");
        assert!(!inbox.needs_read(0), "and only once");
        inboxes.committed("s", records(1..=5));
        inboxes.committed("s", records(9..=10)); // 6..=8 came from elsewhere (a rebuild)
        assert_eq!(
            seqs(&inbox.take(2, 100)),
            vec![3, 4, 5],
            "1..=2 were published"
        );
        assert!(inbox.take(5, 100).is_empty(), "6 was not handed over");
        assert!(inbox.needs_read(5), "announced up to 10: read the store");
        assert_eq!(seqs(&inbox.take(8, 1)), vec![9], "at most `max`");
        assert_eq!(seqs(&inbox.take(9, 100)), vec![10]);
        assert!(!inbox.needs_read(10), "nothing past what was published");
        inbox.announce(None);
        assert!(
            inbox.needs_read(10),
            "a wake-up that does not say how far reads"
        );
    }

    #[test]
    fn overflow_drops_the_oldest_and_the_store_covers_them() {
        let inboxes = Inboxes::new(&["s".into()], 3);
        let inbox = &inboxes.shards["s"];
        inbox.open();
        inboxes.committed("s", records(1..=5));
        assert!(inbox.take(0, 100).is_empty(), "1 and 2 were dropped");
        assert!(inbox.needs_read(0));
        assert_eq!(seqs(&inbox.take(2, 100)), vec![3, 4, 5]);
        inboxes.committed("other", records(1..=1)); // not one of ours: ignored
    }

    #[tokio::test]
    async fn only_news_wakes_the_publisher() {
        let inboxes = Inboxes::new(&["s".into()], 100);
        let inbox = &inboxes.shards["s"];
        let woke = || tokio::time::timeout(std::time::Duration::from_millis(20), inbox.woken());
        inbox.announce(Some(5));
        assert!(woke().await.is_ok(), "5 is new");
        inbox.announce(Some(5));
        inbox.announce(Some(4));
        assert!(woke().await.is_err(), "the poll saw nothing new");
        inbox.announce(None);
        assert!(woke().await.is_ok(), "how far is unknown: look");
    }

    #[test]
    fn a_shard_published_elsewhere_keeps_nothing_but_still_wakes() {
        let inboxes = Inboxes::new(&["s".into()], 100);
        let inbox = &inboxes.shards["s"];
        inboxes.committed("s", records(1..=5));
        assert!(inbox.take(0, 100).is_empty(), "not open: nothing kept");
        inbox.open();
        inboxes.committed("s", records(6..=7));
        inbox.close();
        assert!(inbox.take(5, 100).is_empty(), "closing drops what was kept");
        assert!(inbox.needs_read(5), "announced up to 7");
    }
}
