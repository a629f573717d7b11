//! Telling the person about new messages when they are not looking at them.
//!
//! - The tab's title starts with the total unread count, "(3) People · Tether": an effect
//!   updates it when the count changes, and whoever sets a new title passes it through
//!   [`counted_title`].
//! - A message from someone else that arrives while the page is hidden raises a browser
//!   notification with the sender's name and the start of the message, once the person has
//!   turned them on ([`NotificationSetting`]). The browser's permission is asked from that
//!   click, never on load. Clicking the notification focuses the window and opens the
//!   conversation; coming back to the tab closes what it showed.
//! - Never for one's own messages, from other tabs either: the session reports only other
//!   people's messages as arrived. Every tab of the browser may see the same message, so a
//!   notification is tagged with the message's id and the browser shows it once.

use std::cell::Cell;

use leptos::prelude::*;

use crate::realtime::Realtime;
use crate::router::Location;

/// How much of a message a notification shows, in characters.
pub const PREVIEW_CHARS: usize = 120;
/// Counts past this show as "999+".
const MOST_COUNTED: usize = 999;
/// Where the setting is kept (per browser, as the permission is): `true` once turned on.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const SETTING_KEY: &str = "tether.notifications";

thread_local! {
    static UNREAD: Cell<usize> = const { Cell::new(0) };
}

/// `title` with an unread count in front: "(3) People · Tether"; unchanged for none.
pub fn with_count(title: &str, unread: usize) -> String {
    match unread {
        0 => title.to_owned(),
        n if n > MOST_COUNTED => format!("({MOST_COUNTED}+) {title}"),
        n => format!("({n}) {title}"),
    }
}

/// The title last put on the document and the uncounted title it was made from. A title is
/// never parsed for a count: a page's own title may start with "(3) " (a person's name).
#[derive(Default)]
struct Shown {
    last: Option<(String, String)>,
}

impl Shown {
    /// `title`, a page's uncounted title, with `unread` in front; remembered.
    fn put(&mut self, title: &str, unread: usize) -> String {
        let counted = with_count(title, unread);
        self.last = Some((title.to_owned(), counted.clone()));
        counted
    }

    /// The document's title `now` with `unread` in front instead of the count it had: the
    /// uncounted title is the one remembered while `now` is what was put there, else `now`
    /// itself (set by someone else, without a count).
    fn recount(&mut self, now: &str, unread: usize) -> String {
        let title = match &self.last {
            Some((title, counted)) if counted == now => title.clone(),
            _ => now.to_owned(),
        };
        self.put(&title, unread)
    }
}

thread_local! {
    static SHOWN: std::cell::RefCell<Shown> = std::cell::RefCell::default();
}

/// The page's title with the current unread count: for whoever sets the document's title.
pub fn counted_title(title: &str) -> String {
    SHOWN.with_borrow_mut(|shown| shown.put(title, UNREAD.get()))
}

/// A message's start, on one line, cut at [`PREVIEW_CHARS`] characters with an ellipsis.
pub fn preview(content: &str) -> String {
    let line = content.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => format!("{}…", line[..end].trim_end()),
        None => line,
    }
}

/// Unread messages over every conversation.
fn total_unread(session: &client::session::Session) -> usize {
    session.chat().total_unread()
}

/// Keeps the title's count and, in the browser, gets ready to notify. Once, above the pages.
pub fn provide(rt: Realtime, location: Location) {
    Effect::new(move |_| {
        let unread = rt.with(total_unread).unwrap_or(0);
        if unread == UNREAD.get() && unread == 0 {
            return;
        }
        UNREAD.set(unread);
        let document = document();
        let title = document.title();
        let counted = SHOWN.with_borrow_mut(|shown| shown.recount(&title, unread));
        if counted != title {
            document.set_title(&counted);
        }
    });
    #[cfg(feature = "hydrate")]
    browser::start(location);
    #[cfg(not(feature = "hydrate"))]
    let _ = location;
}

