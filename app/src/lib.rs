//! Everything the server renders and the browser hydrates: the document shell, the router, the
//! pages, and the one real-time connection above them.

pub mod banner;
#[cfg(feature = "hydrate")]
mod browser_io;
pub mod drafts;
pub mod notify;
pub mod pages;
pub mod passkeys;
#[cfg(feature = "hydrate")]
mod pop;
pub mod realtime;
pub mod router;
pub mod storage;
pub mod theme;
pub mod time;
#[cfg(feature = "hydrate")]
pub mod worker;

use leptos::prelude::*;

use realtime::provide_realtime;
use router::Page;

/// What the server tells the browser about how to connect (rendered into the shell).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// All tabs of the browser share one connection held by a SharedWorker.
    pub shared_connection: bool,
    /// The server offers passkeys (on unless `--passkeys=false`) at the origin this page was
    /// requested at, so the page does.
    pub passkeys: bool,
}

/// Whether the pages offer passkeys: the rendering server's [`ClientConfig`], and in the
/// browser what that server put in the page (`data-passkeys` on the connection's meta), so
/// the hydrated page has the same buttons as the rendered one.
pub fn passkeys_offered() -> bool {
    #[cfg(feature = "hydrate")]
    {
        document()
            .query_selector("meta[name=tether-connection]")
            .ok()
            .flatten()
            .is_some_and(|meta| meta.has_attribute("data-passkeys"))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        use_context::<ClientConfig>().unwrap_or_default().passkeys
    }
}

/// The HTML document around [`App`]; the server renders it for every route.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    security_headers();
    let config = use_context::<ClientConfig>().unwrap_or_default();
    // The worker loads the same wasm as the page: tell it where the build is.
    let pkg = format!("/{}/{}", options.site_pkg_dir, options.output_name);
    let css = format!("{pkg}.css");
    let title = router::document_title(router::current_page().title());
    let connection = if config.shared_connection {
        "shared"
    } else {
        "per-tab"
    };
    // The chosen theme is in the markup, so the first paint has it (theme.rs says why).
    let theme = theme::requested().map(theme::Theme::as_str);
    view! {
        <!DOCTYPE html>
        <html lang="en" data-theme=theme>
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <meta
                    name="tether-connection"
                    content=connection
                    data-pkg=pkg
                    data-passkeys=config.passkeys.then_some("on")
                />
                // As inner HTML: a text child would carry a hydration marker, which a title
                // shows as text. The names are the app's own (`Page::title`).
                <title inner_html=title></title>
                <link id="leptos" rel="stylesheet" href=css/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// A strict Content-Security-Policy for every page, with this response's nonce: the session
/// lives in localStorage, so injected script is the threat to keep out. Only Leptos' own
/// nonce-carrying hydration script and same-origin module/wasm may run; no inline or eval'd
/// script, no plugins, no framing; connections only back to this origin (the socket). No other
/// inline script is allowed, hashed or not: the theme comes from a cookie (theme.rs), and pages
/// vary on it, so a page the browser cached is not shown again in a theme since changed.
#[cfg(feature = "ssr")]
fn security_headers() {
    use http::header::{
        HeaderName, HeaderValue, CONTENT_SECURITY_POLICY, REFERRER_POLICY, VARY,
        X_CONTENT_TYPE_OPTIONS,
    };
    let Some(response) = use_context::<leptos_axum::ResponseOptions>() else {
        return;
    };
    let nonce = leptos::nonce::use_nonce()
        .map(|n| format!(" 'nonce-{}'", &*n))
        .unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self'{nonce} 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    let headers: [(HeaderName, String); 4] = [
        (CONTENT_SECURITY_POLICY, policy),
        (X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (REFERRER_POLICY, "no-referrer".into()),
        (VARY, "Cookie".into()),
    ];
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.insert_header(name, value);
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    let theme = theme::provide_theme();
    time::provide_today();
    // Created once, above the router: navigation never opens another socket.
    let realtime = provide_realtime();
    let location = router::provide_location();
    notify::provide(realtime, location);
    drafts::provide(realtime);
    let page = location.page();
    // Which view `main` shows: every conversation is the conversations' view.
    let section = Memo::new(move |_| match &*page.read() {
        Page::Chat { .. } => Page::People,
        other => other.clone(),
    });
    // A conversation's page names the person itself.
    router::keep_title(move || {
        let page = page.read();
        (!matches!(*page, Page::Chat { .. })).then(|| page.title().to_owned())
    });
    // Runs only in the browser, once hydration has attached: tests and scripts wait on it.
    Effect::new(move |_| {
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <a class="skip-link" href="#main">"Skip to content"</a>
        <header class="topbar">
            <a href="/" class="brand">"Tether"</a>
            <nav aria-label="Main">
                <NavLink href="/" label="Chats"/>
                <NavLink href="/settings" label="Settings"/>
                <NavLink href="/session" label="Session"/>
                <NavLink href="/about" label="About"/>
            </nav>
            <theme::ThemeToggle theme/>
        </header>
        <banner::ConnectionBanner/>
        <banner::TabConflict/>
        <div
            class="sr-only"
            role="status"
            aria-live="polite"
            aria-atomic="true"
            data-testid="page-announcer"
        >
            {move || location.announcement()}
        </div>
        <div class="sr-only" aria-live="polite" role="log" aria-label="New messages">
            {move || realtime.announcement.get()}
        </div>
        <main id="main">
            // The conversations and the open one are one view (side by side on a wide screen),
            // kept as the conversation changes: the list keeps its place and focus.
            {move || match *section.read() {
                Page::People | Page::Chat { .. } => view! { <pages::people::Messenger/> }.into_any(),
                Page::SignIn => view! { <pages::signin::SignInPage/> }.into_any(),
                Page::Session => view! { <pages::session::SessionPage/> }.into_any(),
                Page::Settings => view! { <pages::settings::SettingsPage/> }.into_any(),
                Page::About => view! { <AboutPage/> }.into_any(),
                Page::NotFound => view! { <NotFound/> }.into_any(),
            }}
        </main>
    }
}

/// A link of the main navigation, marked `aria-current="page"` while its page is shown. Plain
/// anchors are enough for client-side navigation: the router handles every same-origin link
/// click.
#[component]
fn NavLink(href: &'static str, label: &'static str) -> impl IntoView {
    let page = router::use_location().page();
    let target = Page::from_path(href);
    let current = move || (*page.read() == target).then_some("page");
    view! { <a href=href aria-current=current>{label}</a> }
}

#[component]
fn AboutPage() -> impl IntoView {
    view! {
        <section class="page">
            <h1>"About Tether"</h1>
            <p>
                "Tether keeps one real-time connection per browser tab alive across navigation. "
                "Your session lives in this browser; the server keeps your messages until you read them."
            </p>
        </section>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <section class="page">
            <h1>"Page not found"</h1>
            <p><a href="/">"Back to Tether"</a></p>
        </section>
    }
}
