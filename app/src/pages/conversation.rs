//! A conversation with one person: history (older pages on scroll), live messages, and a
//! composer where Enter sends and Shift+Enter starts a new line.
//!
//! The messages are grouped by day ("Today", "Yesterday", then dates); each says who wrote it
//! and when, in full, to screen readers and on hover. The view follows new messages while the
//! reader is at the newest; scrolled up, it stays put (older messages loaded above keep the
//! reader's place) and "Jump to latest" counts what arrived below. The composer's draft is kept
//! per conversation across reloads and tabs (drafts.rs).

use leptos::html;
use leptos::prelude::*;

use std::cell::RefCell;
use std::rc::Rc;

use leptos::wasm_bindgen::JsCast;

use super::clock_time;
use crate::drafts;
use crate::realtime::{use_realtime, Status};
use crate::router::{use_location, Page};
use crate::time;

/// Within this many pixels of the end, the reader is at the newest message.
const AT_NEWEST_PX: i32 = 48;
/// Within this many pixels of the start, older messages are asked for.
const NEAR_OLDEST_PX: i32 = 48;

#[derive(Clone, PartialEq, Eq, Hash)]
enum State {
    Received,
    Sent,
    Sending,
    Failed(String),
}

#[derive(Clone, PartialEq)]
struct Line {
    key: String,
    /// The stored message's id; 0 while it is only in the outbox.
    id: i64,
    /// Who wrote it, as a screen reader says it ("You" for the viewer).
    sender: String,
    content: String,
    ts: i64,
    mine: bool,
    state: State,
    client_id: Option<String>,
    /// The first of its day: a separator naming the day goes before it.
    starts_day: bool,
}

