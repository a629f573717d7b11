//! Proof of possession (issue #25 slice 2, PROTOCOL.md "Proof of possession"): a session bound
//! to a key is resumed only by a handshake that signs its own connection's Engine.IO sid with
//! that key. Raw websocket frames, so that the OPEN sid and the CONNECT are in the test's hands.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::helpers::{
    on_redis_and_cluster, spawn_app, spawn_app_in, spawn_app_with, ChildServer, SharedRedis,
    TestApp, TestClient,
};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser's key, made from a label (distinct labels, distinct keys).
fn key(label: &str) -> SigningKey {
    SigningKey::from_slice(&sha2::Sha256::digest(label.as_bytes())).expect("a valid scalar")
}

fn public(key: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(key.verifying_key().to_sec1_bytes())
}

fn prove(key: &SigningKey, sid: &str) -> String {
    let signature: Signature = key.sign(protocol::pop_challenge(sid).as_bytes());
    URL_SAFE_NO_PAD.encode(signature.to_bytes())
}

/// One Engine.IO connection, driven frame by frame.
struct Raw {
    ws: Ws,
    /// The sid OPEN announced: the challenge.
    sid: String,
}

/// What the server answered a CONNECT.
#[derive(Debug, PartialEq)]
enum Answer {
    /// `40{"sid":…}`, with the `session` event that followed.
    Accepted { sid: String, session: Value },
    /// `44{"message":…}`.
    Refused(String),
}

impl Raw {
    async fn open(app: &TestApp) -> Raw {
        Raw::at(app.addr).await
    }

    /// A raw connection to the node at `addr`.
    async fn at(addr: std::net::SocketAddr) -> Raw {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        let open = loop {
            if let WsMessage::Text(text) = ws.next().await.expect("frame").expect("frame ok") {
                break text.to_string();
            }
        };
        let open: Value = serde_json::from_str(open.strip_prefix('0').expect("OPEN")).unwrap();
        let sid = open["sid"].as_str().expect("OPEN has a sid").to_owned();
        Raw { ws, sid }
    }

    /// The next Socket.IO packet (the text after Engine.IO's `4`), answering pings; `None`
    /// once the connection is closed.
    async fn packet(&mut self) -> Option<String> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a frame within 5 s")?;
            let Ok(WsMessage::Text(text)) = frame else {
                return None;
            };
            match text.as_str() {
                "2" => self.ws.send(WsMessage::text("3")).await.ok()?,
                "1" => return None,
                text => return text.strip_prefix('4').map(str::to_owned),
            }
        }
    }

    async fn send_connect(&mut self, frame: &str) {
        self.ws.send(WsMessage::text(frame)).await.expect("send");
    }

    /// Sends `40{auth}` and reads the answer (and, if accepted, the `session` event).
    async fn connect(&mut self, auth: &Value) -> Answer {
        self.send_connect(&connect_frame(auth)).await;
        self.answer().await
    }

    async fn answer(&mut self) -> Answer {
        loop {
            let packet = self.packet().await.expect("an answer to CONNECT");
            if let Some(json) = packet.strip_prefix("0") {
                let sid = serde_json::from_str::<Value>(json).unwrap()["sid"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let session = self.event("session").await.expect("session");
                return Answer::Accepted { sid, session };
            }
            if let Some(json) = packet.strip_prefix("4") {
                let message = serde_json::from_str::<Value>(json).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                return Answer::Refused(message);
            }
        }
    }

    /// The next event named `name` (its payload), dropping others; `None` once closed.
    async fn event(&mut self, name: &str) -> Option<Value> {
        loop {
            let packet = self.packet().await?;
            if let Some(json) = packet.strip_prefix('2') {
                let value: Value = serde_json::from_str(json).unwrap();
                if value[0] == name {
                    return Some(value[1].clone());
                }
            }
        }
    }

    /// This connection's proof by `key`, with the key: what Tether's client sends.
    fn proof(&self, key: &SigningKey) -> Value {
        json!({ "pop": prove(key, &self.sid), "popKey": public(key) })
    }
}

fn connect_frame(auth: &Value) -> String {
    format!("40{auth}")
}

fn with(mut auth: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        auth[k] = v.clone();
    }
    auth
}

