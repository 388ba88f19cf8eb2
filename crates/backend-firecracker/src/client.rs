//! Typed calls to Firecracker's API over its Unix socket, one method per operation the driver
//! uses. A refusal keeps Firecracker's own `fault_message` inside [`BackendError::Api`], with
//! the request (`PUT /actions`) it answered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use nestbox_backend::{BackendError, BackendKind};
use nestbox_uds_http::{HttpError, UdsClient};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::map::Request;
use crate::wire::{
    ActionType, Balloon, BalloonHintingStatus, BalloonStartCmd, BalloonStats, BalloonStatsUpdate, BalloonUpdate,
    BootSource, Drive, EntropyDevice, FirecrackerVersion, FullVmConfiguration, InstanceActionInfo, InstanceInfo,
    Logger, MachineConfiguration, Metrics, NetworkInterface, PartialDrive, PartialNetworkInterface,
    SnapshotCreateParams, SnapshotLoadParams, Vm, VmRunState, Vsock,
};

/// Every (method, path template) the client can send, for the contract test.
pub const OPERATIONS_USED: &[(&str, &str)] = &[
    ("GET", "/"),
    ("PUT", "/actions"),
    ("GET", "/balloon"),
    ("PUT", "/balloon"),
    ("PATCH", "/balloon"),
    ("GET", "/balloon/statistics"),
    ("PATCH", "/balloon/statistics"),
    ("PATCH", "/balloon/hinting/start"),
    ("GET", "/balloon/hinting/status"),
    ("PATCH", "/balloon/hinting/stop"),
    ("PUT", "/boot-source"),
    ("PUT", "/drives/{drive_id}"),
    ("PATCH", "/drives/{drive_id}"),
    ("PUT", "/logger"),
    ("GET", "/machine-config"),
    ("PUT", "/machine-config"),
    ("PUT", "/metrics"),
    ("PUT", "/entropy"),
    ("PUT", "/network-interfaces/{iface_id}"),
    ("PATCH", "/network-interfaces/{iface_id}"),
    ("PUT", "/snapshot/create"),
    ("PUT", "/snapshot/load"),
    ("GET", "/version"),
    ("PATCH", "/vm"),
    ("GET", "/vm/config"),
    ("PUT", "/vsock"),
];

/// A Firecracker API client.
#[derive(Debug, Clone)]
pub struct FcClient {
    http: UdsClient,
}

