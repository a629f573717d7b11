//! Passkeys (issue #25, slice 4), with real WebAuthn ceremonies: a software authenticator
//! (1Password's passkey-client and passkey-authenticator, an in-memory credential store) plays
//! the browser and its platform authenticator against the server.
//!
//! - A signed-in socket protects its name (`passkey_options`, `passkey_add`); from then on a
//!   sign-up with that name, in any case, is refused `name protected`.
//! - Signing in over HTTP (`/api/passkey/options`, `/api/passkey/signin`) gives a new session of
//!   the same user, which resumes with its conversations and unread state; on one node, and
//!   started on one node of a cluster and finished on the other.
//! - Ceremonies are single use, bound to their challenge, and priced; bodies are bounded;
//!   another site's page is refused; bad input gets a typed error and changes nothing.
//!
//! Proof of possession (slice 2) is not built: any signed-in session may add a passkey.

use std::net::SocketAddr;
use std::time::Duration;

use client::native::NativeKey;
use passkey_authenticator::{Authenticator, MemoryStore, UiHint, UserCheck, UserValidationMethod};
use passkey_client::Client;
use passkey_types::ctap2::{Aaguid, Ctap2Error};
use passkey_types::webauthn::{CredentialCreationOptions, CredentialRequestOptions};
use passkey_types::Passkey;
use serde_json::{json, Value};
use url::Url;

use crate::helpers::{
    http_exchange, on_redis_and_cluster, spawn_app, spawn_app_with, BoundClient, ChildServer,
    SharedRedis, TestApp, TestClient,
};

/// A user who always consents and is always verified (a platform authenticator's biometrics).
struct Verified;

#[async_trait::async_trait]
impl UserValidationMethod for Verified {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        _hint: UiHint<'a, Passkey>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        Ok(UserCheck {
            presence,
            verification,
        })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

/// A browser with its own authenticator, on a page at `origin`.
struct Browser {
    client: Client<
        MemoryStore,
        Verified,
        passkey_crypto::AvailableBackend,
        public_suffix::PublicSuffixList,
        (),
    >,
    origin: Url,
}

impl Browser {
    fn at(origin: &str) -> Browser {
        let authenticator = Authenticator::new(
            Aaguid::new_empty(),
            MemoryStore::new(),
            Verified,
            passkey_crypto::AvailableBackend,
        );
        Browser {
            client: Client::new(authenticator).allows_insecure_localhost(true),
            origin: Url::parse(origin).unwrap(),
        }
    }

    /// For a server in this process: its page at `http://localhost:<port>` (browsers refuse
    /// IP addresses as RP ids).
    fn for_app(addr: SocketAddr) -> Browser {
        Browser::at(&format!("http://localhost:{}", addr.port()))
    }

    /// [`Browser::for_app`] with an authenticator whose new credentials count their
    /// signatures (a hardware key's; synced passkeys do not count).
    fn counting(addr: SocketAddr) -> Browser {
        let mut browser = Browser::for_app(addr);
        browser
            .client
            .authenticator_mut()
            .set_make_credentials_with_signature_counter(true);
        browser
    }

    /// Another browser whose authenticator holds a copy of this one's credentials as they are
    /// now, counters included: a cloned authenticator.
    fn clone_authenticator(&self) -> Browser {
        let mut clone = Browser::at(self.origin.as_str());
        *clone.client.authenticator_mut().store_mut() = self.client.authenticator().store().clone();
        clone
    }

    /// `navigator.credentials.create({ publicKey })`, as `toJSON()` gives it.
    async fn create(&mut self, public_key: &Value) -> Value {
        let options: CredentialCreationOptions =
            serde_json::from_value(json!({ "publicKey": public_key })).expect("creation options");
        let created = self
            .client
            .register(self.origin.clone(), options, None)
            .await
            .expect("the authenticator creates a credential");
        to_json(serde_json::to_value(created).unwrap())
    }

    /// `navigator.credentials.get({ publicKey })`, as `toJSON()` gives it.
    async fn get(&mut self, public_key: &Value) -> Value {
        let options: CredentialRequestOptions =
            serde_json::from_value(json!({ "publicKey": public_key })).expect("request options");
        let asserted = self
            .client
            .authenticate(self.origin.clone(), options, None)
            .await
            .expect("the authenticator signs");
        to_json(serde_json::to_value(asserted).unwrap())
    }
}

