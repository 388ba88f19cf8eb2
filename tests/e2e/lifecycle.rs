//! The QEMU backend's VM lifecycle on a real VM: state, pause, resume, graceful shutdown.

use std::time::Duration;

use nestbox_agent_client::ExecRequest;
use nestbox_backend::{BackendError, VmState};
use nestbox_engine::Teardown;

use crate::common::{Home, boot_sandbox};
use crate::require_vm;

#[test]
fn test_pause_resume_and_state() {
    require_vm!();
    let home = Home::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sandbox = boot_sandbox(&home).await;
        let vm = sandbox.vm();
        assert_eq!(vm.state().await.unwrap(), VmState::Running);
        let err = vm.resume().await.unwrap_err();
        assert!(matches!(err, BackendError::InvalidState { op: "resume", state: VmState::Running }), "{err}");

        vm.pause().await.unwrap();
        assert_eq!(vm.state().await.unwrap(), VmState::Paused);
        let err = vm.pause().await.unwrap_err();
        assert_eq!(err.to_string(), "cannot pause a VM that is paused");
        // A paused guest runs nothing: an exec started now cannot finish until resume.
        let agent = sandbox.agent().clone();
        let exec = tokio::spawn(async move { agent.exec(ExecRequest::new(["echo", "after"])).await?.output().await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!exec.is_finished(), "the guest ran while paused");

        vm.resume().await.unwrap();
        assert_eq!(vm.state().await.unwrap(), VmState::Running);
        let out = exec.await.unwrap().unwrap();
        assert_eq!(out.stdout, b"after\n");
        sandbox.teardown(Teardown::Graceful).await;
    });
    home.assert_clean();
}

#[test]
fn test_shutdown_ends_the_hypervisor() {
    require_vm!();
    let home = Home::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sandbox = boot_sandbox(&home).await;
        let vm = sandbox.vm();
        // The default image has no ACPI power-button handler, so this exercises the whole
        // ladder: power button, then QMP quit after the grace period.
        let report = vm.shutdown(Duration::from_millis(500)).await;
        assert!(vm.try_wait().is_some(), "QEMU still running after shutdown ({report})");
        assert_eq!(vm.state().await.unwrap(), VmState::Exited);
        sandbox.teardown(Teardown::Graceful).await;
    });
    home.assert_clean();
}
