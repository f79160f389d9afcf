//! How many connections exist: open (idle, in use, being cleaned) or being opened. The
//! count never exceeds `max_size`, which is what a slot reserved before connecting
//! guarantees.

/// The pool's connection count.
#[derive(Default)]
pub(super) struct Slots {
    /// Connections open or being opened.
    size: usize,
    /// Being opened by a connect task.
    connecting: usize,
}

impl Slots {
    #[inline]
    pub(super) fn size(&self) -> usize {
        self.size
    }

    #[inline]
    pub(super) fn connecting(&self) -> usize {
        self.connecting
    }

    /// Whether another connection fits under `max`.
    #[inline]
    pub(super) fn has_room(&self, max: usize) -> bool {
        self.size < max
    }

    /// Reserves a slot for a connection opened directly (`Pool::connect`).
    pub(super) fn reserve(&mut self) {
        self.size += 1;
    }

    /// Reserves a slot for a connect task.
    pub(super) fn reserve_connect(&mut self) {
        self.size += 1;
        self.connecting += 1;
    }

    /// A connect task opened its connection: the slot now holds it.
    pub(super) fn connected(&mut self) {
        self.connecting -= 1;
    }

    /// A connect task gave up: its slot is free again.
    pub(super) fn abandon_connect(&mut self) {
        self.connecting -= 1;
        self.size -= 1;
    }

    /// `n` connections were closed.
    #[inline]
    pub(super) fn lost(&mut self, n: usize) {
        self.size -= n;
    }
}