/// A credential as a browser's `toJSON()` writes it: passkey-types serialises its byte
/// fields as arrays of numbers, the browser (and webauthn-rs) as base64url strings.
fn to_json(value: Value) -> Value {
    match value {
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.as_u64().is_some_and(|b| b < 256)) =>
        {
            let bytes: Vec<u8> = items.iter().map(|i| i.as_u64().unwrap() as u8).collect();
            Value::String(base64url(&bytes))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Value::Object(fields) => fields.into_iter().map(|(k, v)| (k, to_json(v))).collect(),
        other => other,
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Protects the name of `client`'s user with a new passkey of `browser`.
async fn protect(client: &BoundClient, browser: &mut Browser) {
    let options = client.request("passkey_options", json!({})).await;
    let public_key = &options["ok"]["publicKey"];
    assert!(public_key.is_object(), "{options}");
    let credential = browser.create(public_key).await;
    let added = client
        .request("passkey_add", json!({ "credential": credential }))
        .await;
    assert_eq!(added, json!({ "ok": { "protected": true } }));
}

/// A POST of `body` with extra header lines; status, head and the body as JSON (`null` when it
/// is not JSON).
async fn post(addr: SocketAddr, path: &str, body: &str, headers: &[&str]) -> (u16, String, Value) {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, head, body) = http_exchange(addr, &request, Duration::from_secs(5)).await;
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

async fn post_json(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let (status, _, body) = post(addr, path, &body.to_string(), &[]).await;
    (status, body)
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

/// Starts a sign-in as `name`: the ceremony id and the request options.
async fn start_sign_in(addr: SocketAddr, name: &str) -> (String, Value) {
    let (status, body) = post_json(addr, "/api/passkey/options", json!({ "username": name })).await;
    assert_eq!(status, 200, "{body}");
    (
        body["ceremony"].as_str().expect("a ceremony id").to_owned(),
        body["publicKey"].clone(),
    )
}

/// Signs in as `name` with `browser`'s passkey; the 200 body (`sessionID`, `userID`, `username`).
async fn sign_in(addr: SocketAddr, browser: &mut Browser, name: &str) -> Value {
    let (ceremony, public_key) = start_sign_in(addr, name).await;
    let credential = browser.get(&public_key).await;
    let (status, body) = post_json(
        addr,
        "/api/passkey/signin",
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Finishes a sign-in ceremony with a proof of `key` (the session is bound to it): status and
/// body.
async fn finish_with_key(
    addr: SocketAddr,
    ceremony: &str,
    credential: &Value,
    key: &NativeKey,
) -> (u16, Value) {
    let proof = key.prove(&format!("signin:{ceremony}"));
    post_json(
        addr,
        "/api/passkey/signin",
        json!({ "ceremony": ceremony, "credential": credential, "popKey": proof.pop_key, "pop": proof.pop }),
    )
    .await
}

/// [`sign_in`] with a key: the new session is bound to `key`.
async fn sign_in_with_key(
    addr: SocketAddr,
    browser: &mut Browser,
    name: &str,
    key: &NativeKey,
) -> Value {
    let (ceremony, public_key) = start_sign_in(addr, name).await;
    let credential = browser.get(&public_key).await;
    let (status, body) = finish_with_key(addr, &ceremony, &credential, key).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_protected_name_cannot_be_taken_by_a_new_sign_up() {
    let app = spawn_app().await;
    let ada = app.connect_bound("Ada").await;
    // Before it is protected, the name can be signed up again (a "ghost" of the same name).
    let ghost = app.connect_as("ada").await;
    ghost.close().await;

    protect(&ada, &mut Browser::for_app(app.addr)).await;

    for taken in ["ada", "Ada", " ADA "] {
        let refusal = app.refusal(json!({ "username": taken })).await;
        assert!(
            refusal.ends_with(r#"{"message":"name protected"}"#),
            "{taken:?}: {refusal}"
        );
    }
    // The account's own session resumes, the ghost's too, and other names sign up as before.
    let again = app.resume_bound(&ada).await;
    assert_eq!(again.user_id, ada.user_id);
    app.resume(&ghost.session_id).await;
    app.connect_as("adam").await;
}

/// The next `user connected` about `user`.
async fn user_connected_of(client: &mut TestClient, user: &str) -> Value {
    loop {
        let told = client.next("user connected").await;
        if told["userID"] == user {
            return told;
        }
    }
}

/// Those connected see the mark at once when a passkey first protects a name (not at their
/// next connect), and again with each of the account's connects; they see it go at once when
/// the last passkey goes (`protected: false`), and a passkey removed while another remains is
/// no news.
#[tokio::test]
async fn protecting_a_name_marks_it_at_once_for_those_connected() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let mut bob = app.connect_as("bob").await;
    protect(&ada, &mut Browser::for_app(app.addr)).await;
    let told = user_connected_of(&mut bob, &ada.user_id).await;
    assert_eq!(told["protected"], json!(true), "{told}");
    let _again = app.resume_bound(&ada).await;
    let told = user_connected_of(&mut bob, &ada.user_id).await;
    assert_eq!(told["protected"], json!(true), "{told}");
    // A user no passkey protects is not marked.
    let _cy = app.connect_as("cy").await;
    let told = bob.next("user connected").await;
    assert!(told.get("protected").is_none(), "{told}");

    // Two passkeys; the first removed is no news, the last takes the mark away at once (the
    // account's own sockets lose it too: end2end/tests/passkeys.spec.ts).
    protect(&ada, &mut Browser::for_app(app.addr)).await;
    let listed = ada.request("passkeys", json!({})).await;
    let ids: Vec<Value> = listed["ok"]["passkeys"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["passkeyID"].clone())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    let removed = ada
        .request("passkey_remove", json!({ "passkeyID": ids[0] }))
        .await;
    assert_eq!(removed, json!({ "ok": { "protected": true } }));
    // No news: the next `user connected` bob hears is dee's.
    let dee = app.connect_as("dee").await;
    let told = bob.next("user connected").await;
    assert_eq!(told["userID"], dee.user_id.as_str(), "{told}");
    let removed = ada
        .request("passkey_remove", json!({ "passkeyID": ids[1] }))
        .await;
    assert_eq!(removed, json!({ "ok": { "protected": false } }));
    let told = user_connected_of(&mut bob, &ada.user_id).await;
    assert_eq!(
        told["protected"],
        json!(false),
        "the next news is the last one's: {told}"
    );
}

/// Only the oldest account with a name may protect it, and names are compared as people read
/// them (review h4, findings 2 and 3): a newer "ＡＤＡ" cannot protect the name of an older
/// "ada", and is told so at `passkey_options`, before its browser makes a credential it could
/// never use (review finding 4: `name_taken` with its own text, no options; nothing written);
/// the older can, and then a sign-up with a look-alike (Cyrillic `а`, fullwidth, an invisible
/// filler) is refused `name protected`.
#[tokio::test]
async fn a_newer_same_name_account_cannot_protect_and_look_alikes_cannot_sign_up() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let newer = app.connect_bound("\u{ff21}\u{ff24}\u{ff21}").await;

    let answer = newer.request("passkey_options", json!({})).await;
    assert_eq!(
        answer["error"],
        json!({
            "code": "name_taken",
            "message": "An older account already has this name; only it can protect it."
        }),
        "{answer}"
    );
    assert!(answer.get("ok").is_none(), "no options: {answer}");
    // No registration waits on the connection either.
    let answer = newer
        .request("passkey_add", json!({ "credential": { "id": "x" } }))
        .await;
    assert_eq!(code(&answer), "ceremony_expired", "{answer}");
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/options",
        json!({ "username": "ada" }),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (404, "unknown_name"),
        "nothing protected"
    );

    protect(&ada, &mut Browser::for_app(app.addr)).await;
    for taken in [
        "\u{430}da",
        "\u{ff41}\u{ff44}\u{ff41}",
        "ad\u{3164}a",
        "ADA",
    ] {
        let refusal = app.refusal(json!({ "username": taken })).await;
        assert!(
            refusal.ends_with(r#"{"message":"name protected"}"#),
            "{taken:?}: {refusal}"
        );
    }
    // The newer account is still there, and still not the name's owner: the roster marks the
    // owner only (review h4 finding 9), so the two are told apart.
    let again = app.resume_bound(&newer).await;
    assert_eq!(again.user_id, newer.user_id);
    let viewer = app.connect_as("cy").await;
    let entry = |id: &str| {
        viewer
            .users
            .iter()
            .find(|u| u["userID"] == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(entry(&ada.user_id)["protected"], json!(true));
    assert!(
        entry(&newer.user_id).get("protected").is_none(),
        "omitted when false"
    );
    // Search results and the directory's pages (what a client past --roster-full-max users
    // lists people from) carry the same mark.
    let found = viewer
        .request("users_search", json!({ "query": "ada" }))
        .await;
    let page = viewer.request("users_page", json!({})).await;
    for (answer, lists_newer) in [(found, false), (page, true)] {
        let users = answer["ok"]["users"].as_array().expect("users").clone();
        let of = |id: &str| users.iter().find(|u| u["userID"] == id).cloned();
        assert_eq!(
            of(&ada.user_id).expect("ada")["protected"],
            json!(true),
            "{answer}"
        );
        // (The search does not fold full-width letters: only the page lists the newer one.)
        let newer_entry = of(&newer.user_id);
        assert_eq!(newer_entry.is_some(), lists_newer, "{answer}");
        assert!(
            newer_entry.is_none_or(|e| e.get("protected").is_none()),
            "{answer}"
        );
    }
    app.connect_as("adam").await;
}

#[tokio::test]
async fn signing_in_with_a_passkey_returns_the_same_user_with_its_conversations_and_unread_state() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let bob = app.connect_as("bob").await;
    let mut laptop = Browser::for_app(app.addr);
    protect(&ada, &mut laptop).await;
    bob.send(&ada.user_id, "are you there?").await;

    // Another device: the same passkey (synced), no session.
    let signed_in = sign_in(app.addr, &mut laptop, "ADA").await;
    assert_eq!(signed_in["userID"], ada.user_id.as_str());
    assert_eq!(signed_in["username"], "ada");
    let secret = signed_in["sessionID"].as_str().unwrap();
    assert_ne!(secret, ada.session_id, "a session of its own");

    let phone = app.resume(secret).await;
    assert_eq!(phone.user_id, ada.user_id);
    let conversations = phone.request("conversations", json!({})).await;
    let list = conversations["ok"]["conversations"]
        .as_array()
        .expect("a list");
    assert_eq!(list.len(), 1, "{conversations}");
    assert_eq!(list[0]["userID"], bob.user_id.as_str(), "{conversations}");
    assert_eq!(list[0]["unread"], 1, "{conversations}");
    // Both devices are the account's.
    let devices = phone.request("devices", json!({})).await;
    assert_eq!(
        devices["ok"]["devices"].as_array().unwrap().len(),
        2,
        "{devices}"
    );
    // And the first session still works.
    app.resume_bound(&ada).await;
}

/// Rotation (issue #25 §5): adding a passkey rotates the adding session's secret at once (a
/// change of privilege), and a passkey sign-in on a new device makes the account's other
/// sessions rotate at their next handshake, with the default period of a day.
#[tokio::test]
async fn adding_a_passkey_rotates_its_session_and_a_sign_in_elsewhere_makes_the_others_due() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let mut laptop = Browser::for_app(app.addr);
    protect(&ada, &mut laptop).await;
    // The secret it held was rotated out by `passkey_add`: its key holder gets a newer one.
    let after = app.resume_bound(&ada).await;
    assert_ne!(after.session_id, ada.session_id, "rotated at passkey_add");
    let kept = BoundClient::connect(
        &app.url(),
        json!({ "sessionID": after.session_id }),
        ada.key.clone(),
    )
    .await;
    assert_eq!(kept.session_id, after.session_id, "not due again");

    let signed_in = sign_in(app.addr, &mut laptop, "ada").await;
    let phone = signed_in["sessionID"].as_str().unwrap();
    // The laptop's session is due now; the new device's own is not.
    let laptop_again = BoundClient::connect(
        &app.url(),
        json!({ "sessionID": after.session_id }),
        ada.key.clone(),
    )
    .await;
    assert_ne!(
        laptop_again.session_id, after.session_id,
        "due after a sign-in elsewhere"
    );
    assert_eq!(laptop_again.user_id, ada.user_id);
    assert_eq!(app.resume(phone).await.session_id, phone);
}

/// A connected session of the account is rotated after a sign-in from a new device too,
/// without waiting for its next handshake (a bound one, at the next refresh of connected
/// sessions: every second here).
#[tokio::test]
async fn a_sign_in_elsewhere_rotates_the_accounts_connected_sessions() {
    let app = spawn_app_with(|c| c.session_idle_secs = 3).await;
    let ada = app.connect_bound("ada").await;
    let mut laptop = Browser::for_app(app.addr);
    protect(&ada, &mut laptop).await;
    // Whatever `passkey_add`'s own rotation sent is past.
    let _ = ada.next_session(Duration::from_millis(500)).await;
    let signed_in = sign_in(app.addr, &mut laptop, "ada").await;
    let told = ada
        .next_session(Duration::from_secs(5))
        .await
        .expect("rotated while connected");
    let current =
        BoundClient::connect(&app.url(), json!({ "sessionID": told }), ada.key.clone()).await;
    assert_eq!(current.session_id, told, "the laptop's current secret");
    let phone = signed_in["sessionID"].as_str().unwrap();
    assert_eq!(
        app.resume(phone).await.session_id,
        phone,
        "not the new device's"
    );
}

/// `--max-sessions-per-user`: a passkey sign-in past it makes no session (409
/// `too_many_sessions`); ending one of the account's sessions makes room again. (Before, every
/// sign-in made one more session.)
#[tokio::test]
async fn passkey_sign_ins_stop_at_the_accounts_session_limit() {
    let app = spawn_app_with(|c| c.max_sessions_per_user = 2).await;
    let ada = app.connect_bound("ada").await;
    let mut browser = Browser::for_app(app.addr);
    protect(&ada, &mut browser).await;
    let phone = sign_in(app.addr, &mut browser, "ada").await;

    let (ceremony, public_key) = start_sign_in(app.addr, "ada").await;
    let credential = browser.get(&public_key).await;
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/signin",
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "too_many_sessions"), "{body}");
    let devices = ada.request("devices", json!({})).await;
    assert_eq!(
        devices["ok"]["devices"].as_array().unwrap().len(),
        2,
        "{devices}"
    );

    let phone = app.resume(phone["sessionID"].as_str().unwrap()).await;
    phone.request("logout", json!({})).await;
    let again = sign_in(app.addr, &mut browser, "ada").await;
    assert_eq!(again["userID"], ada.user_id.as_str());
}

#[tokio::test]
async fn a_ceremony_is_single_use_even_when_finished_twice_at_once() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let mut browser = Browser::for_app(app.addr);
    protect(&ada, &mut browser).await;

    let (ceremony, public_key) = start_sign_in(app.addr, "ada").await;
    let credential = browser.get(&public_key).await;
    let finish = json!({ "ceremony": ceremony, "credential": credential });
    let (a, b) = tokio::join!(
        post_json(app.addr, "/api/passkey/signin", finish.clone()),
        post_json(app.addr, "/api/passkey/signin", finish.clone()),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 410], "{} {}", a.1, b.1);
    let (status, body) = post_json(app.addr, "/api/passkey/signin", finish).await;
    assert_eq!((status, code(&body)), (410, "ceremony_expired"));
}

/// A counting authenticator and its clone: the clone signs on a ceremony started before the
/// owner's last sign-in moved the stored counter, with a counter that does not pass the stored
/// one. The crate's own check (against the ceremony's state, taken at its start) passes; the
/// check against the stored counter refuses it, and the owner still signs in. (Before, the
/// clone got a session: a counter that did not advance was just not written.)
#[tokio::test]
async fn a_cloned_authenticator_whose_counter_does_not_advance_is_refused() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let mut laptop = Browser::counting(app.addr);
    protect(&ada, &mut laptop).await;
    let mut clone = laptop.clone_authenticator();

    let (stale, stale_options) = start_sign_in(app.addr, "ada").await;
    sign_in(app.addr, &mut laptop, "ada").await;
    let credential = clone.get(&stale_options).await;
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/signin",
        json!({ "ceremony": stale, "credential": credential }),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "passkey_refused"), "{body}");

    let again = sign_in(app.addr, &mut laptop, "ada").await;
    assert_eq!(again["userID"], ada.user_id.as_str());
}

