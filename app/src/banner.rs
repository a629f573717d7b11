//! The connection banner: says what is wrong, and nothing while all is well.

use leptos::prelude::*;

use crate::realtime::{use_realtime, Status};

#[component]
pub fn ConnectionBanner() -> impl IntoView {
    let rt = use_realtime();
    // A clock for the countdown, ticking only while there is one to show.
    let now = RwSignal::new(0i64);
    let back_online = RwSignal::new(false);
    Effect::new(move |previous: Option<Status>| {
        let status = rt.status.get();
        if let (Some(Status::Offline { .. } | Status::Connecting), Status::Online) =
            (previous, status)
        {
            if rt.reconnects.get_untracked() > 0 {
                back_online.set(true);
                set_timeout(
                    move || back_online.set(false),
                    std::time::Duration::from_secs(3),
                );
            }
        }
        status
    });
    Effect::new(move |_| {
        if let Status::Offline { .. } = rt.status.get() {
            now.set(js_sys::Date::now() as i64);
            if let Ok(handle) = set_interval_with_handle(
                move || now.set(js_sys::Date::now() as i64),
                std::time::Duration::from_millis(500),
            ) {
                on_cleanup(move || handle.clear());
            }
        }
    });
    let message = move || -> Option<(&'static str, String)> {
        match rt.status.get() {
            Status::Offline { retry_at } => {
                let seconds = ((retry_at - now.get()).max(0) + 999) / 1000;
                Some(if seconds > 0 {
                    ("offline", format!("Offline. Reconnecting in {seconds} s…"))
                } else {
                    ("offline", "Offline. Reconnecting…".to_owned())
                })
            }
            Status::Connecting
                if rt.reconnects.get() > 0
                    || rt.socket_id.get().is_none() && rt.account.get().is_some() =>
            {
                Some(("connecting", "Connecting…".to_owned()))
            }
            Status::SignedOut => Some(("offline", "You were signed out.".to_owned())),
            Status::Online if back_online.get() => Some(("online", "Back online.".to_owned())),
            _ => None,
        }
    };
    view! {
        <div class="banner-slot" role="status" aria-live="polite">
            {move || message().map(|(kind, text)| view! {
                <p class=format!("banner banner-{kind}")>{text}</p>
            })}
        </div>
    }
}

/// Under the server's `reject` tab policy: says the session is in another tab and offers to
/// use it here (which ends the other tab's connection).
#[component]
pub fn TabConflict() -> impl IntoView {
    let rt = use_realtime();
    let text = move || match rt.status.get() {
        Status::Elsewhere => Some("Tether is open in another tab."),
        Status::Moved => Some("Your session moved to another tab."),
        _ => None,
    };
    view! {
        {move || text().map(|text| view! {
            <div class="tab-conflict" role="alert">
                <p>{text}</p>
                <button type="button" on:click=move |_| rt.take_over()>"Use here"</button>
            </div>
        })}
    }
}
