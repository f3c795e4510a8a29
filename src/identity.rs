//! Who the Dify `user` is (API.md §2): a signed cookie holding a random id, or a header set by a
//! trusted auth proxy. The browser never chooses it.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256, Sha512};
use unicode_normalization::UnicodeNormalization;

use crate::config::Config;
use crate::dify::Caller;
use crate::error::ApiError;
use crate::http::peer_trust::peer_ip;
use crate::http::request_id::RequestId;
use crate::state::AppState;

/// The identity cookie over plain HTTP.
pub const COOKIE_NAME: &str = "dify_bff_uid";
/// The identity cookie over HTTPS: browsers accept a `__Host-` cookie only from this host
/// itself (Secure, `Path=/`, no `Domain`), so a sibling subdomain cannot plant one.
pub const SECURE_COOKIE_NAME: &str = "__Host-dify_bff_uid";
const COOKIE_MAX_AGE_DAYS: i64 = 400;
/// Dify stores `user` in a varchar(255).
const MAX_HEADER_IDENTITY: usize = 255;

/// The identity settings, built once at start-up.
pub struct IdentityPolicy {
    key: Key,
    /// Keys the identity hashes in logs, so they cannot be reversed by guessing identities.
    log_key: Hmac<Sha256>,
    same_site: SameSite,
    /// Other sites frame the page (`EMBED_ORIGINS`): the cookie must work in a third-party
    /// iframe, so it is `SameSite=None; Secure; Partitioned`.
    embedded: bool,
    user_header: Option<HeaderName>,
    trusted_proxies: Vec<IpNet>,
}

impl IdentityPolicy {
    pub fn new(config: &Config) -> IdentityPolicy {
        let key = match &config.session_secret {
            Some(secret) => Key::from(&Sha512::digest(secret.expose_secret().as_bytes())),
            None => {
                if config.user_header.is_none() {
                    tracing::warn!(
                        "SESSION_SECRET is not set: using a random one, so sessions end when the process restarts and replicas do not share them"
                    );
                }
                Key::generate()
            }
        };
        let log_key = log_key(config);
        IdentityPolicy {
            key,
            log_key,
            same_site: if config.embed.enabled() {
                SameSite::None
            } else {
                config.cookie_same_site
            },
            embedded: config.embed.enabled(),
            user_header: config.user_header.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// Whether headers that only a proxy should set are believed from this peer.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        if self.trusted_proxies.is_empty() {
            return true;
        }
        match peer {
            Some(ip) => {
                let ip = canonical(ip);
                self.trusted_proxies.iter().any(|net| net.contains(&ip))
            }
            None => false,
        }
    }

    /// Whether the browser reached us over HTTPS (directly or through a believed proxy).
    pub fn is_https(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
        self.trusts(peer)
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }

    pub fn header_mode(&self) -> bool {
        self.user_header.is_some()
    }

    /// A short, stable, keyed hash of an identity for logs: never the identity itself.
    pub fn log_hash(&self, identity: &Identity) -> String {
        let mut mac = self.log_key.clone();
        mac.update(identity.0.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cookie_name(https: bool) -> &'static str {
        if https {
            SECURE_COOKIE_NAME
        } else {
            COOKIE_NAME
        }
    }

    /// Over plain HTTP a `Secure` cookie (forced by `SameSite=None`) is kept by browsers only
    /// from `localhost`: embedding needs HTTPS everywhere else.
    fn fresh_cookie(&self, id: String, https: bool) -> Cookie<'static> {
        let mut cookie = Cookie::build((Self::cookie_name(https), id))
            .http_only(true)
            .path("/")
            .same_site(self.same_site)
            .secure(https || self.same_site == SameSite::None)
            .max_age(time_days(COOKIE_MAX_AGE_DAYS));
        if self.embedded {
            // CHIPS: the browser keeps one cookie per embedding site, so third-party cookie
            // blocking does not lose the identity, and sites cannot correlate a user.
            cookie = cookie.partitioned(true);
        }
        cookie.build()
    }
}

/// Derived from `SESSION_SECRET`, so replicas log the same hash for the same user; random
/// per process without it.
fn log_key(config: &Config) -> Hmac<Sha256> {
    let secret: Vec<u8> = match &config.session_secret {
        Some(secret) => Sha256::new()
            .chain_update(b"dify-bff identity log hash\0")
            .chain_update(secret.expose_secret().as_bytes())
            .finalize()
            .to_vec(),
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    <Hmac<Sha256> as KeyInit>::new_from_slice(&secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()))
}

