//! Tether patch: each socket's bounded packet queue (see TETHER-PATCH.md).
//!
//! It replaces a `tokio::sync::mpsc` channel. tokio's channel allocates its slots 32 at a time,
//! keeps up to three drained blocks for reuse and always holds its first block, so every socket
//! kept ~4 KiB of queue for as long as it lived, although an idle socket has nothing queued.
//! This queue is a `VecDeque` behind a mutex that lets go of its buffer when it drains after a
//! burst, so an idle socket holds only the small shared header.
//!
//! It has the channel's semantics as engineioxide used them: permits that reserve a place, one
//! receiver (serialised by the socket's `internal_rx` lock), `close()` from the receiving side,
//! after which sends fail, queued packets can still be received and `closed()` resolves.
//!
//! Its bound is a byte budget (`capacity`), not a number of packets (patch 5): an item costs
//! [`ITEM_OVERHEAD`] plus its [`Payload::payload_bytes`]; what is queued, reserved by permits
//! and held (taken by the websocket writer but not flushed yet) together stays within the
//! budget. An item that would take it past the budget is refused, except that an item that
//! finds nothing else queued, reserved or held always enters (it alone may exceed the budget,
//! else an answer larger than the budget could never be delivered, and its client would
//! reconnect and ask again forever). So a queue holds at most `max(capacity, one item)`.
//! Once an item has been refused for lack of room (`Full`), the queue refuses everything
//! after it as if closed: the socket is being closed, and a later packet must not reach the
//! client after one that was dropped (its client restores from the newest it holds).
//!
//! It also holds the socket's volatile packet, which was a `tokio::sync::watch` channel of its
//! own (~0.5 KiB per socket). A volatile packet is taken only when the connection can take it
//! now (patch 6): when nothing is queued, reserved or held and no volatile packet waits yet;
//! otherwise it is dropped. So at most one waits, outside the budget, until the receiver takes
//! it; once the websocket writer has taken it, it is held (and counted) until flushed like any
//! packet, so that the next one finds the connection busy while it does not take it.

use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use tokio::{
    sync::{
        Notify,
        mpsc::error::{SendError, TrySendError},
    },
    time::Instant,
};

/// A drained buffer up to this capacity is kept: a socket sending one packet at a time never
/// reallocates, and an idle one holds at most this many slots.
const KEPT_CAPACITY: usize = 4;

/// What every queued item costs besides its payload: its slot, the payload's allocation header
/// and the allocator's rounding, roughly. It also bounds a flood of empty packets. A permit
/// reserves this much until it sends.
pub(crate) const ITEM_OVERHEAD: usize = 64;

/// What an item carries, in bytes, for the budget.
pub(crate) trait Payload {
    fn payload_bytes(&self) -> usize;
}

fn cost<T: Payload>(item: &T) -> usize {
    ITEM_OVERHEAD.saturating_add(item.payload_bytes())
}

struct State<T> {
    items: VecDeque<T>,
    /// The volatile packet not received yet (it was taken while nothing else waited).
    volatile: Option<T>,
    /// Bytes of the queued items.
    queued: usize,
    /// Bytes held by permits that have not sent yet (`ITEM_OVERHEAD` each).
    reserved: usize,
    /// Bytes of items taken with `*_held` and not released yet: written to a connection that
    /// has not taken them yet.
    held: usize,
    /// Since when something has been queued or held without any progress (an item taken or
    /// released); `None` while nothing is.
    waiting_since: Option<Instant>,
    closed: bool,
    /// An item was refused for lack of room: nothing enters any more (but what is queued can
    /// still be received).
    overflowed: bool,
    /// The receiver waiting for a packet, if it is waiting.
    rx_waker: Option<Waker>,
    /// A `send` is waiting for room.
    room_wanted: bool,
}

impl<T> State<T> {
    /// Closed, or overflowed: sends fail as on a closed queue.
    fn refuses(&self) -> bool {
        self.closed || self.overflowed
    }

    /// Bytes counted against the budget.
    fn used(&self) -> usize {
        self.queued + self.reserved + self.held
    }

    /// Whether an item costing `cost` fits: within the budget, or alone.
    fn admits(&self, cost: usize, capacity: usize) -> bool {
        let used = self.used();
        used == 0 || used.saturating_add(cost) <= capacity
    }

