//! Who the Dify `user` is (API.md §2): a signed cookie holding a random id, or a header set by a
//! trusted auth proxy. The browser never chooses it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use ipnet::IpNet;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256, Sha512};

use crate::config::Config;
use crate::dify::Caller;
use crate::error::ApiError;
use crate::request_id::RequestId;
use crate::state::AppState;

pub const COOKIE_NAME: &str = "dify_bff_uid";
const COOKIE_MAX_AGE_DAYS: i64 = 400;
const MAX_HEADER_IDENTITY: usize = 256;

/// The identity settings, built once at start-up.
pub struct IdentityPolicy {
    key: Key,
    same_site: SameSite,
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
        IdentityPolicy {
            key,
            same_site: config.cookie_same_site,
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

    fn fresh_cookie(&self, id: String, https: bool) -> Cookie<'static> {
        Cookie::build((COOKIE_NAME, id))
            .http_only(true)
            .path("/")
            .same_site(self.same_site)
            .secure(https || self.same_site == SameSite::None)
            .max_age(time_days(COOKIE_MAX_AGE_DAYS))
            .build()
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

pub fn peer_ip(request_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// The end user of this request, as decided by the middleware.
#[derive(Clone, Debug)]
pub struct Identity(pub String);

impl Identity {
    /// A short, stable hash for logs: never the identity itself.
    pub fn log_hash(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// In header mode, a peer outside `TRUSTED_PROXIES` is refused before anything else runs
/// (the probes excepted).
pub fn refuse_untrusted_peer(policy: &IdentityPolicy, request: &Request) -> Option<ApiError> {
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    (!probe && policy.header_mode() && !policy.trusts(peer_ip(request.extensions())))
        .then(|| ApiError::Unauthorized("This peer may not act for users.".into()))
}

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
    let existing = cookie_identity(request.headers(), &policy.key);
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
            let https = policy.is_https(request.headers(), peer);
            let identity = Identity(id.clone());
            request.extensions_mut().insert(identity.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(identity);
            let jar = SignedCookieJar::new(policy.key.clone()).add(policy.fresh_cookie(id, https));
            (jar, response).into_response()
        }
    }
}

/// The id in our signed cookie, if its signature holds. Only our cookie is verified (a signed
/// jar built from the headers would check a signature for every cookie the browser sends).
fn cookie_identity(headers: &HeaderMap, key: &Key) -> Option<String> {
    let mut jar = cookie::CookieJar::new();
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter(|pair| pair.trim_start().starts_with(COOKIE_NAME))
        .filter_map(|pair| Cookie::parse_encoded(pair.to_owned()).ok())
        .filter(|cookie| cookie.name() == COOKIE_NAME)
        .for_each(|cookie| jar.add_original(cookie));
    let value = jar.signed(key).get(COOKIE_NAME)?.value().to_owned();
    is_cookie_id(&value).then_some(value)
}

fn is_cookie_id(value: &str) -> bool {
    value.len() == 36 && uuid::Uuid::try_parse(value).is_ok()
}

fn header_identity(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = std::str::from_utf8(value.as_bytes()).ok()?;
    let count = text.chars().count();
    let printable = text.chars().all(|c| !c.is_control());
    (1..=MAX_HEADER_IDENTITY)
        .contains(&count)
        .then_some(text.to_owned())
        .filter(|_| printable)
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
