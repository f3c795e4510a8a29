//! Dify's signed file URLs: `?timestamp=…&nonce=…&sign=…`, where `sign` is the URL-safe base64
//! HMAC-SHA256 of `<kind>|<file id>|<timestamp>|<nonce>` under the server's secret key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use sha2::{Digest, Sha256};

use super::reqparse::QueryArgs;

/// `FILES_ACCESS_TIMEOUT`: how long a signed URL stays valid, in seconds.
const FILES_ACCESS_TIMEOUT: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Preview {
    File,
    Image,
}

impl Preview {
    pub(crate) fn path_segment(self) -> &'static str {
        match self {
            Preview::File => "file-preview",
            Preview::Image => "image-preview",
        }
    }
}

pub(crate) struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub(crate) fn random() -> Signer {
        let key = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        Signer { key }
    }

    fn sign(&self, kind: &str, id: &str, timestamp: &str, nonce: &str) -> String {
        let message = format!("{kind}|{id}|{timestamp}|{nonce}");
        URL_SAFE.encode(hmac_sha256(&self.key, message.as_bytes()))
    }

    fn query(&self, kind: &str, id: &str, now: i64) -> String {
        let timestamp = now.to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let sign = self.sign(kind, id, &timestamp, &nonce);
        format!("timestamp={timestamp}&nonce={nonce}&sign={sign}")
    }

    /// `/files/<id>/file-preview?…` or `/files/<id>/image-preview?…`, relative as Dify makes
    /// them when `FILES_URL` is unset.
    pub(crate) fn upload_url(&self, id: &str, preview: Preview, now: i64) -> String {
        let kind = preview.path_segment();
        format!("/files/{id}/{kind}?{}", self.query(kind, id, now))
    }

    /// `/files/tools/<id>.<extension>?…`.
    pub(crate) fn tool_url(&self, id: &str, extension: &str, now: i64) -> String {
        format!(
            "/files/tools/{id}.{extension}?{}",
            self.query("file-preview", id, now)
        )
    }

    /// Whether the query carries a valid, unexpired signature for this file.
    pub(crate) fn verify(&self, kind: &str, id: &str, query: &QueryArgs, now: i64) -> bool {
        let (Some(timestamp), Some(nonce), Some(sign)) = (
            query.get("timestamp"),
            query.get("nonce"),
            query.get("sign"),
        ) else {
            return false;
        };
        let fresh = timestamp
            .parse::<i64>()
            .is_ok_and(|t| now - t <= FILES_ACCESS_TIMEOUT);
        fresh && self.sign(kind, id, timestamp, nonce) == sign
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signed_urls_verify_until_they_expire() {
        let signer = Signer::random();
        let id = "6d31eee3-c172-45bd-8d9c-fcc6fd5f8211";
        let url = signer.upload_url(id, Preview::File, 1_000);
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(path, format!("/files/{id}/file-preview"));
        let args = QueryArgs::parse(Some(query));
        assert!(signer.verify("file-preview", id, &args, 1_000));
        assert!(signer.verify("file-preview", id, &args, 1_300));
        assert!(!signer.verify("file-preview", id, &args, 1_301));
        assert!(!signer.verify("image-preview", id, &args, 1_000));
        assert!(!signer.verify("file-preview", "other", &args, 1_000));
        assert!(!Signer::random().verify("file-preview", id, &args, 1_000));
        assert!(!signer.verify(
            "file-preview",
            id,
            &QueryArgs::parse(Some("timestamp=1000")),
            1_000
        ));
    }

    #[test]
    fn tool_urls_sign_as_file_previews() {
        let signer = Signer::random();
        let url = signer.tool_url("abc", "png", 5);
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(path, "/files/tools/abc.png");
        assert!(signer.verify("file-preview", "abc", &QueryArgs::parse(Some(query)), 5));
    }
}
