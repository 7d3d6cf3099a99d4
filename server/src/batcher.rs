//! Work that costs less done together: a thread that takes every item queued by now (up to a
//! bound), does them in one call and answers each. Under load a batch forms by itself, the way
//! the store's writer gathers writes ([`crate::state::batch_writer`]); at low load an item is
//! done alone, as soon as it arrives.

use crate::error::{ApiError, ApiResult};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// A queue in front of one thread that does its items in batches.
pub struct Batcher<In, Out> {
    name: &'static str,
    jobs: mpsc::Sender<(In, oneshot::Sender<Out>)>,
}

impl<In: Send + 'static, Out: Send + 'static> Batcher<In, Out> {
    /// Starts the thread `name`. `work` gets up to `max` items and returns one answer per item,
    /// in their order. The thread stops when the batcher is dropped.
    pub fn start(
        name: &'static str,
        max: usize,
        work: impl Fn(&[In]) -> Vec<Out> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<(In, oneshot::Sender<Out>)>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < max
                        && let Ok(job) = queue.try_recv()
                    {
                        batch.push(job);
                    }
                    let (items, replies): (Vec<In>, Vec<_>) = batch.into_iter().unzip();
                    // A panic in the work fails this batch's requests (their replies are dropped
                    // unanswered), not every later one.
                    let done =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&items)));
                    if let Ok(answers) = done {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(answer);
                        }
                    }
                }
            })?;
        Ok(Self { name, jobs })
    }

    /// Queues `item` and waits for its answer.
    pub async fn run(&self, item: In) -> ApiResult<Out> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((item, reply))
            .map_err(|_| ApiError::internal(format!("the {} thread stopped", self.name)))?;
        answer
            .await
            .map_err(|_| ApiError::internal(format!("{} dropped an item unanswered", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Items queued while the thread is busy go together, each answer reaches its own item,
    /// and a batch whose work panics fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_items_go_together_and_each_gets_its_answer() {
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(Some(gate));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(
            Batcher::start("test-batcher", 64, move |items: &[u32]| {
                // The first batch waits for the gate, so that the others queue meanwhile.
                if let Some(gate) = gate.lock().unwrap().take() {
                    gate.recv().unwrap();
                }
                seen.lock().unwrap().push(items.len());
                assert!(!items.contains(&1000), "a panic in the work");
                items.iter().map(|i| i * 10).collect()
            })
            .unwrap(),
        );
        let run = |i: u32| {
            let b = batcher.clone();
            tokio::spawn(async move { b.run(i).await })
        };
        let first = run(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rest: Vec<_> = (2..42).map(run).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        open_gate.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 10);
        for (i, h) in (2..42).zip(rest) {
            assert_eq!(h.await.unwrap().unwrap(), i * 10);
        }
        // The 40 queued while the first was held go together (all of them, unless some were
        // slow to queue on a loaded machine).
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(
            (sizes[0], sizes.iter().sum::<usize>()),
            (1, 41),
            "{sizes:?}"
        );
        assert!(sizes[1] > 1, "{sizes:?}");

        // The batch holding 1000 panics: its item gets an error; the thread goes on.
        assert!(batcher.run(1000).await.is_err());
        assert_eq!(batcher.run(7).await.unwrap(), 70);
    }
}