/// A new user signed up with `key` bound at birth: its open connection and session id.
async fn bound_sign_up(app: &TestApp, name: &str, key: &SigningKey) -> (Raw, String, String) {
    let mut raw = Raw::open(app).await;
    let auth = with(json!({ "username": name }), raw.proof(key));
    let Answer::Accepted { session, .. } = raw.connect(&auth).await else {
        panic!("a sign-up with a valid proof is accepted");
    };
    let id = session["sessionID"].as_str().unwrap().to_owned();
    let user = session["userID"].as_str().unwrap().to_owned();
    (raw, id, user)
}

/// A fresh connection's answer to `auth`.
async fn answer_to(app: &TestApp, auth: impl FnOnce(&Raw) -> Value) -> Answer {
    let mut raw = Raw::open(app).await;
    let auth = auth(&raw);
    raw.connect(&auth).await
}

/// The official-style client (rust_socketio) resuming `id` by the id alone is refused
/// `proof required`.
async fn tutorial_refused(app: &TestApp, id: &str) -> bool {
    let refusal = app.refusal(json!({ "sessionID": id })).await;
    refusal.ends_with(r#"{"message":"proof required"}"#)
}

fn refused() -> Answer {
    Answer::Refused(protocol::events::PROOF_REQUIRED.to_owned())
}

/// The owner's connection is still up: a message sent to it now arrives on it.
async fn still_delivers(app: &TestApp, owner: &mut Raw, owner_id: &str) {
    still_delivers_from(&app.connect_as("bob-checks").await, owner, owner_id).await;
}

/// The owner's connection is still up: a message `bob` sends it now arrives on it.
async fn still_delivers_from(bob: &TestClient, owner: &mut Raw, owner_id: &str) {
    let ack = bob.send(owner_id, "still there?").await;
    assert!(ack["ok"].is_object(), "{ack}");
    let message = owner
        .event("private message")
        .await
        .expect("the owner's socket is connected");
    assert_eq!(message["content"], "still there?");
}

#[tokio::test]
async fn the_proof_challenge_is_the_engine_sid() {
    let app = spawn_app().await;
    let ada = key("ada");
    let mut raw = Raw::open(&app).await;
    let open_sid = raw.sid.clone();
    let auth = with(json!({ "username": "ada" }), raw.proof(&ada));
    let Answer::Accepted { sid, .. } = raw.connect(&auth).await else {
        panic!("accepted")
    };
    // The sid the client signed (OPEN's) is the Socket.IO socket's id, which the server's
    // connect middleware verifies against: a socketioxide that stops naming sockets after
    // their Engine.IO session fails here.
    assert_eq!(sid, open_sid);
    let sockets = app.io.sockets();
    assert!(sockets.iter().any(|s| s.id.to_string() == open_sid));
    app.stop().await;
}

#[tokio::test]
async fn a_bound_session_without_proof_is_refused_and_stays_usable_by_its_browser() {
    let app = spawn_app().await;
    let ada = key("ada");
    let (mut owner, id, user) = bound_sign_up(&app, "ada", &ada).await;

    // The copied id alone: what a tutorial client (or a thief) sends.
    assert!(tutorial_refused(&app, &id).await);
    assert_eq!(
        answer_to(&app, |_| json!({ "sessionID": id })).await,
        refused()
    );
    // A `pop` alone proves: checked against the session's own key (`popKey` only binds).
    let answer = answer_to(
        &app,
        |raw| json!({ "sessionID": id, "pop": prove(&ada, &raw.sid) }),
    )
    .await;
    assert!(answer.accepts(&id), "{answer:?}");
    let thief = key("thief");
    let answer = answer_to(
        &app,
        |raw| json!({ "sessionID": id, "pop": prove(&thief, &raw.sid) }),
    )
    .await;
    assert_eq!(answer, refused());
    still_delivers(&app, &mut owner, &user).await;
    // Its browser resumes it on a new connection, as often as it likes.
    for _ in 0..2 {
        let answer = answer_to(&app, |raw| {
            with(json!({ "sessionID": id }), raw.proof(&ada))
        })
        .await;
        assert!(answer.accepts(&id), "{answer:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_captured_connect_replayed_on_a_new_connection_is_refused() {
    let app = spawn_app().await;
    let ada = key("ada");
    let (_owner, id, _) = bound_sign_up(&app, "ada", &ada).await;
    let mut first = Raw::open(&app).await;
    let captured = connect_frame(&with(json!({ "sessionID": id }), first.proof(&ada)));
    first.send_connect(&captured).await;
    assert!(first.answer().await.accepts(&id));

    // The same bytes on another connection: they sign the first connection's sid.
    let mut replay = Raw::open(&app).await;
    replay.send_connect(&captured).await;
    assert_eq!(replay.answer().await, refused());
    app.stop().await;
}

#[tokio::test]
async fn a_session_id_with_another_key_is_refused_and_other_sessions_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let (ada, thief) = (key("ada"), key("thief"));
    let (mut owner, id, user) = bound_sign_up(&app, "ada", &ada).await;
    // A second connection of the same session (another tab), and another session of the
    // account (another device, unbound), connected.
    let answer = answer_to(&app, |raw| {
        with(json!({ "sessionID": id }), raw.proof(&ada))
    })
    .await;
    assert!(answer.accepts(&id));
    let phone_secret = crate::devices::second_device(dir.path(), &user, "Safari on iOS").await;
    let mut phone = app.resume(&phone_secret).await;

    // The thief signs its own connection's sid with its own key, offering it as the key.
    assert_eq!(
        answer_to(&app, |raw| with(
            json!({ "sessionID": id }),
            raw.proof(&thief)
        ))
        .await,
        refused()
    );
    still_delivers(&app, &mut owner, &user).await;
    let answer = answer_to(&app, |raw| {
        with(json!({ "sessionID": id }), raw.proof(&ada))
    })
    .await;
    assert!(answer.accepts(&id), "the session was not ended: {answer:?}");
    // The other device is still connected, and its session still resumes.
    assert!(phone.sync().await.get("ok").is_some());
    assert!(phone.drain("close").is_empty());
    app.resume(&phone_secret).await;
    app.stop().await;
}

/// Two nodes over one Redis: a session bound on node 0 is bound on node 1 too. There its id is
/// refused without a proof and with another key's, while the owner's socket on node 0 keeps
/// receiving and the owner's key still resumes the session on node 1.
async fn a_copied_bound_id_is_refused_on_the_other_node(redis: SharedRedis) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(ChildServer::start_with(dir.path(), &redis.node_args()).await);
    }
    let ada = key("ada");
    let mut owner = Raw::at(nodes[0].addr).await;
    let auth = with(json!({ "username": "ada" }), owner.proof(&ada));
    let Answer::Accepted { session, .. } = owner.connect(&auth).await else {
        panic!("a sign-up with a valid proof is accepted");
    };
    let id = session["sessionID"].as_str().unwrap().to_owned();
    let user = session["userID"].as_str().unwrap().to_owned();

    let mut copied = Raw::at(nodes[1].addr).await;
    assert_eq!(copied.connect(&json!({ "sessionID": id })).await, refused());
    let mut thief = Raw::at(nodes[1].addr).await;
    let auth = with(json!({ "sessionID": id }), thief.proof(&key("thief")));
    assert_eq!(thief.connect(&auth).await, refused());

    let mut bob = TestClient::connect(&nodes[1].url(), json!({ "username": "bob" })).await;
    bob.expect_session().await;
    still_delivers_from(&bob, &mut owner, &user).await;
    let mut again = Raw::at(nodes[1].addr).await;
    let auth = with(json!({ "sessionID": id }), again.proof(&ada));
    let answer = again.connect(&auth).await;
    assert!(answer.accepts(&id), "the owner's key resumes: {answer:?}");
}

