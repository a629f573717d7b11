//! ## A [`Socket`] represents a client connection to the server
//!
//! It can be used to :
//! * Emit binary or string data
//! * Get a reference to the request made to connect to the socket.io server
//! * Close the connection
//!
//! #### Example :
//! ```rust
//! # use bytes::Bytes;
//! # use engineioxide::service::EngineIoService;
//! # use engineioxide::handler::EngineIoHandler;
//! # use engineioxide::{Socket, DisconnectReason, Str};
//! # use std::sync::{Mutex, Arc};
//! # use std::sync::atomic::{AtomicUsize, Ordering};
//! // Global state
//! #[derive(Debug, Default)]
//! struct MyHandler {
//!     user_cnt: AtomicUsize,
//! }
//!
//! // Socket state
//! #[derive(Debug, Default)]
//! struct SocketState {
//!     id: Mutex<String>,
//! }
//!
//! impl EngineIoHandler for MyHandler {
//!     type Data = SocketState;
//!
//!     fn on_connect(self: Arc<Self>, socket: Arc<Socket<SocketState>>) {
//!         // Get the request made to initialize the connection
//!         // and check that the authorization header is correct
//!         let connected = socket.req_parts.headers.get("Authorization")
//!             .map(|a| a == "mysuperpassword!").unwrap_or_default();
//!         // Close the socket if the authentication is invalid
//!         if !connected {
//!             socket.close(DisconnectReason::TransportError);
//!             return;
//!         }
//!
//!         let cnt = self.user_cnt.fetch_add(1, Ordering::Relaxed) + 1;
//!         // Emit string data to the client
//!         socket.emit(cnt.to_string()).ok();
//!     }
//!     fn on_disconnect(&self, socket: Arc<Socket<SocketState>>, reason: DisconnectReason) {
//!         let cnt = self.user_cnt.fetch_sub(1, Ordering::Relaxed) - 1;
//!     }
//!     fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<SocketState>>) {
//!         *socket.data.id.lock().unwrap() = msg.into(); // bind a provided user id to a socket
//!     }
//!     fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<SocketState>>) { }
//! }
//!
//! let svc = EngineIoService::new(Arc::new(MyHandler::default()));
//! ```
use std::{
    collections::VecDeque,
    fmt::Debug,
    sync::atomic::{AtomicBool, AtomicU8, Ordering},
};

use crate::{config::EngineIoConfig, errors::Error, heartbeat::HeartbeatState, queue};
use bytes::Bytes;
use engineioxide_core::{Packet, PacketBuf, ProtocolVersion, Str, TransportType};
use http::request::Parts;
use smallvec::{SmallVec, smallvec};
use tokio::sync::{Mutex, mpsc::error::TrySendError};

pub use engineioxide_core::Sid;
use tokio_util::sync::CancellationToken;

/// Tether patch: what the socket's packet queue (`queue`) carries (see TETHER-PATCH.md). It
/// used to be a `PacketBuf`, 168 bytes a slot. A text packet, nearly every packet sent, is
/// stored inline (a 40-byte slot); the rare rest (pings, binary attachments, upgrade packets)
/// is boxed.
pub(crate) enum Queued {
    /// One text packet.
    Message(Str),
    /// Any other packet or group of packets.
    Other(Box<PacketBuf>),
}

impl Queued {
    pub(crate) fn one(packet: Packet) -> Self {
        match packet {
            Packet::Message(msg) => Queued::Message(msg),
            packet => Queued::Other(Box::new(smallvec![packet])),
        }
    }

    fn many(mut packets: PacketBuf) -> Self {
        if packets.len() == 1 {
            Queued::one(packets.pop().unwrap())
        } else {
            Queued::Other(Box::new(packets))
        }
    }

    /// The packets, in order.
    pub(crate) fn into_packets(self) -> PacketBuf {
        match self {
            Queued::Message(msg) => smallvec![Packet::Message(msg)],
            Queued::Other(packets) => *packets,
        }
    }

    /// The first packet (every `Queued` holds at least one).
    fn into_first(self) -> Packet {
        match self {
            Queued::Message(msg) => Packet::Message(msg),
            Queued::Other(packets) => packets.into_iter().next().unwrap(),
        }
    }
}

