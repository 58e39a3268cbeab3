//! Hawk authentication and scope checks, as Taskcluster's auth service and `taskcluster-lib-api`
//! do them.
//!
//! - A request without `Authorization` is anonymous: it has only the scopes of the usual
//!   `anonymous` role, `queue:get-artifact:public/*`.
//! - A Hawk header is checked against the configured clients: the MAC over the normalized
//!   string (resource = path with its query, or without it, as the Rust client signs), the
//!   payload hash when one is sent, and a timestamp within 15 minutes of the **system** clock:
//!   clients sign with real time, so the sandbox's movable clock plays no part here.
//! - `ext` may carry a `certificate` (temporary credentials: the key is derived from the
//!   issuer's access token and the certificate's seed, the signature and validity window are
//!   checked, and the certificate's scopes replace the client's) and `authorizedScopes` (which
//!   must be satisfied by the credentials' scopes and then replace them).
//!
//! Temporary credentials that the queue hands out (claim, reclaim, object uploads) are issued
//! here, signed with the bridge client's token, so they authenticate against this same server.
use std::{
    collections::HashMap,
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine as _,
    engine::{
        DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig,
        general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    },
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::settings::ClientSpec;

type HmacSha256 = Hmac<Sha256>;

/// Hawk timestamps and certificate windows may be off by this much (seconds).
const SKEW_SECS: i64 = 15 * 60;
/// Certificates get five minutes of slack at both ends, as the auth service gives them.
const CERT_SKEW_MS: i64 = 5 * 60 * 1000;
/// Longest validity of temporary credentials.
const CERT_MAX_MS: i64 = 31 * 24 * 3600 * 1000;
/// What an unauthenticated caller may do.
pub(crate) const ANONYMOUS_SCOPES: [&str; 1] = ["queue:get-artifact:public/*"];

/// Base64 decoding that accepts padded and unpadded input, as Node's decoder does.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `owned` satisfies `required`: equal, or `owned` ends in `*` and `required` starts with the
/// rest.
pub(crate) fn scope_satisfies(owned: &str, required: &str) -> bool {
    owned == required
        || owned
            .strip_suffix('*')
            .is_some_and(|prefix| required.starts_with(prefix))
}

pub(crate) fn has_scope(owned: &[String], required: &str) -> bool {
    owned.iter().any(|s| scope_satisfies(s, required))
}

/// A scope expression (`{AllOf: [...]}`, `{AnyOf: [...]}` or a scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScopeExpr {
    One(String),
    AllOf(Vec<ScopeExpr>),
    AnyOf(Vec<ScopeExpr>),
}

impl ScopeExpr {
    pub fn one(s: impl Into<String>) -> Self {
        ScopeExpr::One(s.into())
    }

    pub fn all(scopes: impl IntoIterator<Item = String>) -> Self {
        ScopeExpr::AllOf(scopes.into_iter().map(ScopeExpr::One).collect())
    }

    pub fn satisfied_by(&self, owned: &[String]) -> bool {
        match self {
            ScopeExpr::One(s) => has_scope(owned, s),
            ScopeExpr::AllOf(all) => all.iter().all(|e| e.satisfied_by(owned)),
            ScopeExpr::AnyOf(any) => any.iter().any(|e| e.satisfied_by(owned)),
        }
    }

