//! Client-side routing for Tether's pages: the path as a signal, the page it names, and
//! same-origin link clicks and history steps turned into navigation without a page load.
//!
//! leptos_router did this before; with its nested routes it brought in Leptos' async machinery
//! (async derived signals, suspense, streams) although every Tether page renders synchronously:
//! 61 KB of the 269 KB front end (BENCHMARKS.md, "Front-end", session 9). Tether has six
//! flat pages, so the router is a match on the path. The server serves the same paths
//! ([`PATHS`]), so a reload lands on the page the address names.

use leptos::prelude::*;

/// The pages' paths, as axum routes them (`{name}` is a parameter).
pub const PATHS: [&str; 6] = [
    "/",
    "/signin",
    "/chat/{user_id}",
    "/session",
    "/settings",
    "/about",
];

/// What a path shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    People,
    SignIn,
    Chat { user_id: String },
    Session,
    Settings,
    About,
    NotFound,
}

impl Page {
    /// What the page is called in the document's title (a conversation is named after the
    /// person once the browser knows them).
    pub fn title(&self) -> &'static str {
        match self {
            Page::People => "Chats",
            Page::SignIn => "Sign in",
            Page::Chat { .. } => "Conversation",
            Page::Session => "Your session",
            Page::Settings => "Settings",
            Page::About => "About",
            Page::NotFound => "Page not found",
        }
    }

    /// The page for a URL path. One trailing slash is ignored (`/about/` is `/about`).
    pub fn from_path(path: &str) -> Page {
        let path = match path.strip_suffix('/') {
            Some(stripped) if !stripped.is_empty() => stripped,
            _ => path,
        };
        match path {
            "/" | "" => Page::People,
            "/signin" => Page::SignIn,
            "/session" => Page::Session,
            "/settings" => Page::Settings,
            "/about" => Page::About,
            _ => match path.strip_prefix("/chat/") {
                Some(user_id) if !user_id.is_empty() && !user_id.contains('/') => Page::Chat {
                    user_id: user_id.to_owned(),
                },
                _ => Page::NotFound,
            },
        }
    }
}

/// Where the app is: the current path, and the page it names.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    /// Set by the browser's navigation; on the server it only feeds `page`.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    path: RwSignal<String>,
    page: Memo<Page>,
    /// The page's name after an in-app navigation, for screen readers (empty until the first:
    /// a page load is announced by the browser itself).
    announcement: RwSignal<String>,
    navigated: RwSignal<bool>,
}

impl Location {
    /// The current page (tracked; changes only when the page does).
    pub fn page(&self) -> Memo<Page> {
        self.page
    }

    /// What a live region should say after an in-app navigation: the new page's name.
    pub fn announcement(&self) -> String {
        self.announcement.get()
    }

    /// Goes to `to` (a same-origin path) without a page load; with `replace`, in place of the
    /// current history entry (a redirect) instead of after it.
    pub fn navigate(&self, to: &str, replace: bool) {
        #[cfg(feature = "hydrate")]
        browser::go(*self, to, replace);
        #[cfg(not(feature = "hydrate"))]
        let _ = (to, replace);
    }
}

/// Provides the [`Location`] for everything below: on the server the request's path, in the
/// browser the address bar's, kept up to date by link clicks, [`Location::navigate`] and
/// history steps.
pub fn provide_location() -> Location {
    let path = RwSignal::new(initial_path());
    let page = Memo::new(move |_| path.with(|p| Page::from_path(p)));
    let location = Location {
        path,
        page,
        announcement: RwSignal::new(String::new()),
        navigated: RwSignal::new(false),
    };
    provide_context(location);
    #[cfg(feature = "hydrate")]
    browser::listen(location);
    location
}

pub fn use_location() -> Location {
    expect_context::<Location>()
}

/// The page the request (on the server) or the address bar (in the browser) names.
pub fn current_page() -> Page {
    Page::from_path(&initial_path())
}

/// The document's title for a page called `name`.
pub fn document_title(name: &str) -> String {
    format!("{name} · Tether")
}

/// Keeps the document's title on the page name `name` gives, whenever it gives one, and after
/// an in-app navigation announces that name (in the browser; the server renders the title in
/// the shell).
pub fn keep_title(name: impl Fn() -> Option<String> + 'static) {
    let location = use_location();
    Effect::new(move |_| {
        if let Some(name) = name() {
            // With the unread count in front (notify.rs keeps it when the count changes).
            document().set_title(&crate::notify::counted_title(&document_title(&name)));
            if location.navigated.get_untracked() {
                location.announcement.set(name);
            }
        }
    });
}