/// A message from someone else arrived live (`SessionEvent::Arrived`); `from` is their name.
pub fn arrived(from: &str, message: &protocol::payloads::Message) {
    #[cfg(feature = "hydrate")]
    browser::arrived(from, message);
    #[cfg(not(feature = "hydrate"))]
    let _ = (from, message);
}

/// What the setting says under it, unless something is in the way.
const HINT: &str =
    "Shows who wrote and how the message starts. Your browser asks for permission the first time.";
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const ASKING: &str = "Waiting for your answer to the browser…";
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const BLOCKED: &str =
    "Notifications are blocked for this site. Allow them in the browser's site settings, then try again.";
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const UNSUPPORTED: &str = "This browser cannot show notifications.";

/// The settings control: a checkbox that turns notifications on (asking the browser's
/// permission from this click when it has not been given) and off.
#[component]
pub fn NotificationSetting() -> impl IntoView {
    // On only while both the setting and the browser's permission say so; the note says what
    // is in the way. Both are known only in the browser (after hydration).
    let on = RwSignal::new(false);
    let note = RwSignal::new(None::<String>);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| browser::show_current(on, note));
    let change = move |ev: leptos::ev::Event| {
        let want = event_target_checked(&ev);
        #[cfg(feature = "hydrate")]
        browser::turn(want, on, note);
        #[cfg(not(feature = "hydrate"))]
        let _ = want;
    };
    view! {
        <div class="setting">
            <input
                type="checkbox"
                id="notifications-setting"
                aria-describedby="notifications-note"
                prop:checked=move || on.get()
                on:change=change
            />
            <div>
                <label for="notifications-setting">
                    "Notify me of new messages while Tether is in the background"
                </label>
                <p id="notifications-note" class="hint" aria-live="polite">
                    {move || note.get().unwrap_or_else(|| HINT.to_owned())}
                </p>
            </div>
        </div>
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::cell::RefCell;

    use gloo_storage::LocalStorage;
    use leptos::prelude::*;
    use protocol::payloads::Message;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{Notification, NotificationOptions, NotificationPermission};

    use super::{preview, ASKING, BLOCKED, SETTING_KEY, UNSUPPORTED};
    use crate::router::Location;
    use crate::storage;

    /// Notifications this tab shows at most at once (the oldest is closed for a new one).
    const MOST_SHOWN: usize = 20;

    struct State {
        location: Location,
        /// What this tab shows, with each one's click handler (dropped when it is closed).
        shown: Vec<(Notification, Closure<dyn FnMut()>)>,
    }

    thread_local! {
        static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    }

    fn supported() -> bool {
        js_sys::Reflect::has(&window(), &"Notification".into()).unwrap_or(false)
    }

    fn turned_on() -> bool {
        storage::get::<LocalStorage, bool>(SETTING_KEY).unwrap_or(false)
    }

    fn remember(on: bool) {
        if on {
            storage::set::<LocalStorage, _>(SETTING_KEY, &true);
        } else {
            use gloo_storage::Storage;
            LocalStorage::delete(SETTING_KEY);
        }
    }

    /// Shows what the setting and the permission say now.
    pub fn show_current(on: RwSignal<bool>, note: RwSignal<Option<String>>) {
        if !supported() {
            on.set(false);
            note.set(Some(UNSUPPORTED.to_owned()));
            return;
        }
        let permission = Notification::permission();
        let wanted = turned_on();
        on.set(wanted && permission == NotificationPermission::Granted);
        let blocked = wanted && permission == NotificationPermission::Denied;
        note.set(blocked.then(|| BLOCKED.to_owned()));
    }

    /// The checkbox was changed to `want`.
    pub fn turn(want: bool, on: RwSignal<bool>, note: RwSignal<Option<String>>) {
        if !want || !supported() {
            remember(false);
            show_current(on, note);
            return;
        }
        if Notification::permission() != NotificationPermission::Default {
            // Given (on) or refused (blocked): nothing to ask.
            remember(true);
            show_current(on, note);
            return;
        }
        note.set(Some(ASKING.to_owned()));
        // The callback form: every browser with notifications takes it.
        let answered = Closure::once_into_js(move |answer: JsValue| {
            let granted = answer.as_string().as_deref() == Some("granted");
            remember(granted || answer.as_string().as_deref() == Some("denied"));
            show_current(on, note);
        });
        let asked =
            Notification::request_permission_with_permission_callback(answered.unchecked_ref());
        if asked.is_err() {
            remember(false);
            show_current(on, note);
        }
    }

    pub fn start(location: Location) {
        STATE.with(|state| {
            *state.borrow_mut() = Some(State {
                location,
                shown: Vec::new(),
            })
        });
        // Back on the tab: what it showed has been seen.
        let back = Closure::<dyn FnMut()>::new(move || {
            if !document().hidden() {
                close_all();
            }
        });
        let _ = document()
            .add_event_listener_with_callback("visibilitychange", back.as_ref().unchecked_ref());
        // It lives as long as the page.
        back.forget();
    }

    fn close_all() {
        let shown = STATE.with(|state| {
            state
                .borrow_mut()
                .as_mut()
                .map(|s| std::mem::take(&mut s.shown))
        });
        for (notification, _handler) in shown.into_iter().flatten() {
            notification.set_onclick(None);
            notification.close();
        }
    }

    pub fn arrived(from: &str, message: &Message) {
        if !document().hidden() || !supported() || !turned_on() {
            return;
        }
        if Notification::permission() != NotificationPermission::Granted {
            return;
        }
        let options = NotificationOptions::new();
        options.set_body(&preview(&message.content));
        options.set_tag(&format!("tether-message-{}", message.id));
        options.set_icon("/favicon.svg");
        let Ok(notification) = Notification::new_with_options(from, &options) else {
            return;
        };
        let peer = message.from.clone();
        let handler = Closure::<dyn FnMut()>::new(move || {
            let _ = window().focus();
            let location = STATE.with(|s| s.borrow().as_ref().map(|s| s.location));
            close_all();
            if let Some(location) = location {
                location.navigate(&format!("/chat/{peer}"), false);
            }
        });
        notification.set_onclick(Some(handler.as_ref().unchecked_ref()));
        STATE.with(|state| {
            if let Some(state) = state.borrow_mut().as_mut() {
                if state.shown.len() >= MOST_SHOWN {
                    let (oldest, _) = state.shown.remove(0);
                    oldest.set_onclick(None);
                    oldest.close();
                }
                state.shown.push((notification, handler));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_counts_unread_and_the_count_comes_off_again() {
        assert_eq!(with_count("People · Tether", 0), "People · Tether");
        assert_eq!(with_count("People · Tether", 3), "(3) People · Tether");
        assert_eq!(
            with_count("People · Tether", 1000),
            "(999+) People · Tether"
        );
        let mut shown = Shown::default();
        let mut now = shown.put("ada · Tether", 0);
        for n in [1, 42, 999, 5000, 0] {
            now = shown.recount(&now, n);
            assert_eq!(now, with_count("ada · Tether", n));
        }
        // Set by someone else (the shell's title): counted as it is.
        assert_eq!(shown.recount("About · Tether", 2), "(2) About · Tether");
    }

    #[test]
    fn a_title_that_starts_like_a_count_keeps_it_and_counts_never_pile_up() {
        let mut shown = Shown::default();
        let name = "(3) Bob · Tether";
        let mut now = shown.put(name, 0);
        assert_eq!(now, name);
        for n in [2, 2, 7, 1000] {
            now = shown.recount(&now, n);
            assert_eq!(now, format!("{} {name}", with_count("", n).trim_end()));
        }
        assert_eq!(shown.recount(&now, 0), name);
        // A new page's title while messages are unread, then the count changes.
        let now = shown.put("(12)x", 4);
        assert_eq!(now, "(4) (12)x");
        assert_eq!(shown.recount(&now, 0), "(12)x");
    }

    #[test]
    fn a_preview_is_one_line_and_cut_with_an_ellipsis() {
        assert_eq!(preview("hello\n\n  there "), "hello there");
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(
            preview(&"a".repeat(PREVIEW_CHARS)),
            "a".repeat(PREVIEW_CHARS)
        );
    }
}