on_redis_and_cluster!(a_copied_bound_id_is_refused_on_the_other_node);

/// A session made without a key stays unbound whatever key is later offered with its id, with
/// a valid proof or not: a copy of the id must not bind itself to a thief's key and lock its
/// owner out (review finding 1; before, it was bound to the first key that proved itself).
#[tokio::test]
async fn a_session_made_without_a_key_is_never_bound() {
    let app = spawn_app().await;
    // A tutorial client's session: no key.
    let mut tutorial = app.connect(json!({ "username": "ada" })).await;
    let session = tutorial.next("session").await;
    let id = session["sessionID"].as_str().unwrap().to_owned();
    // Unbound: the id alone resumes it, as the tutorial has it.
    app.resume(&id).await;
    // An offered key without a valid proof of it binds nothing and is refused.
    let answer = answer_to(
        &app,
        |_| json!({ "sessionID": id, "popKey": public(&key("ada")), "pop": "x" }),
    )
    .await;
    assert_eq!(answer, refused());
    // With a valid proof: let in, unbound, and so is the next key.
    for offered in ["thief", "other"] {
        let answer = answer_to(&app, |raw| {
            with(json!({ "sessionID": id }), raw.proof(&key(offered)))
        })
        .await;
        assert!(answer.accepts(&id), "{offered}: {answer:?}");
    }
    // The id alone still resumes it.
    app.resume(&id).await;
    app.stop().await;
}

