//! Pulling images from OCI registries (distribution API v2) into containerd: the manifest (an
//! index resolved to linux/amd64), the config and the layers, written to the content store and
//! unpacked under a lease. HTTPS with the system's roots by default; plain HTTP only for
//! registries listed as insecure. Anonymous bearer tokens (as Docker Hub hands out) are fetched
//! when the registry asks for them.

use std::{collections::HashMap, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::Deserialize;

use super::{
    Result, Runtime, RuntimeError,
    image::{self, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST},
};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Which registries may be reached over plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub insecure_registries: Vec<String>,
}

/// A reference split into registry, repository and tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub reference: String,
}

impl Reference {
    pub fn parse(name: &str) -> Result<Self> {
        let full = image::normalize(name);
        let bad = |why: &str| RuntimeError::Image { image: name.to_owned(), reason: why.to_owned() };
        let (registry, rest) = full.split_once('/').ok_or_else(|| bad("no registry"))?;
        let (repository, reference) = match rest.split_once('@') {
            Some((r, digest)) => (r.to_owned(), digest.to_owned()),
            None => {
                let (r, tag) = rest.rsplit_once(':').ok_or_else(|| bad("no tag"))?;
                (r.to_owned(), tag.to_owned())
            }
        };
        // Docker Hub's API lives elsewhere than its name.
        let registry =
            if registry == "docker.io" { "registry-1.docker.io".to_owned() } else { registry.to_owned() };
        Ok(Self { registry, repository, reference })
    }
}

/// A descriptor as registries send it (laxer than an archive's: no media type or size needed).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<image::Platform>,
}

/// A manifest or an index, as registries send it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    config: Option<Descriptor>,
    /// Kept as JSON: each descriptor is checked when the image is stored.
    #[serde(default)]
    layers: serde_json::Value,
}

type HttpClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<Bytes>>;

struct Registry {
    client: HttpClient,
    base: String,
    token: Option<String>,
    image: String,
}

fn failed(image: &str, why: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Image { image: image.to_owned(), reason: why.to_string() }
}

