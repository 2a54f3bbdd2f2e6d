//! Group commit: partition workers with a batch ready queue here, and each free session takes
//! every one waiting at that moment into one transaction.
//!
//! With one transaction per partition batch and fewer sessions than partitions, a batch waited for
//! a session, then behind the partitions ahead of it, one transaction each. Here it waits for one
//! transaction in flight at most, and then shares a commit with the others that waited. A worker
//! keeps adding records to its batch until its group calls it in, then decodes it and hands it
//! over, so the wait still makes batches larger.

use std::sync::Arc;

use mongodb::bson::Document;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics;
use crate::stage::StageRunner;
use crate::store::{
    BatchEvent, Committed, Member, PartitionClaim, PooledSession, SessionPool, Store, StoreError,
};

/// A partition's batch, decoded and handed to its group.
pub struct Submission {
    pub claim: PartitionClaim,
    pub events: Vec<BatchEvent>,
    pub next_offset: i64,
    pub dlq_topic: String,
    /// The partition worker's stop: once set, a retry leaves this batch out.
    pub stop: watch::Receiver<bool>,
}

type Outcome = oneshot::Receiver<Result<Committed, StoreError>>;
type Handed = (Submission, oneshot::Sender<Result<Committed, StoreError>>);

/// A group calling a waiting worker in: the worker hands its batch over through it.
pub struct CalledIn(oneshot::Sender<Handed>);

impl CalledIn {
    /// Hands the batch over; its outcome arrives once the group transaction ends.
    pub async fn hand_over(self, submission: Submission) -> Result<Committed, StoreError> {
        let (reply, outcome): (_, Outcome) = oneshot::channel();
        self.0
            .send((submission, reply))
            .map_err(|_| StoreError::Shutdown)?;
        outcome.await.unwrap_or(Err(StoreError::Shutdown))
    }
}

/// The handle workers commit through; the committing task ends when the last handle is dropped.
pub struct Committer {
    ready: mpsc::UnboundedSender<oneshot::Sender<CalledIn>>,
    owner_sessions: Vec<Document>,
}

impl Committer {
    /// Starts the committing task over `pool`'s sessions (one group transaction in flight each).
    pub fn start(store: Store, runner: Arc<StageRunner>, pool: SessionPool) -> Self {
        let (ready, waiting) = mpsc::unbounded_channel();
        let owner_sessions = pool.ids().to_vec();
        tokio::spawn(dispatch(store, runner, pool, waiting));
        Self {
            ready,
            owner_sessions,
        }
    }

    /// The session ids every claim of this process records (see `Store::claim_partition`).
    pub fn owner_sessions(&self) -> &[Document] {
        &self.owner_sessions
    }

    /// Queues a ready batch; the receiver answers when a group calls it in (an error: the
    /// committer is gone). Dropping the receiver leaves the queue.
    pub fn ready(&self) -> oneshot::Receiver<CalledIn> {
        let (call, called) = oneshot::channel();
        let _ = self.ready.send(call);
        called
    }
}

/// Takes the first ready batch, waits for a free session, then takes every batch ready by then.
async fn dispatch(
    store: Store,
    runner: Arc<StageRunner>,
    pool: SessionPool,
    mut waiting: mpsc::UnboundedReceiver<oneshot::Sender<CalledIn>>,
) {
    while let Some(first) = waiting.recv().await {
        let Some(session) = pool.take().await else {
            break;
        };
        let mut called = vec![first];
        while let Ok(more) = waiting.try_recv() {
            called.push(more);
        }
        tokio::spawn(run_group(
            store.clone(),
            Arc::clone(&runner),
            session,
            called,
        ));
    }
}

/// Calls the group's workers in, waits for their batches and commits them in one transaction.
async fn run_group(
    store: Store,
    runner: Arc<StageRunner>,
    mut session: PooledSession,
    called: Vec<oneshot::Sender<CalledIn>>,
) {
    let mut handing = Vec::with_capacity(called.len());
    for call in called {
        let (hand, handed) = oneshot::channel();
        // a worker that stopped meanwhile dropped its receiver: it has no batch here
        if call.send(CalledIn(hand)).is_ok() {
            handing.push(handed);
        }
    }
    let mut group: Vec<Handed> = Vec::with_capacity(handing.len());
    for handed in handing {
        if let Ok(h) = handed.await {
            group.push(h);
        }
    }
    if group.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let (submissions, replies): (Vec<Submission>, Vec<_>) = group.into_iter().unzip();
    let stops: Vec<_> = submissions
        .iter()
        .map(|s| {
            let stop = s.stop.clone();
            move || *stop.borrow()
        })
        .collect();
    let members: Vec<Member<'_>> = submissions
        .iter()
        .zip(&stops)
        .map(|(s, stop)| Member {
            claim: &s.claim,
            events: &s.events,
            next_offset: s.next_offset,
            dlq_topic: &s.dlq_topic,
            stop,
        })
        .collect();
    let outcomes = store.commit_group(&mut session, &runner, &members).await;
    let records: usize = submissions.iter().map(|s| s.events.len()).sum();
    let retries = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|c| c.report.retries)
        .max()
        .unwrap_or(0);
    metrics::batch(records, submissions.len(), started.elapsed(), retries);
    drop(session); // free for the next group before the replies are handled
    for (outcome, reply) in outcomes.into_iter().zip(replies) {
        let _ = reply.send(outcome);
    }
}
