//! A conversation with one person: history (older pages on scroll), live messages, and a
//! composer where Enter sends and Shift+Enter starts a new line.

use leptos::html;
use leptos::prelude::*;

use super::{clock_time, RequireAccount};
use crate::realtime::{use_realtime, Status};
use crate::router::{use_location, Page};

#[component]
pub fn ConversationPage() -> impl IntoView {
    view! {
        <RequireAccount>
            <Conversation/>
        </RequireAccount>
    }
}

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
    content: String,
    ts: i64,
    mine: bool,
    state: State,
    client_id: Option<String>,
}

#[component]
fn Conversation() -> impl IntoView {
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
            let mut lines: Vec<Line> = s
                .chat()
                .conversation(&peer)
                .into_iter()
                .map(|m| {
                    let mine = me.as_deref() == Some(m.from.as_str());
                    Line {
                        key: format!("m{}", m.id),
                        content: m.content,
                        ts: m.ts,
                        mine,
                        state: if mine { State::Sent } else { State::Received },
                        client_id: m.client_id,
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
                        content: e.content.clone(),
                        ts: e.created_at,
                        mine: true,
                        state: match &e.failed {
                            Some(reason) => State::Failed(reason.clone()),
                            None => State::Sending,
                        },
                        client_id: Some(e.client_id.clone()),
                    }),
            );
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

    // Reading the conversation marks it read.
    Effect::new(move |_| {
        rt.version.track();
        rt.mark_read(&peer_id());
    });

    // Keep the newest message in view when one arrives.
    let list = NodeRef::<html::Ol>::new();
    Effect::new(move |previous: Option<usize>| {
        let count = lines().len();
        if previous.is_none_or(|p| count > p) {
            if let Some(list) = list.get() {
                if let Some(last) = list.last_element_child() {
                    last.scroll_into_view_with_bool(false);
                }
            }
        }
        count
    });

    let load_older = move || rt.load_history(&peer_id());
    let on_scroll = move |ev: leptos::ev::Event| {
        let target: web_sys::Element = event_target(&ev);
        if target.scroll_top() <= 0 && !complete() {
            load_older();
        }
    };

    let draft = RwSignal::new(String::new());
    let textarea = NodeRef::<html::Textarea>::new();
    let send = move || {
        let text = draft.get_untracked();
        if protocol::MessageContent::parse(&text, protocol::domain::MESSAGE_MAX_CHARS).is_err() {
            return;
        }
        rt.send(&peer_id(), &text);
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
                <a href="/" class="back">"← People"</a>
                <h1>{title}</h1>
                {move || peer().map(|p| view! {
                    <span class=if p.connected { "presence online" } else { "presence offline" }>
                        {if p.connected { "online" } else { "offline" }}
                    </span>
                })}
            </header>
            <Show when=move || rt.ready.get() && rt.status.get() == Status::Online && peer().is_none()>
                <p class="placeholder">"Nobody with this address is known here."</p>
            </Show>
            <div class="messages" on:scroll=on_scroll>
                <Show when=move || !complete()>
                    <button type="button" class="link" on:click=move |_| load_older()>
                        "Load older messages"
                    </button>
                </Show>
                <Show when=move || !has_messages()>
                    <p class="placeholder">"No messages yet. Say hello."</p>
                </Show>
                <ol aria-label="Messages" node_ref=list>
                    <For each=lines key=|l| (l.key.clone(), l.state.clone()) let:line>
                        <MessageLine line/>
                    </For>
                </ol>
            </div>
            <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
                <textarea
                    node_ref=textarea
                    aria-label="Message"
                    placeholder="Write a message. Enter sends, Shift+Enter adds a line."
                    rows="2"
                    maxlength="4000"
                    prop:value=move || draft.get()
                    on:input=move |ev| draft.set(event_target_value(&ev))
                    on:keydown=on_keydown
                ></textarea>
                <button type="submit" disabled=move || draft.get().trim().is_empty()>"Send"</button>
            </form>
        </section>
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
        State::Sent => Some(view! { <span class="status sent">"Sent"</span> }.into_any()),
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
    view! {
        <li class=class data-state=match line.state {
            State::Received => "received",
            State::Sent => "sent",
            State::Sending => "pending",
            State::Failed(_) => "failed",
        }>
            <p class="content">{line.content.clone()}</p>
            <p class="meta">
                <time>{clock_time(line.ts)}</time>
                {status}
            </p>
        </li>
    }
}
