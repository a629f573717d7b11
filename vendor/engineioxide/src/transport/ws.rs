//! The ws transport module is responsible for handling websocket connections
//! The only public function is [`new_req`] which is used to upgrade a http request to a websocket connection
//!
//! Other functions are used internally to handle the websocket connection through tasks and channels
//! and to handle upgrade from polling to ws

use std::{future::Future, pin::pin, sync::Arc, time::Duration};

use futures_util::{
    SinkExt, StreamExt, TryStreamExt,
    stream::{SplitSink, SplitStream},
};
use http::{HeaderValue, Request, Response, StatusCode, request::Parts};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use tokio_util::future::FutureExt as _;

use engineioxide_core::{Packet, ProtocolVersion, Sid, Str, TransportType};

use crate::{
    DisconnectReason, Socket,
    body::ResponseBody,
    config::EngineIoConfig,
    engine::EngineIo,
    errors::Error,
    handler::EngineIoHandler,
    socket::{InternalRx, NOT_READING, Queued},
    transport::make_open_packet,
};

/// Create a response for websocket upgrade
fn ws_response<B>(ws_key: &HeaderValue) -> Response<ResponseBody<B>> {
    let derived = derive_accept_key(ws_key.as_bytes());
    let sec = derived.parse::<HeaderValue>().unwrap();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        )
        .header(http::header::SEC_WEBSOCKET_ACCEPT, sec)
        .body(ResponseBody::empty_response())
        .unwrap() // we are only using constants
}

/// Upgrade a websocket request to create a websocket connection.
///
/// If a sid is provided in the query it means that is is upgraded from an existing HTTP polling request.
/// In this case the http polling request is closed and the SID is kept for the websocket
pub fn new_req<R: Send + 'static, B, H: EngineIoHandler>(
    engine: Arc<EngineIo<H>>,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req: Request<R>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts.clone(), body);

    let ws_key = parts
        .headers
        .get("Sec-WebSocket-Key")
        .ok_or(Error::InvalidWebSocketKey)?
        .clone();

    tokio::spawn(async move {
        let conn = hyper::upgrade::on(req)
            .await
            .map(hyper_util::rt::TokioIo::new);

        let res = match conn {
            Ok(conn) => on_init(engine.clone(), conn, protocol, sid, parts).await,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("ws upgrade error: {}", _e);
                return;
            }
        };

        match res {
            Ok(_) => {
                // (Tether patch: `on_init` now returns once the reader and writer run.)
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws open")
            }
            Err(Error::MultipleWebsocketRequests) => {}
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed with error: {_e}");
                if let Some(sid) = sid {
                    engine.close_session(sid, DisconnectReason::TransportError);
                }
            }
        }
    });

    Ok(ws_response(&ws_key))
}

/// Handle a websocket connection upgrade
///
/// Sends an open packet if it is not an upgrade from a polling request
///
/// Read packets from the websocket and handle them, it will block until the connection is closed
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", name = "init_websocket", skip(engine, conn, req_data))
)]
pub async fn on_init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(engine.config.ws_read_buffer_size)
        .max_message_size(Some(engine.config.ws_max_message_size))
        .max_frame_size(Some(engine.config.ws_max_frame_size));

    let ws_init = move || WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config));
    let (socket, ws) = if let Some(sid) = sid {
        match engine.get_socket(sid) {
            None => return Err(Error::UnknownSessionID(sid)),
            Some(socket) if socket.is_ws() => return Err(Error::MultipleWebsocketRequests),
            Some(socket) => {
                let mut ws = ws_init().await;

                let upgrade_fut = upgrade_handshake::<H, S>(&socket, &mut ws);
                match tokio::time::timeout(engine.config.upgrade_timeout, upgrade_fut)
                    .with_cancellation_token(&socket.cancellation_token)
                    .await
                {
                    Some(Ok(res)) => res?,
                    Some(Err(_)) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "ws upgrade timed out, closing session");
                        engine.close_session(socket.id, DisconnectReason::TransportError);
                        return Err(Error::Upgrade);
                    }
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "socket is being closed");
                        return Err(Error::Upgrade);
                    }
                }
                (socket, ws)
            }
        }
    } else {
        let socket = engine.create_session(protocol, TransportType::Websocket, req_data, false);

        #[cfg(feature = "tracing")]
        tracing::debug!("new websocket connection");

        let mut ws = ws_init().await;
        init_handshake(socket.id, &mut ws, &engine.config).await?;
        engine.start_heartbeat(&socket);
        (socket, ws)
    };
    let (tx, rx) = ws.split();

    // Pipe between websocket and internal socket channel.
    let deadlines = WriteDeadlines::new(&engine.config);
    tokio::spawn(forward_to_socket::<H, S>(socket.clone(), tx, deadlines));

    // pipe between internal socket channel and websocket
    // (Tether patch: in a task of its own, so that this one, which carried the upgrade and the
    // handshake, ends here. A task is as large as its largest state for as long as it lives:
    // the reader kept the upgrade's timers and handshake futures' room, ~1.5 KiB per socket.)
    tokio::spawn(read_until_closed(engine, rx, socket));
    Ok(())
}

