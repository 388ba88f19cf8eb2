//! The client's error type: one variant per way a call can fail, each naming the call.

use std::path::PathBuf;
use std::time::Duration;

/// Why a request over a Unix socket failed.
///
/// Every variant but [`HttpError::Connect`] names the method and path of the call. A non-2xx
/// answer is [`HttpError::Status`], with the server's body kept verbatim (Firecracker's
/// `{"fault_message": "..."}`, Cloud Hypervisor's plain text).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket could not be connected to (missing, refused, permission).
    #[error("cannot connect to {}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The whole exchange (connect, request, body) did not finish within the deadline.
    #[error("{method} {path}: no complete answer within {after:?}")]
    Timeout {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection failed during the exchange (closed early, malformed HTTP).
    #[error("{method} {path}: connection failed")]
    Transport {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The server answered with a status outside 2xx; its body is kept as it was sent.
    #[error("{method} {path}: status {status}: {body}")]
    Status {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// The response body, verbatim (lossy UTF-8).
        body: String,
    },
    /// A 2xx body was not the JSON the caller expected.
    #[error("{method} {path}: cannot decode the response body {body:?}")]
    Decode {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
        /// The response body, verbatim (lossy UTF-8).
        body: String,
    },
    /// The request body could not be serialized to JSON.
    #[error("{method} {path}: cannot encode the request body")]
    Encode {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The method or path do not form a valid HTTP request line.
    #[error("{method} {path}: invalid request")]
    InvalidRequest {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The cause.
        #[source]
        source: http::Error,
    },
}

impl HttpError {
    /// The HTTP status, when the server answered outside 2xx.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error and its causes, `: `-joined (the transport failure under a request, say).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    /// The server's body, when it answered outside 2xx or sent undecodable JSON.
    pub fn body(&self) -> Option<&str> {
        match self {
            HttpError::Status { body, .. } | HttpError::Decode { body, .. } => Some(body),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_status_display_keeps_body_verbatim() {
        let body = r#"{"fault_message":"The requested operation is not supported after starting the microVM."}"#;
        let e = HttpError::Status { method: "PUT".into(), path: "/boot-source".into(), status: 400, body: body.into() };
        assert_eq!(e.status(), Some(400));
        assert_eq!(e.body(), Some(body));
        assert_eq!(e.to_string(), format!("PUT /boot-source: status 400: {body}"));
    }

    #[test]
    fn test_chain_joins_the_causes() {
        let e = HttpError::Connect { socket: "/run/api.sock".into(), source: std::io::Error::other("refused") };
        assert_eq!(e.chain(), "cannot connect to /run/api.sock: refused");
    }

    #[test]
    fn test_accessors_are_none_for_other_variants() {
        let e = HttpError::Timeout { method: "GET".into(), path: "/".into(), after: Duration::from_secs(1) };
        assert_eq!(e.status(), None);
        assert_eq!(e.body(), None);
    }
}
