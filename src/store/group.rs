//! Group commit: the waiting batches of several partitions in ONE transaction, each behind its own
//! fence, as Kafka Streams commits all of a stream thread's tasks together.
//!
//! The members share the transaction's round trips: one event-id read, one entity-state read per
//! kind, one `bulkWrite` with every member's fence first, one commit. Their batches are folded one
//! after another, each from the states the ones before it left. A member whose fence fails (its
//! partition moved) is taken out and the others run again without it; a transient error runs the
//! whole group again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mongodb::ClientSession;
use mongodb::bson::Document;
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use super::batch::{Committed, Fence, PartitionClaim};
use super::{Store, StoreError, txn};
use crate::metrics::PhaseClock;
use crate::stage::StageRunner;
use crate::stage::fold::BatchEvent;

/// One partition's batch in a group transaction.
pub struct Member<'a> {
    pub claim: &'a PartitionClaim,
    pub events: &'a [BatchEvent],
    /// The partition's offset after the batch, stored with it.
    pub next_offset: i64,
    pub dlq_topic: &'a str,
    /// Asked before each retry (never before the first attempt): a stopped member leaves the group.
    pub stop: &'a (dyn Fn() -> bool + Sync),
}

/// The sessions this process's batch transactions run in. Every claim records all their ids, so
/// the next owner of a partition can kill whichever holds a transaction open (see
/// [`Store::claim_partition`]).
pub struct SessionPool {
    sessions: Vec<Arc<Mutex<ClientSession>>>,
    ids: Vec<Document>,
    free: Arc<Semaphore>,
}

/// A session taken from the pool; it goes back when dropped.
pub struct PooledSession {
    session: OwnedMutexGuard<ClientSession>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for PooledSession {
    type Target = ClientSession;
    fn deref(&self) -> &ClientSession {
        &self.session
    }
}

impl std::ops::DerefMut for PooledSession {
    fn deref_mut(&mut self) -> &mut ClientSession {
        &mut self.session
    }
}

impl SessionPool {
    /// The session ids a claim records as its owner's.
    pub fn ids(&self) -> &[Document] {
        &self.ids
    }

    /// Waits for a free session; `None` once the pool is closed.
    pub async fn take(&self) -> Option<PooledSession> {
        let permit = Arc::clone(&self.free).acquire_owned().await.ok()?;
        // as many permits as sessions: with a permit in hand one session is always unlocked
        self.sessions
            .iter()
            .find_map(|s| Arc::clone(s).try_lock_owned().ok())
            .map(|session| PooledSession {
                session,
                _permit: permit,
            })
    }
}

impl Store {
    /// `n` sessions for batch transactions (at least one).
    pub async fn session_pool(&self, n: usize) -> Result<SessionPool, StoreError> {
        let mut sessions = Vec::with_capacity(n.max(1));
        let mut ids = Vec::with_capacity(n.max(1));
        for _ in 0..n.max(1) {
            let session = self.client.start_session().await?;
            ids.push(session.id().clone());
            sessions.push(Arc::new(Mutex::new(session)));
        }
        Ok(SessionPool {
            free: Arc::new(Semaphore::new(sessions.len())),
            sessions,
            ids,
        })
    }

    /// Commits one batch alone (see [`Store::commit_group`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_batch(
        &self,
        session: &mut ClientSession,
        claim: &PartitionClaim,
        events: &[BatchEvent],
        next_offset: i64,
        runner: &StageRunner,
        dlq_topic: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Committed, StoreError> {
        let member = Member {
            claim,
            events,
            next_offset,
            dlq_topic,
            stop,
        };
        let mut results = self.commit_group(session, runner, &[member]).await;
        results.pop().unwrap_or(Err(StoreError::Shutdown))
    }

