//! The main view: the conversations, latest activity first (each with its last message, its
//! time and the unread count), then the people of the roster one has not written with; a search
//! over the whole directory; and the open conversation, beside the list on a wide screen and
//! instead of it on a phone (style/main.css, "Conversations").
//!
//! Rows are keyed by person and read their own state live, so a change (a message, presence,
//! typing) updates a row in place. While the keyboard focus is in the list its order holds
//! still (new conversations are added at the end), so the focused row never moves away under
//! the keyboard; it catches up once the focus leaves. Arrow keys, Home and End move between
//! rows; Enter opens one.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::{clock_time, RequireAccount};
use crate::realtime::{use_realtime, Realtime};
use crate::router::{use_location, Page};

/// Counts past this show as "999+" (the server counts up to 1000).
const MOST_SHOWN: usize = 999;
/// How much of the last message a row holds (the rest would be cut by the ellipsis anyway).
const PREVIEW_CHARS: usize = 100;

/// The conversations with the open one (`/` and `/chat/{user_id}`).
#[component]
pub fn Messenger() -> impl IntoView {
    let page = use_location().page();
    let open = move || matches!(*page.read(), Page::Chat { .. });
    view! {
        <RequireAccount>
            <div class="messenger" class:has-open=open>
                <ChatList page/>
                <div class="chat-pane">
                    {move || match open() {
                        true => view! { <super::conversation::Conversation/> }.into_any(),
                        false => view! {
                            <p class="placeholder pick">
                                "Choose a conversation, or search for someone to start one."
                            </p>
                        }
                        .into_any(),
                    }}
                </div>
            </div>
        </RequireAccount>
    }
}

/// The rows in the order they should be shown (`ChatState::list_order`).
fn ordered(rt: Realtime) -> Vec<String> {
    rt.with(|s| s.chat().list_order(s.outbox().entries()))
        .unwrap_or_default()
}

/// `fresh`, but in the order of `previous` for the rows it had; new rows go at the end.
fn keep_order(previous: &[String], fresh: Vec<String>) -> Vec<String> {
    let mut now: Vec<&str> = fresh.iter().map(String::as_str).collect();
    now.sort_unstable();
    let mut held: Vec<String> = previous
        .iter()
        .filter(|id| now.binary_search(&id.as_str()).is_ok())
        .cloned()
        .collect();
    let mut kept: Vec<&str> = held.iter().map(String::as_str).collect();
    kept.sort_unstable();
    let added: Vec<String> = fresh
        .iter()
        .filter(|id| kept.binary_search(&id.as_str()).is_err())
        .cloned()
        .collect();
    held.extend(added);
    held
}

#[component]
fn ChatList(page: Memo<Page>) -> impl IntoView {
    let rt = use_realtime();
    // The keyboard focus is on a row: the order holds still, and catches up once it leaves.
    let in_list = RwSignal::new(false);
    let order = Memo::new(move |previous: Option<&Vec<String>>| {
        let fresh = ordered(rt);
        match previous {
            // Hold the order under the keyboard: drop who left, add newcomers at the end.
            Some(previous) if in_list.get() => keep_order(previous, fresh),
            _ => fresh,
        }
    });
    let more = move || rt.with(|s| s.chat().conversations_before().is_some()) == Some(true);
    // The search box's text; while it holds a query, the list shows the people found.
    let query = RwSignal::new(String::new());
    let searching = move || !query.read().trim().is_empty();
    let search = move |text: String| {
        rt.search(&text);
        query.set(text);
    };
    // The answer to what the box says now (an answer to an older query is not it).
    let found = move || {
        let wanted = query.read().trim().to_owned();
        rt.with(|s| s.chat().search().cloned())
            .flatten()
            .filter(|r| r.query == wanted)
    };
    let status = move || {
        if !searching() {
            return String::new();
        }
        match &found() {
            None => "Searching…".to_owned(),
            Some(r) if r.failed => "That search did not work. Try fewer letters.".to_owned(),
            Some(r) if r.users.is_empty() => "Nobody has that name.".to_owned(),
            Some(r) if r.users.len() == 1 => "1 person found.".to_owned(),
            Some(r) if r.users.len() >= client::session::SEARCH_LIMIT as usize => {
                format!(
                    "The first {} people found: type more of the name.",
                    r.users.len()
                )
            }
            Some(r) => format!("{} people found.", r.users.len()),
        }
    };
    let rows = move || {
        if searching() {
            found()
                .map(|r| r.users.into_iter().map(|p| p.user_id).collect())
                .unwrap_or_default()
        } else {
            order.get()
        }
    };
    // One handler for the box and the rows.
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        let target = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok());
        let Some(target) = target else { return };
        if target.id() != "people-search" {
            return move_between_rows(&target, &ev);
        }
        match ev.key().as_str() {
            "Escape" => search(String::new()),
            // Down into the list.
            "ArrowDown" => {
                let first = document().query_selector(".chat-list ul li").ok().flatten();
                focus_link_in(first, &ev);
            }
            _ => {}
        }
    };
    // Opening someone found ends the search.
    let on_click = move |ev: leptos::ev::MouseEvent| {
        let on_link = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .is_some_and(|el| el.closest("a").ok().flatten().is_some());
        if on_link && searching() {
            search(String::new());
        }
    };
    let title = move || {
        if matches!(*page.read(), Page::Chat { .. }) {
            view! { <h2 class="list-title">"Chats"</h2> }.into_any()
        } else {
            view! { <h1 class="list-title">"Chats"</h1> }.into_any()
        }
    };
    view! {
        <section class="chat-list" aria-label="Conversations" on:keydown=on_keydown>
            {title}
            <div class="chat-search" role="search">
                <label for="people-search" class="sr-only">"Search people by name"</label>
                <input
                    id="people-search"
                    type="search"
                    placeholder="Search people by name"
                    autocomplete="off"
                    maxlength="64"
                    prop:value=move || query.get()
                    on:input=move |ev| search(event_target_value(&ev))
                />
            </div>
            <p class="hint search-status" role="status">{status}</p>
            <ul
                class="chats"
                aria-label=move || if searching() { "Search results" } else { "Chats" }
                on:click=on_click
                // Moving between rows is a focusout then a focusin: only leaving the list
                // lets the order catch up.
                on:focusin=move |_| in_list.set(true)
                on:focusout=move |_| in_list.set(false)
            >
                <For each=rows key=|id| id.clone() let:user_id>
                    <ChatRow user_id page/>
                </For>
            </ul>
            {move || {
                (!searching() && order.read().is_empty()).then(|| view! {
                    <p class="placeholder">
                        "No conversations yet. Search for someone by name to start one."
                    </p>
                })
            }}
            {move || {
                (!searching() && more()).then(|| view! {
                    <button type="button" class="link" on:click=move |_| rt.load_conversations()>
                        "Load older conversations"
                    </button>
                })
            }}
        </section>
    }
}