#[tokio::test]
async fn an_assertion_is_bound_to_its_own_ceremony() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let mut browser = Browser::for_app(app.addr);
    protect(&ada, &mut browser).await;

    let (first, _) = start_sign_in(app.addr, "ada").await;
    let (_, other_options) = start_sign_in(app.addr, "ada").await;
    let signed_for_other = browser.get(&other_options).await;
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/signin",
        json!({ "ceremony": first, "credential": signed_for_other }),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "passkey_refused"), "{body}");

    // Another site's page (another origin in the client data) asserting with this passkey.
    let (ceremony, options) = start_sign_in(app.addr, "ada").await;
    browser.origin = Url::parse("http://localhost:1").unwrap();
    let credential = browser.get(&options).await;
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/signin",
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "passkey_refused"), "{body}");
}

#[tokio::test]
async fn adding_a_passkey_without_options_or_with_a_bad_credential_changes_nothing() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let answer = ada
        .request("passkey_add", json!({ "credential": { "id": "x" } }))
        .await;
    assert_eq!(code(&answer), "ceremony_expired", "{answer}");

    let options = ada.request("passkey_options", json!({})).await;
    assert!(options["ok"]["publicKey"].is_object());
    for bad in [
        json!(null),
        json!("x"),
        json!({ "credential": "x" }),
        json!({}),
    ] {
        let answer = ada.request("passkey_add", bad.clone()).await;
        assert_eq!(code(&answer), "invalid_payload", "{bad}: {answer}");
    }
    let answer = ada
        .request(
            "passkey_add",
            json!({ "credential": { "id": "x", "response": {} } }),
        )
        .await;
    assert_eq!(code(&answer), "passkey_refused", "{answer}");
    // The options were used up by that attempt.
    let mut browser = Browser::for_app(app.addr);
    let credential = browser.create(&options["ok"]["publicKey"]).await;
    let answer = ada
        .request("passkey_add", json!({ "credential": credential }))
        .await;
    assert_eq!(code(&answer), "ceremony_expired", "{answer}");

    // Nothing is protected.
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/options",
        json!({ "username": "ada" }),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "unknown_name"));
    app.connect_as("ADA").await;
}