    /// Commits every member's batch and offset in one transaction (see the module docs); returns
    /// each member's outcome, in order. Transient errors are retried until every member committed,
    /// was fenced, failed for good or stopped.
    pub async fn commit_group(
        &self,
        session: &mut ClientSession,
        runner: &StageRunner,
        members: &[Member<'_>],
    ) -> Vec<Result<Committed, StoreError>> {
        let mut outcomes: Vec<Option<Result<Committed, StoreError>>> =
            members.iter().map(|_| None).collect();
        // a stopped member leaves before the next attempt (below); the retries' waits (a server
        // down) give up once every member stopped
        let all_stopped = || members.iter().all(|m| (m.stop)());
        let mut retrier = txn::Retrier::new(&all_stopped);
        let mut first = true;
        loop {
            if !first {
                for (outcome, member) in outcomes.iter_mut().zip(members) {
                    if outcome.is_none() && (member.stop)() {
                        *outcome = Some(Err(StoreError::Shutdown));
                    }
                }
            }
            first = false;
            let live: Vec<usize> = (0..members.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if live.is_empty() {
                break;
            }
            if let Err(e) = retrier.begin(session).await {
                fail_all(&mut outcomes, &e);
                break;
            }
            let live_members: Vec<&Member<'_>> = live.iter().map(|&i| &members[i]).collect();
            let mut clock = PhaseClock::start();
            match self
                .attempt(session, &live_members, runner, &mut clock)
                .await
            {
                Ok(planned) => {
                    let committed = retrier.commit(session).await;
                    clock.lap("commit");
                    match committed {
                        Ok(true) => {
                            for (&i, (mut done, end_seq)) in live.iter().zip(planned) {
                                members[i]
                                    .claim
                                    .outbox_seq
                                    .store(end_seq, Ordering::Release);
                                done.report.retries = retrier.retries;
                                outcomes[i] = Some(Ok(done));
                            }
                        }
                        Ok(false) => {} // aborted after a transient error: run them all again
                        Err(e) => fail_all(&mut outcomes, &e),
                    }
                }
                Err(e) if e.is_transient() => {
                    if let Err(e) = retrier.recover(session, e).await {
                        fail_all(&mut outcomes, &e);
                    }
                }
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    match self.unfence(members, &live, &mut outcomes).await {
                        Ok(true) => {} // run again without the fenced ones
                        Ok(false) => fail_all(&mut outcomes, &e),
                        Err(read) => {
                            if let Err(e) = retrier.recover(session, read).await {
                                fail_all(&mut outcomes, &e);
                            }
                        }
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Err(StoreError::Shutdown)))
            .collect()
    }

    /// After a group failed for good: takes out each member whose partition moved (`Fenced`) and
    /// catches up with outbox sequences a rebuild moved. `Ok(false)` when neither happened: the
    /// error was about something else.
    async fn unfence(
        &self,
        members: &[Member<'_>],
        live: &[usize],
        outcomes: &mut [Option<Result<Committed, StoreError>>],
    ) -> Result<bool, StoreError> {
        let mut changed = false;
        for &i in live {
            let claim = members[i].claim;
            let expected = claim.outbox_seq.load(Ordering::Acquire);
            match self.why_unfenced(claim, expected).await? {
                Fence::Lost => {
                    outcomes[i] = Some(Err(StoreError::Fenced {
                        topic: claim.topic.clone(),
                        partition: claim.partition,
                        ours: claim.epoch,
                    }));
                    changed = true;
                }
                Fence::SeqMoved(seq) => {
                    tracing::debug!(topic = %claim.topic, partition = claim.partition, seq, "outbox sequence moved (a rebuild emitted); retrying the batch");
                    claim.outbox_seq.store(seq, Ordering::Release);
                    changed = true;
                }
                Fence::Held => {}
            }
        }
        Ok(changed)
    }
}

/// Gives every member still without an outcome the group's error.
fn fail_all(outcomes: &mut [Option<Result<Committed, StoreError>>], error: &StoreError) {
    for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
        *outcome = Some(Err(error.clone()));
    }
}
