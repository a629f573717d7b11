//! Everyone, with presence and unread counts, you first.

use leptos::prelude::*;

use super::RequireAccount;
use crate::realtime::use_realtime;

#[derive(Clone, PartialEq)]
struct Row {
    user_id: String,
    username: String,
    connected: bool,
    unread: usize,
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
            let me = s.chat.me.clone();
            s.chat
                .peers()
                .into_iter()
                .map(|p| Row {
                    unread: s.chat.unread(&p.user_id),
                    is_me: me.as_deref() == Some(p.user_id.as_str()),
                    user_id: p.user_id,
                    username: p.username,
                    connected: p.connected,
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
                    <For each=rows key=|r| (r.user_id.clone(), r.connected, r.unread, r.username.clone()) let:row>
                        <li class="person">
                            <a href=format!("/chat/{}", row.user_id)>
                                <span
                                    class=if row.connected { "dot online" } else { "dot offline" }
                                    aria-hidden="true"
                                ></span>
                                <span class="name">
                                    {row.username.clone()}
                                    {row.is_me.then_some(" (you)")}
                                </span>
                                <span class="sr-only">
                                    {if row.connected { ", online" } else { ", offline" }}
                                </span>
                                {(row.unread > 0).then(|| view! {
                                    <span class="unread">{format!("{} unread", row.unread)}</span>
                                })}
                            </a>
                        </li>
                    </For>
                </ul>
            </Show>
        </section>
    }
}
