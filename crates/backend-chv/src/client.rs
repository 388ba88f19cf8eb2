//! The typed Cloud Hypervisor API client: one method per endpoint nestbox uses, over
//! [`UdsClient`] (HTTP/1.1 on the API Unix socket, under `/api/v1`).
//!
//! Every call has a deadline ([`UdsClient`]'s per-call timeout; snapshot and restore, which copy
//! guest memory, get their own) and none is retried. A refusal keeps Cloud Hypervisor's own
//! text: its error body is the error chain as a JSON array of messages, top first
//! (`["Error from API","The VM could not be paused","..."]`), which [`ApiError::message`] joins
//! with `: `; any other body is kept as text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use nestbox_backend::{BackendError, BackendKind};
use nestbox_uds_http::{HttpError, UdsClient};
use serde::Serialize;

use crate::wire::{
    DiskConfig, PciDeviceInfo, RestoreConfig, VmConfig, VmCounters, VmInfo, VmRemoveDevice, VmResize, VmSnapshotConfig,
    VmmPingResponse,
};

/// The path every endpoint lives under (the spec's `servers[0].url`).
pub const API_BASE: &str = "/api/v1";
/// The deadline of an ordinary API call.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline of `vm.snapshot` and `vm.restore`, which write or read all guest memory.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The endpoints nestbox calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET vmm.ping`.
    VmmPing,
    /// `PUT vmm.shutdown`: shut the VM down and end the VMM process.
    VmmShutdown,
    /// `PUT vm.create`.
    VmCreate,
    /// `PUT vm.boot`.
    VmBoot,
    /// `PUT vm.pause`.
    VmPause,
    /// `PUT vm.resume`.
    VmResume,
    /// `PUT vm.shutdown`: stop the VM; the VMM stays.
    VmShutdown,
    /// `PUT vm.power-button`: ACPI power button.
    VmPowerButton,
    /// `PUT vm.snapshot`.
    VmSnapshot,
    /// `PUT vm.restore`.
    VmRestore,
    /// `PUT vm.resize`.
    VmResize,
    /// `GET vm.info`.
    VmInfo,
    /// `GET vm.counters`.
    VmCounters,
    /// `PUT vm.add-disk`.
    VmAddDisk,
    /// `PUT vm.remove-device`.
    VmRemoveDevice,
}

impl Endpoint {
    /// Every endpoint, for contract tests.
    pub const ALL: [Endpoint; 15] = [
        Endpoint::VmmPing,
        Endpoint::VmmShutdown,
        Endpoint::VmCreate,
        Endpoint::VmBoot,
        Endpoint::VmPause,
        Endpoint::VmResume,
        Endpoint::VmShutdown,
        Endpoint::VmPowerButton,
        Endpoint::VmSnapshot,
        Endpoint::VmRestore,
        Endpoint::VmResize,
        Endpoint::VmInfo,
        Endpoint::VmCounters,
        Endpoint::VmAddDisk,
        Endpoint::VmRemoveDevice,
    ];

    /// The action's name, as in the path (`vm.pause`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::VmmPing => "vmm.ping",
            Endpoint::VmmShutdown => "vmm.shutdown",
            Endpoint::VmCreate => "vm.create",
            Endpoint::VmBoot => "vm.boot",
            Endpoint::VmPause => "vm.pause",
            Endpoint::VmResume => "vm.resume",
            Endpoint::VmShutdown => "vm.shutdown",
            Endpoint::VmPowerButton => "vm.power-button",
            Endpoint::VmSnapshot => "vm.snapshot",
            Endpoint::VmRestore => "vm.restore",
            Endpoint::VmResize => "vm.resize",
            Endpoint::VmInfo => "vm.info",
            Endpoint::VmCounters => "vm.counters",
            Endpoint::VmAddDisk => "vm.add-disk",
            Endpoint::VmRemoveDevice => "vm.remove-device",
        }
    }

    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            Endpoint::VmmPing | Endpoint::VmInfo | Endpoint::VmCounters => Method::GET,
            _ => Method::PUT,
        }
    }

    /// The full request path (`/api/v1/vm.pause`).
    pub fn path(self) -> String {
        format!("{API_BASE}/{}", self.name())
    }

    /// Whether the request carries a JSON body.
    pub fn has_body(self) -> bool {
        matches!(
            self,
            Endpoint::VmCreate
                | Endpoint::VmSnapshot
                | Endpoint::VmRestore
                | Endpoint::VmResize
                | Endpoint::VmAddDisk
                | Endpoint::VmRemoveDevice
        )
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed API call: which endpoint, and the transport's error (which keeps CH's body).
#[derive(Debug, thiserror::Error)]
#[error("cloud-hypervisor API {endpoint} failed")]
pub struct ApiError {
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// What went wrong.
    #[source]
    pub source: HttpError,
}

