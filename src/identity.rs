//! Who the Dify `user` is (API.md §2): a signed cookie holding a random id, or a header set by a
//! trusted auth proxy. The browser never chooses it.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};
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
/// A `HeaderName` constant: a lookup by `&str` parses and checks the name on every call.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Dify stores `user` in a varchar(255).
const MAX_HEADER_IDENTITY: usize = 255;

/// The identity settings, built once at start-up.
pub struct IdentityPolicy {
    key: Key,
    /// HMAC-SHA256 keyed with `key`'s signing half, as the `cookie` crate signs: cloned per
    /// check, so the key schedule is not redone for every request. The identity's hash in logs
    /// is the start of the same HMAC (keyed: it cannot be reversed by guessing identities), so
    /// a cookie's check yields it without a second HMAC.
    cookie_mac: Hmac<Sha256>,
    /// This policy's entries in the per-thread [`Memo`] of verified cookies.
    memo_id: u64,
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
        let cookie_mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.signing())
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        IdentityPolicy {
            key,
            cookie_mac,
            memo_id: next_memo_id(),
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
                .get(X_FORWARDED_PROTO)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }

    pub fn header_mode(&self) -> bool {
        self.user_header.is_some()
    }

    /// A short, stable, keyed hash of an identity for logs: never the identity itself.
    pub fn log_hash(&self, identity: &str) -> LogHash {
        let mut mac = self.cookie_mac.clone();
        mac.update(identity.as_bytes());
        LogHash::of(&mac.finalize().into_bytes())
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

/// An identity's log hash: 12 hex digits (48 bits of a keyed HMAC), kept without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogHash([u8; 12]);

impl LogHash {
    /// The first 48 bits of the identity's HMAC, in hex.
    fn of(digest: &[u8]) -> LogHash {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hash = [0u8; 12];
        for (pair, b) in hash.chunks_mut(2).zip(digest) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        LogHash(hash)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for LogHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

/// The end user of this request, as decided by the middleware: shared, not copied, by the
/// request's callers and the streams it starts.
#[derive(Clone, Debug)]
pub struct Identity(pub Arc<str>);

thread_local! {
    /// The log hash of the response being returned up this thread's poll, for the access log.
    /// Not a response extension: the first one creates the response's extension map (three
    /// allocations per request). The front door clears it before each poll of its handler and
    /// takes it when the handler is ready, in the same poll that [`Decided::apply`] set it.
    static LOG_HASH: Cell<Option<LogHash>> = const { Cell::new(None) };
}

/// Forgets a log hash left by a response that did not reach the front door in its poll.
pub fn forget_log_hash() {
    LOG_HASH.set(None);
}

/// The log hash of the response that just became ready on this thread, if it was a user's.
pub fn take_log_hash() -> Option<LogHash> {
    LOG_HASH.take()
}

/// What [`decide`] settled for one request: its identity is in the request; the response
/// gets the identity's [`LogHash`] (for the access log), and the new cookie when there was none.
pub struct Decided {
    hash: LogHash,
    new_cookie: Option<SignedCookieJar>,
}

impl Decided {
    pub fn apply(self, response: Response) -> Response {
        LOG_HASH.set(Some(self.hash));
        match self.new_cookie {
            Some(jar) => (jar, response).into_response(),
            None => response,
        }
    }
}

/// Decides the identity and stores it for the handlers, or refuses the request (header mode
/// without a valid header).
pub fn decide(state: &AppState, request: &mut Request) -> Result<Decided, ApiError> {
    let policy = &state.identity;
    let peer = peer_ip(request.extensions());
    if let Some(name) = &policy.user_header {
        let Some(user) = header_identity(request.headers(), name) else {
            return Err(ApiError::Unauthorized(
                "Sign in first: no valid user identity header.".into(),
            ));
        };
        let hash = policy.log_hash(&user);
        keep_identity(request, Arc::from(user));
        return Ok(Decided {
            hash,
            new_cookie: None,
        });
    }
    let https = policy.is_https(request.headers(), peer);
    let existing = cookie_identity(
        request.headers(),
        &policy.cookie_mac,
        policy.memo_id,
        IdentityPolicy::cookie_name(https),
    );
    if let Some((id, hash)) = existing {
        keep_identity(request, id);
        return Ok(Decided {
            hash,
            new_cookie: None,
        });
    }
    let id = uuid::Uuid::new_v4().to_string();
    let hash = policy.log_hash(&id);
    keep_identity(request, Arc::from(id.as_str()));
    let jar = SignedCookieJar::new(policy.key.clone()).add(policy.fresh_cookie(id, https));
    Ok(Decided {
        hash,
        new_cookie: Some(jar),
    })
}

/// Stores the identity for the handlers: beside the request id when there is one.
fn keep_identity(request: &mut Request, identity: Arc<str>) {
    let extensions = request.extensions_mut();
    match extensions.get_mut::<RequestId>() {
        Some(RequestId(_, kept)) => *kept = Some(Identity(identity)),
        None => {
            extensions.insert(Identity(identity));
        }
    }
}

/// The id in our signed cookie `name`, if its signature holds. Two cookies of that name (one
/// planted by a sibling site beside ours) count as none: neither is trusted. Only our cookie is
/// verified (a signed jar built from the headers would check every cookie the browser sends).
///
/// The check is the `cookie` crate's signed-cookie format, done in place: the value (percent-
/// decoded) is the base64 HMAC-SHA256 of the id (44 characters) followed by the id, a UUID.
/// The verified HMAC gives the id's log hash too. A value that held before on this thread is
/// taken from the [`Memo`] without a second HMAC.
fn cookie_identity(
    headers: &HeaderMap,
    mac: &Hmac<Sha256>,
    memo_id: u64,
    name: &str,
) -> Option<(Arc<str>, LogHash)> {
    let mut ours = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| {
            let (n, value) = pair.trim_start().split_once('=')?;
            (n.trim_end() == name).then_some(value)
        });
    let value = ours.next()?;
    if ours.next().is_some() {
        return None;
    }
    let mut signed = [0u8; SIGNED_ID_LEN];
    percent_decode(value.trim(), &mut signed)?;
    if let Some(known) = Memo::find(memo_id, &signed) {
        return Some(known);
    }
    let (digest, id) = signed.split_at(SIGNED_DIGEST_LEN);
    let digest = base64_digest(digest)?;
    let id = std::str::from_utf8(id).ok()?;
    let mut mac = mac.clone();
    mac.update(id.as_bytes());
    mac.verify_slice(&digest).ok()?;
    let found = is_cookie_id(id).then(|| (Arc::from(id), LogHash::of(&digest)))?;
    Memo::keep(memo_id, signed, &found);
    Some(found)
}

/// A signed cookie value (percent-decoded) whose signature held, and what it decided. Whether
/// a value holds depends on nothing but the value and the key, so one that held once needs no
/// second HMAC: each thread keeps the last [`MEMO_SLOTS`] it verified, a value's slot picked
/// by its first characters (the digest's) and the value compared whole, in constant time.
struct Memo {
    /// The policy (key) that verified it: other policies in the process never match it.
    policy: u64,
    signed: [u8; SIGNED_ID_LEN],
    id: Arc<str>,
    hash: LogHash,
}

const MEMO_SLOTS: usize = 64;

thread_local! {
    static MEMO: RefCell<[Option<Memo>; MEMO_SLOTS]> =
        const { RefCell::new([const { None }; MEMO_SLOTS]) };
}

fn next_memo_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Memo {
    fn slot(signed: &[u8; SIGNED_ID_LEN]) -> usize {
        (usize::from(signed[0]) << 2 ^ usize::from(signed[1])) % MEMO_SLOTS
    }

    fn find(policy: u64, signed: &[u8; SIGNED_ID_LEN]) -> Option<(Arc<str>, LogHash)> {
        MEMO.with_borrow(|slots| {
            let memo = slots[Self::slot(signed)].as_ref()?;
            (memo.policy == policy && same_bytes(&memo.signed, signed))
                .then(|| (Arc::clone(&memo.id), memo.hash))
        })
    }

    fn keep(policy: u64, signed: [u8; SIGNED_ID_LEN], (id, hash): &(Arc<str>, LogHash)) {
        MEMO.with_borrow_mut(|slots| {
            slots[Self::slot(&signed)] = Some(Memo {
                policy,
                signed,
                id: Arc::clone(id),
                hash: *hash,
            });
        });
    }
}

/// Whether `a` and `b` are equal, looking at every byte whatever the first difference: how
/// long a comparison takes tells nothing of a remembered value.
fn same_bytes(a: &[u8; SIGNED_ID_LEN], b: &[u8; SIGNED_ID_LEN]) -> bool {
    let a = std::hint::black_box(a);
    let (a, b) = (a.as_chunks::<8>().0, b.as_chunks::<8>().0);
    let differ = a.iter().zip(b).fold(0u64, |differ, (x, y)| {
        differ | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y))
    });
    std::hint::black_box(differ) == 0
}

