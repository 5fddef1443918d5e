//! The connection caps of the accept loop: at most `--max-connections`
//! open at once and `--max-connections-per-peer` from one TCP peer
//! address. A new connection over a cap takes the place of the oldest idle
//! one (connected, no request in progress for at least [`IDLE_GRACE`], so
//! a client reusing a kept-alive connection right after a response does
//! not find it closed under it), so a flood of idle connections never
//! keeps `/healthz` or a new run out for long; when no connection can make
//! room, the new one is refused at once (a 503 JSON written without
//! waiting, then closed).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The answer written to a connection refused over the caps.
pub const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncontent-length: 94\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections; retry shortly\"}}";

/// How long a connection must have been idle to make room for a new one.
pub const IDLE_GRACE: Duration = Duration::from_millis(250);

/// Milliseconds on the monotonic clock (for `idle_since`); read from the
/// kernel, so no process-wide epoch is kept.
fn now_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1000 + (now.tv_nsec as u64) / 1_000_000
}

/// A connection's activity: requests in progress, and since when it has
/// had none.
#[derive(Debug)]
pub struct Activity {
    busy: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn idle_for(&self, now: u64) -> Option<Duration> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::SeqCst);
        Some(Duration::from_millis(now.saturating_sub(since)))
    }
}

/// The table of open connections.
#[derive(Clone)]
pub struct Connections {
    table: Arc<Mutex<Table>>,
    max_total: usize,
    max_per_peer: usize,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
}

struct Entry {
    peer: Option<IpAddr>,
    busy: Arc<Activity>,
    evict: CancellationToken,
}

/// An admitted connection: its requests in progress (`busy`), the token
/// cancelled when a newer connection takes its place, and the guard that
/// frees its place when dropped.
pub struct Admitted {
    /// Its activity (see [`Busy`]).
    pub busy: Arc<Activity>,
    /// Cancelled when the connection is evicted.
    pub evict: CancellationToken,
    /// Frees the place.
    pub guard: Place,
}

/// A connection's place in the table, freed on drop.
pub struct Place {
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        table.remove(self.id);
    }
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(peer) = entry.peer {
            if let Some(count) = self.per_peer.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    self.per_peer.remove(&peer);
                }
            }
        }
        Some(entry)
    }

    /// Evicts the oldest connection idle for [`IDLE_GRACE`] (of `peer`
    /// when given); false when there is none.
    fn evict_oldest_idle(&mut self, peer: Option<IpAddr>) -> bool {
        let now = now_ms();
        let found = self.open.iter().find_map(|(id, entry)| {
            let mine = peer.is_none() || entry.peer == peer;
            let idle = entry.busy.idle_for(now).is_some_and(|d| d >= IDLE_GRACE);
            (mine && idle).then_some(*id)
        });
        match found.and_then(|id| self.remove(id)) {
            Some(entry) => {
                entry.evict.cancel();
                true
            }
            None => false,
        }
    }
}

impl Connections {
    /// An empty table with these caps (each at least 1).
    pub fn new(max_total: usize, max_per_peer: usize) -> Connections {
        Connections {
            table: Arc::default(),
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
        }
    }

    /// Admits a connection from `peer` (`None`: a unix socket, no per-peer
    /// cap), evicting the oldest idle one over a cap; `None` when it must
    /// be refused.
    pub fn admit(&self, peer: Option<IpAddr>) -> Option<Admitted> {
        let mut table = lock(&self.table);
        if let Some(addr) = peer {
            let from_peer = table.per_peer.get(&addr).copied().unwrap_or(0);
            if from_peer >= self.max_per_peer && !table.evict_oldest_idle(Some(addr)) {
                return None;
            }
        }
        if table.open.len() >= self.max_total && !table.evict_oldest_idle(None) {
            return None;
        }
        let id = table.next;
        table.next += 1;
        let busy = Arc::new(Activity {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms()),
        });
        let evict = CancellationToken::new();
        table.open.insert(
            id,
            Entry {
                peer,
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        if let Some(addr) = peer {
            *table.per_peer.entry(addr).or_default() += 1;
        }
        Some(Admitted {
            busy,
            evict,
            guard: Place {
                table: self.table.clone(),
                id,
            },
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.table).open.len()
    }
}

/// Marks a connection busy while it lives (a request, until its response
/// body is sent).
pub struct Busy(Arc<Activity>);

impl Busy {
    /// One more request in progress on the connection.
    pub fn new(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::SeqCst);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(now_ms(), Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a cap the oldest idle connection makes room; with all busy the
    /// new one is refused; closing frees places.
    #[test]
    fn evicts_oldest_idle_then_refuses() {
        let conns = Connections::new(2, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let first = conns.admit(Some(a)).unwrap();
        let second = conns.admit(Some(a)).unwrap();
        let _busy = Busy::new(&second.busy);
        // Idle, but not for long enough yet: no room.
        assert!(conns.admit(Some(a)).is_none());
        std::thread::sleep(IDLE_GRACE);
        let third = conns.admit(Some(a)).unwrap();
        assert!(first.evict.is_cancelled());
        assert!(!second.evict.is_cancelled());
        let _busy3 = Busy::new(&third.busy);
        assert!(conns.admit(Some(a)).is_none());
        drop(first);
        assert_eq!(conns.open(), 2);
        drop(third);
        assert!(conns.admit(None).is_some());
    }

    /// The refusal's content-length is its body's.
    #[test]
    fn refusal_is_well_formed() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