    /// Something was taken or released: the wait, if anything still waits, starts again now.
    fn progressed(&mut self) {
        self.waiting_since = (!self.items.is_empty() || self.held > 0).then(Instant::now);
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The byte budget.
    capacity: usize,
    /// Wakes `closed()` waiters.
    on_close: Notify,
    /// Wakes `send` waiters when room frees up.
    on_room: Notify,
}

/// The sending half: cloneable; only `send` waits (for room), the rest never waits.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// A reserved place in the queue (`ITEM_OVERHEAD` bytes), released when dropped unused.
pub(crate) struct Permit<'a, T> {
    shared: &'a Shared<T>,
}

/// A queue bounded by a budget of `capacity` bytes (queued plus reserved plus held).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "a queue needs a budget");
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            volatile: None,
            queued: 0,
            reserved: 0,
            held: 0,
            waiting_since: None,
            closed: false,
            overflowed: false,
            rx_waker: None,
            room_wanted: false,
        }),
        capacity,
        on_close: Notify::new(),
        on_room: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock was held cannot leave the state half-changed: every critical
        // section below is a single push, pop or counter update.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake_rx(mut state: MutexGuard<'_, State<T>>) {
        let waker = state.rx_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Room was freed: wakes a waiting `send`, if there is one.
    fn freed(&self, state: &mut State<T>) {
        if std::mem::take(&mut state.room_wanted) {
            self.on_room.notify_waiters();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Payload> Sender<T> {
    /// Queues `item` if it fits the budget and the queue is open. `Full` once, then `Closed`.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if state.refuses() {
            return Err(TrySendError::Closed(item));
        }
        let cost = cost(&item);
        if !state.admits(cost, self.shared.capacity) {
            state.overflowed = true;
            return Err(TrySendError::Full(item));
        }
        self.shared.push(state, item, cost);
        Ok(())
    }

    /// Queues `item`, waiting for room if it does not fit yet.
    pub(crate) async fn send(&self, item: T) -> Result<(), SendError<T>> {
        let cost = cost(&item);
        loop {
            let mut room = pin!(self.shared.on_room.notified());
            room.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if state.refuses() {
                    return Err(SendError(item));
                }
                if state.admits(cost, self.shared.capacity) {
                    self.shared.push(state, item, cost);
                    return Ok(());
                }
                state.room_wanted = true;
            }
            room.await;
        }
    }

    /// Reserves a place for one item (`ITEM_OVERHEAD` bytes; the item's real cost is charged
    /// when the permit sends). `Full` once, then `Closed`.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let mut state = self.shared.lock();
        if state.refuses() {
            return Err(TrySendError::Closed(()));
        }
        if !state.admits(ITEM_OVERHEAD, self.shared.capacity) {
            state.overflowed = true;
            return Err(TrySendError::Full(()));
        }
        state.reserved += ITEM_OVERHEAD;
        Ok(Permit {
            shared: &self.shared,
        })
    }

    /// Sets the volatile packet if the connection can take it now: nothing is queued, reserved
    /// or held (written and not flushed yet), and no volatile packet waits. Otherwise it is
    /// dropped, never queued nor kept: false, as once closed (or overflowed).
    pub(crate) fn send_volatile(&self, item: T) -> bool {
        let mut state = self.shared.lock();
        if state.refuses() || state.used() > 0 || state.volatile.is_some() {
            return false;
        }
        state.volatile = Some(item);
        Shared::wake_rx(state);
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Since when something has been queued or held with nothing taken or released: how long
    /// the other end has not been reading. `None` while nothing waits.
    pub(crate) fn waiting_since(&self) -> Option<Instant> {
        self.shared.lock().waiting_since
    }

    /// How many items are queued (not taken yet).
    #[cfg(test)]
    pub(crate) fn queued_items(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Resolves once the receiving side has closed the queue.
    pub(crate) async fn closed(&self) {
        let mut notified = pin!(self.shared.on_close.notified());
        loop {
            // Registered before the check, so a close in between still wakes us.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.as_mut().await;
            notified.set(self.shared.on_close.notified());
        }
    }
}

impl<T: Payload> Permit<'_, T> {
    /// Queues `item` in the reserved place, charging its real cost. If it does not fit the
    /// budget (it is larger than the reservation and the rest of the budget, and not alone),
    /// it is handed back, for the caller to drop (and close the socket), and the queue
    /// overflows. After a close (or an overflow) the item is dropped, as a closed channel's
    /// would be.
    pub(crate) fn send(self, item: T) -> Result<(), T> {
        let shared = self.shared;
        std::mem::forget(self);
        let mut state = shared.lock();
        state.reserved -= ITEM_OVERHEAD;
        if state.refuses() {
            shared.freed(&mut state);
            return Ok(());
        }
        let cost = cost(&item);
        if !state.admits(cost, shared.capacity) {
            state.overflowed = true;
            shared.freed(&mut state);
            return Err(item);
        }
        shared.push(state, item, cost);
        Ok(())
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.reserved -= ITEM_OVERHEAD;
        self.shared.freed(&mut state);
    }
}

