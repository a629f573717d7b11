//! One module per route.

pub mod conversation;
pub mod people;
pub mod session;
pub mod settings;
pub mod signin;

use leptos::prelude::*;

use crate::realtime::use_realtime;
use crate::router::use_location;

/// Shows `children` once the browser's session is known to exist; sends people without one to
/// sign-in. The server (which cannot see localStorage) and the first hydrated frame render the
/// placeholder, so hydration always matches.
#[component]
pub fn RequireAccount(children: ChildrenFn) -> impl IntoView {
    let rt = use_realtime();
    let location = use_location();
    Effect::new(move |_| {
        if rt.ready.get() && rt.account.get().is_none() {
            location.navigate("/signin", true);
        }
    });
    let children = StoredValue::new(children);
    view! {
        <Show
            when=move || rt.ready.get() && rt.account.get().is_some()
            fallback=|| view! { <p class="page placeholder" aria-busy="true">"Loading your session…"</p> }
        >
            {children.read_value()()}
        </Show>
    }
}

/// `HH:MM` in the viewer's time zone (server render: UTC, replaced on hydration).
pub fn clock_time(ts_ms: i64) -> String {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts_ms as f64));
        format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let minutes = ts_ms.div_euclid(60_000);
        format!(
            "{:02}:{:02}",
            minutes.div_euclid(60).rem_euclid(24),
            minutes.rem_euclid(60)
        )
    }
}