/// Reads the websocket until it closes or the session is cancelled, then closes the session.
async fn read_until_closed<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    rx: SplitStream<WebSocketStream<S>>,
    socket: Arc<Socket<H::Data>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match forward_to_handler(&engine, rx, &socket)
        .with_cancellation_token(&socket.cancellation_token)
        .await
    {
        Some(Err(ref e)) => {
            let reason =
                Option::<DisconnectReason>::from(e).unwrap_or(DisconnectReason::TransportError);

            #[cfg(feature = "tracing")]
            tracing::debug!("error when handling packet: {:?}", e);
            engine.close_session(socket.id, reason);
        }
        Some(Ok(())) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws transport was closed");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
        }
        None => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "socket is closing");
        }
    }
}

/// Forwards all packets received from a websocket to a EngineIo [`Socket`]
async fn forward_to_handler<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    mut rx: SplitStream<WebSocketStream<S>>,
    socket: &Arc<Socket<H::Data>>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Some(msg) = rx.try_next().await? {
        match msg {
            Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
                Packet::Close => {
                    #[cfg(feature = "tracing")]
                    tracing::debug!("[sid={}] closing session", socket.id);
                    engine.close_session(socket.id, DisconnectReason::TransportClose);
                    break;
                }
                p @ (Packet::Pong | Packet::Ping) => {
                    socket.on_heartbeat_packet(&p);
                    Ok::<(), Error>(())
                }
                Packet::Message(msg) => {
                    engine.handler.on_message(msg, socket.clone());
                    Ok(())
                }
                p => return Err(Error::BadPacket(p)),
            },
            Message::Binary(mut data) => {
                if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                    // The first byte is the message type, which we don't need.
                    data = data.split_off(1);
                }
                engine.handler.on_binary(data, socket.clone());
                Ok(())
            }
            Message::Close(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("websocket closed, closing session");
                engine.close_session(socket.id, DisconnectReason::TransportClose);
                break;
            }
            _ => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = ?socket.id, "unexpected ws message");
                Ok(())
            }
        }?
    }
    Ok(())
}

/// Tether patch 5: how long the websocket writer waits for the connection to take a write.
#[derive(Debug, Clone, Copy)]
struct WriteDeadlines {
    /// For each feed and flush: `ping_interval + ping_timeout`, the time in which the heartbeat
    /// closes a client that does not answer. A connection that takes nothing of a write for
    /// that long (its peer reads nothing: the kernel's send buffer is full) gets its session
    /// closed whatever pongs it sends, and the writer ends, dropping the connection. A feed
    /// waits only when tungstenite's write buffer is full (128 KiB), so a client must take at
    /// least that much, plus one message, in that time.
    write: Duration,
    /// Once the session is closing: `ping_timeout`, at most `CLOSING_AT_MOST`, for everything
    /// the writer still does (what was queued before the close, the closing flush and close).
    /// A client that takes nothing does not keep its connection for another full deadline,
    /// and the handler hears of the close once the writer has let go of the queue.
    closing: Duration,
}

/// The longest a closing session's writer goes on writing (see `WriteDeadlines::closing`).
const CLOSING_AT_MOST: Duration = Duration::from_secs(1);

