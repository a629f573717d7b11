//! Tether patch: each socket's bounded packet queue (see TETHER-PATCH.md).
//!
//! It replaces a `tokio::sync::mpsc` channel. tokio's channel allocates its slots 32 at a time,
//! keeps up to three drained blocks for reuse and always holds its first block, so every socket
//! kept ~4 KiB of queue for as long as it lived, although an idle socket has nothing queued.
//! This queue is a `VecDeque` behind a mutex that lets go of its buffer when it drains after a
//! burst, so an idle socket holds only the small shared header.
//!
//! It has the channel's semantics as engineioxide used them: a bound on queued plus reserved
//! packets, permits that reserve a place, one receiver (serialised by the socket's
//! `internal_rx` lock), `close()` from the receiving side, after which sends fail, queued
//! packets can still be received and `closed()` resolves.
//!
//! It also holds the socket's volatile packet, which was a `tokio::sync::watch` channel of its
//! own (~0.5 KiB per socket): at most one, outside the bound, replaced by the next one, and
//! received after everything queued.

use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use tokio::sync::{
    Notify,
    mpsc::error::{SendError, TrySendError},
};

/// A drained buffer up to this capacity is kept: a socket sending one packet at a time never
/// reallocates, and an idle one holds at most this many slots.
const KEPT_CAPACITY: usize = 4;

struct State<T> {
    items: VecDeque<T>,
    /// The latest volatile packet not received yet.
    volatile: Option<T>,
    /// Places held by permits that have not sent yet.
    reserved: usize,
    closed: bool,
    /// The receiver waiting for a packet, if it is waiting.
    rx_waker: Option<Waker>,
    /// A `send` is waiting for room.
    room_wanted: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Wakes `closed()` waiters.
    on_close: Notify,
    /// Wakes `send` waiters when a place frees up.
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

/// A reserved place in the queue, released when dropped unused.
pub(crate) struct Permit<'a, T> {
    shared: &'a Shared<T>,
}

/// A bounded queue of at most `capacity` packets (queued plus reserved).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "a queue needs room for at least one packet");
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            volatile: None,
            reserved: 0,
            closed: false,
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

    /// Queues `item` (the caller holds a place for it) and wakes the receiver.
    fn push(&self, mut state: MutexGuard<'_, State<T>>, item: T) {
        state.items.push_back(item);
        Self::wake_rx(state);
    }

    fn wake_rx(mut state: MutexGuard<'_, State<T>>) {
        let waker = state.rx_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// A place was freed: wakes a waiting `send`, if there is one.
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

impl<T> Sender<T> {
    /// Queues `item` if there is room and the queue is open.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let state = self.shared.lock();
        if state.closed {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() + state.reserved >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        self.shared.push(state, item);
        Ok(())
    }

    /// Queues `item`, waiting for room if the queue is full.
    pub(crate) async fn send(&self, item: T) -> Result<(), SendError<T>> {
        loop {
            let mut room = pin!(self.shared.on_room.notified());
            room.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if state.closed {
                    return Err(SendError(item));
                }
                if state.items.len() + state.reserved < self.shared.capacity {
                    self.shared.push(state, item);
                    return Ok(());
                }
                state.room_wanted = true;
            }
            room.await;
        }
    }

    /// Reserves a place for one packet.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TrySendError::Closed(()));
        }
        if state.items.len() + state.reserved >= self.shared.capacity {
            return Err(TrySendError::Full(()));
        }
        state.reserved += 1;
        Ok(Permit {
            shared: &self.shared,
        })
    }

    /// Sets the volatile packet (replacing one not received yet). False once closed.
    pub(crate) fn send_volatile(&self, item: T) -> bool {
        let mut state = self.shared.lock();
        if state.closed {
            return false;
        }
        state.volatile = Some(item);
        Shared::wake_rx(state);
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
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

impl<T> Permit<'_, T> {
    /// Queues `item` in the reserved place. After a close the item is dropped, as a closed
    /// channel's would be.
    pub(crate) fn send(self, item: T) {
        let shared = self.shared;
        std::mem::forget(self);
        let mut state = shared.lock();
        state.reserved -= 1;
        if state.closed {
            shared.freed(&mut state);
        } else {
            shared.push(state, item);
        }
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.reserved -= 1;
        self.shared.freed(&mut state);
    }
}

impl<T> Receiver<T> {
    /// The next packet, or `None` once the queue is closed and drained.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(item) = self.shared.pop(&mut state) {
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

    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next packet if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        self.shared.pop(&mut self.shared.lock())
    }

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

impl<T> Shared<T> {
    /// The next queued packet, else the volatile one.
    fn pop(&self, state: &mut State<T>) -> Option<T> {
        let Some(item) = state.items.pop_front() else {
            return state.volatile.take();
        };
        if state.items.is_empty() && state.items.capacity() > KEPT_CAPACITY {
            // The burst is over: let go of its buffer.
            state.items = VecDeque::new();
        }
        self.freed(state);
        Some(item)
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
            .field("reserved", &state.reserved)
            .field("closed", &state.closed)
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
    use super::*;

    #[tokio::test]
    async fn packets_come_out_in_order_and_the_bound_counts_permits() {
        let (tx, mut rx) = channel::<u32>(3);
        tx.try_send(1).unwrap();
        let permit = tx.try_reserve().unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        permit.send(3);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn an_unused_permit_gives_its_place_back() {
        let (tx, _rx) = channel::<u32>(1);
        drop(tx.try_reserve().unwrap());
        tx.try_send(1).unwrap();
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, mut rx) = channel::<u32>(4);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(7).unwrap();
        assert_eq!(waiting.await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn close_refuses_sends_keeps_queued_packets_and_wakes_closed() {
        let (tx, mut rx) = channel::<u32>(4);
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
        permit.send(3);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_send_on_a_full_queue_waits_for_room_or_the_close() {
        let (tx, mut rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(2).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(rx.recv().await, Some(1));
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(2));

        tx.try_send(3).unwrap();
        let refused = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(4).await })
        };
        tokio::task::yield_now().await;
        rx.close();
        assert_eq!(refused.await.unwrap().unwrap_err().0, 4);
    }

    #[tokio::test]
    async fn the_volatile_packet_is_the_latest_one_and_comes_after_the_queue() {
        let (tx, mut rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        assert!(tx.send_volatile(10));
        assert!(tx.send_volatile(11), "outside the bound, replacing 10");
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(11));
        assert_eq!(rx.try_recv(), None);

        let waiting = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::task::yield_now().await;
        assert!(tx.send_volatile(12));
        let (got, mut rx) = waiting.await.unwrap();
        assert_eq!(got, Some(12), "a volatile packet wakes the receiver");
        rx.close();
        assert!(!tx.send_volatile(13));
    }

    #[tokio::test]
    async fn a_drained_burst_lets_go_of_its_buffer() {
        let (tx, mut rx) = channel::<u64>(1024);
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        assert!(rx.shared.lock().items.capacity() >= 500);
        for i in 0..500 {
            assert_eq!(rx.try_recv(), Some(i));
        }
        assert_eq!(rx.shared.lock().items.capacity(), 0);
        // One at a time keeps its small buffer.
        for i in 0..10 {
            tx.try_send(i).unwrap();
            assert_eq!(rx.try_recv(), Some(i));
        }
        assert!(rx.shared.lock().items.capacity() <= KEPT_CAPACITY);
    }
}
