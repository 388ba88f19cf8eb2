//! [`UdsClient`]: one JSON request per fresh connection over a Unix socket, under a deadline.
//!
//! The exchange is hyper's connection-level HTTP/1.1 client (`client::conn::http1`) over a
//! `tokio::net::UnixStream`. Each call connects, sends one request with `Host: localhost` and
//! `Accept: application/json` (plus `Content-Type: application/json` when it has a body),
//! reads the whole response, and closes. The deadline covers all of that; nothing is retried,
//! since a VMM request such as `InstanceStart` is not safe to send twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::header::{ACCEPT, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::error::HttpError;

/// The deadline of one call (connect, request and whole response) unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `Host` header sent with every request; the socket, not the name, selects the server.
const HOST_HEADER: &str = "localhost";
/// The media type of request and response bodies.
const JSON: &str = "application/json";

/// A client for a JSON REST API on a Unix socket. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct UdsClient {
    socket: PathBuf,
    timeout: Duration,
}

/// A complete response, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Aborts the connection task when the call ends, however it ends (answer, error, deadline).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl UdsClient {
    /// A client for the API served on `socket`, with [`DEFAULT_TIMEOUT`] per call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        UdsClient { socket: socket.into(), timeout: DEFAULT_TIMEOUT }
    }

    /// The same client with another per-call deadline.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        UdsClient { timeout, ..self }
    }

    /// The socket this client connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request on a fresh connection and reads the whole response, whatever its status.
    ///
    /// `body` goes out as `application/json` when it is `Some`. `path` may carry a query.
    pub async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response, HttpError> {
        match tokio::time::timeout(self.timeout, self.exchange(&method, path, body)).await {
            Ok(result) => result,
            Err(_) => {
                Err(HttpError::Timeout { method: method.to_string(), path: path.to_owned(), after: self.timeout })
            }
        }
    }

    /// `GET path`; a 2xx body decoded as `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        let response = self.checked(Method::GET, path, None).await?;
        serde_json::from_slice(&response.body).map_err(|source| HttpError::Decode {
            method: Method::GET.to_string(),
            path: path.to_owned(),
            source,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        })
    }

    /// `PUT path` with `body` as JSON; the response when 2xx.
    pub async fn put_json<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Response, HttpError> {
        let bytes = encode(&Method::PUT, path, body)?;
        self.checked(Method::PUT, path, Some(bytes)).await
    }

    /// `PATCH path` with `body` as JSON; the response when 2xx.
    pub async fn patch_json<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Response, HttpError> {
        let bytes = encode(&Method::PATCH, path, body)?;
        self.checked(Method::PATCH, path, Some(bytes)).await
    }

    /// `PUT path` with no body (Cloud Hypervisor's `vm.boot`, `vm.pause`, ...); the response when 2xx.
    pub async fn put_empty(&self, path: &str) -> Result<Response, HttpError> {
        self.checked(Method::PUT, path, None).await
    }

    /// [`UdsClient::request`], with a non-2xx answer turned into [`HttpError::Status`].
    async fn checked(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response, HttpError> {
        let response = self.request(method.clone(), path, body).await?;
        if response.is_success() {
            Ok(response)
        } else {
            Err(HttpError::Status {
                method: method.to_string(),
                path: path.to_owned(),
                status: response.status,
                body: String::from_utf8_lossy(&response.body).into_owned(),
            })
        }
    }

    /// Connect, send, read everything; the caller bounds it with the deadline.
    async fn exchange(&self, method: &Method, path: &str, body: Option<Vec<u8>>) -> Result<Response, HttpError> {
        let transport = |source| HttpError::Transport { method: method.to_string(), path: path.to_owned(), source };

        let mut builder =
            http::Request::builder().method(method.clone()).uri(path).header(HOST, HOST_HEADER).header(ACCEPT, JSON);
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, JSON);
        }
        let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|source| {
            HttpError::InvalidRequest { method: method.to_string(), path: path.to_owned(), source }
        })?;

        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| HttpError::Connect { socket: self.socket.clone(), source })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(transport)?;
        // The connection future drives the socket; its errors also surface through `sender`.
        let _connection = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));

        let response = sender.send_request(request).await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(transport)?.to_bytes();
        Ok(Response { status, body })
    }
}

/// Serializes a request body, naming the call on failure.
fn encode<B: Serialize + ?Sized>(method: &Method, path: &str, body: &B) -> Result<Vec<u8>, HttpError> {
    serde_json::to_vec(body).map_err(|source| HttpError::Encode {
        method: method.to_string(),
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_client_defaults_and_with_timeout() {
        let c = UdsClient::new("/run/x.sock");
        assert_eq!(c.socket(), Path::new("/run/x.sock"));
        assert_eq!(c.timeout(), DEFAULT_TIMEOUT);
        let c = c.with_timeout(Duration::from_millis(250));
        assert_eq!(c.timeout(), Duration::from_millis(250));
        assert_eq!(c.socket(), Path::new("/run/x.sock"));
    }

    #[test]
    fn test_response_is_success_only_for_2xx() {
        let r = |status| Response { status, body: Bytes::new() };
        assert!(r(200).is_success());
        assert!(r(204).is_success());
        assert!(!r(199).is_success());
        assert!(!r(300).is_success());
        assert!(!r(400).is_success());
    }

    #[test]
    fn test_encode_failure_names_the_call() {
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        let e = encode(&Method::PUT, "/x", &bad).unwrap_err();
        assert!(matches!(&e, HttpError::Encode { method, path, .. } if method == "PUT" && path == "/x"), "{e:?}");
    }
}