/// An account that holds the most passkeys it may is refused at `passkey_options` (review
/// finding 4), with its own text: no options, so no credential the account could not keep.
#[tokio::test]
async fn a_full_account_is_refused_before_a_credential_is_made() {
    let most = 16;
    let app = spawn_app_with(|c| c.passkey_registrations_per_hour = 100).await;
    let ada = app.connect_bound("ada").await;
    for _ in 0..most {
        // One authenticator each: an authenticator holds one passkey per site and account.
        protect(&ada, &mut Browser::for_app(app.addr)).await;
    }
    let answer = ada.request("passkey_options", json!({})).await;
    assert_eq!(code(&answer), "passkey_refused", "{answer}");
    assert!(answer.get("ok").is_none(), "no options: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("most passkeys"),
        "{answer}"
    );
    let listed = ada.request("passkeys", json!({})).await;
    assert_eq!(listed["ok"]["passkeys"].as_array().unwrap().len(), most);
}

#[tokio::test]
async fn registrations_are_priced_per_user() {
    let app = spawn_app_with(|c| c.passkey_registrations_per_hour = 2).await;
    let ada = app.connect_bound("ada").await;
    for _ in 0..2 {
        let answer = ada.request("passkey_options", json!({})).await;
        assert!(answer["ok"]["publicKey"].is_object(), "{answer}");
    }
    let answer = ada.request("passkey_options", json!({})).await;
    assert_eq!(code(&answer), "rate_limited", "{answer}");
    // Another user has a budget of their own.
    let bob = app.connect_bound("bob").await;
    assert!(bob.request("passkey_options", json!({})).await["ok"].is_object());
}

