//! Shared server state.

use crate::blobs::Blobs;
use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;
use crate::store::{Store, StoreError, StoreResult, Tx};
use healthlock_common::{ShareId, UserId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

/// Cheap to clone; everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// The state itself.
pub struct Inner {
    /// Metadata, sessions, shares, audit.
    pub store: Store,
    /// Record bodies.
    pub blobs: Blobs,
    /// Configuration.
    pub settings: Settings,
    /// The origin clients sign for.
    pub origin: String,
    /// Open challenges: nonce → (share, expiry). Single-use, at most 60 s old.
    pub challenges: Mutex<HashMap<String, (ShareId, u64)>>,
    /// Throttles logins, registrations and share opens.
    pub limiter: crate::ratelimit::RateLimiter,
    /// Patients' uploads waiting for their seal.
    pub pending: crate::pending::PendingUploads,
    /// Share keys, for checking open proofs without reading the share's row.
    pub share_keys: crate::proofs::ShareKeys,
    /// Checks the proofs of concurrent opens together.
    pub proofs: crate::proofs::ProofChecker,
    /// Download grants after a successful open: (share, provider) → expiry.
    pub grants: Mutex<HashMap<(ShareId, UserId), u64>>,
    /// Makes the stable made-up salts that prelogin gives for unknown usernames.
    pub prelogin_secret: [u8; 32],
    /// Bumped after every committed write, so notification streams wake up and re-read the log.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Set when the server shuts down, so long-lived streams end and shutdown can finish.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Writes waiting for the store's writer thread ([`batch_writer`]).
    pub writes: std::sync::mpsc::Sender<Box<dyn Job>>,
    /// Signs audit checkpoints; its public half is published at `/v1/server-key`.
    pub audit_key: ed25519_dalek::SigningKey,
    /// Signs the checkpoints that answer opens, all those waiting at once under one signature
    /// ([`Checkpoint::sign_batch`](healthlock_common::audit::Checkpoint::sign_batch)): opens
    /// committed together usually ask for theirs together. Takes `(log, size, head)`.
    pub open_checkpoints:
        crate::batcher::Batcher<(UserId, u64, [u8; 32]), healthlock_common::audit::Checkpoint>,
    /// A real Argon2id hash to verify against when the username is unknown, so a wrong username
    /// costs the same time as a wrong password.
    pub dummy_phc: String,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    /// A signed checkpoint of `log` at `head`.
    pub fn checkpoint(
        &self,
        log: &UserId,
        head: &crate::store::AuditHead,
    ) -> ApiResult<healthlock_common::audit::Checkpoint> {
        Ok(healthlock_common::audit::Checkpoint::sign(
            &self.audit_key,
            &self.origin,
            log,
            head.seq,
            &head.hash()?,
        ))
    }
}

impl AppState {
    /// Runs blocking store work off the async threads.
    pub async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> R + Send + 'static,
    ) -> ApiResult<R> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(ApiError::internal)
    }

    /// Runs point reads (a session, a share, a record) right here on the async thread: they are
    /// served from redb's cache in microseconds, less than a hop to a blocking thread and back
    /// costs under load. Scans and anything that may touch the disk for long use
    /// [`AppState::blocking`]. (While the store reopens after a failed commit these reads wait
    /// for it on the async threads; the store cannot answer meanwhile anyway.)
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> StoreResult<R>) -> ApiResult<R> {
        Ok(f(&self.store)?)
    }

    /// Runs `f` in a write transaction and returns once it is durable. Writes from concurrent
    /// requests share one transaction and one fsync ([`batch_writer`]): `f` sees the writes
    /// queued before it, commits with them, and fails with them if their commit fails.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx) -> StoreResult<R> + Send + 'static,
    ) -> ApiResult<R> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writes
            .send(Box::new(WriteJob { f, reply }))
            .map_err(|_| ApiError::internal("the store's writer stopped"))?;
        Ok(answer
            .await
            .map_err(|_| ApiError::internal("a write was dropped unanswered"))??)
    }
}

/// What the writer does with one request's write once its batch's commit is known.
type Answer = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// One request's part of a batched write transaction.
pub trait Job: Send {
    /// Runs in the batch's transaction; returns how to answer once the commit is known. On an
    /// error it has answered already, and the batch must not commit.
    fn run(self: Box<Self>, tx: &Tx) -> StoreResult<Answer>;
    /// Answers without running, when the batch fails before reaching it.
    fn fail(self: Box<Self>, e: StoreError);
}

/// [`AppState::write`]'s job: a closure and where its result goes.
struct WriteJob<F, R> {
    f: F,
    reply: tokio::sync::oneshot::Sender<StoreResult<R>>,
}

impl<F, R> Job for WriteJob<F, R>
where
    F: FnOnce(&Tx) -> StoreResult<R> + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Box<Self>, tx: &Tx) -> StoreResult<Answer> {
        let WriteJob { f, reply } = *self;
        match f(tx) {
            Ok(r) => Ok(Box::new(move |committed: StoreResult<()>| {
                let _ = reply.send(committed.map(|()| r));
            })),
            Err(e) => {
                let _ = reply.send(Err(e.clone()));
                Err(e)
            }
        }
    }

    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.reply.send(Err(e));
    }
}

/// Most writes in one transaction, so a long queue still gets answers in steady steps.
const MAX_BATCH: usize = 256;

