//! How many connections exist: open (idle, in use, being cleaned) or being opened, and
//! how many may (`max_size`, changed at run time by `Pool::resize`). No slot is reserved
//! beyond the maximum; after a shrink the count comes down as connections return.

/// The pool's connection count.
pub(super) struct Slots {
    /// Connections open or being opened.
    size: usize,
    /// Held by listeners (`reserve_dedicated`), counted in `size`.
    dedicated: usize,
    /// Being opened by a connect task.
    connecting: usize,
    /// The most connections the pool may hold.
    max: usize,
}

impl Slots {
    pub(super) fn new(max: usize) -> Slots {
        Slots {
            size: 0,
            dedicated: 0,
            connecting: 0,
            max,
        }
    }

    #[inline]
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// A new maximum (`Pool::resize`).
    pub(super) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Whether the pool holds more connections than it may (after a shrink).
    #[inline]
    pub(super) fn over(&self) -> bool {
        self.size > self.max
    }

    #[inline]
    pub(super) fn size(&self) -> usize {
        self.size
    }

    #[inline]
    pub(super) fn connecting(&self) -> usize {
        self.connecting
    }

    /// Whether another connection fits under the maximum.
    #[inline]
    pub(super) fn has_room(&self) -> bool {
        self.size < self.max
    }

    /// Reserves a slot for a connection opened directly (`Pool::connect`).
    pub(super) fn reserve(&mut self) {
        self.size += 1;
    }

    /// Reserves a slot for a listener's connection of its own.
    pub(super) fn reserve_dedicated(&mut self) {
        self.size += 1;
        self.dedicated += 1;
    }

    /// A listener's slot given back.
    pub(super) fn release_dedicated(&mut self) {
        self.size -= 1;
        self.dedicated -= 1;
    }

    /// Connections open or being opened for borrowers: all but the dedicated ones.
    #[inline]
    pub(super) fn pooled(&self) -> usize {
        self.size - self.dedicated
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
