//! Your session: who you are, the connection, your devices, and signing out.

use leptos::prelude::*;

use super::RequireAccount;
use crate::realtime::{use_realtime, Status};
use crate::time;

#[component]
pub fn SessionPage() -> impl IntoView {
    view! {
        <RequireAccount>
            <SessionDetails/>
            {crate::passkeys_offered().then(|| view! { <ProtectName/> })}
            <Devices/>
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

/// "Protect your name": the account's passkeys, each removable after a confirmation in place,
/// and adding one, so that nobody else can sign up with this name and the account can be
/// signed in to from any browser that has a passkey of it.
#[component]
fn ProtectName() -> impl IntoView {
    use crate::passkeys::Protecting;
    let rt = use_realtime();
    let state = move || rt.protecting.get();
    // The passkey whose removal waits for its confirmation.
    let confirming = RwSignal::new(None::<String>);
    // Asked for on every (re)connect while the page is open, and again when the account's own
    // mark changes: another tab or device protected the name or removed its last passkey (its
    // `user connected` news reaches every socket of the account).
    let own_mark = Memo::new(move |_| {
        rt.with(|s| {
            let chat = s.chat();
            let me = chat.me.as_deref();
            me.and_then(|me| chat.peer(me)).is_some_and(|p| p.protected)
        })
        .unwrap_or(false)
    });
    Effect::new(move |_| {
        // Read, not only tracked: a memo never read has computed nothing, so it depends on
        // nothing and never changes.
        let _ = own_mark.get();
        if rt.status.get() == Status::Online {
            crate::passkeys::load(rt);
        }
    });
    let listed = move || rt.passkeys.get();
    let rows = move || listed().list.map(|l| l.passkeys).unwrap_or_default();
    let protected = move || listed().list.is_some_and(|l| l.protected);
    let held = move || listed().list.is_some_and(|l| !l.passkeys.is_empty());
    view! {
        <section class="page" aria-labelledby="passkey-title">
            <h2 id="passkey-title">"Protect your name"</h2>
            <p class="hint">
                "Add a passkey to keep this name yours: nobody else can sign up with it, and you "
                "can sign in to it with the passkey from any browser or device."
            </p>
            <p data-testid="protect-status" role="status">
                {move || if protected() || state() == Protecting::Protected {
                    "Your name is protected by a passkey."
                } else if listed().list.is_some() {
                    "Your name is not protected."
                } else {
                    ""
                }}
            </p>
            <ul class="devices" aria-label="Your passkeys">
                <For each=rows key=|p| p.passkey_id.clone() let:passkey>
                    {
                        let id = passkey.passkey_id.clone();
                        let asked = { let id = id.clone(); Memo::new(move |_| confirming.get().as_deref() == Some(id.as_str())) };
                        let last = move || rows().len() == 1;
                        let remove = move |_| {
                            if asked.get() {
                                confirming.set(None);
                                crate::passkeys::remove(rt, &id);
                            } else {
                                confirming.set(Some(id.clone()));
                            }
                        };
                        let browser = if passkey.added_in.is_empty() { "an unknown browser".to_owned() } else { passkey.added_in.clone() };
                        let label = format!("Remove the passkey added in {browser}");
                        let (added, used) = (passkey.added, passkey.last_used);
                        view! {
                            <li class="device" data-testid="passkey">
                                <strong>{format!("Passkey added in {browser}")}</strong>
                                <br/>
                                <span class="hint">
                                    {(added > 0).then(|| view! {
                                        "Added " <time datetime=time::iso(added)>{time::full(added)}</time>
                                        "; last used " <time datetime=time::iso(used)>{time::full(used)}</time>
                                    })}
                                </span>
                                <Show when=move || asked.get() && last()>
                                    <p class="hint" data-testid="last-passkey-warning">
                                        "This is your last passkey: once it is removed, anyone may sign up with "
                                        "your name, and you can no longer sign in with a passkey."
                                    </p>
                                </Show>
                                <div class="actions">
                                    <button type="button" class="danger" aria-label=move || if asked.get() { format!("Confirm: {label}") } else { label.clone() } on:click=remove>
                                        {move || if asked.get() { "Confirm: Remove" } else { "Remove" }}
                                    </button>
                                    <Show when=move || asked.get()>
                                        <button type="button" on:click=move |_| confirming.set(None)>"Cancel"</button>
                                    </Show>
                                </div>
                            </li>
                        }
                    }
                </For>
            </ul>
            <div class="actions">
                <button
                    type="button"
                    data-testid="protect-name"
                    disabled=move || state() == Protecting::Busy
                    on:click=move |_| crate::passkeys::protect(rt)
                >
                    {move || match state() {
                        Protecting::Busy => "Adding a passkey…",
                        _ if held() || state() == Protecting::Protected => "Add another passkey",
                        _ => "Protect your name with a passkey",
                    }}
                </button>
            </div>
            {move || match state() {
                Protecting::Failed(why) => Some(view! { <p role="alert" data-testid="protect-error">{why}</p> }),
                _ => None,
            }}
            {move || listed().error.map(|e| view! { <p role="alert" data-testid="passkeys-error">{e}</p> })}
        </section>
    }
}

/// Every session of the account, this one marked; each can be ended here (this one: signing
/// out), after a confirmation in place.
#[component]
fn Devices() -> impl IntoView {
    let rt = use_realtime();
    // The device whose end waits for its confirmation.
    let confirming = RwSignal::new(None::<String>);
    // Asked for on every (re)connect while the page is open.
    Effect::new(move |_| {
        if rt.status.get() == Status::Online {
            rt.load_devices();
        }
    });
    let devices = move || rt.with(|s| s.devices().clone()).unwrap_or_default();
    let rows = move || devices().list.unwrap_or_default();
    view! {
        <section class="page" aria-labelledby="devices-title">
            <h2 id="devices-title">"Your devices"</h2>
            <p class="hint">"Every browser signed in to your name. Revoking one signs it out at once."</p>
            <ul class="devices" aria-busy=move || devices().busy.to_string()>
                <For each=rows key=|d| d.device_id.clone() let:device>
                    {
                        let id = device.device_id.clone();
                        let browser = if device.browser.is_empty() { "Unknown browser".to_owned() } else { device.browser.clone() };
                        let current = device.current;
                        let asked = { let id = id.clone(); Memo::new(move |_| confirming.get().as_deref() == Some(id.as_str())) };
                        let end = {
                            let id = id.clone();
                            move |_| {
                                if !asked.get() {
                                    confirming.set(Some(id.clone()));
                                } else if current {
                                    rt.sign_out(false);
                                } else {
                                    confirming.set(None);
                                    rt.revoke_device(&id);
                                }
                            }
                        };
                        let verb = if current { "Sign out" } else { "Revoke" };
                        let label = format!("{verb} {browser}");
                        let (first, last) = (device.first_seen, device.last_seen);
                        view! {
                            <li class="device" data-testid="device">
                                <strong>{browser}</strong>
                                {current.then(|| view! { " " <span class="this-device">"(This device)"</span> })}
                                <br/>
                                <span class="hint">
                                    "First seen " <time datetime=time::iso(first)>{time::full(first)}</time>
                                    "; last seen " <time datetime=time::iso(last)>{time::full(last)}</time>
                                </span>
                                <div class="actions">
                                    <button type="button" class="danger" aria-label=move || if asked.get() { format!("Confirm: {label}") } else { label.clone() } on:click=end>
                                        {move || if asked.get() { format!("Confirm: {verb}") } else { verb.to_owned() }}
                                    </button>
                                    <Show when=move || asked.get()>
                                        <button type="button" on:click=move |_| confirming.set(None)>"Cancel"</button>
                                    </Show>
                                </div>
                            </li>
                        }
                    }
                </For>
            </ul>
            {move || devices().error.map(|e| view! { <p role="alert">{e}</p> })}
        </section>
    }
}