impl WriteDeadlines {
    fn new(config: &EngineIoConfig) -> Self {
        Self {
            write: config.ping_interval + config.ping_timeout,
            closing: config.ping_timeout.min(CLOSING_AT_MOST),
        }
    }
}

/// What became of a write.
enum Write {
    Done,
    /// The connection took nothing of it for the write deadline (the session is open).
    Stalled,
    /// The session is closing and the closing deadline has passed.
    TooLate,
}

/// Tether patch 5: waits for `write`, at most the write deadline; once the session's token is
/// cancelled, at most until `closing` (set then to now + the closing deadline, for the rest of
/// the task). A write that completes at once still happens after the cancellation, as before
/// this patch: packets queued before a close (a logout's answer, a disconnect packet) still
/// go out. An error is only logged: the reader sees a broken connection and closes the
/// session.
async fn write_within<D, E: std::fmt::Display>(
    socket: &Socket<D>,
    deadlines: WriteDeadlines,
    closing: &mut Option<Instant>,
    write: impl Future<Output = Result<(), E>>,
) -> Write
where
    D: Default + Send + Sync + 'static,
{
    let mut write = pin!(write);
    let written = match *closing {
        None => tokio::select! {
            biased;
            written = &mut write => Some(written),
            _ = socket.cancellation_token.cancelled() => None,
            _ = tokio::time::sleep(deadlines.write) => return Write::Stalled,
        },
        Some(_) => None,
    };
    let written = match written {
        Some(written) => written,
        None => {
            let until = *closing.get_or_insert_with(|| Instant::now() + deadlines.closing);
            match tokio::time::timeout_at(until, write).await {
                Ok(written) => written,
                Err(_) => return Write::TooLate,
            }
        }
    };
    if let Err(_e) = written {
        #[cfg(feature = "tracing")]
        tracing::debug!("error sending packet: {}", _e);
    }
    Write::Done
}

/// Forwards all packets waiting to be sent to the websocket
///
/// The websocket stream is flushed only when the internal channel is drained
///
/// (Tether patch 5: each feed and flush has a deadline, and a shorter one once the session
/// is closing; a write that stalls past its deadline closes the session and ends the task,
/// dropping the connection. Packets taken from the queue stay counted in the socket's byte
/// budget until the flush after them completes.)
async fn forward_to_socket<H: EngineIoHandler, S>(
    socket: Arc<Socket<H::Data>>,
    mut tx: SplitSink<WebSocketStream<S>, Message>,
    deadlines: WriteDeadlines,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A polling request that was in progress during the upgrade may still hold the lock.
    let lock = socket.internal_rx.lock();
    let Some(mut internal_rx) = lock
        .with_cancellation_token(&socket.cancellation_token)
        .await
    else {
        #[cfg(feature = "tracing")]
        tracing::debug!(sid = %socket.id, "session closed before starting the ws writer");
        return;
    };
    // (Tether patch: the queue also yields the volatile packet, after what is queued.)
    let InternalRx { buffered_rx, .. } = &mut *internal_rx;
    // (Tether patch 5: when the session started closing, plus the closing deadline.)
    let mut closing = None;

    // Forward buffered packets until the channel is closed or the session is cancelled.
    // (Tether patch: one `feed` await instead of three in each of two copies of a macro. The
    // task is as large as its largest state for as long as the socket lives: about half the size.)
    loop {
        let first = tokio::select! {
            biased;
            items = buffered_rx.recv_held() => match items {
                Some(packets) => packets,
                None => break,
            },
            _ = socket.cancellation_token.cancelled() => break,
        };
        // Everything queued by now goes out in one flush.
        let mut next = Some(first);
        while let Some(packets) = next {
            for packet in packets.into_packets() {
                let Some(message) = ws_message(socket.protocol, packet) else {
                    continue;
                };
                match write_within(&socket, deadlines, &mut closing, tx.feed(message)).await {
                    Write::Done => {}
                    Write::Stalled => return stalled(&socket),
                    Write::TooLate => return,
                }
            }
            next = buffered_rx.try_recv_held();
        }

        #[cfg(feature = "tracing")]
        tracing::trace!(sid = %socket.id, "ws flush");
        match write_within(&socket, deadlines, &mut closing, tx.flush()).await {
            Write::Done => buffered_rx.release_held(),
            Write::Stalled => return stalled(&socket),
            Write::TooLate => return,
        }
    }

    // The queue is not needed any more: the session's close can go on (it waits for this lock
    // before telling the handler).
    drop(internal_rx);

    #[cfg(feature = "tracing")]
    tracing::trace!(sid = %socket.id, "ws closing flush");

    // The session is closing: only the closing deadline bounds this.
    let until = closing.unwrap_or_else(|| Instant::now() + deadlines.closing);
    let closed = async {
        tx.flush().await.ok();
        tx.close().await.ok();
    };
    if tokio::time::timeout_at(until, closed).await.is_err() {
        #[cfg(feature = "tracing")]
        tracing::debug!("ws closing flush timed out, dropping the connection");
    }
}