impl ApiError {
    /// The HTTP status, when CH answered.
    pub fn status(&self) -> Option<u16> {
        match &self.source {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Cloud Hypervisor's own words when it answered with an error (its error chain joined with
    /// `: `, or its body as text), else the transport failure with its causes.
    pub fn message(&self) -> String {
        match &self.source {
            HttpError::Status { status, body, .. } => {
                let text = error_body_text(body);
                if text.is_empty() { format!("status {status}") } else { format!("status {status}: {text}") }
            }
            other => other.chain(),
        }
    }

    /// Whether the VMM could not be reached at all (socket gone or refused): it has likely exited.
    pub fn is_connect(&self) -> bool {
        matches!(self.source, HttpError::Connect { .. })
    }
}

impl From<ApiError> for BackendError {
    fn from(e: ApiError) -> Self {
        BackendError::Api {
            backend: BackendKind::CloudHypervisor,
            request: format!("{} {}", e.endpoint.method(), e.endpoint.path()),
            message: e.message(),
        }
    }
}

/// CH's error body as one line: a JSON array of messages joined with `: `, else trimmed text.
pub fn error_body_text(body: &str) -> String {
    match serde_json::from_str::<Vec<String>>(body) {
        Ok(chain) => chain.join(": "),
        Err(_) => body.trim().to_owned(),
    }
}

/// The Cloud Hypervisor API on one socket.
#[derive(Debug, Clone)]
pub struct ChvClient {
    http: UdsClient,
    slow: UdsClient,
}

impl ChvClient {
    /// A client for the API socket at `socket`, with the default deadlines.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        Self {
            http: UdsClient::new(socket.clone()).with_timeout(DEFAULT_API_TIMEOUT),
            slow: UdsClient::new(socket).with_timeout(DEFAULT_SNAPSHOT_TIMEOUT),
        }
    }

