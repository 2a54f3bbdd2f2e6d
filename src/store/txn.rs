//! Running a closure in a Mongo transaction, retried with backoff and jitter while errors are transient.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use mongodb::ClientSession;
use mongodb::error::{
    Error, ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{Acknowledgment, ReadConcern, TransactionOptions, WriteConcern};

use super::StoreError;

/// Network trouble, elections, write conflicts: the same transaction may succeed later.
pub fn is_transient(e: &Error) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
        || matches!(*e.kind, ErrorKind::Io(_))
        || matches!(
            *e.kind,
            ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. }
        )
        || matches!(*e.kind, ErrorKind::Command(ref c) if [112, 251, 91, 189, 10107, 11600, 11602, 13435, 13436].contains(&c.code))
}

/// A unique index refused the write (another writer got there first).
pub fn is_duplicate_key(e: &Error) -> bool {
    matches!(*e.kind, ErrorKind::Write(mongodb::error::WriteFailure::WriteError(ref w)) if w.code == 11000)
        || matches!(*e.kind, ErrorKind::Command(ref c) if c.code == 11000)
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}

fn options() -> TransactionOptions {
    TransactionOptions::builder()
        .read_concern(ReadConcern::snapshot())
        .write_concern(WriteConcern::builder().w(Acknowledgment::Majority).build())
        .build()
}

/// Drives one transaction's attempts: start, commit and recovery, with backoff between retries.
pub struct Retrier<'a> {
    delays: Box<dyn Iterator<Item = Duration> + Send + Sync>,
    pub retries: u32,
    stop: &'a (dyn Fn() -> bool + Sync),
}

impl<'a> Retrier<'a> {
    /// `stop` is asked before each retry (never before the first attempt).
    pub fn new(stop: &'a (dyn Fn() -> bool + Sync)) -> Self {
        Self {
            delays: Box::new(backoff()),
            retries: 0,
            stop,
        }
    }

    async fn wait(&mut self, why: String) -> Result<(), StoreError> {
        if (self.stop)() {
            return Err(StoreError::Shutdown);
        }
        self.retries += 1;
        let delay = self.delays.next().unwrap_or(Duration::from_secs(5));
        tracing::warn!(
            retry = self.retries,
            delay_ms = delay.as_millis() as u64,
            "transient store error, retrying: {why}"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Starts a transaction, waiting out transient errors.
    pub async fn begin(&mut self, session: &mut ClientSession) -> Result<(), StoreError> {
        loop {
            match session.start_transaction().with_options(options()).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) => self.wait(e.to_string()).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Commits; `Ok(false)` means the whole transaction must be run again.
    pub async fn commit(&mut self, session: &mut ClientSession) -> Result<bool, StoreError> {
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Ok(true),
                // retrying the commit of the same transaction is idempotent
                Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                    self.wait(e.to_string()).await?
                }
                Err(e) if is_transient(&e) => {
                    self.wait(e.to_string()).await?;
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After the body failed: aborts, then `Ok(())` to run again if the error was transient.
    pub async fn recover(
        &mut self,
        session: &mut ClientSession,
        error: StoreError,
    ) -> Result<(), StoreError> {
        let _ = session.abort_transaction().await;
        if error.is_transient() {
            self.wait(error.to_string()).await
        } else {
            Err(error)
        }
    }
}

/// Runs `body` in a transaction until it commits (`Ok(true)`) or gives up by returning `false`
/// (`Ok(false)`, the transaction aborted). Transient errors run the whole body again.
pub async fn run_unless_given_up(
    session: &mut ClientSession,
    mut body: impl AsyncFnMut(&mut ClientSession) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let never = || false;
    let mut retrier = Retrier::new(&never);
    loop {
        retrier.begin(session).await?;
        match body(session).await {
            Ok(false) => {
                let _ = session.abort_transaction().await;
                return Ok(false);
            }
            Ok(true) => {
                if retrier.commit(session).await? {
                    return Ok(true);
                }
            }
            Err(e) => retrier.recover(session, e).await?,
        }
    }
}
