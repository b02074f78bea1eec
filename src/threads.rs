//! Work split in two: one part on a scoped thread of its own beside the caller's part, joined
//! before the caller goes on, and run on the caller's thread instead when no thread is to be
//! had (a limit on threads), so a split never changes what is computed, only when.

use std::sync::{Mutex, PoisonError};

/// Runs `other` on a thread named `name` while `own` runs on this one, and returns what both
/// returned; `other` runs here, after `own`, when no thread can be started. A panic in either
/// goes on in the caller.
pub fn beside<A, B: Send>(
    name: &str,
    other: impl FnOnce() -> B + Send,
    own: impl FnOnce() -> A,
) -> (A, B) {
    // Shared, so that a thread that cannot be started leaves the work here.
    let work = Mutex::new(Some(other));
    let take = || work.lock().unwrap_or_else(PoisonError::into_inner).take();
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(scope, || take().map(|other| other()));
        let own = own();
        let done = match thread {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        };
        let other =
            done.unwrap_or_else(|| take().expect("no thread took the work, so it is still here")());
        (own, other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_run_and_return_in_place() {
        let (own, other) = beside(
            "test",
            || std::thread::current().name().map(String::from),
            || 1,
        );
        assert_eq!(own, 1);
        assert_eq!(other.as_deref(), Some("test"));
    }
}