fn time_days(days: i64) -> cookie::time::Duration {
    cookie::time::Duration::days(days)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The end user of this request, as decided by the middleware.
#[derive(Clone, Debug)]
pub struct Identity(pub String);

/// Decides the identity, stores it for the handlers and issues a cookie when it is new.
pub async fn resolve(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let policy = &state.identity;
    let peer = peer_ip(request.extensions());
    if let Some(name) = &policy.user_header {
        match header_identity(request.headers(), name) {
            Some(user) => {
                let identity = Identity(user);
                request.extensions_mut().insert(identity.clone());
                let mut response = next.run(request).await;
                response.extensions_mut().insert(identity);
                return response;
            }
            None => {
                return ApiError::Unauthorized(
                    "Sign in first: no valid user identity header.".into(),
                )
                .into_response();
            }
        }
    }
    let https = policy.is_https(request.headers(), peer);
    let existing = cookie_identity(
        request.headers(),
        &policy.key,
        IdentityPolicy::cookie_name(https),
    );
    match existing {
        Some(id) => {
            let identity = Identity(id);
            request.extensions_mut().insert(identity.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(identity);
            response
        }
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            let identity = Identity(id.clone());
            request.extensions_mut().insert(identity.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(identity);
            let jar = SignedCookieJar::new(policy.key.clone()).add(policy.fresh_cookie(id, https));
            (jar, response).into_response()
        }
    }
}

/// The id in our signed cookie `name`, if its signature holds. Two cookies of that name (one
/// planted by a sibling site beside ours) count as none: neither is trusted. Only our cookie is
/// verified (a signed jar built from the headers would check every cookie the browser sends).
fn cookie_identity(headers: &HeaderMap, key: &Key, name: &str) -> Option<String> {
    let mut ours = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter(|pair| {
            pair.trim_start()
                .split_once('=')
                .is_some_and(|(n, _)| n.trim_end() == name)
        });
    let pair = ours.next()?;
    if ours.next().is_some() {
        return None;
    }
    let cookie = Cookie::parse_encoded(pair.trim().to_owned()).ok()?;
    let mut jar = cookie::CookieJar::new();
    jar.add_original(cookie);
    let value = jar.signed(key).get(name)?.value().to_owned();
    is_cookie_id(&value).then_some(value)
}

fn is_cookie_id(value: &str) -> bool {
    value.len() == 36 && uuid::Uuid::try_parse(value).is_ok()
}

/// The header's value, in Unicode's composed form (NFC: `Zoe` + U+0308 and `Zoë` are one
/// user), if it is 1–255 printable characters.
fn header_identity(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = std::str::from_utf8(value.as_bytes()).ok()?;
    let text: String = text.nfc().collect();
    let count = text.chars().count();
    ((1..=MAX_HEADER_IDENTITY).contains(&count) && text.chars().all(is_printable)).then_some(text)
}

/// Not a control, format (zero-width, bidirectional), private-use, unassigned or
/// non-character code point, no line or paragraph separator, no space but the plain one, and
/// none of the other default-ignorable or blank-looking characters: two identities that look
/// alike in a log or an admin page must be alike.
fn is_printable(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    let invisible = matches!(
        c,
        '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    );
    let category = c.general_category();
    let hidden = matches!(
        category,
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::LineSeparator
            | G::ParagraphSeparator
    );
    let odd_space = category == G::SpaceSeparator && c != ' ';
    !invisible && !hidden && !odd_space
}

/// The caller of an upstream call: identity plus request id.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let identity = parts
            .extensions
            .get::<Identity>()
            .ok_or_else(|| ApiError::Internal("identity middleware did not run".into()))?;
        let trace_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        Ok(Caller {
            user: identity.0.clone(),
            trace_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn signed(key: &Key, name: &'static str, id: &str) -> String {
        let mut jar = cookie::CookieJar::new();
        jar.signed_mut(key).add(Cookie::new(name, id.to_owned()));
        let cookie = jar.get(name).map(|c| c.value().to_owned());
        format!("{name}={}", cookie.unwrap_or_default())
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.insert(header::COOKIE, value);
        }
        headers
    }

    const ID_A: &str = "7d9f3a52-52a4-4f57-9d59-2e3f8c9b0a11";
    const ID_B: &str = "0b1c2d3e-4f50-4617-8899-aabbccddeeff";

    #[test]
    fn one_signed_cookie_is_the_identity() {
        let key = Key::generate();
        let cookie = signed(&key, COOKIE_NAME, ID_A);
        let got = cookie_identity(&headers(&cookie), &key, COOKIE_NAME);
        assert_eq!(got.as_deref(), Some(ID_A));
    }

    #[test]
    fn two_identity_cookies_count_as_none() {
        let key = Key::generate();
        let both = format!(
            "{}; {}",
            signed(&key, COOKIE_NAME, ID_A),
            signed(&key, COOKIE_NAME, ID_B)
        );
        assert_eq!(cookie_identity(&headers(&both), &key, COOKIE_NAME), None);
    }

    #[test]
    fn over_https_only_the_host_prefixed_cookie_counts() {
        let key = Key::generate();
        let plain = signed(&key, COOKIE_NAME, ID_A);
        assert_eq!(
            cookie_identity(&headers(&plain), &key, SECURE_COOKIE_NAME),
            None
        );
        let secure = format!("{plain}; {}", signed(&key, SECURE_COOKIE_NAME, ID_B));
        let got = cookie_identity(&headers(&secure), &key, SECURE_COOKIE_NAME);
        assert_eq!(got.as_deref(), Some(ID_B));
    }

    #[test]
    fn header_identities_are_1_to_255_printable_characters() {
        let name = HeaderName::from_static("x-user");
        let of = |value: &str| {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                headers.insert(name.clone(), value);
            }
            header_identity(&headers, &name)
        };
        assert_eq!(
            of("alice@example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(of("Zoë Ω").as_deref(), Some("Zoë Ω"));
        assert!(of(&"a".repeat(255)).is_some());
        assert!(of(&"a".repeat(256)).is_none(), "Dify stores 255 at most");
        for hidden in [
            "al\u{200B}ice",
            "\u{202E}ecila",
            "a\u{2028}b",
            "a\u{FEFF}",
            "a\u{2066}b",
        ] {
            assert!(of(hidden).is_none(), "{hidden:?}");
        }
    }
}