    /// The scopes that are missing (for an unmet AnyOf, all of its alternatives).
    pub fn missing(&self, owned: &[String]) -> Vec<String> {
        match self {
            ScopeExpr::One(s) if has_scope(owned, s) => Vec::new(),
            ScopeExpr::One(s) => vec![s.clone()],
            ScopeExpr::AllOf(all) => all.iter().flat_map(|e| e.missing(owned)).collect(),
            ScopeExpr::AnyOf(_) if self.satisfied_by(owned) => Vec::new(),
            ScopeExpr::AnyOf(any) => any.iter().flat_map(|e| e.missing(owned)).collect(),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            ScopeExpr::One(s) => Value::String(s.clone()),
            ScopeExpr::AllOf(all) => {
                json!({"AllOf": all.iter().map(ScopeExpr::to_json).collect::<Vec<_>>()})
            }
            ScopeExpr::AnyOf(any) => {
                json!({"AnyOf": any.iter().map(ScopeExpr::to_json).collect::<Vec<_>>()})
            }
        }
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `None` for anonymous requests.
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

/// The caller of one request, authenticated on first use: as in `taskcluster-lib-api`, a
/// call whose scopes are never checked (`ping`) never authenticates, and a call that looks
/// its task up before checking scopes answers 404 before 401.
pub(crate) struct Caller<'a> {
    auth: &'a Auth,
    request: HawkRequest<'a>,
    identity: OnceLock<Result<Identity, ApiError>>,
}

impl<'a> Caller<'a> {
    pub fn new(auth: &'a Auth, request: HawkRequest<'a>) -> Self {
        Self {
            auth,
            request,
            identity: OnceLock::new(),
        }
    }

    /// 401 AuthenticationFailed, or 403 InsufficientScopes unless `expr` is satisfied.
    pub fn authorize(&self, expr: &ScopeExpr) -> Result<(), ApiError> {
        self.identity
            .get_or_init(|| self.auth.authenticate(&self.request))
            .as_ref()
            .map_err(Clone::clone)?
            .authorize(expr)
    }
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            client_id: None,
            scopes: ANONYMOUS_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// 403 InsufficientScopes unless `expr` is satisfied, with the real queue's message.
    pub fn authorize(&self, expr: &ScopeExpr) -> Result<(), ApiError> {
        if expr.satisfied_by(&self.scopes) {
            return Ok(());
        }
        Err(ApiError::scopes(format!(
            "You do not have sufficient scopes. You are missing the following scopes:\n\n```\n{}\n```\n\nYou have the scopes:\n\n```\n{}\n```\n\nThis request requires you to satisfy this scope expression:\n\n```\n{}\n```",
            expr.missing(&self.scopes).join("\n"),
            serde_json::to_string_pretty(&self.scopes).unwrap_or_default(),
            serde_json::to_string_pretty(&expr.to_json()).unwrap_or_default(),
        )))
    }
}

/// What authentication needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HawkRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The `Host` header.
    pub host: &'a str,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

struct Client {
    access_token: String,
    scopes: Vec<String>,
}

/// The clients the queue knows, and the one it issues temporary credentials with.
pub(crate) struct Auth {
    clients: HashMap<String, Client>,
    issuer: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ext {
    #[serde(default)]
    certificate: Option<Value>,
    #[serde(default)]
    authorized_scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Certificate {
    version: u32,
    scopes: Vec<String>,
    start: i64,
    expiry: i64,
    seed: String,
    signature: String,
    #[serde(default)]
    issuer: Option<String>,
}

fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => Vec::new(),
    }
}

/// Compares in time independent of where the first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The lines a temporary credential's signature covers.
fn certificate_text(
    cert_client: Option<&str>,
    issuer: Option<&str>,
    seed: &str,
    start: i64,
    expiry: i64,
    scopes: &[String],
) -> String {
    let mut lines = vec!["version:1".to_owned()];
    if let (Some(client), Some(issuer)) = (cert_client, issuer) {
        lines.push(format!("clientId:{client}"));
        lines.push(format!("issuer:{issuer}"));
    }
    lines.push(format!("seed:{seed}"));
    lines.push(format!("start:{start}"));
    lines.push(format!("expiry:{expiry}"));
    lines.push("scopes:".to_owned());
    lines.extend(scopes.iter().cloned());
    lines.join("\n")
}

/// The access token of temporary credentials: base64url(HMAC-SHA256(issuer token, seed)).
fn temporary_token(issuer_token: &str, seed: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(issuer_token.as_bytes(), seed.as_bytes()))
}