/// Tether patch 5: what a queued item counts against the socket's byte budget (besides
/// `queue::ITEM_OVERHEAD`): a text packet's text; for the rest, the box and each packet's size.
impl queue::Payload for Queued {
    fn payload_bytes(&self) -> usize {
        match self {
            Queued::Message(msg) => msg.len(),
            Queued::Other(packets) => packets
                .iter()
                .fold(std::mem::size_of::<PacketBuf>(), |bytes, packet| {
                    bytes.saturating_add(packet.get_size_hint(false))
                }),
        }
    }
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queued::Message(msg) => f.debug_tuple("Message").field(msg).finish(),
            Queued::Other(packets) => f.debug_tuple("Other").field(packets).finish(),
        }
    }
}

/// A [`DisconnectReason`] represents the reason why a [`Socket`] was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client gracefully closed the connection
    TransportClose,
    /// The client sent multiple polling requests at the same time (it is forbidden according to the engine.io protocol)
    MultipleHttpPollingError,
    /// The client sent a bad request / the packet could not be parsed correctly
    PacketParsingError,
    /// An error occured in the transport layer
    /// (e.g. the client closed the connection without sending a close packet)
    TransportError,
    /// The client did not respond to the heartbeat
    HeartbeatTimeout,
    /// The server is being closed
    ClosingServer,
}

/// Convert an [`Error`] to a [`DisconnectReason`] if possible
/// This is used to notify the [`Handler`](crate::handler::EngineIoHandler) of the reason why a [`Socket`] was closed
/// If the error cannot be converted to a [`DisconnectReason`] it means that the error was not fatal and the [`Socket`] can be kept alive
impl From<&Error> for Option<DisconnectReason> {
    fn from(err: &Error) -> Self {
        use Error::*;
        match err {
            WsTransport(_) => Some(DisconnectReason::TransportError),
            BadPacket(_) | PacketParse(_) => Some(DisconnectReason::PacketParsingError),
            HeartbeatTimeout => Some(DisconnectReason::HeartbeatTimeout),
            _ => None,
        }
    }
}

/// Tether patch 5: why a socket is closed when what is queued for it would exceed its byte
/// budget (`max_buffer_size`), or when its connection stops taking what it is sent. Such a
/// client is not keeping up, as one that does not answer pings is not; before this patch it
/// ended the same way (a full queue refused the heartbeat's ping). No variant is added: that
/// would break socketioxide's exhaustive match on this enum.
pub(crate) const NOT_READING: DisconnectReason = DisconnectReason::HeartbeatTimeout;

/// A permit to emit a message to the client.
/// A permit holds a place in the internal channel to send one packet to the client.
///
/// (Tether patch 5: the place is `queue::ITEM_OVERHEAD` bytes of the socket's budget; the
/// packet's real size is charged when the permit is used. If it does not fit, the packet is
/// dropped and the socket closed, which is why the permit can reach the socket's close.)
pub struct Permit<'a> {
    inner: queue::Permit<'a, Queued>,
    close_fn: &'a (dyn Fn(Sid, DisconnectReason) + Send + Sync),
    sid: Sid,
}
impl Permit<'_> {
    /// Consume the permit and emit a message to the client.
    #[inline]
    pub fn emit(self, msg: Str) {
        self.send(Queued::Message(msg));
    }
    /// Consume the permit and emit a binary message to the client.
    #[inline]
    pub fn emit_binary(self, data: Bytes) {
        self.send(Queued::one(Packet::Binary(data)));
    }

    /// (Tether patch 5.) Queues `item`; over the budget, drops it and closes the socket. The
    /// queue's lock is released by then, and closing only removes the socket from the engine's
    /// map, cancels its transport and spawns the handler's `on_disconnect`: it cannot deadlock
    /// with the emit that called it.
    fn send(self, item: Queued) {
        let Permit {
            inner,
            close_fn,
            sid,
        } = self;
        if let Err(dropped) = inner.send(item) {
            drop(dropped);
            #[cfg(feature = "tracing")]
            tracing::debug!("socket over its send budget, closing it");
            close_fn(sid, NOT_READING);
        }
    }

    /// Consume the permit and emit a message with multiple binary data to the client.
    ///
    /// It can be used to ensure atomicity when sending a string packet with adjacent binary packets.
    pub fn emit_many(self, msg: Str, data: VecDeque<Bytes>) {
        let mut packets = SmallVec::with_capacity(data.len() + 1);
        packets.push(Packet::Message(msg));
        for d in data {
            packets.push(Packet::Binary(d));
        }
        self.send(Queued::many(packets));
    }

    /// Consume the permit and emit a message with multiple binary data to the client.
    ///
    /// It can be used to ensure atomicity when sending a string packet with adjacent binary packets.
    pub fn emit_many_binary(self, bin: Bytes, data: Vec<Bytes>) {
        let mut packets = SmallVec::with_capacity(data.len() + 1);
        packets.push(Packet::Binary(bin));
        for d in data {
            packets.push(Packet::Binary(d));
        }
        self.send(Queued::many(packets));
    }
}

