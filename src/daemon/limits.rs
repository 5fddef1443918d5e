//! The connection caps of the accept loop: at most `--max-connections`
//! open at once and `--max-connections-per-peer` from one TCP peer
//! address. A new connection over a cap takes the place of the oldest idle
//! one (connected, no request in progress), so a flood of idle
//! connections never keeps `/healthz` or a new run out; when every
//! connection is busy, the new one is refused at once (a 503 JSON written
//! without waiting, then closed).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// The answer written to a connection refused over the caps.
pub const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncontent-length: 94\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections; retry shortly\"}}";

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
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

/// An admitted connection: its requests in progress (`busy`), the token
/// cancelled when a newer connection takes its place, and the guard that
/// frees its place when dropped.
pub struct Admitted {
    /// Requests in progress; 0 is idle.
    pub busy: Arc<AtomicUsize>,
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

    /// Evicts the oldest idle connection (of `peer` when given); false
    /// when none is idle.
    fn evict_oldest_idle(&mut self, peer: Option<IpAddr>) -> bool {
        let found = self.open.iter().find_map(|(id, entry)| {
            let mine = peer.is_none() || entry.peer == peer;
            (mine && entry.busy.load(Ordering::SeqCst) == 0).then_some(*id)
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
        let busy = Arc::new(AtomicUsize::new(0));
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
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// One more request in progress on the connection.
    pub fn new(busy: &Arc<AtomicUsize>) -> Busy {
        busy.fetch_add(1, Ordering::SeqCst);
        Busy(busy.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
