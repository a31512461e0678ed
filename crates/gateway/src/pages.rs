//! The few HTML pages the gateway shows people: sign-in, errors, signed-in home, sign-out.
//!
//! Plain HTML forms that work without JavaScript. Every dynamic value goes through [`esc`].

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 4px #0002}h1{font-size:1.3rem;margin-top:0}label{display:block;margin:.8rem 0 .2rem}\
input{width:100%;padding:.5rem;box-sizing:border-box}button{margin-top:1rem;padding:.6rem 1rem;width:100%}\
.err{background:#fde8e8;color:#8a1c1c;padding:.6rem;border-radius:4px}.muted{color:#666;font-size:.85rem}\
code{background:#eee;padding:0 .2rem}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{} · Tsuzuku</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        esc(title)
    )
}

/// What the sign-in page shows.
pub struct LoginPage<'a> {
    pub error: Option<&'a str>,
    pub csrf: &'a str,
    pub return_to: &'a str,
    pub username: &'a str,
    pub sso_label: Option<&'a str>,
    /// Device sign-in offered on this connection: the user's name and the device's name.
    pub device: Option<(&'a str, &'a str)>,
}

/// The sign-in form (password + TOTP code, a device sign-in button when the connection's
/// device can sign its user in, and an SSO button when configured).
pub fn login(p: &LoginPage<'_>) -> String {
    let mut b = String::from("<h1>Sign in</h1>");
    if let Some(e) = p.error {
        let _ = write!(b, "<p class=\"err\" role=\"alert\">{}</p>", esc(e));
    }
    if let Some((user, device)) = p.device {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/.tsuzuku/login/device\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
<button type=\"submit\">Continue as {user} with this device ({device})</button></form>\
<p class=\"muted\">Or sign in with a user name and password:</p>",
            csrf = esc(p.csrf),
            rd = esc(p.return_to),
            user = esc(user),
            device = esc(device),
        );
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/.tsuzuku/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
<label for=\"username\">User name</label>\
<input id=\"username\" name=\"username\" autocomplete=\"username\" required value=\"{user}\">\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<label for=\"totp\">One-time code (if enrolled)</label>\
<input id=\"totp\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\">\
<button type=\"submit\">Sign in</button></form>",
        csrf = esc(p.csrf),
        rd = esc(p.return_to),
        user = esc(p.username),
    );
    if let Some(label) = p.sso_label {
        let _ = write!(
            b,
            "<form method=\"get\" action=\"/.tsuzuku/oidc/start\">\
<input type=\"hidden\" name=\"rd\" value=\"{}\">\
<button type=\"submit\">Sign in with {}</button></form>",
            esc(p.return_to),
            esc(label)
        );
    }
    layout("Sign in", &b)
}

/// An error page: what happened, and what the person can do.
pub fn error(title: &str, message: &str, request_id: &str) -> String {
    layout(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p><p class=\"muted\">Request ID <code>{}</code>. \
Quote it when you ask your IT team for help.</p>",
            esc(title),
            esc(message),
            esc(request_id)
        ),
    )
}

/// A sign-in that cannot be finished in this browser: why, and a link (`href`, on this host)
/// that starts it again here.
pub fn sign_in_again(message: &str, href: &str, request_id: &str) -> String {
    let title = "Sign-in not completed";
    layout(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"{}\">Sign in again</a></p>\
<p class=\"muted\">Request ID <code>{}</code>. Quote it when you ask your IT team for help.</p>",
            esc(title),
            esc(message),
            esc(href),
            esc(request_id)
        ),
    )
}

/// The portal's home page for a signed-in person.
pub fn home(user: &str, apps: &[(String, String)], csrf: &str) -> String {
    let mut b = format!("<h1>Signed in as {}</h1><ul>", esc(user));
    for (name, host) in apps {
        let _ = write!(
            b,
            "<li><a href=\"https://{}/\">{}</a></li>",
            esc(host),
            esc(name)
        );
    }
    b.push_str("</ul>");
    b.push_str(&logout_form(csrf));
    layout("Signed in", &b)
}

/// A sign-out button (sign-out is a POST so that links and prefetching cannot trigger it).
pub fn logout_form(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/.tsuzuku/logout\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
        esc(csrf)
    )
}

/// The page shown at `/.tsuzuku/logout` for a GET.
pub fn logout_page(csrf: &str) -> String {
    layout(
        "Sign out",
        &format!("<h1>Sign out?</h1>{}", logout_form(csrf)),
    )
}

/// Shown after signing out.
pub fn signed_out() -> String {
    layout(
        "Signed out",
        "<h1>Signed out</h1><p>You have been signed out of every application.</p>",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_are_escaped() {
        let page = login(&LoginPage {
            error: Some("<script>x</script>"),
            csrf: "\"><img>",
            return_to: "https://a/'",
            username: "a&b",
            sso_label: Some("<b>"),
            device: Some(("<u>", "<d>")),
        });
        assert!(page.contains("Continue as &lt;u&gt; with this device (&lt;d&gt;)"));
        assert!(!page.contains("<script>x"));
        assert!(!page.contains("\"><img>"));
        assert!(page.contains("a&amp;b"));
        assert!(page.contains("&lt;b&gt;"));
        assert!(page.contains("https://a/&#39;"));
    }

    #[test]
    fn sign_in_again_links_to_a_fresh_sign_in() {
        let page = sign_in_again("<m>", "/.tsuzuku/signin?rd=%2Fa&x=\"", "r<1>");
        assert!(
            page.contains("<a href=\"/.tsuzuku/signin?rd=%2Fa&amp;x=&quot;\">Sign in again</a>")
        );
        assert!(page.contains("&lt;m&gt;"));
        assert!(page.contains("r&lt;1&gt;"));
    }

    #[test]
    fn login_page_works_without_javascript() {
        let page = login(&LoginPage {
            error: None,
            csrf: "c",
            return_to: "",
            username: "",
            sso_label: None,
            device: None,
        });
        assert!(page.contains("<form method=\"post\" action=\"/.tsuzuku/login\">"));
        assert!(!page.contains("/.tsuzuku/login/device"));
        assert!(!page.contains("<script"));
    }
}
