//! The tail of a stream past its cap: the last bytes, kept in memory
//! until the run ends.

/// The last `capacity` bytes pushed through it.
pub(super) struct TailRing {
    buf: Vec<u8>,
    capacity: usize,
    /// Where the next byte goes once the buffer is full.
    next: usize,
    /// Bytes pushed in all.
    pushed: u64,
}

impl TailRing {
    pub(super) fn new(capacity: usize) -> TailRing {
        TailRing {
            buf: Vec::new(),
            capacity,
            next: 0,
            pushed: 0,
        }
    }

    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        self.pushed += bytes.len() as u64;
        if self.capacity == 0 {
            return;
        }
        if bytes.len() >= self.capacity {
            bytes = &bytes[bytes.len() - self.capacity..];
            self.buf.clear();
            self.buf.extend_from_slice(bytes);
            self.next = 0;
            return;
        }
        let fill = (self.capacity - self.buf.len()).min(bytes.len());
        self.buf.extend_from_slice(&bytes[..fill]);
        bytes = &bytes[fill..];
        while !bytes.is_empty() {
            let n = (self.capacity - self.next).min(bytes.len());
            self.buf[self.next..self.next + n].copy_from_slice(&bytes[..n]);
            self.next = (self.next + n) % self.capacity;
            bytes = &bytes[n..];
        }
    }

    /// The kept bytes, oldest first, in one or two slices.
    pub(super) fn contents(&self) -> [&[u8]; 2] {
        [&self.buf[self.next..], &self.buf[..self.next]]
    }

    /// Bytes pushed but no longer kept.
    pub(super) fn dropped(&self) -> u64 {
        self.pushed - self.buf.len() as u64
    }
}