/// The open conversation, beside or instead of the list (pages/people.rs, `Messenger`, which
/// shows it once the account is known).
#[component]
pub fn Conversation() -> impl IntoView {
    let rt = use_realtime();
    let page = use_location().page();
    let peer_id = move || match &*page.read() {
        Page::Chat { user_id } => user_id.clone(),
        _ => String::new(),
    };
    let peer = move || rt.with(|s| s.chat().peer(&peer_id()).cloned()).flatten();
    let is_me = move || rt.account.get().map(|a| a.user_id) == Some(peer_id());
    let title = move || match peer() {
        Some(p) if is_me() => format!("{} (you)", p.username),
        Some(p) => p.username,
        None => "Conversation".to_owned(),
    };
    // Only while this is the page shown: on the way to another, that page names itself.
    crate::router::keep_title(move || matches!(*page.read(), Page::Chat { .. }).then(title));

    let lines = move || {
        let peer = peer_id();
        rt.with(|s| {
            let me = s.chat().me.clone();
            let them = s
                .chat()
                .peer(&peer)
                .map_or_else(|| "Them".to_owned(), |p| p.username.clone());
            let mut lines: Vec<Line> = s
                .chat()
                .conversation(&peer)
                .into_iter()
                .map(|m| {
                    let mine = me.as_deref() == Some(m.from.as_str());
                    Line {
                        key: format!("m{}", m.id),
                        id: m.id,
                        sender: if mine { "You".to_owned() } else { them.clone() },
                        content: m.content,
                        ts: m.ts,
                        mine,
                        state: if mine { State::Sent } else { State::Received },
                        client_id: m.client_id,
                        starts_day: false,
                    }
                })
                .collect();
            lines.extend(
                s.outbox()
                    .entries()
                    .iter()
                    .filter(|e| e.to == peer)
                    .map(|e| Line {
                        key: format!("c{}", e.client_id),
                        id: 0,
                        sender: "You".to_owned(),
                        content: e.content.clone(),
                        ts: e.created_at,
                        mine: true,
                        state: match &e.failed {
                            Some(reason) => State::Failed(reason.clone()),
                            None => State::Sending,
                        },
                        client_id: Some(e.client_id.clone()),
                        starts_day: false,
                    }),
            );
            let mut previous = None;
            for line in &mut lines {
                line.starts_day = time::starts_day(previous, line.ts);
                previous = Some(line.ts);
            }
            lines
        })
        .unwrap_or_default()
    };
    // `None` until the first `history` answer: then whether older messages exist is known.
    let cursor = move || rt.with(|s| s.chat().history_cursor(&peer_id())).flatten();
    let complete = move || cursor().is_none_or(|c| c.complete);
    Effect::new(move |_| {
        if rt.status.get() == Status::Online && cursor().is_none() {
            rt.load_history(&peer_id());
        }
    });
    let has_messages = move || !lines().is_empty();

    // Where the reader is (see `Reader`); the list scrolls in its parent.
    let list = NodeRef::<html::Ol>::new();
    let scroller = move || list.get_untracked().and_then(|l| l.parent_element());
    let reader = Rc::new(RefCell::new(Reader::new()));
    // The reader is at the newest message: they see what arrives. Scrolled up they do not, so
    // only reaching the newest again (by scrolling or "Jump to latest") moves the read cursor.
    let at_newest = RwSignal::new(true);
    Effect::new(move |_| {
        rt.version.track();
        if at_newest.get() {
            rt.mark_read(&peer_id());
        }
    });
    // Scrolled up by more than a screen, and messages from the peer that arrived below since the
    // reader left the newest.
    let far = RwSignal::new(false);
    let unseen = RwSignal::new(0u32);
    let look = {
        let reader = reader.clone();
        move |el: &web_sys::Element| {
            let gap = el.scroll_height() - el.scroll_top() - el.client_height();
            let mut reader = reader.borrow_mut();
            reader.at_newest = gap <= AT_NEWEST_PX;
            if at_newest.get_untracked() != reader.at_newest {
                at_newest.set(reader.at_newest);
            }
            reader.from_end = el.scroll_height() - el.scroll_top();
            let is_far = gap > el.client_height();
            if far.get_untracked() != is_far {
                far.set(is_far);
            }
            if reader.at_newest && unseen.get_untracked() != 0 {
                unseen.set(0);
            }
        }
    };
    let load_older = move || rt.load_history(&peer_id());
    let on_scroll = {
        let look = look.clone();
        move |ev: leptos::ev::Event| {
            let target: web_sys::Element = event_target(&ev);
            look(&target);
            if target.scroll_top() <= NEAR_OLDEST_PX && !complete() {
                load_older();
            }
        }
    };
    // After the lines change: follow to the newest (the reader was there, or just sent one),
    // or keep the reader's place when older messages came in above, and count what arrived.
    // The scrolling itself waits for the next frame, when the list shows the new lines (and
    // before they are painted).
    Effect::new({
        let look = look.clone();
        move |_| {
            let lines = lines();
            list.track();
            if scroller().is_none() {
                return;
            }
            let peer = peer_id();
            let first = lines.first().map_or("", |l| l.key.as_str());
            let last = lines.last().map_or("", |l| l.key.as_str());
            let sent = lines.last().is_some_and(|l| l.mine);
            let newest_theirs = lines.iter().filter(|l| !l.mine).map(|l| l.id).max();
            let mut seen = reader.borrow_mut();
            // How far from the end to be: 0 at the newest, `None` where the reader is.
            let from_end = if seen.peer.as_deref() != Some(peer.as_str()) {
                // Opened (or another conversation is shown here now): at the newest.
                seen.peer = Some(peer);
                unseen.set(0);
                Some(0)
            } else if seen.at_newest || (sent && seen.last != last) {
                Some(0)
            } else {
                let arrived = lines
                    .iter()
                    .filter(|l| !l.mine && l.id > seen.newest_theirs)
                    .count();
                if arrived > 0 {
                    let arrived = u32::try_from(arrived).unwrap_or(u32::MAX);
                    unseen.update(|n| *n = n.saturating_add(arrived));
                }
                (seen.first != first && !seen.first.is_empty()).then_some(seen.from_end)
            };
            seen.first = first.to_owned();
            seen.last = last.to_owned();
            seen.newest_theirs = newest_theirs.unwrap_or(0);
            drop(seen);
            let look = look.clone();
            request_animation_frame(move || {
                let Some(el) = scroller() else { return };
                match from_end {
                    Some(0) => el.set_scroll_top(el.scroll_height()),
                    Some(from_end) => el.set_scroll_top(el.scroll_height() - from_end),
                    None => {}
                }
                look(&el);
            });
        }
    });
    let jump = move |_| {
        if let Some(el) = scroller() {
            el.set_scroll_top(el.scroll_height());
            look(&el);
            // The button goes away: keep the keyboard in the messages.
            if let Some(el) = el.dyn_ref::<web_sys::HtmlElement>() {
                let _ = el.focus();
            }
        }
    };
    let show_jump = move || far.get() || unseen.get() > 0;
    let jump_label = move || match unseen.get() {
        0 => "Jump to latest".to_owned(),
        1 => "Jump to latest (1 new message)".to_owned(),
        n => format!("Jump to latest ({n} new messages)"),
    };

    // The draft of the conversation shown: read when it opens, kept on every edit, followed
    // when another tab edits it, removed once sent.
    let account_id = move || rt.account.with(|a| a.as_ref().map(|a| a.user_id.clone()));
    let draft = RwSignal::new(String::new());
    // The browser's storage refused the draft (full): it is kept in this tab only, and the
    // person is told so beside the composer.
    let unsaved = RwSignal::new(false);
    Effect::new(move |_| {
        let text = drafts::load(&account_id().unwrap_or_default(), &peer_id());
        unsaved.set(false);
        draft.set(text);
    });
    drafts::follow(
        move || {
            (
                account_id().unwrap_or_default(),
                page.with_untracked(|p| match p {
                    Page::Chat { user_id } => user_id.clone(),
                    _ => String::new(),
                }),
            )
        },
        draft,
    );
    let edit = move |text: String| {
        let kept = drafts::save(&account_id().unwrap_or_default(), &peer_id(), &text);
        if unsaved.get_untracked() == kept {
            unsaved.set(!kept);
        }
        draft.set(text);
    };
    let textarea = NodeRef::<html::Textarea>::new();
    let send = move || {
        let text = draft.get_untracked();
        if protocol::MessageContent::parse(&text, protocol::domain::MESSAGE_MAX_CHARS).is_err() {
            return;
        }
        rt.send(&peer_id(), &text);
        drafts::clear(&account_id().unwrap_or_default(), &peer_id());
        unsaved.set(false);
        draft.set(String::new());
        if let Some(t) = textarea.get_untracked() {
            let _ = t.focus();
        }
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };

    view! {
        <section class="page conversation">
            <header class="conversation-header">
                <a href="/" class="back">"← Chats"</a>
                <h1>{title}</h1>
                {move || peer().map(|p| view! {
                    <span class=if p.connected { "presence online" } else { "presence offline" }>
                        {if p.connected { "online" } else { "offline" }}
                    </span>
                })}
                <super::people::TypingNote peer=Signal::derive(peer_id)/>
            </header>
            <Show when=move || rt.ready.get() && rt.status.get() == Status::Online && peer().is_none()>
                <p class="placeholder">"Nobody with this address is known here."</p>
            </Show>
            <div class="messages-wrap">
                // Focusable, so the keyboard can scroll it.
                <div
                    class="messages"
                    on:scroll=on_scroll
                    tabindex="0"
                    role="region"
                    aria-label="Message history"
                >
                    <Show when=move || !complete()>
                        <button type="button" class="link" on:click=move |_| load_older()>
                            "Load older messages"
                        </button>
                    </Show>
                    <Show when=move || !has_messages()>
                        <p class="placeholder">"No messages yet. Say hello."</p>
                    </Show>
                    <ol aria-label="Messages" node_ref=list>
                        <For
                            each=lines
                            key=|l| (l.key.clone(), l.state.clone(), l.starts_day)
                            let:line
                        >
                            <MessageLine line/>
                        </For>
                    </ol>
                </div>
                <button
                    type="button"
                    class="jump-latest"
                    hidden=move || !show_jump()
                    on:click=jump
                >
                    {jump_label}
                </button>
            </div>
            <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
                <textarea
                    node_ref=textarea
                    aria-label="Message"
                    placeholder="Write a message. Enter sends, Shift+Enter adds a line."
                    rows="2"
                    maxlength="4000"
                    prop:value=move || draft.get()
                    on:input=move |ev| {
                        let text = event_target_value(&ev);
                        if !text.trim().is_empty() {
                            rt.typing_to(&peer_id());
                        }
                        edit(text)
                    }
                    on:keydown=on_keydown
                ></textarea>
                <button type="submit" disabled=move || draft.get().trim().is_empty()>"Send"</button>
            </form>
            <p class="draft-note" role="status">
                {move || unsaved.get().then_some(
                    "This browser's storage is full: your draft is kept only while this tab is open.",
                )}
            </p>
        </section>
    }
}

