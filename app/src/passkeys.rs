//! Passkeys (issue #25): protecting the signed-in name, and signing in with a passkey. The
//! browser's WebAuthn API and the sign-in's two HTTP requests are in `app/js/identity.js`
//! (strings in and out, no web-sys bindings); the registration's two events go through the
//! session like any other request with an ack (so through the SharedWorker too).

use leptos::prelude::*;

use crate::realtime::Realtime;

/// Where protecting the name is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Protecting {
    #[default]
    Idle,
    /// Asking the server, or the browser (its passkey prompt is up).
    Busy,
    Protected,
    /// Why it failed, for the user.
    Failed(String),
}

/// The account's passkeys as the session page shows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listed {
    /// `None` until the first answer.
    pub list: Option<protocol::payloads::PasskeyList>,
    /// Why the last list or removal failed, for the user.
    pub error: Option<String>,
}

/// The tags of the session requests this module makes (`Input::Request`), told apart in
/// [`on_reply`].
pub const OPTIONS_TAG: u64 = 0x7e7_0001;
pub const ADD_TAG: u64 = 0x7e7_0002;
pub const LIST_TAG: u64 = 0x7e7_0003;
pub const REMOVE_TAG: u64 = 0x7e7_0004;

const NOT_CONNECTED: &str = "Not connected. Try again once online.";

/// Asks for the account's passkeys (the answer lands in `rt.passkeys`).
pub fn load(rt: Realtime) {
    rt.request(LIST_TAG, protocol::events::PASSKEYS, "{}");
}

/// Removes the passkey `passkey_id`; the list is asked for again once it is done.
pub fn remove(rt: Realtime, passkey_id: &str) {
    let request = protocol::json::to_string(&protocol::payloads::RemovePasskeyRequest {
        passkey_id: passkey_id.to_owned(),
    });
    rt.request(REMOVE_TAG, protocol::events::PASSKEY_REMOVE, &request);
}

/// The error of an ack, for the user; `None` when it is `ok`.
fn refused<T: protocol::json::FromJson>(ack: &str) -> Option<String> {
    match protocol::json::from_str::<protocol::Ack<T>>(ack) {
        Ok(protocol::Ack::Ok(_)) => None,
        Ok(protocol::Ack::Error(error)) => Some(error.message),
        Err(_) => Some("The server's answer could not be read.".into()),
    }
}

#[cfg(feature = "hydrate")]
mod js {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(module = "/js/identity.js")]
    extern "C" {
        #[wasm_bindgen(catch, js_name = passkeyCreate)]
        pub async fn passkey_create(ack: &str) -> Result<JsValue, JsValue>;
        #[wasm_bindgen(catch, js_name = passkeySignIn)]
        pub async fn passkey_sign_in(username: &str) -> Result<JsValue, JsValue>;
        #[wasm_bindgen(js_name = ackError)]
        pub fn ack_error(ack: &str) -> String;
    }
}

/// Starts protecting the signed-in name: the server's options, the browser's prompt, then the
/// server's check. The outcome is in `rt.protecting`.
pub fn protect(rt: Realtime) {
    if rt.protecting.get_untracked() == Protecting::Busy {
        return;
    }
    rt.protecting.set(Protecting::Busy);
    rt.request(OPTIONS_TAG, protocol::events::PASSKEY_OPTIONS, "{}");
}

/// An answer to one of this module's requests: `ack` is its JSON text, `None` when none came
/// (disconnected, or no answer in time).
#[allow(unused_variables)]
pub fn on_reply(rt: Realtime, tag: u64, ack: Option<String>) {
    match (tag, ack) {
        (LIST_TAG | REMOVE_TAG, None) => {
            rt.passkeys.update(|p| p.error = Some(NOT_CONNECTED.into()))
        }
        (LIST_TAG, Some(ack)) => {
            match protocol::json::from_str::<protocol::Ack<protocol::payloads::PasskeyList>>(&ack) {
                Ok(protocol::Ack::Ok(list)) => rt.passkeys.set(Listed {
                    list: Some(list),
                    error: None,
                }),
                _ => rt
                    .passkeys
                    .update(|p| p.error = refused::<protocol::payloads::PasskeyList>(&ack)),
            }
        }
        (REMOVE_TAG, Some(ack)) => {
            let error = refused::<protocol::payloads::PasskeyRemoved>(&ack);
            rt.passkeys.update(|p| p.error = error);
            // What protects the name is the list's to say from now on.
            if rt.protecting.get_untracked() == Protecting::Protected {
                rt.protecting.set(Protecting::Idle);
            }
            load(rt);
        }
        (_, None) => rt.protecting.set(Protecting::Failed(NOT_CONNECTED.into())),
        (_, Some(ack)) => on_ceremony_reply(rt, tag, ack),
    }
}

#[allow(unused_variables)]
fn on_ceremony_reply(rt: Realtime, tag: u64, ack: String) {
    #[cfg(feature = "hydrate")]
    match tag {
        OPTIONS_TAG => leptos::task::spawn_local(async move {
            match js::passkey_create(&ack).await {
                Ok(add) => match add.as_string() {
                    Some(add) => rt.request(ADD_TAG, protocol::events::PASSKEY_ADD, &add),
                    None => rt
                        .protecting
                        .set(Protecting::Failed("No passkey was made.".into())),
                },
                Err(e) => rt
                    .protecting
                    .set(Protecting::Failed(e.as_string().unwrap_or_default())),
            }
        }),
        ADD_TAG => {
            let error = js::ack_error(&ack);
            rt.protecting.set(if error.is_empty() {
                Protecting::Protected
            } else {
                Protecting::Failed(error)
            });
            load(rt);
        }
        _ => {}
    }
}

/// Signs in as `username` with a passkey; on success this browser holds the new session and
/// connects with it. A failure is told in `rt.sign_in_error`.
#[allow(unused_variables)]
pub fn sign_in(rt: Realtime, username: String) {
    rt.sign_in_error.set(None);
    #[cfg(feature = "hydrate")]
    leptos::task::spawn_local(async move {
        match js::passkey_sign_in(&username).await {
            Ok(done) => {
                let account = done
                    .as_string()
                    .and_then(|text| protocol::json::from_str(&text).ok());
                match account {
                    Some(account) => rt.resume_with(account),
                    None => rt
                        .sign_in_error
                        .set(Some("The server's answer could not be read.".into())),
                }
            }
            Err(e) => rt.sign_in_error.set(Some(
                e.as_string()
                    .unwrap_or_else(|| "The passkey could not be used.".into()),
            )),
        }
    });
}