#[tokio::test]
async fn sign_in_requests_are_bounded_typed_and_priced() {
    let app = spawn_app_with(|c| {
        c.passkey_ceremony_burst_per_ip = 3;
        c.passkey_ceremonies_per_ip_per_min = 1;
    })
    .await;
    let addr = app.addr;
    // Shapes: each a typed 400, no token taken.
    for bad in ["", "[]", "{}", r#"{"username":5}"#, "not json"] {
        let (status, _, body) = post(addr, "/api/passkey/options", bad, &[]).await;
        assert_eq!((status, code(&body)), (400, "invalid_payload"), "{bad}");
    }
    for bad in [
        json!({}),
        json!({ "ceremony": "c" }),
        json!({ "ceremony": "c", "credential": "x" }),
        json!({ "ceremony": "x".repeat(65), "credential": {} }),
        json!({ "ceremony": "0123456789ABCDEF0123456789ABCDEF", "credential": {} }),
        json!({ "ceremony": "{0123456789abcdef0123456789abcd}", "credential": {} }),
        json!({ "ceremony": "0123456789abcdef0123456789abcde", "credential": {} }),
    ] {
        let (status, body) = post_json(addr, "/api/passkey/signin", bad.clone()).await;
        assert_eq!((status, code(&body)), (400, "invalid_payload"), "{bad}");
    }
    // Over 16 KiB: 413, declared or not.
    let huge = format!(r#"{{"username":"{}"}}"#, "a".repeat(17 * 1024));
    let (status, head, body) = post(addr, "/api/passkey/options", &huge, &[]).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"));
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    // Another site's page: 403 before anything is read.
    let (status, _, _) = post(
        addr,
        "/api/passkey/options",
        r#"{"username":"ada"}"#,
        &["Origin: http://evil.example"],
    )
    .await;
    assert_eq!(status, 403);

    // Three tokens: an unknown name, a guessed ceremony and a start each take one.
    let (status, body) = post_json(
        addr,
        "/api/passkey/options",
        json!({ "username": "nobody" }),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "unknown_name"));
    let (status, body) = post_json(
        addr,
        "/api/passkey/signin",
        json!({ "ceremony": "0123456789abcdef0123456789abcdef", "credential": {} }),
    )
    .await;
    assert_eq!((status, code(&body)), (410, "ceremony_expired"));
    let (status, _) = post_json(
        addr,
        "/api/passkey/options",
        json!({ "username": "nobody" }),
    )
    .await;
    assert_eq!(status, 404);
    let (status, head, body) =
        post(addr, "/api/passkey/options", r#"{"username":"ada"}"#, &[]).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"));
    // One token a minute: the next comes within a minute, and `Retry-After` says when.
    let retry_after: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After in seconds: {head}"));
    assert!((50..=60).contains(&retry_after), "{retry_after}");
}

/// Only a connection that proved possession of its session's key may add a passkey: a copied
/// session id (here: the tutorial's client, resuming by the id alone) cannot protect the name,
/// and neither can a connection that presents the copied id with a key of its own (review
/// finding 1: before, the session was bound to the first key offered, which let whoever held a
/// copy claim the name and lock its owner out).
#[tokio::test]
async fn an_unbound_connection_cannot_add_a_passkey() {
    let app = spawn_app().await;
    let tutorial = app.connect_as("ada").await;
    for event in ["passkey_options", "passkey_add", "passkey_remove"] {
        let answer = tutorial
            .request(
                event,
                json!({ "credential": {}, "passkeyID": "0123456789abcdef" }),
            )
            .await;
        assert_eq!(code(&answer), "proof_required", "{event}: {answer}");
    }
    // The copied id with a thief's own key: let in as the tutorial client is, not bound.
    let thief = BoundClient::connect(
        &app.url(),
        json!({ "sessionID": tutorial.session_id }),
        NativeKey::generate(),
    )
    .await;
    assert_eq!(thief.user_id, tutorial.user_id);
    let answer = thief.request("passkey_options", json!({})).await;
    assert_eq!(code(&answer), "proof_required", "{answer}");
    // The owner still resumes with the id alone, and the name is not protected.
    tutorial.close().await;
    let owner = app.resume(&tutorial.session_id).await;
    assert_eq!(owner.user_id, tutorial.user_id);
    let ghost = app.connect_as("ada").await;
    assert_ne!(ghost.user_id, tutorial.user_id);
    // A session its browser bound at sign-up may.
    let bound = app.connect_bound("bob").await;
    protect(&bound, &mut Browser::for_app(app.addr)).await;
}

/// A passkey sign-in that carries a key and a proof over its ceremony makes a session bound
/// from birth: it resumes only with a proof by that key, and may add a passkey at once. A proof
/// that does not sign this ceremony is refused `proof_required` and leaves the ceremony for a
/// good one. Without a key, the session is unbound for good (review finding 1).
#[tokio::test]
async fn a_passkey_sign_in_with_a_key_makes_a_bound_session() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let mut laptop = Browser::for_app(app.addr);
    protect(&ada, &mut laptop).await;

    let key = NativeKey::generate();
    let (ceremony, options) = start_sign_in(app.addr, "ada").await;
    let credential = laptop.get(&options).await;
    let proof = key.prove(&format!("signin:{}", "0".repeat(32)));
    let (pop, pop_key) = (proof.pop, proof.pop_key);
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/signin",
        json!({ "ceremony": ceremony, "credential": credential, "popKey": pop_key, "pop": pop }),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "proof_required"), "{body}");
    for bad in [
        json!({ "ceremony": ceremony, "credential": credential, "popKey": "x", "pop": pop }),
        json!({ "ceremony": ceremony, "credential": credential, "popKey": pop_key }),
        json!({ "ceremony": ceremony, "credential": credential, "pop": pop }),
        json!({ "ceremony": ceremony, "credential": credential, "popKey": 5, "pop": pop }),
    ] {
        let (status, body) = post_json(app.addr, "/api/passkey/signin", bad.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_payload"),
            "{bad}: {body}"
        );
    }
    let (status, body) = finish_with_key(app.addr, &ceremony, &credential, &key).await;
    assert_eq!(status, 200, "the ceremony was left for this one: {body}");
    let secret = body["sessionID"].as_str().unwrap();
    let refusal = app.refusal(json!({ "sessionID": secret })).await;
    assert!(
        refusal.ends_with(r#"{"message":"proof required"}"#),
        "{refusal}"
    );
    let phone = BoundClient::connect(&app.url(), json!({ "sessionID": secret }), key).await;
    assert_eq!(phone.user_id, ada.user_id);
    protect(&phone, &mut Browser::for_app(app.addr)).await;

    // Without a key: a session that can chat and list, never add or remove.
    let unbound = sign_in(app.addr, &mut laptop, "ada").await;
    let thief = BoundClient::connect(
        &app.url(),
        json!({ "sessionID": unbound["sessionID"] }),
        NativeKey::generate(),
    )
    .await;
    let answer = thief.request("passkey_options", json!({})).await;
    assert_eq!(code(&answer), "proof_required", "{answer}");
}