/// A session from before keys binds to the first key that proves itself (trust on first use,
/// once), and is bound from then on.
#[tokio::test]
async fn a_session_from_before_keys_binds_on_first_proof() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::spawn_app_in(dir.path()).await;
    let mut tutorial = app.connect(json!({ "username": "ada" })).await;
    let id = tutorial.next("session").await["sessionID"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;
    // As a release before keys left it.
    let db = rusqlite::Connection::open(dir.path().join("tether.db")).unwrap();
    assert_eq!(
        db.execute("UPDATE sessions SET pop_key = NULL", [])
            .unwrap(),
        1
    );
    drop(db);
    let app = crate::helpers::spawn_app_in(dir.path()).await;
    app.resume(&id).await;
    let ada = key("ada");
    let answer = answer_to(&app, |raw| {
        with(json!({ "sessionID": id }), raw.proof(&ada))
    })
    .await;
    assert!(answer.accepts(&id), "{answer:?}");
    // Bound from now on: the id alone, or another key, is refused.
    assert!(tutorial_refused(&app, &id).await);
    assert_eq!(
        answer_to(&app, |raw| with(
            json!({ "sessionID": id }),
            raw.proof(&key("other"))
        ))
        .await,
        refused()
    );
    let answer = answer_to(&app, |raw| {
        with(json!({ "sessionID": id }), raw.proof(&ada))
    })
    .await;
    assert!(answer.accepts(&id));
    app.stop().await;
}