/// Where the reader was when the lines last changed or they last scrolled.
struct Reader {
    /// The conversation these are about (`None` before the first look).
    peer: Option<String>,
    /// Within [`AT_NEWEST_PX`] of the end: the view follows new messages.
    at_newest: bool,
    /// `scrollHeight - scrollTop`: kept when older messages come in above.
    from_end: i32,
    /// The first and last lines' keys, and the newest message from the peer.
    first: String,
    last: String,
    newest_theirs: i64,
}

impl Reader {
    fn new() -> Self {
        Self {
            peer: None,
            at_newest: true,
            from_end: 0,
            first: String::new(),
            last: String::new(),
            newest_theirs: 0,
        }
    }
}

#[component]
fn MessageLine(line: Line) -> impl IntoView {
    let rt = use_realtime();
    let class = if line.mine {
        "message mine"
    } else {
        "message theirs"
    };
    let client_id = line.client_id.clone().unwrap_or_default();
    let status = match &line.state {
        State::Received => None,
        State::Sent => {
            let page = crate::router::use_location().page();
            let peer = Signal::derive(move || match &*page.read() {
                Page::Chat { user_id } => user_id.clone(),
                _ => String::new(),
            });
            Some(view! { <super::people::SentStatus peer id=line.id/> }.into_any())
        }
        State::Sending => Some(view! { <span class="status pending">"Sending…"</span> }.into_any()),
        State::Failed(reason) => {
            let (retry_id, discard_id) = (client_id.clone(), client_id.clone());
            Some(
                view! {
                    <span class="status failed">{format!("Not sent: {reason}")}</span>
                    <button type="button" class="link" on:click=move |_| rt.retry(&retry_id)>"Retry"</button>
                    <button type="button" class="link" on:click=move |_| rt.discard(&discard_id)>"Discard"</button>
                }
                .into_any(),
            )
        }
    };
    // A day's first message comes after the day's name: for the eye only, since each message
    // tells screen readers its full date and time. It follows the clock past midnight.
    let day = line.starts_day.then(|| {
        let (ts, today) = (line.ts, time::use_today());
        view! {
            <li class="day" aria-hidden="true">
                <span>{move || time::day_label(ts, today.get())}</span>
            </li>
        }
    });
    view! {
        {day}
        <li class=class data-state=match line.state {
            State::Received => "received",
            State::Sent => "sent",
            State::Sending => "pending",
            State::Failed(_) => "failed",
        }>
            // Who wrote it first, for screen readers (the side it is on says it to the eye).
            <p class="sr-only">{line.sender.clone()}</p>
            <p class="content">{line.content.clone()}</p>
            <p class="meta">
                <time datetime=time::iso(line.ts) title=time::full(line.ts)>
                    <span aria-hidden="true">{clock_time(line.ts)}</span>
                    <span class="sr-only">{time::full(line.ts)}</span>
                </time>
                {status}
            </p>
        </li>
    }
}