impl FcClient {
    /// A client for the API socket at `socket`, with the default per-call deadline.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { http: UdsClient::new(socket) }
    }

    /// The same client with another per-call deadline.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { http: self.http.with_timeout(timeout) }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        self.http.socket()
    }

    /// Sends one configuration request of a [`Plan`](crate::map::Plan).
    pub async fn apply(&self, request: &Request) -> Result<(), BackendError> {
        let path = request.path();
        self.send(Method::PUT, &path, Some(request.body())).await
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(&self, body: &MachineConfiguration) -> Result<(), BackendError> {
        self.put("/machine-config", body).await
    }

    /// `GET /machine-config`.
    pub async fn machine_config(&self) -> Result<MachineConfiguration, BackendError> {
        self.get("/machine-config").await
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, body: &BootSource) -> Result<(), BackendError> {
        self.put("/boot-source", body).await
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&self, body: &Drive) -> Result<(), BackendError> {
        self.put(&format!("/drives/{}", body.drive_id), body).await
    }

    /// `PATCH /drives/{drive_id}` (after boot).
    pub async fn patch_drive(&self, body: &PartialDrive) -> Result<(), BackendError> {
        self.patch(&format!("/drives/{}", body.drive_id), body).await
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(&self, body: &NetworkInterface) -> Result<(), BackendError> {
        self.put(&format!("/network-interfaces/{}", body.iface_id), body).await
    }

    /// `PATCH /network-interfaces/{iface_id}` (after boot).
    pub async fn patch_network_interface(&self, body: &PartialNetworkInterface) -> Result<(), BackendError> {
        self.patch(&format!("/network-interfaces/{}", body.iface_id), body).await
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&self, body: &Vsock) -> Result<(), BackendError> {
        self.put("/vsock", body).await
    }

    /// `PUT /balloon` (before boot).
    pub async fn put_balloon(&self, body: &Balloon) -> Result<(), BackendError> {
        self.put("/balloon", body).await
    }

    /// `GET /balloon`.
    pub async fn balloon(&self) -> Result<Balloon, BackendError> {
        self.get("/balloon").await
    }

    /// `PATCH /balloon`: a new target size, before or after boot.
    pub async fn resize_balloon(&self, amount_mib: u32) -> Result<(), BackendError> {
        self.patch("/balloon", &BalloonUpdate { amount_mib }).await
    }

    /// `GET /balloon/statistics` (statistics enabled before boot).
    pub async fn balloon_statistics(&self) -> Result<BalloonStats, BackendError> {
        self.get("/balloon/statistics").await
    }

    /// `PATCH /balloon/statistics`.
    pub async fn set_balloon_statistics_interval(&self, seconds: u32) -> Result<(), BackendError> {
        self.patch("/balloon/statistics", &BalloonStatsUpdate { stats_polling_interval_s: seconds }).await
    }

    /// `PATCH /balloon/hinting/start` (free page hinting enabled before boot).
    pub async fn start_balloon_hinting(&self, body: &BalloonStartCmd) -> Result<(), BackendError> {
        self.patch("/balloon/hinting/start", body).await
    }

    /// `GET /balloon/hinting/status`.
    pub async fn balloon_hinting_status(&self) -> Result<BalloonHintingStatus, BackendError> {
        self.get("/balloon/hinting/status").await
    }

    /// `PATCH /balloon/hinting/stop` (no body).
    pub async fn stop_balloon_hinting(&self) -> Result<(), BackendError> {
        self.send(Method::PATCH, "/balloon/hinting/stop", None).await
    }

    /// `PUT /entropy`.
    pub async fn put_entropy(&self, body: &EntropyDevice) -> Result<(), BackendError> {
        self.put("/entropy", body).await
    }

    /// `PUT /logger` (once per process).
    pub async fn put_logger(&self, body: &Logger) -> Result<(), BackendError> {
        self.put("/logger", body).await
    }

    /// `PUT /metrics` (once per process).
    pub async fn put_metrics(&self, body: &Metrics) -> Result<(), BackendError> {
        self.put("/metrics", body).await
    }

    /// `PUT /actions`.
    pub async fn action(&self, action_type: ActionType) -> Result<(), BackendError> {
        self.put("/actions", &InstanceActionInfo { action_type }).await
    }

    /// `PATCH /vm`: pause or resume the vCPUs.
    pub async fn set_vm_state(&self, state: VmRunState) -> Result<(), BackendError> {
        self.patch("/vm", &Vm { state }).await
    }

    /// `PUT /snapshot/create` (paused VM only).
    pub async fn create_snapshot(&self, body: &SnapshotCreateParams) -> Result<(), BackendError> {
        self.put("/snapshot/create", body).await
    }

    /// `PUT /snapshot/load` (fresh process only).
    pub async fn load_snapshot(&self, body: &SnapshotLoadParams) -> Result<(), BackendError> {
        self.put("/snapshot/load", body).await
    }

    /// `GET /`.
    pub async fn instance_info(&self) -> Result<InstanceInfo, BackendError> {
        self.get("/").await
    }

    /// `GET /vm/config`.
    pub async fn vm_config(&self) -> Result<FullVmConfiguration, BackendError> {
        self.get("/vm/config").await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<FirecrackerVersion, BackendError> {
        self.get("/version").await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, BackendError> {
        self.http.get_json(path).await.map_err(api_error)
    }

    async fn put<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<(), BackendError> {
        self.http.put_json(path, body).await.map(drop).map_err(api_error)
    }

    async fn patch<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<(), BackendError> {
        self.http.patch_json(path, body).await.map(drop).map_err(api_error)
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(), BackendError> {
        let request = format!("{method} {path}");
        let response = self.http.request(method, path, body).await.map_err(api_error)?;
        if response.is_success() {
            return Ok(());
        }
        let body = String::from_utf8_lossy(&response.body);
        Err(BackendError::Api { backend: BackendKind::Firecracker, request, message: fault_message(&body) })
    }
}

/// An HTTP failure as a backend error, with Firecracker's `fault_message` when it sent one.
pub fn api_error(e: HttpError) -> BackendError {
    let request = match &e {
        HttpError::Connect { .. } => "connect".to_owned(),
        HttpError::Timeout { method, path, .. }
        | HttpError::Transport { method, path, .. }
        | HttpError::Status { method, path, .. }
        | HttpError::Decode { method, path, .. }
        | HttpError::Encode { method, path, .. }
        | HttpError::InvalidRequest { method, path, .. } => format!("{method} {path}"),
    };
    let message = match &e {
        HttpError::Status { status, body, .. } => format!("{} (status {status})", fault_message(body)),
        other => {
            let chain = other.chain();
            chain.strip_prefix(&format!("{request}: ")).map(str::to_owned).unwrap_or(chain)
        }
    };
    BackendError::Api { backend: BackendKind::Firecracker, request, message }
}

/// Firecracker's `fault_message`, or the body as it came when it is not the `Error` shape.
pub fn fault_message(body: &str) -> String {
    match serde_json::from_str::<crate::wire::Error>(body) {
        Ok(crate::wire::Error { fault_message: Some(message) }) => message,
        _ => body.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fault_message_extracted_or_kept_verbatim() {
        assert_eq!(
            fault_message(
                r#"{"fault_message":"The requested operation is not supported after starting the microVM."}"#
            ),
            "The requested operation is not supported after starting the microVM."
        );
        assert_eq!(fault_message("plain text\n"), "plain text");
        assert_eq!(fault_message("{}"), "{}");
    }

    #[test]
    fn test_status_error_keeps_request_and_message() {
        let e = api_error(HttpError::Status {
            method: "PATCH".into(),
            path: "/vm".into(),
            status: 400,
            body: r#"{"fault_message":"not running"}"#.into(),
        });
        assert_eq!(e.to_string(), "firecracker API PATCH /vm failed: not running (status 400)");
    }
}
