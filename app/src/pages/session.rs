//! Your session: who you are, the connection, and signing out.

use leptos::prelude::*;

use super::RequireAccount;
use crate::realtime::{use_realtime, Status};

#[component]
pub fn SessionPage() -> impl IntoView {
    view! {
        <RequireAccount>
            <SessionDetails/>
        </RequireAccount>
    }
}

#[component]
fn SessionDetails() -> impl IntoView {
    let rt = use_realtime();
    let account = move || rt.account.get();
    let state = move || match rt.status.get() {
        Status::Idle => "Not connected",
        Status::Connecting => "Connecting",
        Status::Online => "Online",
        Status::Offline { .. } => "Offline, reconnecting",
        Status::SignedOut => "Signed out",
        Status::Elsewhere => "Open in another tab",
        Status::Moved => "Moved to another tab",
    };
    view! {
        <section class="page">
            <h1>"Your session"</h1>
            <dl class="facts">
                <dt>"Name"</dt>
                <dd data-testid="session-name">{move || account().map(|a| a.username)}</dd>
                <dt>"User ID"</dt>
                <dd><code data-testid="session-user-id">{move || account().map(|a| a.user_id)}</code></dd>
                <dt>"Connection"</dt>
                <dd data-testid="session-state">{state}</dd>
                <dt>"Socket ID"</dt>
                <dd><code data-testid="session-socket-id">{move || rt.socket_id.get().unwrap_or_else(|| "—".into())}</code></dd>
                <dt>"Reconnects"</dt>
                <dd data-testid="session-reconnects">{move || rt.reconnects.get()}</dd>
                <dt>"Connection mode"</dt>
                <dd data-testid="session-mode">
                    {move || match rt.with(|s| s.is_shared()) {
                        Some(true) => "Shared by this browser's tabs",
                        Some(false) => "This tab's own",
                        None => "—",
                    }}
                </dd>
                <dt>"Your connections"</dt>
                <dd data-testid="session-tabs">
                    {move || rt.with(|s| s.tabs()).flatten().map(|n| n.to_string()).unwrap_or_else(|| "—".into())}
                </dd>
            </dl>
            <p class="hint">
                "Signing out ends this session on the server: every tab using it is signed out at once. "
                "Signing out everywhere ends every session of your name."
            </p>
            <div class="actions">
                <button type="button" class="danger" on:click=move |_| rt.sign_out(false)>
                    "Sign out"
                </button>
                <button type="button" class="danger" on:click=move |_| rt.sign_out(true)>
                    "Sign out everywhere"
                </button>
            </div>
        </section>
    }
}