#[tokio::test]
async fn tutorial_clients_and_oversized_proofs_of_unbound_sessions_are_unaffected() {
    let app = spawn_app().await;
    // A 10 KB `pop` without `popKey` on a sign-up and on an unbound resume: ignored.
    let big = "A".repeat(10_000);
    let mut client = app.connect(json!({ "username": "ada", "pop": big })).await;
    let id = client.next("session").await["sessionID"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut again = app
        .connect(json!({ "sessionID": id, "pop": big, "popKey": 5 }))
        .await;
    assert_eq!(again.next("session").await["sessionID"], id.as_str());
    // A sign-up offering a key it cannot prove creates nothing.
    let answer = answer_to(
        &app,
        |_| json!({ "username": "eve", "popKey": public(&key("eve")), "pop": big }),
    )
    .await;
    assert_eq!(answer, refused());
    app.stop().await;
}

#[tokio::test]
async fn repeated_bad_proofs_bar_the_session_before_the_store_is_asked() {
    let app = spawn_app_with(|config| {
        config.pop_failures_per_session = 3;
        config.abuse_cooldown_secs = 60;
    })
    .await;
    let ada = key("ada");
    let (mut owner, id, user) = bound_sign_up(&app, "ada", &ada).await;
    for _ in 0..3 {
        assert_eq!(
            answer_to(&app, |_| json!({ "sessionID": id })).await,
            refused()
        );
    }
    // Barred: refused as cooling down, even with a valid proof, until the cooldown ends.
    assert_eq!(
        answer_to(&app, |raw| with(
            json!({ "sessionID": id }),
            raw.proof(&ada)
        ))
        .await,
        Answer::Refused(protocol::events::TOO_MANY_REQUESTS.to_owned())
    );
    // Not ended: the owner's connected socket still gets its messages.
    still_delivers(&app, &mut owner, &user).await;
    app.stop().await;
}

impl Answer {
    /// Accepted, resuming the session `id`.
    fn accepts(&self, id: &str) -> bool {
        matches!(self, Answer::Accepted { session, .. } if session["sessionID"] == id)
    }
}

// ---- Tether's own client (the sans-IO core over a native websocket, with an in-memory key) ----

mod native {
    use std::sync::{Arc, Mutex};

    use client::core::{ConnState, CoreConfig, StopReason};
    use client::native::{NativeClient, NativeKey};
    use client::session::SessionEvent;
    use protocol::HandshakeAuth;
    use serde_json::json;

    use crate::helpers::{auth, spawn_app, TestApp, WAIT};

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(WAIT, f)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    fn fixed(value: serde_json::Value) -> impl FnMut() -> HandshakeAuth + Send + 'static {
        let auth = Arc::new(Mutex::new(auth(value)));
        move || auth.lock().unwrap().clone()
    }

    async fn session_of(client: &mut NativeClient) -> (String, String) {
        let info = within(
            "session",
            client.wait_for(|e| match e {
                SessionEvent::Session(info) => Some(info.clone()),
                _ => None,
            }),
        )
        .await;
        (info.session_id, info.user_id)
    }

    async fn stopped(client: &mut NativeClient) -> StopReason {
        within(
            "a stop",
            client.wait_for(|e| match e {
                SessionEvent::State(ConnState::Stopped(reason)) => Some(*reason),
                _ => None,
            }),
        )
        .await
    }

    /// The owner's client still receives: a message sent to it now arrives.
    async fn still_receives(app: &TestApp, owner: &mut NativeClient, owner_id: &str, text: &str) {
        let bob = app.connect_as(&format!("bob-{text}")).await;
        assert!(bob.send(owner_id, text).await["ok"].is_object());
        let arrived = within(
            "the message",
            owner.wait_for(|e| match e {
                SessionEvent::Arrived(m) if m.content == text => Some(m.clone()),
                _ => None,
            }),
        )
        .await;
        assert_eq!(arrived.content, text);
    }

    #[tokio::test]
    async fn tethers_client_binds_at_sign_up_and_resumes_with_its_proof() {
        let app = spawn_app().await;
        let key = NativeKey::generate();
        let mut first = NativeClient::spawn_with_key(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "username": "ada" })),
            key.clone(),
        );
        let (id, user) = session_of(&mut first).await;
        drop(first);
        // The same browser (key) on a new connection: resumed, the same user.
        let mut again = NativeClient::spawn_with_key(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "sessionID": id })),
            key,
        );
        assert_eq!(session_of(&mut again).await, (id.clone(), user));
        // Bound at birth: the id alone is refused.
        let mut copied = NativeClient::spawn(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "sessionID": id })),
        );
        assert_eq!(stopped(&mut copied).await, StopReason::ProofRequired);
        app.stop().await;
    }

    #[tokio::test]
    async fn a_copied_id_is_refused_without_or_with_a_wrong_key_and_the_owner_stays_connected() {
        let app = spawn_app().await;
        let key = NativeKey::generate();
        let mut owner = NativeClient::spawn_with_key(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "username": "ada" })),
            key.clone(),
        );
        let (id, user) = session_of(&mut owner).await;

        let mut without = NativeClient::spawn(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "sessionID": id })),
        );
        assert_eq!(stopped(&mut without).await, StopReason::ProofRequired);
        let mut wrong = NativeClient::spawn_with_key(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "sessionID": id })),
            NativeKey::generate(),
        );
        assert_eq!(stopped(&mut wrong).await, StopReason::ProofRequired);

        still_receives(&app, &mut owner, &user, "after-the-thief").await;
        // The owner's session was not ended: its browser connects again with it.
        let mut second_tab = NativeClient::spawn_with_key(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "sessionID": id })),
            key,
        );
        assert_eq!(session_of(&mut second_tab).await.0, id);
        app.stop().await;
    }

    #[tokio::test]
    async fn a_tutorial_style_client_keeps_its_unbound_session() {
        let app = spawn_app().await;
        let mut tutorial = NativeClient::spawn(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "username": "ada" })),
        );
        let (id, user) = session_of(&mut tutorial).await;
        drop(tutorial);
        let mut back = NativeClient::spawn(
            &app.url(),
            CoreConfig::default(),
            fixed(json!({ "sessionID": id })),
        );
        assert_eq!(session_of(&mut back).await, (id, user));
        app.stop().await;
    }
}