/// Review finding 1c: adding a passkey ends every session of the account that is not bound to
/// a key (a passkey sign-in made without one here; a tutorial client's or a copied id's alike),
/// closing its sockets; the bound sessions, the adding one and another device's, stay.
#[tokio::test]
async fn adding_a_passkey_ends_the_accounts_unbound_sessions_and_keeps_the_bound_ones() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    let mut laptop = Browser::for_app(app.addr);
    protect(&ada, &mut laptop).await;
    // A bound session on another device, and an unbound one (a sign-in without a key).
    let key = NativeKey::generate();
    let body = sign_in_with_key(app.addr, &mut laptop, "ada", &key).await;
    let phone =
        BoundClient::connect(&app.url(), json!({ "sessionID": body["sessionID"] }), key).await;
    let unbound = sign_in(app.addr, &mut laptop, "ada").await;
    let unbound_id = unbound["sessionID"].as_str().unwrap().to_owned();
    let mut tutorial = app.resume(&unbound_id).await;
    assert_eq!(tutorial.user_id, ada.user_id);
    let count = |answer: Value| answer["ok"]["devices"].as_array().map(Vec::len);
    assert_eq!(count(ada.request("devices", json!({})).await), Some(3));

    protect(&ada, &mut Browser::for_app(app.addr)).await;
    tokio::time::timeout(Duration::from_secs(1), tutorial.next("close"))
        .await
        .expect("the unbound session's socket closed within a second");
    let refusal = app.refusal(json!({ "sessionID": unbound_id })).await;
    assert!(refusal.contains("invalid username"), "ended: {refusal}");
    assert_eq!(count(ada.request("devices", json!({})).await), Some(2));
    let listed = phone.request("passkeys", json!({})).await;
    assert_eq!(
        listed["ok"]["passkeys"].as_array().map(Vec::len),
        Some(2),
        "the phone's bound session stays: {listed}"
    );
}