/// Tether patch 5: the connection took nothing for a whole deadline: the session is closed
/// (the reader stops with it, and the connection is dropped with both halves).
fn stalled<D: Default + Send + Sync + 'static>(socket: &Socket<D>) {
    #[cfg(feature = "tracing")]
    tracing::debug!("ws write stalled past its deadline, closing the session");
    socket.close_now(NOT_READING);
}

/// Send a Engine.IO [`OpenPacket`] to initiate a websocket connection
async fn init_handshake<S>(
    sid: Sid,
    ws: &mut WebSocketStream<S>,
    config: &EngineIoConfig,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = Packet::Open(make_open_packet(TransportType::Websocket, sid, config));
    let packet: String = packet.into();
    ws.send(Message::Text(packet.into())).await?;
    Ok(())
}

/// Upgrade a session from a polling request to a websocket request.
///
/// Before upgrading the session the server should send a NOOP packet to any pending polling request.
///
/// ## Handshake :
/// ```text
/// CLIENT                                                 SERVER
///│                                                      │
///│   GET /engine.io/?EIO=4&transport=websocket&sid=...  │
///│ ───────────────────────────────────────────────────► │
///│  ◄─────────────────────────────────────────────────┘ │
///│            HTTP 101 (WebSocket handshake)            │
///│                                                      │
///│            -----  WebSocket frames -----             │
///│  ─────────────────────────────────────────────────►  │
///│                         2probe                       │ (ping packet)
///│  ◄─────────────────────────────────────────────────  │
///│                         3probe                       │ (pong packet)
///│  ─────────────────────────────────────────────────►  │
///│                         5                            │ (upgrade packet)
///│                                                      │
///│            -----  WebSocket frames -----             │
/// ```
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", skip(socket, ws))
)]
async fn upgrade_handshake<H: EngineIoHandler, S>(
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "tracing")]
    tracing::debug!("starting websocket connection upgrade");

    // The socket is upgrading, from now on all polling
    // request will return a `Packet::Noop`
    socket.start_upgrade();

    // We send a last Noop request to close a potential waiting polling request.
    socket
        .internal_tx
        .send(Queued::one(Packet::Noop))
        .await
        .map_err(|_| Error::Upgrade)?;

    // wait for any current polling connection to finish by waiting for the socket to be unlocked
    // All other polling connection will be immediately closed with a NOOP packet.
    let _lock = socket.internal_rx.lock().await;

    // Fetch the next packet from the ws stream, it should be a PingUpgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        _ => Err(Error::Upgrade)?,
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::PingUpgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("received first ping upgrade");
            // Respond with a PongUpgrade packet
            ws.send(Message::Text(String::from(Packet::PongUpgrade).into()))
                .await?;
        }
        p => Err(Error::BadPacket(p))?,
    };

    // Fetch the next packet from the ws stream, it should be an Upgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        Some(Ok(Message::Close(_))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws stream closed before upgrade");
            Err(Error::Upgrade)?
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!("unexpected ws message before upgrade");
            Err(Error::Upgrade)?
        }
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::Upgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgraded successfully")
        }
        p => Err(Error::BadPacket(p))?,
    };

    socket.upgrade_to_websocket();
    Ok(())
}