/// The store's writer thread (group commit): takes every write queued by now, runs them in one
/// transaction, commits it with one fsync, then answers them all. While it syncs, the next
/// batch queues. A request's audit event is thus durable before its reply, at one transaction
/// and one fsync per batch rather than per request.
pub fn batch_writer(state: Weak<Inner>, jobs: std::sync::mpsc::Receiver<Box<dyn Job>>) {
    let mut queue: VecDeque<Box<dyn Job>> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match jobs.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return, // the state is gone
            }
        }
        while let Ok(job) = jobs.try_recv() {
            queue.push_back(job);
        }
        let Some(state) = state.upgrade() else { return };
        // A panic outside the jobs (in the store itself) fails this batch's requests — their
        // replies are dropped unanswered — but must not stop every later write.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&state.store, &mut queue)
        })) {
            Ok(true) => state.changes.send_modify(|v| *v = v.wrapping_add(1)),
            Ok(false) => {}
            Err(_) => {
                tracing::error!("a batch of writes panicked in the store; its requests failed")
            }
        }
    }
}

/// Runs up to [`MAX_BATCH`] jobs from the front of `queue` in one transaction and answers them;
/// returns whether it committed. If a job fails (or panics), the transaction is dropped: the
/// jobs that ran in it get its error, and those not yet run stay queued for the next batch.
fn run_batch(store: &Store, queue: &mut VecDeque<Box<dyn Job>>) -> bool {
    let batch: Vec<_> = queue.drain(..queue.len().min(MAX_BATCH)).collect();
    let size = batch.len();
    let mut pending = batch.into_iter();
    let mut answers: Vec<Answer> = Vec::with_capacity(size);
    let committed = store.write(|tx| {
        for job in pending.by_ref() {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(tx)));
            match ran {
                Ok(answer) => answers.push(answer?),
                Err(_) => return Err(StoreError::Db("a write panicked".into())),
            }
        }
        Ok(())
    });
    match committed {
        Ok(()) => {
            answers.into_iter().for_each(|a| a(Ok(())));
            true
        }
        Err(e) => {
            answers.into_iter().for_each(|a| a(Err(e.clone())));
            if pending.len() == size {
                // Nothing ran (the store would not open a transaction): retrying could spin,
                // so these fail too.
                pending.for_each(|j| j.fail(e.clone()));
            } else {
                pending.rev().for_each(|j| queue.push_front(j));
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEvent;

    fn event() -> NewEvent {
        NewEvent {
            actor: None,
            action: "record.download",
            share: None,
            record: None,
            refused: None,
            client: None,
        }
    }

    /// Queues a write of one event to `log`, or a failure (a panic when `panic`).
    fn job(
        log: &UserId,
        fail: bool,
        panic: bool,
    ) -> (
        Box<dyn Job>,
        tokio::sync::oneshot::Receiver<StoreResult<u64>>,
    ) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let log = log.clone();
        let f = move |tx: &Tx| {
            let seq = tx.append_audit(&log, event())?.seq;
            assert!(!panic, "a write that panics");
            if fail {
                return Err(StoreError::Db("boom".into()));
            }
            Ok(seq)
        };
        (Box::new(WriteJob { f, reply }), answer)
    }

    fn answer(
        mut rx: tokio::sync::oneshot::Receiver<StoreResult<u64>>,
    ) -> Option<StoreResult<u64>> {
        rx.try_recv().ok()
    }

    #[test]
    fn a_batch_commits_together_and_a_failure_spoils_only_what_ran_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let log = UserId::random();
        let mut queue = VecDeque::new();
        let (a, ra) = job(&log, false, false);
        let (b, rb) = job(&log, false, false);
        queue.extend([a, b]);
        assert!(run_batch(&store, &mut queue));
        assert!(queue.is_empty());
        assert_eq!(answer(ra).unwrap().unwrap(), 1);
        assert_eq!(answer(rb).unwrap().unwrap(), 2);

        // c runs, d fails: both answered with d's error, nothing of theirs kept; e and e2, not
        // yet run, stay queued in their order and commit in the next batch.
        let (c, rc) = job(&log, false, false);
        let (d, rd) = job(&log, true, false);
        let (e, mut re) = job(&log, false, false);
        let (e2, mut re2) = job(&log, false, false);
        queue.extend([c, d, e, e2]);
        assert!(!run_batch(&store, &mut queue));
        assert!(answer(rc).unwrap().is_err());
        assert!(answer(rd).unwrap().is_err());
        assert!(re.try_recv().is_err(), "e must not be answered yet");
        assert!(re2.try_recv().is_err(), "e2 must not be answered yet");
        assert_eq!(queue.len(), 2);
        assert!(run_batch(&store, &mut queue));
        assert_eq!(answer(re).unwrap().unwrap(), 3);
        assert_eq!(answer(re2).unwrap().unwrap(), 4);

        // A panicking write drops its transaction too, without taking the writer down.
        let (f, rf) = job(&log, false, false);
        let (g, rg) = job(&log, false, true);
        queue.extend([f, g]);
        assert!(!run_batch(&store, &mut queue));
        assert!(answer(rf).unwrap().is_err());
        assert!(
            answer(rg).is_none(),
            "the panicking write's reply is dropped"
        );
        let (events, head) = store.audit(&log, 0, 100).unwrap();
        assert_eq!((events.len(), head.seq), (4, 4));

        // More than a batch's worth: the first MAX_BATCH commit together, the rest next.
        let replies: Vec<_> = (0..MAX_BATCH + 3)
            .map(|_| {
                let (j, r) = job(&log, false, false);
                queue.push_back(j);
                r
            })
            .collect();
        assert!(run_batch(&store, &mut queue));
        assert_eq!(queue.len(), 3);
        assert!(run_batch(&store, &mut queue));
        let seqs: Vec<u64> = replies
            .into_iter()
            .map(|r| answer(r).unwrap().unwrap())
            .collect();
        assert_eq!(seqs, (5..5 + MAX_BATCH as u64 + 3).collect::<Vec<_>>());
    }
}