impl<T: Payload> Receiver<T> {
    /// The next packet, or `None` once the queue is closed and drained.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.poll_take(cx, false)
    }

    #[cfg(any(test, feature = "__test_harness"))]
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_take(cx, false)).await
    }

    /// The next packet if one is queued now.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        self.shared.pop(&mut self.shared.lock(), false)
    }

    /// Like `recv`, but the packet's bytes stay counted (held) until `release_held`: for a
    /// writer that hands packets to a connection which may not take them.
    pub(crate) async fn recv_held(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_take(cx, true)).await
    }

    /// Like `try_recv`, holding the packet's bytes until `release_held`.
    pub(crate) fn try_recv_held(&mut self) -> Option<T> {
        self.shared.pop(&mut self.shared.lock(), true)
    }

    /// The held packets went out: their bytes leave the budget.
    pub(crate) fn release_held(&mut self) {
        let mut state = self.shared.lock();
        if state.held == 0 {
            return;
        }
        state.held = 0;
        state.progressed();
        self.shared.freed(&mut state);
    }

    fn poll_take(&mut self, cx: &mut Context<'_>, hold: bool) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(item) = self.shared.pop(&mut state, hold) {
            return Poll::Ready(Some(item));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.rx_waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.rx_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T: Payload> Shared<T> {
    /// Queues `item`, which costs `cost` (the caller checked that it fits), and wakes the
    /// receiver.
    fn push(&self, mut state: MutexGuard<'_, State<T>>, item: T, cost: usize) {
        if state.waiting_since.is_none() {
            state.waiting_since = Some(Instant::now());
        }
        state.queued += cost;
        state.items.push_back(item);
        Self::wake_rx(state);
    }

    /// The next queued packet, else the volatile one. Its bytes leave the budget, or, with
    /// `hold`, stay counted as held (the volatile packet's too, from then on).
    fn pop(&self, state: &mut State<T>, hold: bool) -> Option<T> {
        let item = match state.items.pop_front() {
            Some(item) => {
                state.queued -= cost(&item);
                if state.items.is_empty() && state.items.capacity() > KEPT_CAPACITY {
                    // The burst is over: let go of its buffer.
                    state.items = VecDeque::new();
                }
                item
            }
            None => state.volatile.take()?,
        };
        if hold {
            state.held += cost(&item);
        }
        state.progressed();
        self.freed(state);
        Some(item)
    }
}

impl<T> Receiver<T> {
    /// Closes the queue: sends fail from now on, queued packets can still be received.
    pub(crate) fn close(&mut self) {
        let mut state = self.shared.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        // Waiting sends fail now.
        self.shared.freed(&mut state);
        drop(state);
        self.shared.on_close.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Sender")
            .field("queued", &state.items.len())
            .field("queued_bytes", &state.queued)
            .field("reserved_bytes", &state.reserved)
            .field("held_bytes", &state.held)
            .field("closed", &state.closed)
            .field("overflowed", &state.overflowed)
            .finish()
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A test item: its value is its payload size.
    impl Payload for u32 {
        fn payload_bytes(&self) -> usize {
            *self as usize
        }
    }

    const O: usize = ITEM_OVERHEAD;

    #[tokio::test]
    async fn packets_come_out_in_order_and_the_budget_counts_bytes_and_permits() {
        let (tx, mut rx) = channel::<u32>(3 * O + 100);
        tx.try_send(10).unwrap();
        let permit = tx.try_reserve().unwrap();
        tx.try_send(50).unwrap();
        permit.send(30).unwrap(); // in the permit's place: 3 * O + 90 bytes used
        assert!(matches!(tx.try_send(0), Err(TrySendError::Full(0))));
        assert_eq!(rx.recv().await, Some(10));
        assert_eq!(rx.try_recv(), Some(50));
        assert_eq!(rx.try_recv(), Some(30));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn the_budget_holds_to_the_byte() {
        let (tx, _rx) = channel::<u32>(3 * O + 100);
        tx.try_send(100).unwrap();
        tx.try_send(0).unwrap();
        let permit = tx.try_reserve().unwrap();
        permit.send(0).unwrap();
        assert!(matches!(tx.try_send(0), Err(TrySendError::Full(0))));

        let (tx, _rx) = channel::<u32>(2 * O + 100);
        tx.try_send(100).unwrap();
        tx.try_send(0).unwrap();
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
    }

    #[tokio::test]
    async fn after_an_overflow_nothing_more_enters_but_what_is_queued_still_comes_out() {
        let (tx, mut rx) = channel::<u32>(2 * O + 100);
        tx.try_send(1).unwrap();
        let permit = tx.try_reserve().unwrap();
        assert!(matches!(tx.try_send(100), Err(TrySendError::Full(100))));
        // The socket is closing: a later packet must not reach the client after a dropped one.
        assert_eq!(rx.try_recv(), Some(1));
        assert!(matches!(tx.try_send(0), Err(TrySendError::Closed(0))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
        permit.send(2).unwrap(); // dropped, as on a closed queue
        assert!(!tx.send_volatile(3));
        assert_eq!(rx.try_recv(), None);
        assert!(!tx.is_closed(), "closed by the receiving side only");
    }

    #[tokio::test]
    async fn a_permit_whose_item_does_not_fit_hands_it_back() {
        let (tx, mut rx) = channel::<u32>(2 * O + 10);
        let permit = tx.try_reserve().unwrap();
        tx.try_send(10).unwrap();
        assert_eq!(permit.send(11), Err(11));
        assert!(matches!(tx.try_send(0), Err(TrySendError::Closed(0))));
        assert_eq!(rx.try_recv(), Some(10));
        assert_eq!(rx.try_recv(), None);
        assert_eq!(rx.shared.lock().used(), 0, "its reservation is given back");
    }

    #[tokio::test]
    async fn an_item_larger_than_the_budget_enters_only_an_empty_queue() {
        let (tx, _rx) = channel::<u32>(100);
        tx.try_send(1000).unwrap();
        assert!(matches!(tx.try_send(0), Err(TrySendError::Full(0))));

        let (tx, mut rx) = channel::<u32>(100);
        tx.try_send(1000).unwrap();
        assert_eq!(rx.recv_held().await, Some(1000));
        assert!(
            matches!(tx.try_send(0), Err(TrySendError::Full(0))),
            "held bytes count until released"
        );

        let (tx, _rx) = channel::<u32>(100);
        let _permit = tx.try_reserve().unwrap();
        assert!(
            matches!(tx.try_reserve(), Err(TrySendError::Full(()))),
            "a permit counts"
        );

        let (tx, mut rx) = channel::<u32>(100);
        tx.try_reserve().unwrap().send(5000).unwrap();
        assert_eq!(rx.try_recv(), Some(5000));
    }

    #[tokio::test]
    async fn held_bytes_count_until_released() {
        let (tx, mut rx) = channel::<u32>(2 * O + 20);
        tx.try_send(10).unwrap();
        tx.try_send(10).unwrap();
        assert_eq!(rx.recv_held().await, Some(10));
        assert_eq!(rx.try_recv_held(), Some(10));
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(0).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room while both are held");
        rx.release_held();
        waiting.await.unwrap().unwrap();
        // Taken without holding: out of the budget at once.
        assert_eq!(rx.try_recv(), Some(0));
        tx.try_send(10).unwrap();
        tx.try_send(10).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_since_says_how_long_nothing_was_taken() {
        let (tx, mut rx) = channel::<u32>(1 << 20);
        assert_eq!(tx.waiting_since(), None);
        let start = Instant::now();
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        tx.try_send(3).unwrap();
        assert_eq!(tx.waiting_since(), Some(start), "a send is no progress");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.waiting_since(), Some(start + Duration::from_millis(100)));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(tx.waiting_since(), None, "nothing waits");

        tx.try_send(4).unwrap();
        assert_eq!(rx.try_recv_held(), Some(4));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            tx.waiting_since(),
            Some(start + Duration::from_millis(100)),
            "a held packet waits for its connection"
        );
        rx.release_held();
        assert_eq!(tx.waiting_since(), None);
    }

    #[tokio::test]
    async fn an_unused_permit_gives_its_place_back() {
        let (tx, _rx) = channel::<u32>(2 * O + 1);
        let permit = tx.try_reserve().unwrap();
        tx.try_send(0).unwrap();
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(1).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(permit);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, mut rx) = channel::<u32>(1 << 10);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(7).unwrap();
        assert_eq!(waiting.await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn close_refuses_sends_keeps_queued_packets_and_wakes_closed() {
        let (tx, mut rx) = channel::<u32>(1 << 10);
        tx.try_send(1).unwrap();
        let permit = tx.try_reserve().unwrap();
        let watcher = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.closed().await })
        };
        tokio::task::yield_now().await;
        assert!(!tx.is_closed());
        rx.close();
        watcher.await.unwrap();
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
        permit.send(3).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_send_that_does_not_fit_waits_for_room_or_the_close() {
        let (tx, mut rx) = channel::<u32>(O + 10);
        tx.try_send(10).unwrap();
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(2).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(rx.recv().await, Some(10));
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.recv_held().await, Some(2));

        let held = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(3).await })
        };
        tokio::task::yield_now().await;
        assert!(!held.is_finished(), "held bytes take room too");
        rx.release_held();
        held.await.unwrap().unwrap();

        let refused = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(4).await })
        };
        tokio::task::yield_now().await;
        rx.close();
        assert_eq!(refused.await.unwrap().unwrap_err().0, 4);
    }

    #[tokio::test]
    async fn a_volatile_packet_is_taken_only_when_the_connection_can_take_it_now() {
        let (tx, mut rx) = channel::<u32>(O + 1);
        tx.try_send(1).unwrap();
        assert!(!tx.send_volatile(10), "something is queued: dropped");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), None, "and not kept for later");
        let permit = tx.try_reserve().unwrap();
        assert!(!tx.send_volatile(11), "a place is reserved: dropped");
        drop(permit);

        assert!(tx.send_volatile(12), "nothing waits: taken, outside the budget");
        assert!(!tx.send_volatile(13), "one waits already: dropped, not replacing it");
        tx.try_send(2).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(12));
        assert_eq!(rx.try_recv(), None);

        // Written to a connection that has not taken it: held, so the next one is dropped.
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv_held(), Some(3));
        assert!(!tx.send_volatile(14), "a written packet is not flushed yet: dropped");
        rx.release_held();
        assert!(tx.send_volatile(15));
        assert_eq!(rx.try_recv_held(), Some(15));
        assert!(tx.waiting_since().is_some(), "a held volatile packet waits too");
        assert!(!tx.send_volatile(16), "the volatile packet is not flushed yet: dropped");
        assert!(
            matches!(tx.try_send(O as u32), Err(TrySendError::Full(_))),
            "and it is counted while held"
        );
        rx.release_held();
        assert!(tx.waiting_since().is_none());

        let (tx, mut rx) = channel::<u32>(O + 1);
        let waiting = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::task::yield_now().await;
        assert!(tx.send_volatile(17));
        let (got, mut rx) = waiting.await.unwrap();
        assert_eq!(got, Some(17), "a volatile packet wakes the receiver");
        rx.close();
        assert!(!tx.send_volatile(18));
    }

    #[tokio::test]
    async fn a_drained_burst_lets_go_of_its_buffer() {
        let (tx, mut rx) = channel::<u32>(1 << 20);
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        assert!(rx.shared.lock().items.capacity() >= 500);
        for i in 0..500 {
            assert_eq!(rx.try_recv(), Some(i));
        }
        assert_eq!(rx.shared.lock().items.capacity(), 0);
        assert_eq!(rx.shared.lock().used(), 0);
        // One at a time keeps its small buffer.
        for i in 0..10 {
            tx.try_send(i).unwrap();
            assert_eq!(rx.try_recv(), Some(i));
        }
        assert!(rx.shared.lock().items.capacity() <= KEPT_CAPACITY);
    }
}
