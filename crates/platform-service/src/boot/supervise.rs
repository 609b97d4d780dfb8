//! The service's tasks, supervised together on a tokio `JoinSet`: one that
//! ends before shutdown, fails or panics turns health `NOT_SERVING` and stops
//! the service, whose process then fails for its orchestrator to restart it.

use std::collections::HashMap;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::error::AppError;

/// The named tasks of one service.
#[derive(Default)]
pub(super) struct Tasks {
    set: JoinSet<Result<(), String>>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Spawns `work` as the task called `name`.
    pub(super) fn spawn<E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        work: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let handle = self
            .set
            .spawn(async move { work.await.map_err(|e| e.to_string()) });
        self.names.insert(handle.id(), name);
    }

    /// Spawns `work`, which cannot fail, as the task called `name`.
    pub(super) fn spawn_infallible(
        &mut self,
        name: &'static str,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        self.spawn(name, async move {
            work.await;
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Waits for every task. The first that ends before `shutdown`, fails
    /// or panics cancels `failed` (the health monitor then reports
    /// `NOT_SERVING` and the service stops) and is the result once all
    /// have ended.
    pub(super) async fn supervise(
        mut self,
        shutdown: CancellationToken,
        failed: CancellationToken,
    ) -> Result<(), AppError> {
        let mut first = None;
        while let Some(ended) = self.set.join_next_with_id().await {
            let (id, reason) = match ended {
                Err(error) => (
                    error.id(),
                    Some(format!("panicked or was aborted: {error}")),
                ),
                Ok((id, Err(error))) => (id, Some(error)),
                Ok((id, Ok(()))) if !shutdown.is_cancelled() => {
                    (id, Some("ended on its own".to_owned()))
                }
                Ok((id, Ok(()))) => (id, None),
            };
            let task = self.names.get(&id).copied().unwrap_or("unnamed");
            if let Some(reason) = reason
                && first.is_none()
            {
                tracing::error!(task, %reason, "A service task ended; health is NOT_SERVING and the service stops.");
                failed.cancel();
                first = Some(AppError::TaskEnded { task, reason });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_before_shutdown_fails_the_service_by_name() {
        let (shutdown, failed) = (CancellationToken::new(), CancellationToken::new());
        let mut tasks = Tasks::default();
        tasks.spawn_infallible("quitter", async {});
        let stop = shutdown.clone();
        tasks.spawn_infallible("waiter", async move { stop.cancelled().await });
        let watch = failed.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            watch.cancelled().await;
            stop.cancel();
        });
        let outcome = tasks.supervise(shutdown, failed.clone()).await;
        assert!(failed.is_cancelled());
        assert!(
            matches!(
                outcome,
                Err(AppError::TaskEnded {
                    task: "quitter",
                    ..
                })
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn tasks_that_end_on_shutdown_are_a_clean_stop() {
        let (shutdown, failed) = (CancellationToken::new(), CancellationToken::new());
        let mut tasks = Tasks::default();
        for name in ["one", "two"] {
            let stop = shutdown.clone();
            tasks.spawn_infallible(name, async move { stop.cancelled().await });
        }
        shutdown.cancel();
        assert!(tasks.supervise(shutdown, failed.clone()).await.is_ok());
        assert!(!failed.is_cancelled());
    }
}
