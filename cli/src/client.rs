//! The HTTP client: one place that turns server answers into typed results and refusals into
//! [`CliError::Server`].

use crate::error::CliError;
use anyhow::Result;
use healthlock_common::api::ErrorResponse;
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A client for one server, optionally with a session.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// The server's origin, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    token: Option<String>,
}

impl Api {
    /// A client for `base`.
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("healthlock/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        })
    }

    /// The same client, authenticated with a session token.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// A request to `path` (which starts with `/`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends, and maps transport failures and error answers to [`CliError`].
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.network(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.network(&e))?;
        match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(err) => Err(CliError::Server(err.error).into()),
            Err(_) => Err(CliError::Network {
                server: self.base.clone(),
                reason: format!("unexpected answer {status}"),
            }
            .into()),
        }
    }

    /// The transport error as a [`CliError::Network`]; the URL is left out (it may hold ids).
    pub fn network(&self, e: &reqwest::Error) -> anyhow::Error {
        let reason = if e.is_connect() {
            "connection refused or unreachable; is the server running, and is --server right?"
                .to_owned()
        } else if e.is_timeout() {
            "timed out".to_owned()
        } else {
            let mut s = e.without_url_ref().to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        };
        CliError::Network {
            server: self.base.clone(),
            reason,
        }
        .into()
    }

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.decode(self.send(self.request(Method::GET, path)).await?)
            .await
    }

    /// POST JSON, read JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        self.decode(resp).await
    }

    /// PUT JSON, read JSON.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .send(self.request(Method::PUT, path).json(body))
            .await?;
        self.decode(resp).await
    }

    /// POST JSON, expect no body.
    pub async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        self.send(self.request(Method::POST, path).json(body))
            .await?;
        Ok(())
    }

    /// Reads a JSON answer.
    pub async fn decode<T: DeserializeOwned>(&self, resp: Response) -> Result<T> {
        let bytes = resp.bytes().await.map_err(|e| self.network(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Network {
                server: self.base.clone(),
                reason: format!("the server's answer is not understood ({e}); are client and server the same version?"),
            }
            .into()
        })
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<url>");
        }
        s
    }
}
