//! A minimal HTTP/1.1 server on a Unix socket, for fakes and tests.
//!
//! [`Server::bind`] listens on a socket path and answers every request with a synchronous
//! [`Handler`]: it sees the method, the path with its query, and the whole body, and returns
//! a [`Reply`]. Each connection runs in its own task (keep-alive is honoured). Dropping the
//! server, or [`Server::shutdown`], stops the accept loop and every connection, and removes
//! the socket file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::{JoinHandle, JoinSet};

/// The media type of JSON replies.
pub const JSON: &str = "application/json";
/// The media type of plain-text replies.
pub const TEXT: &str = "text/plain";

/// How long the accept loop waits after a failed `accept` before trying again.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(10);

/// What the server calls for each request.
pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// One request, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, upper case (`PUT`).
    pub method: String,
    /// The path with its query, if any (`/api/v1/vm.info`, `/x?y=1`).
    pub path: String,
    /// The whole body; empty when none was sent.
    pub body: Bytes,
}

/// The handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body; nothing is sent when empty.
    pub body: Vec<u8>,
    /// The `Content-Type` sent with a non-empty body.
    pub content_type: &'static str,
}

impl Reply {
    /// A JSON body with `status`.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Reply { status, body: body.into(), content_type: JSON }
    }

    /// A plain-text body with `status`.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply { status, body: body.into().into_bytes(), content_type: TEXT }
    }

    /// No body, with `status` (`204 No Content`, for instance).
    pub fn empty(status: u16) -> Self {
        Reply { status, body: Vec::new(), content_type: JSON }
    }
}

/// A running server. Stops, and removes its socket file, when shut down or dropped.
pub struct Server {
    socket: PathBuf,
    task: JoinHandle<()>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("socket", &self.socket).finish_non_exhaustive()
    }
}

impl Server {
    /// Listens on `socket` (which must not exist) and serves `handler` until shut down.
    ///
    /// Must be called within a tokio runtime; the server runs on it.
    pub async fn bind(socket: &Path, handler: Handler) -> io::Result<Server> {
        let listener = UnixListener::bind(socket)?;
        let task = tokio::spawn(accept_loop(listener, handler));
        Ok(Server { socket: socket.to_owned(), task })
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops accepting, ends every open connection, and removes the socket file.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Accepts connections until aborted; one task per connection.
async fn accept_loop(listener: UnixListener, handler: Handler) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors, most likely: back off instead of spinning.
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| serve(handler.clone(), request));
                    // A connection error only ends that connection.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Reads one whole request, calls the handler, and builds the response.
async fn serve(
    handler: Handler,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let method = request.method().to_string();
    let path = request.uri().path_and_query().map_or_else(|| request.uri().path().to_owned(), |pq| pq.to_string());
    let body = request.into_body().collect().await?.to_bytes();
    let reply = handler(Request { method, path, body });
    Ok(response(reply))
}

/// The HTTP response for a [`Reply`]; an invalid status code becomes a 500 naming it.
fn response(reply: Reply) -> http::Response<Full<Bytes>> {
    let Reply { status, body, content_type } = reply;
    let Ok(status_code) = http::StatusCode::from_u16(status) else {
        return response(Reply::text(500, format!("handler returned invalid status {status}")));
    };
    let mut builder = http::Response::builder().status(status_code);
    if !body.is_empty() {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    match builder.body(Full::new(Bytes::from(body))) {
        Ok(response) => response,
        Err(e) => response(Reply::text(500, format!("handler returned an invalid reply: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_response_sets_content_type_only_with_a_body() {
        let r = response(Reply::json(200, b"{}".to_vec()));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], JSON);
        let r = response(Reply::empty(204));
        assert_eq!(r.status(), 204);
        assert!(r.headers().get(CONTENT_TYPE).is_none());
    }

    #[test]
    fn test_response_invalid_status_becomes_500() {
        let r = response(Reply::text(1000, "x"));
        assert_eq!(r.status(), 500);
    }
}