/// Arrow keys, Home and End move the focus between the rows of a list of links.
fn move_between_rows(target: &web_sys::Element, ev: &leptos::ev::KeyboardEvent) {
    let Some(item) = target.closest("li").ok().flatten() else {
        return;
    };
    let next = match ev.key().as_str() {
        "ArrowDown" => item.next_element_sibling(),
        "ArrowUp" => item.previous_element_sibling(),
        "Home" => item.parent_element().and_then(|l| l.first_element_child()),
        "End" => item.parent_element().and_then(|l| l.last_element_child()),
        _ => return,
    };
    focus_link_in(next, ev);
}

/// Focuses the first link in `item`, if there is one, instead of what `ev` would do.
fn focus_link_in(item: Option<web_sys::Element>, ev: &leptos::ev::KeyboardEvent) {
    let link = item
        .and_then(|li| li.query_selector("a").ok().flatten())
        .and_then(|a| a.dyn_into::<web_sys::HtmlElement>().ok());
    if let Some(link) = link {
        ev.prevent_default();
        let _ = link.focus();
    }
}

/// What one row shows.
#[derive(Clone, PartialEq)]
struct RowState {
    username: String,
    is_me: bool,
    connected: bool,
    /// Time, text and whether the viewer wrote it; `None`: no message yet.
    last: Option<client::chat::Preview>,
    unread: usize,
    typing: bool,
    /// A passkey protects this name for this account (the roster's mark): the original
    /// holder, not a newer account that took the same name.
    protected: bool,
}

fn row_state(rt: Realtime, user_id: &str) -> Option<RowState> {
    rt.with(|s| {
        let chat = s.chat();
        let entry = chat.conversation_entry(user_id, s.outbox().entries());
        let peer = chat.peer(user_id);
        RowState {
            username: peer
                .map(|p| p.username.clone())
                .or_else(|| entry.as_ref().map(|e| e.username.clone()))
                .unwrap_or_default(),
            is_me: chat.me.as_deref() == Some(user_id),
            connected: peer.is_some_and(|p| p.connected),
            unread: entry.as_ref().map_or(0, |e| e.unread),
            last: entry.map(|e| e.last),
            typing: chat.typing(user_id),
            protected: peer.is_some_and(|p| p.protected),
        }
    })
}