/// On by default; `--passkeys=false` (or `TETHER_PASSKEYS=false`) turns them off: the same
/// answers as with no domain.
#[tokio::test]
async fn passkeys_are_on_by_default_and_off_when_turned_off() {
    use clap::Parser;
    assert!(
        server::Config::for_data_dir("unused").passkeys,
        "on by default"
    );
    let parse = |args: &[&str]| server::Config::try_parse_from(args).map(|c| c.passkeys);
    assert!(parse(&["tether", "--passkeys"]).unwrap());
    assert!(!parse(&["tether", "--passkeys=false"]).unwrap());
    assert!(parse(&["tether", "--passkeys=maybe"]).is_err());
    assert_passkeys_off(&spawn_app_with(|c| c.passkeys = false).await).await;
}

#[tokio::test]
async fn passkeys_are_off_without_a_domain() {
    assert_passkeys_off(&spawn_app_with(|c| c.passkey_rp_id = Some("chat.example".into())).await)
        .await;
}

/// Passkeys off: the socket event answers `passkeys_unavailable`, the HTTP route 404 with it.
async fn assert_passkeys_off(app: &TestApp) {
    let ada = app.connect_as("ada").await;
    assert_eq!(
        code(&ada.request("passkey_options", json!({})).await),
        "passkeys_unavailable"
    );
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/options",
        json!({ "username": "ada" }),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "passkeys_unavailable"));
}