/// (Tether patch: what the writer's macro did to each packet, as a function.) The websocket
/// message for a packet; `None` for a `Noop`, which a polling upgrade may leave in the queue.
fn ws_message(protocol: ProtocolVersion, packet: Packet) -> Option<Message> {
    match packet {
        Packet::Binary(bin) | Packet::BinaryV3(bin) => {
            if protocol == ProtocolVersion::V3 {
                // v3 protocol requires packet type as the first byte.
                // This requires a new buffer. This is OK as it is only for the V3 protocol.
                let mut buff = Vec::with_capacity(bin.len() + 1);
                buff.push(0x04);
                buff.extend(bin);
                Some(Message::Binary(buff.into()))
            } else {
                Some(Message::Binary(bin))
            }
        }
        // A Noop Packet maybe sent by the server to upgrade from a polling connection
        // In the case that the packet was not poll in time it will remain in the buffer and therefore
        // it should be discarded here
        Packet::Noop => None,
        packet => {
            let packet: String = packet.try_into().unwrap();
            Some(Message::Text(packet.into()))
        }
    }
}

fn ws_bytes_to_str(bytes: tungstenite::Utf8Bytes) -> Str {
    // SAFETY: the bytes are guaranteed to be valid UTF-8 by the tungstenite parser
    unsafe { Str::from_bytes_unchecked(bytes.into()) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http::Request;
    use tokio::io::DuplexStream;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);
    const DEADLINES: WriteDeadlines = WriteDeadlines {
        write: Duration::from_secs(5),
        closing: Duration::from_secs(5),
    };

    #[derive(Debug)]
    struct StubHandler;
    impl EngineIoHandler for StubHandler {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
        fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    fn socket() -> Arc<Socket<()>> {
        Arc::new(Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &EngineIoConfig::default(),
            Request::<()>::default().into_parts().0,
            Box::new(|_, _| ()),
            false,
        ))
    }

    /// A socket with this byte budget whose session closes are sent on the channel.
    fn recording_socket(
        budget: usize,
    ) -> (Arc<Socket<()>>, std::sync::mpsc::Receiver<DisconnectReason>) {
        let (closes, closed) = std::sync::mpsc::channel();
        let closes = std::sync::Mutex::new(closes);
        let config = EngineIoConfig::builder().max_buffer_size(budget).build();
        let socket = Arc::new(Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &config,
            Request::<()>::default().into_parts().0,
            Box::new(move |_, reason| closes.lock().unwrap().send(reason).unwrap()),
            false,
        ));
        (socket, closed)
    }

    async fn ws_pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (server, client) = tokio::io::duplex(1024);
        (
            WebSocketStream::from_raw_socket(server, Role::Server, None).await,
            WebSocketStream::from_raw_socket(client, Role::Client, None).await,
        )
    }

    /// A polling request can still hold the lock at the end of an upgrade.
    #[tokio::test]
    async fn writer_waits_for_the_lock_of_a_polling_request() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;
        let (tx, _rx) = server.split();

        let polling = socket.internal_rx.lock().await;
        let writer = tokio::spawn(forward_to_socket::<StubHandler, _>(
            socket.clone(),
            tx,
            DEADLINES,
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "the writer should wait for the lock");

        drop(polling);
        socket.emit(Str::from("hello")).unwrap();
        let msg = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("the writer should send the packet")
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text("4hello"));
    }

    #[tokio::test]
    async fn writer_waiting_for_the_lock_stops_with_the_session() {
        let socket = socket();
        let (server, _client) = ws_pair().await;
        let (tx, _rx) = server.split();

        let _polling = socket.internal_rx.lock().await;
        let writer = tokio::spawn(forward_to_socket::<StubHandler, _>(
            socket.clone(),
            tx,
            DEADLINES,
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;

        socket.cancellation_token.cancel();
        tokio::time::timeout(TIMEOUT, writer)
            .await
            .expect("the writer should stop")
            .unwrap();
    }

    /// Tether patch 5: a peer that reads nothing (the 1 KiB pipe fills) and never closes.
    #[tokio::test]
    async fn a_write_the_peer_never_takes_closes_the_session_and_ends_the_writer() {
        let (socket, closes) = recording_socket(1 << 20);
        let (server, _client) = ws_pair().await;
        let (tx, _rx) = server.split();
        let deadlines = WriteDeadlines {
            write: Duration::from_millis(100),
            closing: Duration::from_millis(100),
        };
        let writer = tokio::spawn(forward_to_socket::<StubHandler, _>(
            socket.clone(),
            tx,
            deadlines,
        ));
        socket.emit(Str::from("x".repeat(64 * 1024))).unwrap();
        tokio::time::timeout(TIMEOUT, writer)
            .await
            .expect("the writer gives up on the stalled connection")
            .unwrap();
        assert_eq!(closes.try_recv(), Ok(NOT_READING));
    }

    #[tokio::test]
    async fn a_closing_session_stops_a_stalled_write_without_waiting_for_its_deadline() {
        let (socket, closes) = recording_socket(1 << 20);
        let (server, _client) = ws_pair().await;
        let (tx, _rx) = server.split();
        let deadlines = WriteDeadlines {
            write: Duration::from_secs(60),
            closing: Duration::from_millis(100),
        };
        let writer = tokio::spawn(forward_to_socket::<StubHandler, _>(
            socket.clone(),
            tx,
            deadlines,
        ));
        socket.emit(Str::from("x".repeat(64 * 1024))).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "stalled in its flush");

        socket.cancellation_token.cancel();
        tokio::time::timeout(TIMEOUT, writer)
            .await
            .expect("the writer stops, its closing flush bounded too")
            .unwrap();
        assert!(closes.try_recv().is_err(), "a close is not a stall");
    }

    /// As before patch 5: what was queued before a close still goes out (a logout's answer,
    /// a disconnect packet), within the closing deadline.
    #[tokio::test]
    async fn packets_queued_before_the_session_closes_still_go_out() {
        let socket = socket();
        let (server, mut client) = ws_pair().await;
        let (tx, _rx) = server.split();
        let writer = tokio::spawn(forward_to_socket::<StubHandler, _>(
            socket.clone(),
            tx,
            DEADLINES,
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        socket.emit(Str::from("bye")).unwrap();
        socket.cancellation_token.cancel();
        let msg = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .expect("the packet comes")
            .unwrap()
            .unwrap();
        assert_eq!(msg, Message::text("4bye"));
        tokio::time::timeout(TIMEOUT, writer)
            .await
            .expect("then the writer ends")
            .unwrap();
    }

    /// What the writer took but could not write yet still counts against the budget.
    #[tokio::test]
    async fn packets_written_but_not_flushed_count_against_the_budget() {
        let (socket, closes) = recording_socket(8 * 1024);
        let (server, _client) = ws_pair().await;
        let (tx, _rx) = server.split();
        tokio::spawn(forward_to_socket::<StubHandler, _>(
            socket.clone(),
            tx,
            DEADLINES,
        ));
        socket.emit(Str::from("x".repeat(6 * 1024))).unwrap();
        // Taken by the writer, but the 1 KiB pipe holds it up.
        until(|| socket.internal_tx.queued_items() == 0).await;
        assert!(socket.internal_tx.waiting_since().is_some(), "held");
        assert!(
            matches!(
                socket.emit(Str::from("y".repeat(2 * 1024))),
                Err(tokio::sync::mpsc::error::TrySendError::Full(_))
            ),
            "the unflushed 6 KiB leave no room for 2 KiB more"
        );
        assert_eq!(closes.try_recv(), Ok(NOT_READING));

        // Once the peer reads, the flush completes and the bytes are free again.
        let (socket, closes) = recording_socket(8 * 1024);
        let (server, mut reader) = ws_pair().await;
        let (tx, _rx) = server.split();
        tokio::spawn(forward_to_socket::<StubHandler, _>(
            socket.clone(),
            tx,
            DEADLINES,
        ));
        for _ in 0..4 {
            socket.emit(Str::from("x".repeat(6 * 1024))).unwrap();
            let msg = tokio::time::timeout(TIMEOUT, reader.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(msg.len(), 1 + 6 * 1024);
            until(|| socket.internal_tx.waiting_since().is_none()).await;
        }
        assert!(closes.try_recv().is_err());
    }

    async fn until(done: impl Fn() -> bool) {
        tokio::time::timeout(TIMEOUT, async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("in time");
    }
}
