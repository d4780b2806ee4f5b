//! Async waiting through the public API: `start` blocks until ready and then starts (reporting the
//! unmet dependencies as they change), `wait_ready` ends Ready / DependencyFailed / TimedOut,
//! `wait_for` ends when a unit starts, completes or fails (even a name registered only after the
//! wait began), deadlines end waits with what was still unmet, and a wait future that is dropped,
//! cancelled or timed out leaves nothing behind (`Graph::parked_waiters` returns to zero).
//!
//! No sleeps are used to synchronise: the tests wait for the waiter's own reports, for
//! `parked_waiters` to reach a count, or for a task to finish. Deadline tests run on tokio's paused
//! clock, and `hang_guard` only turns a hang into a failure.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use unitsync_core::{
    DependencyStatus, Failure, Graph, GraphError, NameRule, ReadyOutcome, StartOutcome, UnitName,
    UnitState, WaitOutcome, WaitTarget,
};

fn name(unit: &str) -> UnitName {
    UnitName::new(unit).expect("valid name")
}

fn dependency(unit: &str, current: UnitState) -> DependencyStatus {
    DependencyStatus {
        name: name(unit),
        required: UnitState::Completed,
        current,
        satisfied: current == UnitState::Completed,
    }
}

/// Fails the test if `future` has not finished after a minute (of paused or real time).
async fn hang_guard<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the wait hung")
}