/// Base64 of a SHA-256 digest, with its one `=` of padding.
const SIGNED_DIGEST_LEN: usize = 44;
/// The digest and a hyphenated UUID.
const SIGNED_ID_LEN: usize = SIGNED_DIGEST_LEN + 36;

/// `value` with its `%XX` escapes decoded into `out`, if it is exactly `out`'s length (a `%`
/// not followed by two hex digits stays itself, as in the `cookie` crate).
fn percent_decode<'a>(value: &str, out: &'a mut [u8; SIGNED_ID_LEN]) -> Option<&'a [u8]> {
    let mut rest = value.as_bytes();
    let mut written = 0;
    while !rest.is_empty() {
        let run = memchr::memchr(b'%', rest).unwrap_or(rest.len());
        out.get_mut(written..written + run)?
            .copy_from_slice(&rest[..run]);
        written += run;
        let Some((_, after)) = rest[run..].split_first() else {
            break;
        };
        let escaped = match after {
            [high, low, ..] => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        let slot = out.get_mut(written)?;
        match escaped {
            Some((high, low)) => {
                *slot = high << 4 | low;
                rest = &after[2..];
            }
            None => {
                *slot = b'%';
                rest = after;
            }
        }
        written += 1;
    }
    (written == SIGNED_ID_LEN).then_some(&out[..])
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The 32 bytes of a standard-alphabet base64 digest of 43 characters and one `=`.
fn base64_digest(text: &[u8]) -> Option<[u8; 32]> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let (body, pad) = text.split_at(SIGNED_DIGEST_LEN - 1);
    if pad != b"=" {
        return None;
    }
    let mut out = [0u8; 32];
    // 10 whole groups of 4 characters → 30 bytes, then 3 characters → 2 bytes.
    for (group, bytes) in body.chunks(4).zip(out.chunks_mut(3)) {
        let mut bits = 0u32;
        for &c in group {
            bits = bits << 6 | sextet(c)?;
        }
        let bits = bits << (6 * (4 - group.len()));
        let all = bits.to_be_bytes();
        bytes.copy_from_slice(&all[1..1 + bytes.len()]);
        if group.len() == 3 && all[3] != 0 {
            return None; // non-canonical: stray bits in the last character
        }
    }
    Some(out)
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
        let request_id = parts.extensions.get::<RequestId>();
        let identity = request_id
            .and_then(|RequestId(_, identity)| identity.as_ref())
            .or_else(|| parts.extensions.get::<Identity>())
            .ok_or_else(|| ApiError::Internal("identity middleware did not run".into()))?;
        let trace_id = request_id.map(|r| r.0.clone());
        Ok(Caller {
            user: Arc::clone(&identity.0),
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

    fn mac(key: &Key) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.signing()).expect("a 32-byte key")
    }

    fn headers(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.insert(header::COOKIE, value);
        }
        headers
    }

    /// Each check with a memo of its own: nothing is remembered between them.
    fn cookie_id(headers: &HeaderMap, mac: &Hmac<Sha256>, name: &str) -> Option<String> {
        cookie_identity(headers, mac, next_memo_id(), name).map(|(id, _)| id.to_string())
    }

    const ID_A: &str = "7d9f3a52-52a4-4f57-9d59-2e3f8c9b0a11";
    const ID_B: &str = "0b1c2d3e-4f50-4617-8899-aabbccddeeff";

    #[test]
    fn one_signed_cookie_is_the_identity() {
        let key = Key::generate();
        let cookie = signed(&key, COOKIE_NAME, ID_A);
        let got = cookie_id(&headers(&cookie), &mac(&key), COOKIE_NAME);
        assert_eq!(got.as_deref(), Some(ID_A));
    }

    #[test]
    fn a_cookies_log_hash_is_the_keyed_hash_of_its_id() {
        let key = Key::generate();
        let cookie = signed(&key, COOKIE_NAME, ID_A);
        let got = cookie_identity(&headers(&cookie), &mac(&key), next_memo_id(), COOKIE_NAME)
            .map(|(_, h)| h);
        let mut direct = mac(&key);
        direct.update(ID_A.as_bytes());
        let expected = LogHash::of(&direct.finalize().into_bytes());
        assert_eq!(got, Some(expected));
        assert_eq!(expected.as_str().len(), 12);
        assert!(!expected.as_str().contains(&ID_A[..8]));
    }

    #[test]
    fn the_percent_encoded_cookie_is_the_same_identity() {
        let key = Key::generate();
        let mut jar = cookie::CookieJar::new();
        jar.signed_mut(&key)
            .add(Cookie::new(COOKIE_NAME, ID_A.to_owned()));
        let sent = jar
            .get(COOKIE_NAME)
            .map(|c| c.encoded().to_string())
            .unwrap_or_default();
        let got = cookie_id(&headers(&sent), &mac(&key), COOKIE_NAME);
        assert_eq!(got.as_deref(), Some(ID_A));
    }

    #[test]
    fn a_cookie_signed_with_another_key_or_changed_is_refused() {
        let key = Key::generate();
        let foreign = signed(&Key::generate(), COOKIE_NAME, ID_A);
        assert_eq!(cookie_id(&headers(&foreign), &mac(&key), COOKIE_NAME), None);
        let swapped = signed(&key, COOKIE_NAME, ID_A).replace(ID_A, ID_B);
        assert_eq!(cookie_id(&headers(&swapped), &mac(&key), COOKIE_NAME), None);
        let mut truncated = signed(&key, COOKIE_NAME, ID_A);
        truncated.pop();
        assert_eq!(
            cookie_id(&headers(&truncated), &mac(&key), COOKIE_NAME),
            None
        );
    }

    #[test]
    fn a_remembered_cookie_is_the_same_identity_and_only_for_its_key() {
        let key = Key::generate();
        let memo = next_memo_id();
        let cookie = signed(&key, COOKIE_NAME, ID_A);
        let check = |cookie: &str, key: &Key, memo| {
            cookie_identity(&headers(cookie), &mac(key), memo, COOKIE_NAME)
        };
        let first = check(&cookie, &key, memo);
        assert!(first.as_ref().is_some_and(|(id, _)| &**id == ID_A));
        assert_eq!(check(&cookie, &key, memo), first, "from the memo");
        // The same slot (same first characters), another value: checked, and refused.
        let changed = cookie.replace(ID_A, ID_B);
        assert_eq!(check(&changed, &key, memo), None);
        assert_eq!(check(&cookie, &key, memo), first);
        // Another key's policy does not take this key's remembered value.
        assert_eq!(check(&cookie, &Key::generate(), next_memo_id()), None);
    }

    #[test]
    fn two_identity_cookies_count_as_none() {
        let key = Key::generate();
        let both = format!(
            "{}; {}",
            signed(&key, COOKIE_NAME, ID_A),
            signed(&key, COOKIE_NAME, ID_B)
        );
        assert_eq!(cookie_id(&headers(&both), &mac(&key), COOKIE_NAME), None);
    }

    #[test]
    fn over_https_only_the_host_prefixed_cookie_counts() {
        let key = Key::generate();
        let plain = signed(&key, COOKIE_NAME, ID_A);
        assert_eq!(
            cookie_id(&headers(&plain), &mac(&key), SECURE_COOKIE_NAME),
            None
        );
        let secure = format!("{plain}; {}", signed(&key, SECURE_COOKIE_NAME, ID_B));
        let got = cookie_id(&headers(&secure), &mac(&key), SECURE_COOKIE_NAME);
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

    /// [`percent_decode`] as it was written byte by byte: the reference for its runs.
    fn decoded_byte_by_byte(value: &str) -> Option<Vec<u8>> {
        let bytes = value.as_bytes();
        let (mut read, mut out) = (0, Vec::new());
        while read < bytes.len() {
            let escaped = (bytes[read] == b'%')
                .then(|| {
                    Some(hex_value(*bytes.get(read + 1)?)? << 4 | hex_value(*bytes.get(read + 2)?)?)
                })
                .flatten();
            match escaped {
                Some(byte) => (out.push(byte), read += 3),
                None => (out.push(bytes[read]), read += 1),
            };
        }
        (out.len() == SIGNED_ID_LEN).then_some(out)
    }

    proptest::proptest! {
        #[test]
        fn percent_decoding_by_runs_is_decoding_byte_by_byte(
            value in "([a-zA-Z0-9=+/-]|%[0-9a-fA-FgG%]{0,2}){70,90}"
        ) {
            let mut out = [0u8; SIGNED_ID_LEN];
            let by_runs = percent_decode(&value, &mut out).map(<[u8]>::to_vec);
            proptest::prop_assert_eq!(by_runs, decoded_byte_by_byte(&value));
        }

        #[test]
        fn same_bytes_is_equality(a in proptest::array::uniform32(0u8..4), flip in 0..SIGNED_ID_LEN) {
            let mut x = [0u8; SIGNED_ID_LEN];
            x[..32].copy_from_slice(&a);
            let mut y = x;
            proptest::prop_assert!(same_bytes(&x, &y));
            y[flip] ^= 1;
            proptest::prop_assert!(!same_bytes(&x, &y));
        }
    }
}
