//! Sign-in: choose a name. Shown whenever this browser has no valid session.

use leptos::prelude::*;
use protocol::Username;

use crate::realtime::use_realtime;
use crate::router::use_location;

#[component]
pub fn SignInPage() -> impl IntoView {
    let rt = use_realtime();
    let name = RwSignal::new(String::new());
    let local_error = RwSignal::new(None::<String>);
    let submitting = RwSignal::new(false);
    let location = use_location();
    Effect::new(move |_| {
        if rt.account.get().is_some() {
            location.navigate("/", true);
        }
    });
    Effect::new(move |_| {
        if rt.sign_in_error.get().is_some() {
            submitting.set(false);
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match Username::parse(&name.get_untracked()) {
            Ok(username) => {
                local_error.set(None);
                submitting.set(true);
                rt.sign_in(username.as_str());
            }
            Err(e) => local_error.set(Some(format!("{}.", capitalize(&e.to_string())))),
        }
    };
    let with_passkey = move |_| match Username::parse(&name.get_untracked()) {
        Ok(username) => {
            local_error.set(None);
            crate::passkeys::sign_in(rt, username.as_str().to_owned());
        }
        Err(e) => local_error.set(Some(format!("{}.", capitalize(&e.to_string())))),
    };
    let error = move || local_error.get().or_else(|| rt.sign_in_error.get());
    view! {
        <section class="page signin">
            <h1>"Tether"</h1>
            <p class="lead">"Private messages on a session that survives reloads, new tabs and restarts."</p>
            <form on:submit=submit novalidate>
                <label for="username">"Your name"</label>
                <input
                    id="username"
                    name="username"
                    autocomplete="nickname"
                    maxlength="64"
                    required
                    prop:value=move || name.get()
                    on:input=move |ev| name.set(event_target_value(&ev))
                    aria-invalid=move || error().is_some().to_string()
                    aria-describedby="username-error"
                />
                <p id="username-error" class="field-error" role="alert">{error}</p>
                <button type="submit" disabled=move || submitting.get()>
                    {move || if submitting.get() { "Signing in…" } else { "Continue" }}
                </button>
                {crate::passkeys_offered()
                    .then(|| {
                        view! {
                            <button type="button" class="secondary" data-testid="passkey-sign-in" on:click=with_passkey>
                                "Sign in with a passkey"
                            </button>
                        }
                    })}
            </form>
        </section>
    }
}

/// Upper-cases the first letter of one of the protocol's own (ASCII, English) error messages.
/// ASCII only: full Unicode case mapping would add its tables to the wasm.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}