/// Two nodes over one Redis with one public origin: a name protected on node 0 is refused on
/// node 1, and a sign-in started on node 0 finishes on node 1.
async fn a_sign_in_started_on_one_node_finishes_on_the_other(redis: SharedRedis) {
    let origin = "http://localhost:39999";
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = Vec::new();
    for dir in &dirs {
        let mut args = redis.node_args();
        args.extend(["--passkeys", "--public-origin", origin].map(str::to_owned));
        nodes.push(ChildServer::start_with(dir.path(), &args).await);
    }
    let ada = BoundClient::connect(
        &nodes[0].url(),
        json!({ "username": "ada" }),
        NativeKey::generate(),
    )
    .await;
    let mut browser = Browser::at(origin);
    protect(&ada, &mut browser).await;

    let mut refused = TestClient::connect(&nodes[1].url(), json!({ "username": "Ada" })).await;
    let refusal = refused.next("error").await;
    assert!(
        refusal
            .as_str()
            .unwrap_or_default()
            .ends_with(r#"{"message":"name protected"}"#),
        "{refusal}"
    );

    let (ceremony, options) = start_sign_in(nodes[0].addr, "ada").await;
    let credential = browser.get(&options).await;
    let (status, body) = post_json(
        nodes[1].addr,
        "/api/passkey/signin",
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["userID"], ada.user_id.as_str());
    let mut phone =
        TestClient::connect(&nodes[0].url(), json!({ "sessionID": body["sessionID"] })).await;
    phone.expect_session().await;
    assert_eq!(phone.user_id, ada.user_id);
}

/// The account's passkeys are listed to its sessions (the browser each was added in, when it
/// was added and last used), and a proving connection removes any one: a removed passkey no
/// longer signs in, and removing the last gives the name up (a sign-up with it is let in
/// again). Another account's passkey is unknown; an unbound connection may list, not remove.
#[tokio::test]
async fn passkeys_are_listed_and_removed_and_the_last_gives_the_name_up() {
    let app = spawn_app().await;
    let ada = app.connect_bound("ada").await;
    assert_eq!(
        ada.request("passkeys", json!({})).await,
        json!({ "ok": { "protected": false, "passkeys": [] } })
    );
    let (mut laptop, mut phone) = (Browser::for_app(app.addr), Browser::for_app(app.addr));
    protect(&ada, &mut laptop).await;
    protect(&ada, &mut phone).await;
    let devices = ada.request("devices", json!({})).await;
    let browser = devices["ok"]["devices"][0]["browser"].clone();

    tokio::time::sleep(Duration::from_millis(5)).await;
    sign_in(app.addr, &mut laptop, "ada").await;
    let listed = ada.request("passkeys", json!({})).await;
    assert_eq!(listed["ok"]["protected"], true, "{listed}");
    let passkeys = listed["ok"]["passkeys"].as_array().expect("a list").clone();
    assert_eq!(passkeys.len(), 2, "{listed}");
    for passkey in &passkeys {
        let id = passkey["passkeyID"].as_str().unwrap();
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(passkey["addedIn"], browser, "the browser it was added in");
        assert!(passkey["added"].as_i64().unwrap() > 0);
    }
    // The laptop's was used to sign in since; the phone's never was.
    let used: Vec<bool> = passkeys
        .iter()
        .map(|p| p["lastUsed"].as_i64() > p["added"].as_i64())
        .collect();
    assert_eq!(used.iter().filter(|u| **u).count(), 1, "{listed}");
    let laptop_id = passkeys[used.iter().position(|u| *u).unwrap()]["passkeyID"].clone();
    let phone_id = passkeys[used.iter().position(|u| !*u).unwrap()]["passkeyID"].clone();

    // Not by another account, nor by a connection that did not prove its key.
    let bob = app.connect_bound("bob").await;
    let answer = bob
        .request("passkey_remove", json!({ "passkeyID": laptop_id }))
        .await;
    assert_eq!(code(&answer), "unknown_passkey", "{answer}");
    let tutorial = app.connect_as("carol").await;
    assert_eq!(
        tutorial.request("passkeys", json!({})).await,
        json!({ "ok": { "protected": false, "passkeys": [] } })
    );
    let answer = tutorial
        .request("passkey_remove", json!({ "passkeyID": laptop_id }))
        .await;
    assert_eq!(code(&answer), "proof_required", "{answer}");

    // An assertion the laptop made before its passkey was removed is refused after.
    let (ceremony, options) = start_sign_in(app.addr, "ada").await;
    let credential = laptop.get(&options).await;
    assert_eq!(
        ada.request("passkey_remove", json!({ "passkeyID": laptop_id }))
            .await,
        json!({ "ok": { "protected": true } })
    );
    let (status, body) = post_json(
        app.addr,
        "/api/passkey/signin",
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "passkey_refused"), "{body}");
    let again = ada
        .request("passkey_remove", json!({ "passkeyID": laptop_id }))
        .await;
    assert_eq!(code(&again), "unknown_passkey", "{again}");
    let refusal = app.refusal(json!({ "username": "ada" })).await;
    assert!(
        refusal.ends_with(r#"{"message":"name protected"}"#),
        "{refusal}"
    );

    // The last one: the name is given up.
    assert_eq!(
        ada.request("passkey_remove", json!({ "passkeyID": phone_id }))
            .await,
        json!({ "ok": { "protected": false } })
    );
    assert_eq!(
        ada.request("passkeys", json!({})).await,
        json!({ "ok": { "protected": false, "passkeys": [] } })
    );
    let ghost = app.connect_as("Ada").await;
    assert_ne!(ghost.user_id, ada.user_id);
    // The account is still there and its session too; it may protect its name again.
    let again = app.resume_bound(&ada).await;
    protect(&again, &mut Browser::for_app(app.addr)).await;
}

on_redis_and_cluster!(a_sign_in_started_on_one_node_finishes_on_the_other);