impl Registry {
    fn new(reference: &Reference, options: &PullOptions, image: &str) -> Result<Self> {
        let insecure = options.insecure_registries.contains(&reference.registry);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| failed(image, format!("loading the system's root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let scheme = if insecure { "http" } else { "https" };
        Ok(Self {
            client,
            base: format!("{scheme}://{}", reference.registry),
            token: None,
            image: image.to_owned(),
        })
    }

    /// One GET: status, the headers asked for, body.
    async fn once(
        &self,
        url: &str,
        accept: &str,
        token: Option<&str>,
    ) -> Result<(StatusCode, HashMap<String, String>, Bytes)> {
        let mut req = Request::get(url).header("Accept", accept).header("User-Agent", "skiff-agent");
        if let Some(token) = token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let req = req.body(Empty::new()).map_err(|e| failed(&self.image, e))?;
        let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .map_err(|_| failed(&self.image, format!("GET {url}: timed out")))?
            .map_err(|e| failed(&self.image, format!("GET {url}: {e}")))?;
        let status = response.status();
        let headers = ["location", "www-authenticate", "content-type"]
            .iter()
            .filter_map(|h| Some(((*h).to_owned(), response.headers().get(*h)?.to_str().ok()?.to_owned())))
            .collect();
        let body = response.into_body().collect().await.map_err(|e| failed(&self.image, e))?.to_bytes();
        Ok((status, headers, body))
    }

    /// GET `url` (following redirects, fetching a bearer token when challenged).
    async fn get(&mut self, url: &str, accept: &str) -> Result<(Bytes, Option<String>)> {
        let mut url = url.to_owned();
        for _ in 0..6 {
            // The token is for the registry, not for a CDN it redirects to.
            let token = self.token.clone().filter(|_| url.starts_with(&self.base));
            let (status, headers, body) = self.once(&url, accept, token.as_deref()).await?;
            if status.is_redirection() {
                url = headers
                    .get("location")
                    .cloned()
                    .ok_or_else(|| failed(&self.image, "a redirect without a location"))?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
                let challenge = headers.get("www-authenticate").cloned().unwrap_or_default();
                self.token = Some(self.fetch_token(&challenge).await?);
                continue;
            }
            if status == StatusCode::NOT_FOUND {
                return Err(failed(&self.image, format!("not found in the registry ({url})")));
            }
            if !status.is_success() {
                return Err(failed(
                    &self.image,
                    format!("GET {url}: {status} {}", String::from_utf8_lossy(&body)),
                ));
            }
            return Ok((body, headers.get("content-type").cloned()));
        }
        Err(failed(&self.image, "too many redirects"))
    }

    /// An anonymous token from the challenge's realm.
    async fn fetch_token(&self, challenge: &str) -> Result<String> {
        let params: HashMap<String, String> = challenge
            .trim_start_matches("Bearer ")
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        let realm = params
            .get("realm")
            .ok_or_else(|| failed(&self.image, format!("unsupported auth challenge {challenge:?}")))?;
        let mut url = realm.clone();
        let query: Vec<String> =
            ["service", "scope"].iter().filter_map(|k| params.get(*k).map(|v| format!("{k}={v}"))).collect();
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let (status, _, body) = self.once(&url, "application/json", None).await?;
        if !status.is_success() {
            return Err(failed(&self.image, format!("token from {realm}: {status}")));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token =
            serde_json::from_slice(&body).map_err(|e| failed(&self.image, format!("token: {e}")))?;
        t.token.or(t.access_token).ok_or_else(|| failed(&self.image, "the token endpoint gave no token"))
    }
}

impl Runtime {
    /// Pulls `name` and unpacks it; returns the normalized name.
    pub async fn pull(&self, name: &str, options: &PullOptions) -> Result<String> {
        let full = image::normalize(name);
        let reference = Reference::parse(&full)?;
        let mut registry = Registry::new(&reference, options, &full)?;
        let repo = format!("{}/v2/{}", registry.base, reference.repository);
        let (mut body, content_type) =
            registry.get(&format!("{repo}/manifests/{}", reference.reference), ACCEPT).await?;
        let mut manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| failed(&full, format!("manifest: {e}")))?;
        let mut media =
            manifest.media_type.clone().or(content_type).unwrap_or_else(|| MEDIA_OCI_MANIFEST.into());
        if !manifest.manifests.is_empty() {
            let chosen = manifest
                .manifests
                .iter()
                .find(|m| image::this_platform(&m.platform))
                .ok_or_else(|| failed(&full, "no linux/amd64 image in the index"))?;
            let digest = chosen.digest.clone();
            media = chosen.media_type.clone().unwrap_or_else(|| MEDIA_OCI_MANIFEST.into());
            body = registry.get(&format!("{repo}/manifests/{digest}"), ACCEPT).await?.0;
            manifest = serde_json::from_slice(&body).map_err(|e| failed(&full, format!("manifest: {e}")))?;
        }
        if media == MEDIA_OCI_INDEX {
            return Err(failed(&full, "a nested index"));
        }
        let config = manifest.config.ok_or_else(|| failed(&full, "the manifest has no config"))?;
        let config_bytes = registry.get(&format!("{repo}/blobs/{}", config.digest), "*/*").await?.0;
        let layers = match manifest.layers {
            serde_json::Value::Array(layers) => layers,
            _ => Vec::new(),
        };
        let mut blobs = Vec::new();
        for layer in layers {
            let digest = layer["digest"].as_str().ok_or_else(|| failed(&full, "a layer without a digest"))?;
            let data = registry.get(&format!("{repo}/blobs/{digest}"), "*/*").await?.0;
            blobs.push((layer, Vec::from(data)));
        }
        self.store_pulled(&full, &media, &body, config.media_type.as_deref(), &config_bytes, blobs).await?;
        Ok(full)
    }
}
