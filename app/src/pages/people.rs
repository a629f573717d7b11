//! Everyone, with presence and unread counts, you first.

use leptos::prelude::*;

use super::RequireAccount;
use crate::realtime::use_realtime;

/// A person in the list. Presence and the unread count are read live by the row, so a change
/// updates the row in place: the link keeps its element, and the keyboard focus with it.
#[derive(Clone, PartialEq)]
struct Row {
    user_id: String,
    username: String,
    is_me: bool,
}

#[component]
pub fn PeoplePage() -> impl IntoView {
    view! {
        <RequireAccount>
            <People/>
        </RequireAccount>
    }
}

#[component]
fn People() -> impl IntoView {
    let rt = use_realtime();
    let rows = move || {
        rt.with(|s| {
            let me = s.chat().me.clone();
            s.chat()
                .peers()
                .into_iter()
                .map(|p| Row {
                    is_me: me.as_deref() == Some(p.user_id.as_str()),
                    user_id: p.user_id,
                    username: p.username,
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    };
    view! {
        <section class="page">
            <h1>"People"</h1>
            <Show
                when=move || !rows().is_empty()
                fallback=|| view! { <p class="placeholder">"Nobody here yet."</p> }
            >
                <ul class="people" aria-label="People">
                    <For each=rows key=|r| (r.user_id.clone(), r.username.clone()) let:row>
                        <Person row/>
                    </For>
                </ul>
            </Show>
        </section>
    }
}

#[component]
fn Person(row: Row) -> impl IntoView {
    let rt = use_realtime();
    // Memos: each row re-renders only when its own person's state changes.
    let connected = {
        let id = row.user_id.clone();
        Memo::new(move |_| {
            rt.with(|s| s.chat().peer(&id).is_some_and(|p| p.connected)) == Some(true)
        })
    };
    let unread = {
        let id = row.user_id.clone();
        Memo::new(move |_| rt.with(|s| s.chat().unread(&id)).unwrap_or_default())
    };
    view! {
        <li class="person">
            <a href=format!("/chat/{}", row.user_id)>
                <span
                    class=move || if connected.get() { "dot online" } else { "dot offline" }
                    aria-hidden="true"
                ></span>
                <span class="name">
                    {row.username}
                    {row.is_me.then_some(" (you)")}
                </span>
                <span class="sr-only">
                    {move || if connected.get() { ", online" } else { ", offline" }}
                </span>
                {move || {
                    let unread = unread.get();
                    (unread > 0).then(|| view! {
                        <span class="unread">{format!("{unread} unread")}</span>
                    })
                }}
            </a>
        </li>
    }
}
