//! Light and dark themes: follows the system until the person picks one, then remembers the
//! choice in localStorage.

use gloo_storage::LocalStorage;
use leptos::prelude::*;

use crate::storage;

const STORAGE_KEY: &str = "tether.theme";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Theme {
    Light,
    Dark,
}

impl Theme {
    fn as_str(self) -> &'static str {
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

/// The chosen theme; `None` means "follow the system". Applied as `data-theme` on `<html>`.
pub fn provide_theme() -> RwSignal<Option<Theme>> {
    let theme = RwSignal::new(None);
    // Effects run only in the browser: the first picks up a stored choice once (it reads no
    // signal, so it never runs again), the second applies every change.
    Effect::new(move |_| {
        let stored =
            storage::get::<LocalStorage, String>(STORAGE_KEY).and_then(|raw| Theme::parse(&raw));
        if stored.is_some() {
            theme.set(stored);
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
                storage::set::<LocalStorage, _>(STORAGE_KEY, t.as_str());
            }
            None => {
                let _ = root.remove_attribute("data-theme");
            }
        }
    });
    theme
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
    // server-rendered markup and the first client render agree.
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
            {move || if is_dark() { "☾" } else { "☀" }}
        </button>
    }
}