/// `name="value"` pairs of a `Hawk ...` header.
fn parse_hawk_header(header: &str) -> Result<HashMap<String, String>, String> {
    let rest = header
        .strip_prefix("Hawk ")
        .or_else(|| header.strip_prefix("hawk "))
        .ok_or("Unsupported authentication scheme (only Hawk is accepted)")?;
    let mut attrs = HashMap::new();
    let mut s = rest.trim_start();
    while !s.is_empty() {
        let (key, after) = s.split_once('=').ok_or("Bad header format")?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphabetic()) {
            return Err("Bad header format".into());
        }
        let after = after.strip_prefix('"').ok_or("Bad header format")?;
        let (value, after) = after.split_once('"').ok_or("Bad header format")?;
        if attrs.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("Duplicate attribute: {key}"));
        }
        s = after.trim_start().trim_start_matches(',').trim_start();
    }
    Ok(attrs)
}

/// Splits a `Host` header into host and port (80 when absent: the emulator serves plain HTTP).
fn split_host(host: &str) -> (&str, u16) {
    let (name, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], host[i + 1..].parse().ok()),
        _ => (host, None),
    };
    (name, port.unwrap_or(80))
}

impl Auth {
    /// `issuer` (the bridge's client, with scope `*`) plus the configured extra clients.
    pub fn new(issuer: (String, String), extra: &[ClientSpec]) -> Self {
        let mut clients = HashMap::new();
        for c in extra {
            clients.insert(
                c.client_id.clone(),
                Client {
                    access_token: c.access_token.clone(),
                    scopes: c.scopes.clone(),
                },
            );
        }
        clients.insert(
            issuer.0.clone(),
            Client {
                access_token: issuer.1,
                scopes: vec!["*".to_owned()],
            },
        );
        Self {
            clients,
            issuer: issuer.0,
        }
    }

    /// The caller of `req`, or 401 AuthenticationFailed.
    pub fn authenticate(&self, req: &HawkRequest<'_>) -> Result<Identity, ApiError> {
        let Some(header) = req.authorization else {
            return Ok(Identity::anonymous());
        };
        self.check(req, header).map_err(ApiError::auth)
    }