#[derive(Debug)]
pub(crate) struct InternalRx {
    pub buffered_rx: queue::Receiver<Queued>,
    pub peeked_packet: Option<PacketBuf>,
}

impl InternalRx {
    fn new(buffered_rx: queue::Receiver<Queued>) -> Self {
        Self {
            buffered_rx,
            peeked_packet: None,
        }
    }
}

/// A [`Socket`] represents a client connection to the server.
/// It is agnostic to the [`TransportType`].
///
/// It handles :
/// * the packet communication between with the `Engine`
///   and the user defined [`Handler`](crate::handler::EngineIoHandler).
/// * the user defined [`Data`](crate::handler::EngineIoHandler::Data) bound to the socket.
/// * the heartbeat job that verify that the connection is still up by sending packets periodically.
pub struct Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    /// The socket id
    pub id: Sid,

    /// The protocol version used by the socket
    pub protocol: ProtocolVersion,

    /// The transport type represented as a bitfield
    /// It is represented as a bitfield to allow the use of an [`AtomicU8`] so it can be shared between threads
    /// without any mutex
    transport: AtomicU8,

    /// Whether the socket is currently upgrading to a new transport.
    upgrading: AtomicBool,

    /// Channel to send [`PacketBuf`] to the connection
    ///
    /// It is used and managed by the [`EngineIo`](crate::engine) struct depending on the transport type
    ///
    /// It is locked if [`EngineIo`](crate::engine) is currently reading from it :
    /// * In case of polling transport it will be locked and released for each request
    /// * In case of websocket transport it will always be locked until the connection is closed
    ///
    /// Closing behavior is driven by the [`Socket::cancellation_token`].
    ///
    /// The channel is made of a [`SmallVec`] of [`Packet`]s so that adjacent packets can be sent atomically.
    pub(crate) internal_rx: Mutex<InternalRx>,

    /// Channel to send [PacketBuf] to the internal connection
    pub(crate) internal_tx: queue::Sender<Queued>,

    /// Tether patch: the heartbeat's state, kept by the engine's heartbeat task.
    pub(crate) heartbeat: HeartbeatState,

    /// A cancellation token that will be triggered when the socket is being closed.
    pub(crate) cancellation_token: CancellationToken,

    /// Function to call when the socket is closed
    close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
    /// User data bound to the socket
    pub data: D,

    /// Http Request data used to create a socket
    pub req_parts: Parts,

    /// If the client supports binary packets (via polling XHR2)
    pub(crate) supports_binary: bool,
}