#[component]
fn ChatRow(user_id: String, page: Memo<Page>) -> impl IntoView {
    let rt = use_realtime();
    let state = {
        let id = user_id.clone();
        Memo::new(move |_| row_state(rt, &id))
    };
    let read = move |f: fn(&RowState) -> String| move || state.with(|s| s.as_ref().map(f));
    let connected = move || state.with(|s| s.as_ref().is_some_and(|s| s.connected));
    let protected = move || {
        state
            .with(|s| s.as_ref().is_some_and(|s| s.protected))
            .then(|| {
                view! {
                    <span class="protected-mark" title="This name is protected by a passkey">
                        <span aria-hidden="true">"protected"</span>
                        <span class="sr-only">", protected by a passkey"</span>
                    </span>
                }
            })
    };
    let current = {
        let id = user_id.clone();
        move || matches!(&*page.read(), Page::Chat { user_id } if *user_id == id).then_some("page")
    };
    let name = read(|s| {
        if s.is_me {
            format!("{} (you)", s.username)
        } else {
            s.username.clone()
        }
    });
    // The clock for today, else the date: again at midnight.
    let today = crate::time::use_today();
    let when = move || {
        let today = today.get();
        state.with(|s| {
            s.as_ref().and_then(|s| s.last.as_ref()).map(|last| {
                view! {
                    <span class="sr-only">", "</span>
                    <time class="when" datetime=crate::time::iso(last.ts)>{short_time(last.ts, today)}</time>
                }
            })
        })
    };
    let typing = move || state.with(|s| s.as_ref().is_some_and(|s| s.typing));
    let preview = read(|s| match &s.last {
        _ if s.typing => "typing…".to_owned(),
        Some(last) => {
            let text: String = last.content.chars().take(PREVIEW_CHARS).collect();
            match (last.mine, last.pending) {
                (_, true) if last.failed => format!("Not sent: {text}"),
                (_, true) => format!("Sending: {text}"),
                (true, false) if !s.is_me => format!("You: {text}"),
                _ => text,
            }
        }
        None => "No messages yet".to_owned(),
    });
    let unread = move || state.with(|s| s.as_ref().map_or(0, |s| s.unread));
    view! {
        <li class="chat">
            <a href=format!("/chat/{user_id}") aria-current=current>
                <span
                    class=move || if connected() { "dot online" } else { "dot offline" }
                    aria-hidden="true"
                ></span>
                <span class="chat-text">
                    <span class="chat-line">
                        <span class="name">{name}</span>
                        {protected}
                        <span class="sr-only">
                            {move || if connected() { ", online" } else { ", offline" }}
                        </span>
                        {when}
                    </span>
                    <span class="chat-line">
                        <span class="sr-only">", "</span>
                        <span class="preview" class:typing=typing>{preview}</span>
                        {move || {
                            let n = unread();
                            (n > 0).then(|| {
                                let shown = if n > MOST_SHOWN {
                                    format!("{MOST_SHOWN}+")
                                } else {
                                    n.to_string()
                                };
                                view! {
                                    <span class="sr-only">", "</span>
                                    <span class="unread">
                                        {shown}
                                        <span class="sr-only">" unread"</span>
                                    </span>
                                }
                            })
                        }}
                    </span>
                </span>
            </a>
        </li>
    }
}

/// A row's time: the clock on `today`, else the date ("3 Dec", with the year if not this one).
fn short_time(ts_ms: i64, today: i64) -> String {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsValue;
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        if crate::time::local_day(ts_ms) == today {
            return clock_time(ts_ms);
        }
        let date = js_sys::Date::new(&JsValue::from_f64(ts_ms as f64));
        let now = js_sys::Date::new_0();
        let month = MONTHS[date.get_month() as usize % 12];
        if date.get_full_year() == now.get_full_year() {
            format!("{} {month}", date.get_date())
        } else {
            format!("{} {month} {}", date.get_date(), date.get_full_year())
        }
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = today;
        clock_time(ts_ms)
    }
}

/// A sent message's status in the open conversation with `peer`: "Seen" and when, on the
/// newest of the viewer's messages the peer has read (while both share read receipts), else
/// "Sent".
#[component]
pub fn SentStatus(#[prop(into)] peer: Signal<String>, id: i64) -> impl IntoView {
    let rt = use_realtime();
    let seen = move || rt.with(|s| s.chat().seen_at(&peer.read(), id)).flatten();
    view! {
        // The clock to the eye; the full date and time to screen readers, as for the message.
        <span class=move || if seen().is_some() { "status seen" } else { "status sent" }>
            {move || match seen() {
                Some(at) => view! {
                    <span aria-hidden="true">{format!("Seen {}", clock_time(at))}</span>
                    <span class="sr-only">{format!("Seen {}", crate::time::full(at))}</span>
                }
                .into_any(),
                None => "Sent".into_any(),
            }}
        </span>
    }
}

/// "… is typing" for the open conversation's header, said politely to screen readers.
#[component]
pub fn TypingNote(#[prop(into)] peer: Signal<String>) -> impl IntoView {
    let rt = use_realtime();
    let note = move || {
        rt.with(|s| {
            let chat = s.chat();
            let peer = peer.read();
            chat.typing(&peer).then(|| {
                let name = chat.peer(&peer).map_or("They", |p| p.username.as_str());
                format!("{name} is typing…")
            })
        })
        .flatten()
    };
    view! { <span class="typing-note" aria-live="polite">{note}</span> }
}

#[cfg(test)]
mod tests {
    use super::keep_order;

    #[test]
    fn a_held_order_drops_who_left_and_adds_newcomers_at_the_end() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let previous = ids(&["b", "a", "c"]);
        let fresh = ids(&["d", "c", "a"]);
        assert_eq!(keep_order(&previous, fresh), ids(&["a", "c", "d"]));
    }
}