    fn check(&self, req: &HawkRequest<'_>, header: &str) -> Result<Identity, String> {
        let attrs = parse_hawk_header(header)?;
        let attr = |k: &str| attrs.get(k).map(String::as_str);
        let (Some(id), Some(ts), Some(nonce), Some(mac)) =
            (attr("id"), attr("ts"), attr("nonce"), attr("mac"))
        else {
            return Err("Missing attributes in the Hawk header".into());
        };
        let ext_text = attr("ext").unwrap_or("");
        let ext: Option<Ext> = if ext_text.is_empty() {
            None
        } else {
            let raw = LENIENT
                .decode(ext_text)
                .map_err(|e| format!("Failed to parse ext: {e}"))?;
            Some(serde_json::from_slice(&raw).map_err(|e| format!("Failed to parse ext: {e}"))?)
        };

        // Which key signs, and which scopes it carries.
        let (key, mut scopes) = match ext.as_ref().and_then(|e| e.certificate.as_ref()) {
            None => {
                let client = self
                    .clients
                    .get(id)
                    .ok_or_else(|| format!("Client `{id}` not found"))?;
                (client.access_token.clone(), client.scopes.clone())
            }
            Some(cert) => self.check_certificate(id, cert)?,
        };

        let ts_secs: i64 = ts.parse().map_err(|_| "Invalid timestamp".to_owned())?;
        if (real_now_ms() / 1000 - ts_secs).abs() > SKEW_SECS {
            return Err("Stale timestamp".into());
        }

        let (host, port) = split_host(req.host);
        let hash = attr("hash").unwrap_or("");
        let normalized = |resource: &str| {
            let mut s = format!(
                "hawk.1.header\n{ts}\n{nonce}\n{}\n{resource}\n{host}\n{port}\n{hash}\n{ext_text}\n",
                req.method.to_ascii_uppercase()
            );
            if let Some(app) = attr("app") {
                s.push_str(&format!("{app}\n{}\n", attr("dlg").unwrap_or("")));
            }
            s
        };
        let given = LENIENT.decode(mac).map_err(|_| "Bad mac".to_owned())?;
        let mut resources = vec![req.path.to_owned()];
        if let Some(q) = req.query {
            resources.insert(0, format!("{}?{q}", req.path));
        }
        let mac_ok = resources.iter().any(|r| {
            same_bytes(
                &hmac_sha256(key.as_bytes(), normalized(r).as_bytes()),
                &given,
            )
        });
        if !mac_ok {
            return Err("Bad mac".into());
        }

        if !hash.is_empty() {
            let content_type = req
                .content_type
                .and_then(|c| c.split(';').next())
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let mut hasher = Sha256::new();
            hasher.update(b"hawk.1.payload\n");
            hasher.update(content_type.as_bytes());
            hasher.update(b"\n");
            hasher.update(req.body);
            hasher.update(b"\n");
            let computed = STANDARD.encode(hasher.finalize());
            if computed != hash {
                return Err(format!(
                    "Invalid payload hash: {hash}\nComputed payload hash: {computed}\nThis happens when your request carries a signed hash of the payload and the hash doesn't match the hash we've computed on the server-side."
                ));
            }
        }

        if let Some(authorized) = ext.and_then(|e| e.authorized_scopes) {
            if let Some(s) = authorized.iter().find(|s| !has_scope(&scopes, s)) {
                return Err(format!(
                    "ext.authorizedScopes oversteps your scopes (`{s}` is not among them)"
                ));
            }
            scopes = authorized;
        }
        Ok(Identity {
            client_id: Some(id.to_owned()),
            scopes,
        })
    }

    /// The key and scopes of temporary credentials presented by `client_id`.
    fn check_certificate(
        &self,
        client_id: &str,
        cert: &Value,
    ) -> Result<(String, Vec<String>), String> {
        let cert: Certificate = match cert {
            Value::String(s) => serde_json::from_str(s),
            other => serde_json::from_value(other.clone()),
        }
        .map_err(|e| format!("ext.certificate is malformed: {e}"))?;
        if cert.version != 1 {
            return Err("ext.certificate.version must be 1".into());
        }
        let issuer_id = cert.issuer.as_deref().unwrap_or(client_id);
        if cert.issuer.as_deref() == Some(client_id) {
            return Err("ext.certificate.issuer must differ from the supplied clientId".into());
        }
        let issuer = self
            .clients
            .get(issuer_id)
            .ok_or_else(|| format!("ext.certificate.issuer `{issuer_id}` not found"))?;
        let now = real_now_ms();
        if cert.start > now + CERT_SKEW_MS {
            return Err("ext.certificate.start > now".into());
        }
        if cert.expiry < now - CERT_SKEW_MS {
            return Err("ext.certificate.expiry < now".into());
        }
        if cert.expiry - cert.start > CERT_MAX_MS {
            return Err("ext.certificate cannot last longer than 31 days!".into());
        }
        let named = cert.issuer.as_ref().map(|_| client_id);
        let text = certificate_text(
            named,
            cert.issuer.as_deref(),
            &cert.seed,
            cert.start,
            cert.expiry,
            &cert.scopes,
        );
        let expected = hmac_sha256(issuer.access_token.as_bytes(), text.as_bytes());
        let given = LENIENT.decode(&cert.signature).unwrap_or_default();
        if !same_bytes(&expected, &given) {
            return Err("ext.certificate.signature is not valid".into());
        }
        if let Some(s) = cert.scopes.iter().find(|s| !has_scope(&issuer.scopes, s)) {
            return Err(format!(
                "ext.certificate issuer `{issuer_id}` doesn't have sufficient scopes (`{s}`)"
            ));
        }
        Ok((
            temporary_token(&issuer.access_token, &cert.seed),
            cert.scopes,
        ))
    }

