//! HTTP/1.1 over Unix sockets, shared by the Firecracker and Cloud Hypervisor drivers.
//!
//! Both VMMs serve a small JSON REST API on a Unix socket. [`UdsClient`] speaks to it with
//! hyper 1.x: one fresh connection per request, a deadline on the whole exchange (connect,
//! request, whole body), no retries, and the server's own error text kept verbatim inside
//! [`HttpError::Status`]. [`server`] is the matching minimal server, for fakes and tests.
//!
//! - [`client`] holds [`UdsClient`] and [`Response`].
//! - [`error`] holds [`HttpError`].
//! - [`server`] holds [`server::Server`], a handler-per-request server on a Unix socket.

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod server;

pub use client::{DEFAULT_TIMEOUT, Response, UdsClient};
pub use error::HttpError;