/// Lets spawned tasks run until exactly `count` wait futures are asleep.
async fn until_parked(graph: &Graph, count: usize) {
    hang_guard(async {
        while graph.parked_waiters() != count {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Polls `future` once and asserts that it is waiting.
async fn poll_once_pending<F: Future>(mut future: std::pin::Pin<&mut F>) {
    std::future::poll_fn(|cx| {
        assert!(
            future.as_mut().poll(cx).is_pending(),
            "the wait ended early"
        );
        Poll::Ready(())
    })
    .await;
}

fn spawn_start(
    graph: &Graph,
    unit: &'static str,
) -> (
    tokio::task::JoinHandle<Result<StartOutcome, GraphError>>,
    mpsc::UnboundedReceiver<Vec<DependencyStatus>>,
) {
    let (reports, receiver) = mpsc::unbounded_channel();
    let graph = graph.clone();
    let task = tokio::spawn(async move {
        graph
            .start(unit, None, move |unmet| {
                let _ = reports.send(unmet.to_vec());
            })
            .await
    });
    (task, receiver)
}

/// Asserts that the next `on_blocked` report is `unmet`.
async fn expect_report(
    reports: &mut mpsc::UnboundedReceiver<Vec<DependencyStatus>>,
    unmet: Vec<DependencyStatus>,
) {
    assert_eq!(hang_guard(reports.recv()).await, Some(unmet));
}

// ---- start ----

#[tokio::test]
async fn start_blocks_until_ready_and_reports_each_change_of_the_unmet_list() {
    let graph = Graph::new();
    graph.want("claude", &["git", "node"]).unwrap();
    let (waiter, mut reports) = spawn_start(&graph, "claude");
    expect_report(
        &mut reports,
        vec![
            dependency("git", UnitState::Unknown),
            dependency("node", UnitState::Unknown),
        ],
    )
    .await;
    graph.register("git").unwrap();
    expect_report(
        &mut reports,
        vec![
            dependency("git", UnitState::Pending),
            dependency("node", UnitState::Unknown),
        ],
    )
    .await;
    graph.try_start("git").unwrap();
    expect_report(
        &mut reports,
        vec![
            dependency("git", UnitState::Started),
            dependency("node", UnitState::Unknown),
        ],
    )
    .await;
    graph.complete("git").unwrap();
    expect_report(&mut reports, vec![dependency("node", UnitState::Unknown)]).await;
    graph.register("node").unwrap();
    expect_report(&mut reports, vec![dependency("node", UnitState::Pending)]).await;
    assert_eq!(graph.state("claude"), Some(UnitState::Pending));
    assert!(!waiter.is_finished());
    assert_eq!(graph.parked_waiters(), 1);

    graph.try_start("node").unwrap();
    expect_report(&mut reports, vec![dependency("node", UnitState::Started)]).await;
    graph.complete("node").unwrap();
    assert_eq!(hang_guard(waiter).await.unwrap(), Ok(StartOutcome::Started));
    assert_eq!(graph.state("claude"), Some(UnitState::Started));
    assert_eq!(reports.recv().await, None, "no report after the start");
    assert_eq!(graph.parked_waiters(), 0);
}

#[tokio::test]
async fn start_of_a_ready_unit_starts_without_reporting_or_parking() {
    let graph = Graph::new();
    graph.register("dep").unwrap();
    graph.try_start("dep").unwrap();
    graph.complete("dep").unwrap();
    graph.want("a", &["dep"]).unwrap();
    let outcome = graph
        .start("a", None, |unmet| panic!("reported {unmet:?}"))
        .await;
    assert_eq!(outcome, Ok(StartOutcome::Started));
    // A new name is registered and started.
    assert_eq!(
        graph.start("fresh", None, |_| panic!("blocked")).await,
        Ok(StartOutcome::Started)
    );
    assert_eq!(graph.state("fresh"), Some(UnitState::Started));
    assert_eq!(graph.parked_waiters(), 0);
}

#[tokio::test]
async fn start_refuses_at_once_what_try_start_refuses() {
    let graph = Graph::new();
    graph.try_start("s").unwrap();
    assert_eq!(
        graph.start("s", None, |_| {}).await,
        Err(graph.try_start("s").unwrap_err())
    );
    assert!(matches!(
        graph.start("", None, |_| {}).await,
        Err(GraphError::InvalidName {
            rule: NameRule::Empty,
            ..
        })
    ));
}

#[tokio::test]
async fn start_ends_with_the_root_failure_when_a_dependency_fails_while_waiting() {
    let graph = Graph::new();
    graph.want("app", &["db"]).unwrap();
    graph.want("db", &["disk"]).unwrap();
    let (waiter, mut reports) = spawn_start(&graph, "app");
    assert!(reports.recv().await.is_some());
    graph.fail("disk", "no space").unwrap();
    assert_eq!(
        hang_guard(waiter).await.unwrap(),
        Err(GraphError::DependencyFailed {
            unit: name("app"),
            dependency: name("disk"),
            reason: "no space".to_owned(),
        })
    );
    assert_eq!(graph.parked_waiters(), 0);
}

#[tokio::test(start_paused = true)]
async fn start_times_out_with_the_unmet_dependencies() {
    let graph = Graph::new();
    graph.want("a", &["b", "c"]).unwrap();
    graph.register("c").unwrap();
    graph.try_start("c").unwrap();
    graph.complete("c").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let outcome = hang_guard(graph.start("a", Some(deadline), |_| {})).await;
    assert_eq!(
        outcome,
        Ok(StartOutcome::TimedOut {
            unmet: vec![dependency("b", UnitState::Unknown)],
        })
    );
    assert_eq!(graph.state("a"), Some(UnitState::Pending));
    assert_eq!(graph.parked_waiters(), 0);
}

#[tokio::test]
async fn a_deadline_already_passed_times_out_a_blocked_start_but_not_a_ready_one() {
    let graph = Graph::new();
    graph.want("blocked", &["b"]).unwrap();
    let past = Instant::now();
    assert_eq!(
        graph.start("blocked", Some(past), |_| {}).await,
        Ok(StartOutcome::TimedOut {
            unmet: vec![dependency("b", UnitState::Unknown)],
        })
    );
    graph.register("ready").unwrap();
    assert_eq!(
        graph.start("ready", Some(past), |_| {}).await,
        Ok(StartOutcome::Started)
    );
}

#[tokio::test]
async fn only_one_of_many_concurrent_starts_of_a_unit_wins() {
    let graph = Graph::new();
    graph.want("a", &["gate"]).unwrap();
    let waiters: Vec<_> = (0..8).map(|_| spawn_start(&graph, "a").0).collect();
    until_parked(&graph, 8).await;
    graph.try_start("gate").unwrap();
    graph.complete("gate").unwrap();
    let mut started = 0;
    for waiter in waiters {
        match hang_guard(waiter).await.unwrap() {
            Ok(StartOutcome::Started) => started += 1,
            Err(GraphError::WrongState {
                state: UnitState::Started,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
    assert_eq!(graph.parked_waiters(), 0);
}

// ---- wait_ready ----

#[tokio::test]
async fn wait_ready_ends_when_every_dependency_completed_without_starting() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    let waiter = {
        let graph = graph.clone();
        tokio::spawn(async move { graph.wait_ready("a", None).await })
    };
    until_parked(&graph, 1).await;
    graph.try_start("b").unwrap();
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "a started dependency is not enough");
    graph.complete("b").unwrap();
    assert_eq!(hang_guard(waiter).await.unwrap(), Ok(ReadyOutcome::Ready));
    assert_eq!(graph.state("a"), Some(UnitState::Pending));
    assert_eq!(graph.wait_ready("a", None).await, Ok(ReadyOutcome::Ready));
    assert_eq!(graph.parked_waiters(), 0);
}

#[tokio::test]
async fn wait_ready_reports_the_root_of_a_dependency_failure() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    graph.want("b", &["c"]).unwrap();
    let waiter = {
        let graph = graph.clone();
        tokio::spawn(async move { graph.wait_ready("a", None).await })
    };
    until_parked(&graph, 1).await;
    graph.fail("c", "lost").unwrap();
    let failed = Ok(ReadyOutcome::DependencyFailed {
        dependency: name("c"),
        reason: "lost".to_owned(),
    });
    assert_eq!(hang_guard(waiter).await.unwrap(), failed);
    // And at once for a unit already failed by it.
    assert_eq!(graph.wait_ready("a", None).await, failed);
}

#[tokio::test(start_paused = true)]
async fn wait_ready_on_a_unit_that_failed_itself_ends_when_a_dependency_fails() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    graph.fail("a", "gave up").unwrap();
    let waiter = {
        let graph = graph.clone();
        tokio::spawn(async move { graph.wait_ready("a", None).await })
    };
    until_parked(&graph, 1).await;
    graph.fail("b", "broke").unwrap();
    assert_eq!(
        hang_guard(waiter).await.unwrap(),
        Ok(ReadyOutcome::DependencyFailed {
            dependency: name("b"),
            reason: "broke".to_owned(),
        })
    );
}

#[tokio::test(start_paused = true)]
async fn wait_ready_times_out_with_the_unmet_dependencies() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    graph.try_start("b").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    assert_eq!(
        hang_guard(graph.wait_ready("a", Some(deadline))).await,
        Ok(ReadyOutcome::TimedOut {
            unmet: vec![dependency("b", UnitState::Started)],
        })
    );
    assert_eq!(graph.parked_waiters(), 0);
}

#[tokio::test]
async fn wait_ready_needs_a_known_unit() {
    let graph = Graph::new();
    assert_eq!(
        graph.wait_ready("nobody", None).await,
        Err(GraphError::NoSuchUnit {
            unit: name("nobody"),
        })
    );
    assert_eq!(graph.state("nobody"), None);
    assert!(matches!(
        graph.wait_ready(&"x".repeat(256), None).await,
        Err(GraphError::InvalidName {
            rule: NameRule::TooLong,
            ..
        })
    ));
}

// ---- wait_for ----

fn spawn_wait_for(
    graph: &Graph,
    unit: &'static str,
    target: WaitTarget,
) -> tokio::task::JoinHandle<Result<WaitOutcome, GraphError>> {
    let graph = graph.clone();
    tokio::spawn(async move { graph.wait_for(unit, target, None).await })
}

#[tokio::test]
async fn wait_for_started_and_completed() {
    let graph = Graph::new();
    graph.register("x").unwrap();
    let until_started = spawn_wait_for(&graph, "x", WaitTarget::Started);
    let until_completed = spawn_wait_for(&graph, "x", WaitTarget::Completed);
    until_parked(&graph, 2).await;
    graph.try_start("x").unwrap();
    assert_eq!(
        hang_guard(until_started).await.unwrap(),
        Ok(WaitOutcome::Reached(UnitState::Started))
    );
    until_parked(&graph, 1).await;
    graph.complete("x").unwrap();
    assert_eq!(
        hang_guard(until_completed).await.unwrap(),
        Ok(WaitOutcome::Reached(UnitState::Completed))
    );
    // A completed unit has also reached `started`.
    assert_eq!(
        graph.wait_for("x", WaitTarget::Started, None).await,
        Ok(WaitOutcome::Reached(UnitState::Completed))
    );
    assert_eq!(graph.parked_waiters(), 0);
}

#[tokio::test]
async fn wait_for_ends_with_the_failure() {
    let graph = Graph::new();
    graph.want("x", &["dep"]).unwrap();
    let waiter = spawn_wait_for(&graph, "x", WaitTarget::Completed);
    until_parked(&graph, 1).await;
    graph.fail("dep", "crashed").unwrap();
    assert_eq!(
        hang_guard(waiter).await.unwrap(),
        Ok(WaitOutcome::Failed(Failure {
            reason: "dependency dep failed".to_owned(),
            cause: Some(name("dep")),
            cause_reason: Some("crashed".to_owned()),
        }))
    );
    assert_eq!(
        graph.wait_for("dep", WaitTarget::Started, None).await,
        Ok(WaitOutcome::Failed(Failure {
            reason: "crashed".to_owned(),
            cause: None,
            cause_reason: None,
        }))
    );
}

#[tokio::test]
async fn wait_for_a_name_registered_only_later() {
    let graph = Graph::new();
    let waiter = spawn_wait_for(&graph, "later", WaitTarget::Completed);
    until_parked(&graph, 1).await;
    assert_eq!(graph.state("later"), Some(UnitState::Unknown));
    graph.register("later").unwrap();
    graph.try_start("later").unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !waiter.is_finished(),
        "registered and started is not completed"
    );
    graph.complete("later").unwrap();
    assert_eq!(
        hang_guard(waiter).await.unwrap(),
        Ok(WaitOutcome::Reached(UnitState::Completed))
    );
}

#[tokio::test(start_paused = true)]
async fn wait_for_times_out_with_the_state_then() {
    let graph = Graph::new();
    graph.try_start("x").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    assert_eq!(
        hang_guard(graph.wait_for("x", WaitTarget::Completed, Some(deadline))).await,
        Ok(WaitOutcome::TimedOut(UnitState::Started))
    );
    assert_eq!(graph.parked_waiters(), 0);
    assert!(matches!(
        graph.wait_for("a\u{1b}", WaitTarget::Started, None).await,
        Err(GraphError::InvalidName {
            rule: NameRule::ControlCharacter,
            ..
        })
    ));
}

// ---- no residue ----

#[tokio::test]
async fn a_dropped_wait_future_leaves_no_residue() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    let before = graph.list();
    {
        let start = pin!(graph.start("a", None, |_| {}));
        poll_once_pending(start).await;
        assert_eq!(graph.parked_waiters(), 1);
        let ready = pin!(graph.wait_ready("a", None));
        poll_once_pending(ready).await;
        let waited = pin!(graph.wait_for("b", WaitTarget::Completed, None));
        poll_once_pending(waited).await;
        assert_eq!(graph.parked_waiters(), 3);
    }
    assert_eq!(graph.parked_waiters(), 0);
    assert_eq!(graph.list(), before, "dropped waits changed the graph");

    // The unit is untouched by the abandoned `start`: a new one starts it normally.
    graph.try_start("b").unwrap();
    graph.complete("b").unwrap();
    assert_eq!(
        graph.start("a", None, |_| {}).await,
        Ok(StartOutcome::Started)
    );
}

#[tokio::test]
async fn cancelled_waiter_tasks_leave_no_residue_and_the_rest_still_wake() {
    let graph = Graph::new();
    graph.want("a", &["gate"]).unwrap();
    let units: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    for unit in &units {
        graph.want(unit, &["gate"]).unwrap();
    }
    let waiters: Vec<_> = units
        .into_iter()
        .enumerate()
        .map(|(i, unit)| {
            let graph = graph.clone();
            tokio::spawn(async move {
                match i % 3 {
                    0 => graph.wait_ready("a", None).await.map(drop),
                    1 => graph
                        .wait_for("gate", WaitTarget::Completed, None)
                        .await
                        .map(drop),
                    _ => graph.start(&unit, None, |_| {}).await.map(drop),
                }
            })
        })
        .collect();
    until_parked(&graph, 100).await;
    let (cancelled, kept): (Vec<_>, Vec<_>) = waiters
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    for (_, waiter) in &cancelled {
        waiter.abort();
    }
    for (_, waiter) in cancelled {
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    assert_eq!(graph.parked_waiters(), 50);
    graph.try_start("gate").unwrap();
    graph.complete("gate").unwrap();
    for (_, waiter) in kept {
        assert_eq!(hang_guard(waiter).await.unwrap(), Ok(()));
    }
    assert_eq!(graph.parked_waiters(), 0);
}
