//! Many execs at once in one VM, through the engine's API (the CLI runs one command per VM).

use std::time::Duration;

use nestbox_agent_client::{ExecEvent, ExecRequest};
use nestbox_engine::Teardown;

use crate::common::{Home, boot_sandbox};
use crate::require_vm;

const EXECS: usize = 16;

#[test]
fn test_sixteen_concurrent_execs_in_one_vm() {
    require_vm!();
    let home = Home::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sandbox = boot_sandbox(&home).await;
        // Each exec announces itself, then waits until all have: if the agent ran execs one
        // at a time, the first would wait forever and the timeout would kill it.
        let script = format!(
            "touch /tmp/started.$N; while [ $(ls /tmp | grep -c started) -lt {EXECS} ]; do sleep 0.05; done; echo $N"
        );
        let mut tasks = Vec::new();
        for n in 0..EXECS {
            let agent = sandbox.agent().clone();
            let script = script.clone();
            tasks.push(tokio::spawn(async move {
                let mut exec = agent
                    .exec(ExecRequest {
                        argv: vec!["sh".into(), "-c".into(), script],
                        env: vec![("N".into(), n.to_string())],
                        cwd: None,
                        stdin: false,
                        timeout: Some(Duration::from_secs(60)),
                        tty: None,
                        user: None,
                    })
                    .await
                    .unwrap();
                let mut out = Vec::new();
                loop {
                    match exec.next_event().await.expect("exec stream ended without exit") {
                        ExecEvent::Stdout(data) => out.extend_from_slice(&data),
                        ExecEvent::Exited(status) => return (n, status, String::from_utf8(out).unwrap()),
                        _ => {}
                    }
                }
            }));
        }
        for task in tasks {
            let (n, status, out) = task.await.unwrap();
            assert!(!status.timed_out, "exec {n} timed out: execs did not run concurrently");
            assert_eq!(status.code, Some(0), "exec {n}: {status:?}");
            assert_eq!(out, format!("{n}\n"));
        }
        sandbox.teardown(Teardown::Graceful).await;
    });
    home.assert_clean();
}