    /// The same client with another deadline for ordinary calls.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = self.http.with_timeout(timeout);
        self
    }

    /// The same client with another deadline for `vm.snapshot` and `vm.restore`.
    pub fn with_snapshot_timeout(mut self, timeout: Duration) -> Self {
        self.slow = self.slow.with_timeout(timeout);
        self
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        self.http.socket()
    }

    /// `GET /vmm.ping`: the VMM's version and pid.
    pub async fn ping(&self) -> Result<VmmPingResponse, ApiError> {
        self.get(Endpoint::VmmPing).await
    }

    /// `PUT /vmm.shutdown`: shut the VM down (if any) and end the VMM.
    pub async fn vmm_shutdown(&self) -> Result<(), ApiError> {
        self.put_empty(Endpoint::VmmShutdown).await
    }

    /// `PUT /vm.create`.
    pub async fn create(&self, config: &VmConfig) -> Result<(), ApiError> {
        self.put(&self.http, Endpoint::VmCreate, config).await.map(drop)
    }

    /// `PUT /vm.boot`.
    pub async fn boot(&self) -> Result<(), ApiError> {
        self.put_empty(Endpoint::VmBoot).await
    }

    /// `PUT /vm.pause`.
    pub async fn pause(&self) -> Result<(), ApiError> {
        self.put_empty(Endpoint::VmPause).await
    }

    /// `PUT /vm.resume`.
    pub async fn resume(&self) -> Result<(), ApiError> {
        self.put_empty(Endpoint::VmResume).await
    }

    /// `PUT /vm.shutdown`: stop the VM, keep the VMM.
    pub async fn shutdown(&self) -> Result<(), ApiError> {
        self.put_empty(Endpoint::VmShutdown).await
    }

    /// `PUT /vm.power-button`: press the ACPI power button.
    pub async fn power_button(&self) -> Result<(), ApiError> {
        self.put_empty(Endpoint::VmPowerButton).await
    }

    /// `PUT /vm.snapshot` (the VM must be paused), under the snapshot deadline.
    pub async fn snapshot(&self, config: &VmSnapshotConfig) -> Result<(), ApiError> {
        self.put(&self.slow, Endpoint::VmSnapshot, config).await.map(drop)
    }

    /// `PUT /vm.restore` (only into a fresh VMM), under the snapshot deadline.
    pub async fn restore(&self, config: &RestoreConfig) -> Result<(), ApiError> {
        self.put(&self.slow, Endpoint::VmRestore, config).await.map(drop)
    }

    /// `PUT /vm.resize`: vCPUs, RAM or balloon.
    pub async fn resize(&self, resize: &VmResize) -> Result<(), ApiError> {
        self.put(&self.http, Endpoint::VmResize, resize).await.map(drop)
    }

    /// `GET /vm.info`.
    pub async fn info(&self) -> Result<VmInfo, ApiError> {
        self.get(Endpoint::VmInfo).await
    }

    /// `GET /vm.counters`.
    pub async fn counters(&self) -> Result<VmCounters, ApiError> {
        self.get(Endpoint::VmCounters).await
    }

    /// `PUT /vm.add-disk`: where it landed (200), or `None` when cold-added before boot (204).
    pub async fn add_disk(&self, disk: &DiskConfig) -> Result<Option<PciDeviceInfo>, ApiError> {
        let response = self.put(&self.http, Endpoint::VmAddDisk, disk).await?;
        decode_optional(Endpoint::VmAddDisk, &response)
    }

    /// `PUT /vm.remove-device`.
    pub async fn remove_device(&self, device: &VmRemoveDevice) -> Result<(), ApiError> {
        self.put(&self.http, Endpoint::VmRemoveDevice, device).await.map(drop)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, endpoint: Endpoint) -> Result<T, ApiError> {
        self.http.get_json(&endpoint.path()).await.map_err(|source| ApiError { endpoint, source })
    }

    async fn put_empty(&self, endpoint: Endpoint) -> Result<(), ApiError> {
        self.http.put_empty(&endpoint.path()).await.map(drop).map_err(|source| ApiError { endpoint, source })
    }

    async fn put<B: Serialize>(
        &self,
        http: &UdsClient,
        endpoint: Endpoint,
        body: &B,
    ) -> Result<nestbox_uds_http::Response, ApiError> {
        http.put_json(&endpoint.path(), body).await.map_err(|source| ApiError { endpoint, source })
    }
}

/// A 200 body decoded, or `None` for an empty 204.
fn decode_optional<T: serde::de::DeserializeOwned>(
    endpoint: Endpoint,
    response: &nestbox_uds_http::Response,
) -> Result<Option<T>, ApiError> {
    if response.body.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&response.body).map(Some).map_err(|source| ApiError {
        endpoint,
        source: HttpError::Decode {
            method: endpoint.method().to_string(),
            path: endpoint.path(),
            source,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_endpoint_paths_and_methods() {
        assert_eq!(Endpoint::VmPause.path(), "/api/v1/vm.pause");
        assert_eq!(Endpoint::VmmPing.method(), Method::GET);
        assert_eq!(Endpoint::VmPowerButton.method(), Method::PUT);
        assert!(Endpoint::VmCreate.has_body());
        assert!(!Endpoint::VmBoot.has_body());
    }

    #[test]
    fn test_error_body_text_joins_ch_error_chain() {
        assert_eq!(
            error_body_text(r#"["Error from API","The VM could not be paused","Invalid state"]"#),
            "Error from API: The VM could not be paused: Invalid state"
        );
        assert_eq!(error_body_text(" plain text\n"), "plain text");
        assert_eq!(error_body_text(""), "");
    }

    #[test]
    fn test_api_error_into_backend_error_keeps_ch_text() {
        let e = ApiError {
            endpoint: Endpoint::VmPause,
            source: HttpError::Status {
                method: "PUT".into(),
                path: "/api/v1/vm.pause".into(),
                status: 500,
                body: r#"["Error from API","The VM could not be paused"]"#.into(),
            },
        };
        assert_eq!(e.status(), Some(500));
        let backend: BackendError = e.into();
        assert_eq!(
            backend.to_string(),
            "cloud-hypervisor API PUT /api/v1/vm.pause failed: status 500: Error from API: The VM could not be paused"
        );
    }
}
