//! Threads started before their work is known. A warm shim starts its
//! helper threads (control, signals, deadline) while it waits for its spec, so the
//! run's path hands each its work (one wake-up) instead of creating it (a
//! stack mapping and a clone each, competing with the command's exec for
//! the CPU). A parked thread whose work never comes ends when its
//! [`Parked`] is dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;

/// A started thread waiting for its input.
pub(super) struct Parked<T> {
    handoff: mpsc::Sender<T>,
    thread: JoinHandle<()>,
}

impl<T: Send + 'static> Parked<T> {
    /// Starts a thread that runs `work` once given its input.
    pub(super) fn start(work: impl FnOnce(T) + Send + 'static) -> Parked<T> {
        let (handoff, input) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Ok(input) = input.recv() {
                work(input);
            }
        });
        Parked { handoff, thread }
    }

    /// Hands the thread its input; its handle, to join it.
    pub(super) fn run(self, input: T) -> JoinHandle<()> {
        // The thread is alive until it has received: it cannot fail.
        let _ = self.handoff.send(input);
        self.thread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_thread_runs_its_work_with_the_input() {
        let (tx, rx) = mpsc::channel();
        let parked = Parked::start(move |n: u32| tx.send(n * 2).unwrap());
        parked.run(21).join().unwrap();
        assert_eq!(rx.recv().unwrap(), 42);
    }

    #[test]
    fn a_parked_thread_never_given_work_ends() {
        let (tx, rx) = mpsc::channel::<u32>();
        let parked = Parked::start(move |n: u32| tx.send(n).unwrap());
        let Parked { handoff, thread } = parked;
        drop(handoff);
        thread.join().unwrap();
        assert!(rx.recv().is_err(), "the work never ran");
    }
}