impl<D> Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    pub(crate) fn new(
        protocol: ProtocolVersion,
        transport: TransportType,
        config: &EngineIoConfig,
        req_parts: Parts,
        close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
        supports_binary: bool,
    ) -> Self {
        let (internal_tx, internal_rx) = queue::channel(config.max_buffer_size);

        Self {
            id: crate::sid_tag::new_sid(),
            protocol,
            transport: AtomicU8::new(transport as u8),
            upgrading: AtomicBool::new(false),

            internal_rx: Mutex::new(InternalRx::new(internal_rx)),
            internal_tx,

            heartbeat: HeartbeatState::new(),
            cancellation_token: CancellationToken::new(),

            close_fn,

            data: D::default(),
            req_parts,

            supports_binary,
        }
    }

    /// Sends a packet to the connection.
    ///
    /// (Tether patch 5: if it does not fit the socket's byte budget, the socket is closed.)
    pub(crate) fn send(&self, packet: Packet) -> Result<(), TrySendError<Packet>> {
        #[cfg(feature = "tracing")]
        tracing::debug!(?packet, "sending packet");

        self.internal_tx
            .try_send(Queued::one(packet))
            .map_err(|p| match p {
                TrySendError::Full(p) => {
                    self.close_over_budget();
                    TrySendError::Full(p.into_first())
                }
                TrySendError::Closed(p) => TrySendError::Closed(p.into_first()),
            })?;
        Ok(())
    }

    /// Tether patch 5: what is queued for this socket would exceed its byte budget.
    fn close_over_budget(&self) {
        #[cfg(feature = "tracing")]
        tracing::debug!("socket over its send budget, closing it");
        self.close_now(NOT_READING);
    }

    /// Tether patch 5: closes the session without queueing a close packet first (for a socket
    /// whose connection does not take what it is sent).
    pub(crate) fn close_now(&self, reason: DisconnectReason) {
        (self.close_fn)(self.id, reason);
    }
    pub(crate) fn is_upgrading(&self) -> bool {
        self.upgrading.load(Ordering::Relaxed)
    }
    pub(crate) fn start_upgrade(&self) {
        self.upgrading.store(true, Ordering::Relaxed);
    }

    /// Tether patch: a ping or pong from the client, for the heartbeat (v4: the answer to
    /// the server's ping; v3: the client's ping, answered here).
    pub(crate) fn on_heartbeat_packet(&self, _packet: &Packet) {
        #[cfg(feature = "v3")]
        if self.protocol == ProtocolVersion::V3 && matches!(_packet, Packet::Ping) {
            if self
                .internal_tx
                .try_send(Queued::one(Packet::Pong))
                .is_err()
            {
                self.close(DisconnectReason::HeartbeatTimeout);
                return;
            }
        }
        self.heartbeat.heard();
    }

    /// Returns true if the [`Socket`] has a websocket [`TransportType`]
    pub(crate) fn is_ws(&self) -> bool {
        self.transport.load(Ordering::Relaxed) == TransportType::Websocket as u8
    }
    /// returns true if the [`Socket`] has an HTTP [`TransportType`]
    pub(crate) fn is_http(&self) -> bool {
        self.transport.load(Ordering::Relaxed) == TransportType::Polling as u8
    }

    /// Sets the [`TransportType`] to WebSocket
    /// Used when the client upgrade the connection from HTTP to WebSocket
    pub(crate) fn upgrade_to_websocket(&self) {
        self.upgrading.store(false, Ordering::Relaxed);
        self.transport
            .store(TransportType::Websocket as u8, Ordering::Relaxed);
    }

    /// Returns the current [`TransportType`] of the [`Socket`]
    pub fn transport_type(&self) -> TransportType {
        TransportType::from(self.transport.load(Ordering::Relaxed))
    }

    /// Reserve `n` permits to emit multiple messages and ensure that there is enough
    /// space in the internal chan.
    ///
    /// If the internal chan is full, the function will return a [`TrySendError::Full`] error.
    /// If the socket is closed, the function will return a [`TrySendError::Closed`] error.
    ///
    /// (Tether patch 5: "full" means the socket's byte budget is spent, and the socket is
    /// closed.)
    #[inline]
    pub fn reserve(&self) -> Result<Permit<'_>, TrySendError<()>> {
        let permit = match self.internal_tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => {
                self.close_over_budget();
                return Err(TrySendError::Full(()));
            }
            Err(closed) => return Err(closed),
        };
        Ok(Permit {
            inner: permit,
            close_fn: &*self.close_fn,
            sid: self.id,
        })
    }

    /// Emits a message to the client.
    ///
    /// If the transport is in websocket mode, the message is directly sent as a text frame.
    ///
    /// If the transport is in polling mode, the message is buffered and sent as a text frame to the next polling request.
    ///
    /// ⚠️ If the buffer is full or the socket is disconnected, an error will be returned with the original data
    /// (Tether patch 5: the buffer is a byte budget; when it is spent the socket is also closed.)
    pub fn emit(&self, msg: impl Into<Str>) -> Result<(), TrySendError<Str>> {
        self.send(Packet::Message(msg.into())).map_err(|e| match e {
            TrySendError::Full(p) => TrySendError::Full(p.into_message()),
            TrySendError::Closed(p) => TrySendError::Closed(p.into_message()),
        })
    }

    /// Immediately closes the socket and the underlying connection.
    /// The socket will be removed from the `Engine` and the [`Handler`](crate::handler::EngineIoHandler) will be notified.
    #[cfg_attr(feature = "tracing", tracing::instrument(skip(self)))]
    pub fn close(&self, reason: DisconnectReason) {
        // Try to send a close packet is the connection is still operational.
        // (Tether patch 5: straight to the queue; a full one would close the socket again.)
        self.internal_tx.try_send(Queued::one(Packet::Close)).ok();

        (self.close_fn)(self.id, reason);
    }

    /// Returns true if the socket is closed
    /// It means that no more packets can be sent to the client
    pub fn is_closed(&self) -> bool {
        self.internal_tx.is_closed()
    }

    /// Wait for the socket to be fully closed
    pub async fn closed(&self) {
        self.internal_tx.closed().await
    }

    /// Emits a binary message to the client.
    ///
    /// If the transport is in websocket mode, the message is directly sent as a binary frame.
    ///
    /// If the transport is in polling mode, the message is buffered and sent as a text frame **encoded in base64** to the next polling request.
    ///
    /// ⚠️ If the buffer is full or the socket is disconnected, an error will be returned with the original data
    pub fn emit_binary<B: Into<Bytes>>(&self, data: B) -> Result<(), TrySendError<Bytes>> {
        if self.protocol == ProtocolVersion::V3 {
            self.send(Packet::BinaryV3(data.into()))
        } else {
            self.send(Packet::Binary(data.into()))
        }
        .map_err(|e| match e {
            TrySendError::Full(p) => TrySendError::Full(p.into_binary()),
            TrySendError::Closed(p) => TrySendError::Closed(p.into_binary()),
        })
    }

    /// Try to send a volatile message bypassing the internal buffer channel.
    /// Volatile messages may be dropped if the transport is not ready to
    /// receive them.
    ///
    /// Because volatile messages bypass the main mpsc buffer queue, they may
    /// arrive out of order relative to regular messages.
    ///
    /// Returns `true` if the message was queued for sending, `false` if it
    /// was dropped (channel full or transport shutting down).
    ///
    /// (Tether patch: "not ready" is anything queued, reserved or written and not
    /// flushed yet, or a volatile message not taken yet; see `queue`.)
    #[inline]
    pub fn emit_volatile(&self, msg: impl Into<Str>) -> bool {
        self.send_volatile(smallvec![Packet::Message(msg.into())])
    }

    /// Try to send a volatile binary message bypassing the internal buffer channel.
    /// Volatile messages may be dropped if the transport is not ready to
    /// receive them.
    ///
    /// Returns `true` if the message was queued for sending, `false` if it
    /// was dropped.
    #[inline]
    pub fn emit_binary_volatile<B: Into<Bytes>>(&self, data: B) -> bool {
        if self.protocol == ProtocolVersion::V3 {
            self.send_volatile(smallvec![Packet::BinaryV3(data.into())])
        } else {
            self.send_volatile(smallvec![Packet::Binary(data.into())])
        }
    }

    /// Try to send a volatile message with multiple adjacent binary payloads.
    /// The message and all binary payloads are sent atomically as a single
    /// volatile write.
    ///
    /// Returns `true` if the message was queued for sending, `false` if it
    /// was dropped.
    #[inline]
    pub fn emit_many_volatile(&self, msg: Str, data: VecDeque<Bytes>) -> bool {
        let mut packets = SmallVec::with_capacity(1 + data.len());
        packets.push(Packet::Message(msg));
        for bin in data {
            packets.push(Packet::Binary(bin));
        }
        self.send_volatile(packets)
    }

    /// (Tether patch: the volatile packet is held by the packet queue, see `queue`.)
    pub(crate) fn send_volatile(&self, packets: PacketBuf) -> bool {
        self.internal_tx.send_volatile(Queued::many(packets))
    }
}