    /// Named temporary credentials issued by the queue's own client, valid from now (system
    /// time) for `valid_ms`: `{clientId, accessToken, certificate}` with the certificate as a
    /// JSON string, as `taskcluster.createTemporaryCredentials` returns them.
    pub fn temporary_credentials(
        &self,
        client_id: &str,
        scopes: Vec<String>,
        valid_ms: i64,
    ) -> Value {
        let token = self
            .clients
            .get(&self.issuer)
            .map(|c| c.access_token.clone())
            .unwrap_or_default();
        let start = real_now_ms();
        let expiry = start + valid_ms.clamp(60_000, CERT_MAX_MS);
        let seed = format!("{}{}", super::slugid(), super::slugid());
        let text = certificate_text(
            Some(client_id),
            Some(&self.issuer),
            &seed,
            start,
            expiry,
            &scopes,
        );
        let signature = STANDARD.encode(hmac_sha256(token.as_bytes(), text.as_bytes()));
        let certificate = json!({
            "version": 1,
            "scopes": scopes,
            "start": start,
            "expiry": expiry,
            "seed": seed,
            "signature": signature,
            "issuer": self.issuer,
        });
        json!({
            "clientId": client_id,
            "accessToken": temporary_token(&token, &seed),
            "certificate": certificate.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn star_scopes_match_prefixes_and_plain_scopes_match_exactly() {
        assert!(scope_satisfies("*", "queue:claim-task:a/b"));
        assert!(scope_satisfies(
            "queue:claim-task:*",
            "queue:claim-task:a/b"
        ));
        assert!(scope_satisfies("queue:status:x", "queue:status:x"));
        assert!(!scope_satisfies("queue:status:x", "queue:status:xy"));
        assert!(!scope_satisfies("queue:status:x*y", "queue:status:xzy"));
        let expr = ScopeExpr::AllOf(vec![
            ScopeExpr::one("a"),
            ScopeExpr::AnyOf(vec![ScopeExpr::one("b"), ScopeExpr::one("c")]),
        ]);
        assert!(expr.satisfied_by(&["a".into(), "c".into()]));
        assert_eq!(expr.missing(&["c".into()]), vec!["a".to_owned()]);
    }

    #[test]
    fn hawk_headers_parse_with_any_attribute_order() {
        let h =
            parse_hawk_header(r#"Hawk id="c", ts="1", nonce="n=", mac="m/+=", ext="e""#).unwrap();
        assert_eq!(h["id"], "c");
        assert_eq!(h["mac"], "m/+=");
        assert!(parse_hawk_header("Basic abc").is_err());
        assert!(parse_hawk_header(r#"Hawk id="c", id="d""#).is_err());
    }

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(split_host("127.0.0.1:8080"), ("127.0.0.1", 8080));
        assert_eq!(split_host("[::1]:81"), ("[::1]", 81));
        assert_eq!(split_host("example.com"), ("example.com", 80));
    }

    #[test]
    fn issued_temporary_credentials_authenticate_with_their_scopes() {
        let auth = Auth::new(("bridge".into(), "secret".into()), &[]);
        let creds = auth.temporary_credentials("task-client/x", vec!["queue:a".into()], 60_000);
        let cert: Value = serde_json::from_str(creds["certificate"].as_str().unwrap()).unwrap();
        let (key, scopes) = auth.check_certificate("task-client/x", &cert).unwrap();
        assert_eq!(key, creds["accessToken"].as_str().unwrap());
        assert_eq!(scopes, vec!["queue:a".to_owned()]);
        // Presented under another name, the signature no longer matches.
        assert!(auth.check_certificate("someone-else", &cert).is_err());
    }
}