fn initial_path() -> String {
    #[cfg(feature = "ssr")]
    {
        use_context::<http::request::Parts>()
            .map(|parts| parts.uri.path().to_owned())
            .unwrap_or_else(|| "/".to_owned())
    }
    #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
    {
        window()
            .location()
            .pathname()
            .unwrap_or_else(|_| "/".to_owned())
    }
    #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
    {
        "/".to_owned()
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::ev;
    use wasm_bindgen::{JsCast, JsValue};
    use web_sys::{Element, HtmlAnchorElement, MouseEvent, Url};

    use super::*;

    pub fn listen(location: Location) {
        // Both stay as long as the page (the location is provided once, above every page);
        // the handles would only remove them.
        let _ = window_event_listener(ev::popstate, move |_| follow_address_bar(location));
        let _ = window_event_listener(ev::click, move |event| {
            if let Some(to) = internal_link(&event) {
                event.prevent_default();
                go(location, &to, false);
            }
        });
    }

    pub fn go(location: Location, to: &str, replace: bool) {
        let Ok(history) = window().history() else {
            let _ = window().location().set_href(to);
            return;
        };
        // Following a link to the page already shown adds no history entry.
        let here = window().location();
        let current = [here.pathname(), here.search(), here.hash()]
            .into_iter()
            .collect::<Result<String, _>>();
        let replace = replace || current.is_ok_and(|current| current == to);
        let changed = if replace {
            history.replace_state_with_url(&JsValue::NULL, "", Some(to))
        } else {
            history.push_state_with_url(&JsValue::NULL, "", Some(to))
        };
        if changed.is_err() {
            let _ = window().location().set_href(to);
            return;
        }
        follow_address_bar(location);
        window().scroll_to_with_x_and_y(0.0, 0.0);
    }

    /// The address bar changed without a page load (a history step or a push): show its page.
    fn follow_address_bar(location: Location) {
        if let Ok(path) = window().location().pathname() {
            location.navigated.set(true);
            location.path.set(path);
        }
    }

    /// The path, query and fragment a click on a link should go to in the app, or `None` when
    /// the browser should follow it itself: a modified or non-primary click, a link to another
    /// origin, another window or a download, or to a fragment of the page already shown.
    fn internal_link(event: &MouseEvent) -> Option<String> {
        if event.default_prevented()
            || event.button() != 0
            || event.meta_key()
            || event.ctrl_key()
            || event.shift_key()
            || event.alt_key()
        {
            return None;
        }
        let target: Element = event.target()?.dyn_into().ok()?;
        let anchor: HtmlAnchorElement = target.closest("a[href]").ok()??.dyn_into().ok()?;
        let opens_elsewhere = !matches!(anchor.target().as_str(), "" | "_self");
        if opens_elsewhere
            || anchor.has_attribute("download")
            || anchor
                .get_attribute("rel")
                .is_some_and(|rel| rel.split_whitespace().any(|r| r == "external"))
        {
            return None;
        }
        let url = Url::new(&anchor.href()).ok()?;
        let here = window().location();
        if url.origin() != here.origin().ok()? {
            return None;
        }
        let same_page = Some(url.pathname()) == here.pathname().ok()
            && Some(url.search()) == here.search().ok();
        if same_page && !url.hash().is_empty() {
            return None;
        }
        Some(format!("{}{}{}", url.pathname(), url.search(), url.hash()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_pages() {
        assert_eq!(Page::from_path("/"), Page::People);
        assert_eq!(Page::from_path(""), Page::People);
        assert_eq!(Page::from_path("/signin"), Page::SignIn);
        assert_eq!(Page::from_path("/session/"), Page::Session);
        assert_eq!(Page::from_path("/settings"), Page::Settings);
        assert_eq!(Page::from_path("/about"), Page::About);
        assert_eq!(
            Page::from_path("/chat/5f0c"),
            Page::Chat {
                user_id: "5f0c".into()
            }
        );
        for unknown in ["/chat", "/chat/", "/chat/a/b", "/about/x", "/Signin", "/x"] {
            assert_eq!(Page::from_path(unknown), Page::NotFound, "{unknown}");
        }
    }

    #[test]
    fn the_server_serves_every_page_path() {
        for path in PATHS {
            let concrete = path.replace("{user_id}", "u");
            assert_ne!(Page::from_path(&concrete), Page::NotFound, "{path}");
        }
    }

    #[test]
    fn titles_name_the_page_and_the_app() {
        assert_eq!(document_title(Page::SignIn.title()), "Sign in · Tether");
    }
}