impl<D: Default + Send + Sync + 'static> std::fmt::Debug for Socket<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("sid", &self.id)
            .field("protocol", &self.protocol)
            .field("conn", &self.transport)
            .field("internal_rx", &self.internal_rx)
            .field("internal_tx", &self.internal_tx)
            .field("heartbeat", &self.heartbeat)
            .field("cancellation_token", &self.cancellation_token)
            .field("req_data", &self.req_parts)
            .finish()
    }
}

#[doc(hidden)]
#[cfg(feature = "__test_harness")]
impl<D> Drop for Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    fn drop(&mut self) {
        #[cfg(feature = "tracing")]
        tracing::debug!("[sid={}] dropping socket", self.id);
    }
}

#[doc(hidden)]
#[cfg(feature = "__test_harness")]
impl<D> Socket<D>
where
    D: Default + Send + Sync + 'static,
{
    /// Create a dummy socket for testing purpose
    pub fn new_dummy(
        sid: Sid,
        close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
    ) -> std::sync::Arc<Socket<D>> {
        let (s, mut rx) = Socket::new_dummy_piped(sid, close_fn, 1024);
        tokio::spawn(async move {
            while let Some(_el) = rx.recv().await {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, ?_el, "emitting eio msg");
            }
        });
        s
    }

    /// Create a dummy socket for testing purpose with a
    /// receiver to get the packets sent to the client
    pub fn new_dummy_piped(
        sid: Sid,
        close_fn: Box<dyn Fn(Sid, DisconnectReason) + Send + Sync>,
        buffer_size: usize,
    ) -> (
        std::sync::Arc<Socket<D>>,
        tokio::sync::mpsc::Receiver<Packet>,
    ) {
        let (internal_tx, internal_rx) = queue::channel(buffer_size);

        let sock = Self {
            id: sid,
            protocol: ProtocolVersion::V4,
            transport: AtomicU8::new(TransportType::Websocket as u8),
            upgrading: AtomicBool::new(false),

            internal_rx: Mutex::new(InternalRx::new(internal_rx)),
            internal_tx,

            heartbeat: HeartbeatState::new(),
            cancellation_token: CancellationToken::new(),
            close_fn,

            data: D::default(),
            req_parts: http::Request::<()>::default().into_parts().0,

            supports_binary: true,
        };
        let sock = std::sync::Arc::new(sock);

        let (tx, rx) = tokio::sync::mpsc::channel(buffer_size);
        let sock_clone = sock.clone();
        tokio::spawn(async move {
            let mut internal_rx = sock_clone.internal_rx.try_lock().unwrap();
            while let Some(packets) = internal_rx.buffered_rx.recv().await {
                for packet in packets.into_packets() {
                    tx.send(packet).await.unwrap();
                }
            }
        });

        (sock, rx)
    }
}

