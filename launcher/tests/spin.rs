//! The spinning runtime finds its epoll instance (its own test binary: no other test
//! makes one meanwhile).
use std::time::Duration;

#[test]
fn a_spinning_runtime_spins_and_runs_tasks() {
    let (rt, spins) = launcher::spin::runtime(1, Duration::from_micros(50)).unwrap();
    assert!(spins, "the runtime's epoll instance was not found");
    // Tasks run and timers fire on a spinning worker.
    let v = rt.block_on(async {
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            7
        })
        .await
        .unwrap()
    });
    assert_eq!(v, 7);
    let (_plain, spins) = launcher::spin::runtime(1, Duration::ZERO).unwrap();
    assert!(!spins);
}
