//! Light and dark themes: follows the system until the person picks one, then remembers the
//! choice in a cookie, `tether-theme=light|dark`.
//!
//! A cookie and not localStorage, so that the server renders the chosen theme into the page
//! (`<html data-theme>`, see [`requested`]) and the first paint already has it: with the choice
//! read by the wasm after hydration, a dark theme picked on a light system flashed light at
//! every load. No script runs before the first paint, so the Content-Security-Policy stays as it
//! is (no inline script, hashed or not). Following the system needs nothing stored: the
//! stylesheet's `prefers-color-scheme` query picks the colours. A choice stored in
//! localStorage by an older version is moved into the cookie once.

use leptos::prelude::*;

/// The cookie's name. It is sent with every request of the site; the pages vary on it (the
/// shell sets `Vary: Cookie`).
pub const COOKIE: &str = "tether-theme";
/// Where older versions kept the choice.
const LEGACY_STORAGE_KEY: &str = "tether.theme";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Theme {
    Light,
    Dark,
}

impl Theme {
    pub fn as_str(self) -> &'static str {
        match self {
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "light" => Some(Theme::Light),
            "dark" => Some(Theme::Dark),
            _ => None,
        }
    }

    fn toggled(self) -> Self {
        match self {
            Theme::Light => Theme::Dark,
            Theme::Dark => Theme::Light,
        }
    }
}

/// The theme a `Cookie` header's value chooses, if any.
pub fn from_cookie_header(header: &str) -> Option<Theme> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| Theme::parse(value.trim()))
}

/// The theme this page is rendered with: on the server the request's cookie, in the browser
/// what the server rendered (`<html data-theme>`), so both render the toggle alike.
pub fn requested() -> Option<Theme> {
    #[cfg(feature = "ssr")]
    {
        use_context::<http::request::Parts>().and_then(|parts| {
            parts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(from_cookie_header)
        })
    }
    #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
    {
        document()
            .document_element()
            .and_then(|root| root.get_attribute("data-theme"))
            .and_then(|raw| Theme::parse(&raw))
    }
    #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
    {
        None
    }
}

/// The chosen theme; `None` means "follow the system". Applied as `data-theme` on `<html>`.
pub fn provide_theme() -> RwSignal<Option<Theme>> {
    let theme = RwSignal::new(requested());
    // Effects run only in the browser. A choice an older version stored is moved into the
    // cookie once; then every change is applied and remembered.
    Effect::new(move |_| {
        if let Some(legacy) = legacy_choice() {
            if theme.get_untracked().is_none() {
                theme.set(Some(legacy));
            }
        }
    });
    Effect::new(move |_| {
        let chosen = theme.get();
        let Some(root) = document().document_element() else {
            return;
        };
        match chosen {
            Some(t) => {
                let _ = root.set_attribute("data-theme", t.as_str());
            }
            None => {
                let _ = root.remove_attribute("data-theme");
            }
        }
        remember(chosen);
    });
    theme
}

/// The choice an older version kept in localStorage (removed as it is read).
fn legacy_choice() -> Option<Theme> {
    use gloo_storage::{LocalStorage, Storage};
    let stored = crate::storage::get::<LocalStorage, String>(LEGACY_STORAGE_KEY)?;
    LocalStorage::delete(LEGACY_STORAGE_KEY);
    Theme::parse(&stored)
}

/// Writes the choice into the cookie (for a year), or removes the cookie for "follow the system".
fn remember(chosen: Option<Theme>) {
    let secure = window().location().protocol().is_ok_and(|p| p == "https:");
    let cookie = match chosen {
        Some(t) => format!(
            "{COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax{}",
            t.as_str(),
            if secure { "; Secure" } else { "" }
        ),
        None => format!("{COOKIE}=; Path=/; Max-Age=0; SameSite=Lax"),
    };
    // `document.cookie`, without web-sys' HtmlDocument binding for one setter.
    let _ = js_sys::Reflect::set(&document(), &"cookie".into(), &cookie.into());
}

fn system_prefers_dark() -> bool {
    window()
        .match_media("(prefers-color-scheme: dark)")
        .ok()
        .flatten()
        .is_some_and(|m| m.matches())
}

#[component]
pub fn ThemeToggle(theme: RwSignal<Option<Theme>>) -> impl IntoView {
    // The system preference is known only in the browser: read after hydration, so the
    // server-rendered markup and the first client render agree. The icon is the stylesheet's
    // (it follows the theme from the first paint).
    let system_dark = RwSignal::new(false);
    Effect::new(move |_| system_dark.set(system_prefers_dark()));
    let is_dark = move || match theme.get() {
        Some(chosen) => chosen == Theme::Dark,
        None => system_dark.get(),
    };
    let toggle = move |_| {
        let current = if is_dark() { Theme::Dark } else { Theme::Light };
        theme.set(Some(current.toggled()));
    };
    view! {
        <button
            type="button"
            class="theme-toggle"
            aria-label="Dark theme"
            aria-pressed=move || if is_dark() { "true" } else { "false" }
            on:click=toggle
        >
            <span class="theme-icon" aria-hidden="true"></span>
        </button>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_header_names_the_theme() {
        assert_eq!(from_cookie_header("tether-theme=dark"), Some(Theme::Dark));
        assert_eq!(
            from_cookie_header("a=1; tether-theme=light; b=2"),
            Some(Theme::Light)
        );
        for none in [
            "",
            "tether-theme=",
            "tether-theme=blue",
            "x-tether-theme=dark",
            "a=tether-theme=dark",
        ] {
            assert_eq!(from_cookie_header(none), None, "{none}");
        }
    }
}
