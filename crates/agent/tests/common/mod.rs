//! A blocking test harness: the real `nestbox-agent --stdio` driven over its pipes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use nestbox_agent_protocol::{ExecStart, Exited, Hello, Message, PROTOCOL_VERSION, Welcome, read_frame, write_frame};

/// How long any single expected frame may take.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Agent {
    pub child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<(u32, Message)>,
    /// Frames already read but belonging to another stream.
    parked: HashMap<u32, Vec<Message>>,
}

/// What one exec produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub pid: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exited: Option<Exited>,
    pub error: Option<Message>,
}

pub fn exec(argv: &[&str]) -> ExecStart {
    ExecStart {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout_ms: None,
        tty: None,
        user: None,
    }
}

impl Agent {
    /// Spawns the agent without greeting it.
    pub fn spawn_raw() -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nestbox-agent"))
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nestbox-agent");
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(Some(frame)) = read_frame(&mut out) {
                if tx.send(frame).is_err() {
                    break;
                }
            }
        });
        Agent { stdin: child.stdin.take(), child, frames: rx, parked: HashMap::new() }
    }

    /// Spawns the agent and completes the hello/welcome handshake.
    pub fn spawn() -> (Agent, Welcome) {
        let mut agent = Agent::spawn_raw();
        agent.send(
            0,
            &Message::Hello(Hello { min_version: 1, max_version: PROTOCOL_VERSION, client: "agent-tests".into() }),
        );
        match agent.recv(0) {
            Message::Welcome(w) => (agent, w),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub fn send(&mut self, stream: u32, msg: &Message) {
        write_frame(self.stdin.as_mut().expect("stdin open"), stream, msg).unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Next message on `stream`, parking other streams' messages.
    pub fn recv(&mut self, stream: u32) -> Message {
        if let Some(q) = self.parked.get_mut(&stream)
            && !q.is_empty()
        {
            return q.remove(0);
        }
        loop {
            let (s, msg) =
                self.frames.recv_timeout(FRAME_TIMEOUT).unwrap_or_else(|e| panic!("no frame for stream {stream}: {e}"));
            if s == stream {
                return msg;
            }
            self.parked.entry(s).or_default().push(msg);
        }
    }

    /// Collects a stream until its terminal message; asserts nothing follows it.
    pub fn collect(&mut self, stream: u32) -> Outcome {
        let mut out = Outcome::default();
        loop {
            match self.recv(stream) {
                Message::ExecStarted { pid } => {
                    assert!(out.pid.is_none() && out.stdout.is_empty() && out.stderr.is_empty());
                    out.pid = Some(pid);
                }
                Message::ExecStdout { data } => out.stdout.extend_from_slice(&data),
                Message::ExecStderr { data } => out.stderr.extend_from_slice(&data),
                Message::ExecExited(e) => {
                    out.exited = Some(e);
                    return out;
                }
                err @ Message::Error(_) => {
                    out.error = Some(err);
                    return out;
                }
                other => panic!("unexpected {other:?} on stream {stream}"),
            }
        }
    }

    /// Starts `req` on `stream` and collects it.
    pub fn run(&mut self, stream: u32, req: ExecStart) -> Outcome {
        self.send(stream, &Message::ExecStart(req));
        self.collect(stream)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sh(script: &str) -> ExecStart {
    exec(&["sh", "-c", script])
}
