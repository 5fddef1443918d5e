//! [`LiveMasker`]: a set of values that grows while streams use it (values
//! a run resolves after its start).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use super::{Masker, StreamMasker, MIN_MASKED_LEN};

/// A masker that takes more values while streams use it: values resolved
/// during a run. A stream picks them up at its next chunk (one atomic load
/// per chunk when nothing changed), so bytes read after [`LiveMasker::add`]
/// returns are masked with them.
#[derive(Clone)]
pub struct LiveMasker {
    pub(super) shared: Arc<LiveShared>,
}

pub(super) struct LiveShared {
    pub(super) generation: AtomicU64,
    pub(super) masker: Mutex<Masker>,
}

impl LiveMasker {
    /// Starts with these values.
    pub fn new(masker: Masker) -> LiveMasker {
        LiveMasker {
            shared: Arc::new(LiveShared {
                generation: AtomicU64::new(0),
                masker: Mutex::new(masker),
            }),
        }
    }

    /// Adds values (the set is rebuilt: values arrive a few at a time, a
    /// rebuild takes microseconds to a few milliseconds).
    pub fn add<I, V>(&self, values: I)
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut masker = lock(&self.shared.masker);
        let added: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .map(|v| Zeroizing::new(v.as_ref().to_vec()))
            .collect();
        let fresh = added.iter().any(|v| {
            v.len() >= MIN_MASKED_LEN
                && !masker.patterns.iter().any(|p| p.as_slice() == v.as_slice())
        });
        if !fresh {
            return;
        }
        *masker = masker.with_values(added.iter());
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// The values now.
    pub fn current(&self) -> Masker {
        lock(&self.shared.masker).clone()
    }

    /// A stream masker that takes up values added later.
    pub fn stream(&self) -> StreamMasker {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut stream = self.current().stream();
        stream.live = Some((self.clone(), generation));
        stream
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