#[cfg(test)]
mod tests {
    //! Tether patch 5: the byte budget closes the socket.
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::queue::ITEM_OVERHEAD;

    type Closes = Arc<Mutex<Vec<DisconnectReason>>>;

    /// A socket with a budget of `budget` bytes whose closes are recorded.
    fn budgeted(budget: usize) -> (Socket<()>, Closes) {
        let closes = Closes::default();
        let config = EngineIoConfig::builder().max_buffer_size(budget).build();
        let socket = Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &config,
            http::Request::<()>::default().into_parts().0,
            Box::new({
                let closes = closes.clone();
                move |_, reason| closes.lock().unwrap().push(reason)
            }),
            false,
        );
        (socket, closes)
    }

    fn text(bytes: usize) -> Str {
        Str::from("x".repeat(bytes))
    }

    fn queued(socket: &Socket<()>) -> Vec<Packet> {
        let mut rx = socket.internal_rx.try_lock().unwrap();
        std::iter::from_fn(|| rx.buffered_rx.try_recv())
            .flat_map(Queued::into_packets)
            .collect()
    }

    #[test]
    fn a_packet_costs_its_payload_and_the_overhead() {
        use queue::Payload;
        assert_eq!(Queued::Message(text(100)).payload_bytes(), 100);
        let binary = Queued::many(smallvec![
            Packet::Message(text(10)),
            Packet::Binary(Bytes::from(vec![0; 1000]))
        ]);
        assert_eq!(
            binary.payload_bytes(),
            std::mem::size_of::<PacketBuf>() + (1 + 10) + (1 + 1000)
        );
    }

    #[tokio::test]
    async fn an_emit_over_the_budget_is_refused_and_closes_the_socket() {
        let (socket, closes) = budgeted(2 * ITEM_OVERHEAD + 200);
        socket.emit(text(100)).unwrap();
        socket.emit(text(100)).unwrap();
        assert!(closes.lock().unwrap().is_empty());
        assert!(matches!(socket.emit(text(1)), Err(TrySendError::Full(_))));
        assert_eq!(*closes.lock().unwrap(), [NOT_READING]);
        assert_eq!(queued(&socket).len(), 2, "nothing more was queued");
    }

    #[tokio::test]
    async fn a_permit_whose_packet_exceeds_the_budget_drops_it_and_closes_the_socket() {
        let (socket, closes) = budgeted(2 * ITEM_OVERHEAD + 200);
        socket.emit(text(100)).unwrap();
        let permit = socket.reserve().expect("room for a permit");
        permit.emit(text(200));
        assert_eq!(*closes.lock().unwrap(), [NOT_READING]);
        assert!(matches!(&queued(&socket)[..], [Packet::Message(m)] if m.len() == 100));

        // One that fits goes in; a permit refused for lack of room closes the socket too.
        let (socket, closes) = budgeted(2 * ITEM_OVERHEAD + 200);
        socket.reserve().unwrap().emit(text(100));
        socket.emit(text(100)).unwrap();
        assert!(closes.lock().unwrap().is_empty());
        assert!(matches!(socket.reserve(), Err(TrySendError::Full(()))));
        assert_eq!(*closes.lock().unwrap(), [NOT_READING]);
    }

    #[tokio::test]
    async fn a_packet_alone_may_exceed_the_budget() {
        let (socket, closes) = budgeted(ITEM_OVERHEAD + 100);
        socket.reserve().unwrap().emit(text(10_000));
        assert!(closes.lock().unwrap().is_empty());
        assert_eq!(queued(&socket).len(), 1);
        socket.emit(text(10_000)).unwrap();
        assert!(closes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn closing_a_socket_whose_budget_is_spent_closes_it_once() {
        let (socket, closes) = budgeted(ITEM_OVERHEAD + 100);
        socket.emit(text(100)).unwrap();
        socket.close(DisconnectReason::ClosingServer);
        assert_eq!(
            *closes.lock().unwrap(),
            [DisconnectReason::ClosingServer],
            "the close packet that does not fit does not close it again"
        );
    }

    /// Closing from inside an emit goes through the engine: it takes the engine's socket map
    /// lock and spawns the handler's `on_disconnect`.
    #[tokio::test]
    async fn an_emit_over_the_budget_closes_the_session_in_the_engine() {
        use crate::{engine::EngineIo, handler::EngineIoHandler};

        #[derive(Debug)]
        struct Handler(tokio::sync::mpsc::UnboundedSender<DisconnectReason>);
        impl EngineIoHandler for Handler {
            type Data = ();
            fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
            fn on_disconnect(&self, _: Arc<Socket<()>>, reason: DisconnectReason) {
                self.0.send(reason).unwrap();
            }
            fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
            fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
        }

        let (tx, mut disconnects) = tokio::sync::mpsc::unbounded_channel();
        let config = EngineIoConfig::builder()
            .max_buffer_size(ITEM_OVERHEAD + 100)
            .build();
        let engine = Arc::new(EngineIo::new(Arc::new(Handler(tx)), config));
        let socket = engine.create_session(
            ProtocolVersion::V4,
            TransportType::Websocket,
            http::Request::<()>::default().into_parts().0,
            true,
        );
        socket.emit(text(100)).unwrap();
        assert!(socket.reserve().is_err());
        assert!(engine.get_socket(socket.id).is_none());
        let reason = tokio::time::timeout(std::time::Duration::from_secs(1), disconnects.recv())
            .await
            .expect("the handler hears of it")
            .unwrap();
        assert_eq!(reason, NOT_READING);
        assert!(socket.is_closed());
        assert!(matches!(socket.emit(text(1)), Err(TrySendError::Closed(_))));
    }
}
