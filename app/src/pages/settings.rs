//! Settings: what the viewer shares with others and how Tether tells them about messages.
//! Read receipts are the server's (every device of the user has the same); the server says
//! when they change elsewhere.

use leptos::prelude::*;

use super::RequireAccount;
use crate::realtime::{use_realtime, Status};

#[component]
pub fn SettingsPage() -> impl IntoView {
    view! {
        <RequireAccount>
            <Settings/>
        </RequireAccount>
    }
}

#[component]
fn Settings() -> impl IntoView {
    let rt = use_realtime();
    // `None` until the server has said.
    let receipts = move || {
        rt.with(|s| s.chat().settings())
            .flatten()
            .and_then(|s| s.read_receipts)
    };
    // A change waits for the server's answer: until then the box shows what was asked, and a
    // refused or lost change says so (the box is back where the server has it).
    let change = move || rt.with(|s| s.settings_change().clone()).unwrap_or_default();
    let asked = move || change().wanted.and_then(|s| s.read_receipts);
    let online = move || rt.status.get() == Status::Online;
    view! {
        <section class="page settings">
            <h1>"Settings"</h1>
            <h2>"Privacy"</h2>
            <div class="setting">
                <input
                    type="checkbox"
                    id="read-receipts"
                    aria-describedby="read-receipts-hint"
                    prop:checked=move || asked().or_else(receipts).unwrap_or(true)
                    disabled=move || receipts().is_none() || !online() || asked().is_some()
                    on:change=move |ev| rt.set_read_receipts(event_target_checked(&ev))
                />
                <div>
                    <label for="read-receipts">"Send read receipts"</label>
                    <p class="hint" id="read-receipts-hint">
                        "People see “Seen” under the messages you have read. "
                        "Turned off, they do not, and you do not see theirs either."
                    </p>
                    <p class="hint" role="status">
                        {move || asked().is_some().then_some("Saving…")}
                    </p>
                    {move || change().error.map(|e| view! {
                        <p class="field-error" role="alert">{format!("Read receipts were not changed: {e}")}</p>
                    })}
                </div>
            </div>
            <h2>"Notifications"</h2>
            <crate::notify::NotificationSetting/>
        </section>
    }
}
