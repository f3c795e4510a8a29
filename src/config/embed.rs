//! `EMBED_ORIGINS` (API.md §8): the sites allowed to show the page in an iframe.

use http::HeaderValue;

use super::ConfigError;
use super::parse::{invalid, list, parse_origin_of};

const VAR: &str = "EMBED_ORIGINS";

/// The page's policy without embedding: only the proxy's own origin may frame it.
const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data: blob: https:; media-src 'self' blob: https:; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; require-trusted-types-for 'script'; trusted-types dompurify; frame-ancestors 'self'";

/// The origins that may frame the page, and the page's `Content-Security-Policy` built from
/// them once at start-up.
#[derive(Clone, Debug)]
pub struct EmbedOrigins {
    origins: Vec<String>,
    csp: HeaderValue,
}

impl Default for EmbedOrigins {
    fn default() -> Self {
        EmbedOrigins {
            origins: Vec::new(),
            csp: HeaderValue::from_static(PAGE_CSP),
        }
    }
}

impl EmbedOrigins {
    /// Comma-separated `http(s)://host[:port]` origins, as `ALLOWED_ORIGINS`; unset or empty:
    /// none.
    pub(super) fn parse(value: Option<String>) -> Result<EmbedOrigins, ConfigError> {
        let origins = list(value)
            .map(|entry| parse_origin_of(VAR, &entry))
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Ok(EmbedOrigins::default());
        }
        let csp = format!("{PAGE_CSP} {}", origins.join(" "));
        let csp = HeaderValue::from_str(&csp)
            .map_err(|_| invalid(VAR, "holds characters that cannot go in a header"))?;
        Ok(EmbedOrigins { origins, csp })
    }

    /// Whether other sites may frame the page (the identity cookie must then work in a
    /// third-party iframe).
    pub fn enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// The page's `Content-Security-Policy`: `frame-ancestors 'self'` plus the listed origins.
    pub fn page_csp(&self) -> &HeaderValue {
        &self.csp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_lets_only_the_page_itself_frame_it() {
        let embed = EmbedOrigins::parse(None).unwrap();
        assert!(!embed.enabled());
        assert!(
            embed
                .page_csp()
                .to_str()
                .unwrap()
                .ends_with("; frame-ancestors 'self'")
        );
    }

    #[test]
    fn listed_origins_join_frame_ancestors() {
        let embed = EmbedOrigins::parse(Some(
            " https://www.example.com , http://localhost:8080".into(),
        ))
        .unwrap();
        assert!(embed.enabled());
        assert!(
            embed.page_csp().to_str().unwrap().ends_with(
                "; frame-ancestors 'self' https://www.example.com http://localhost:8080"
            )
        );
    }

    #[test]
    fn anything_but_an_origin_names_embed_origins() {
        for bad in [
            "*",
            "https://*.example.com",
            "example.com",
            "https://a.com/path",
            "'none'",
        ] {
            let error = EmbedOrigins::parse(Some(bad.into())).unwrap_err();
            assert_eq!(error.var, "EMBED_ORIGINS", "{bad}");
        }
    }
}
