//! The client against a scripted fake agent over an in-memory duplex pipe.

use std::time::Duration;

use nestbox_agent_client::{AgentClient, ClientError, ErrorCode, ExecEvent, ExecRequest};
use nestbox_agent_protocol::{ErrorMessage, Exited, Message, PROTOCOL_VERSION, TtySize, Welcome};
use serde_bytes::ByteBuf;
use tokio::io::DuplexStream;

use nestbox_agent_client::{read_frame, write_frame};

const LIMIT: Duration = Duration::from_secs(10);

fn welcome() -> Message {
    welcome_v(1)
}

fn welcome_v(version: u16) -> Message {
    Message::Welcome(Welcome { version, agent_version: "fake".into(), kernel_release: "fake-kernel".into() })
}

async fn expect(io: &mut DuplexStream) -> (u32, Message) {
    tokio::time::timeout(LIMIT, read_frame(io)).await.expect("frame in time").expect("valid frame").expect("not eof")
}

#[tokio::test]
async fn test_connection_loss_mid_exec_gives_closed() {
    let (client_io, mut agent) = tokio::io::duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        assert!(matches!(expect(&mut agent).await, (0, Message::Hello(_))));
        write_frame(&mut agent, 0, &welcome()).await.unwrap();
        let (stream, msg) = expect(&mut agent).await;
        assert!(matches!(msg, Message::ExecStart(ref s) if s.argv == ["sleep", "9"]));
        write_frame(&mut agent, stream, &Message::ExecStarted { pid: 77 }).await.unwrap();
        let data = ByteBuf::from(b"partial".to_vec());
        write_frame(&mut agent, stream, &Message::ExecStdout { data }).await.unwrap();
        // Dropping `agent` closes the connection.
    });
    let (client, w) = AgentClient::connect(client_io).await.unwrap();
    assert_eq!(w.kernel_release, "fake-kernel");
    let mut exec = client.exec(ExecRequest::new(["sleep", "9"])).await.unwrap();
    assert_eq!(exec.next_event().await, Some(ExecEvent::Started { pid: 77 }));
    assert_eq!(exec.next_event().await, Some(ExecEvent::Stdout(bytes::Bytes::from_static(b"partial"))));
    fake.await.unwrap();
    assert!(matches!(exec.try_next_event().await, Err(ClientError::Closed)));
    assert!(matches!(exec.try_next_event().await, Ok(None)));
    assert!(matches!(client.exec(ExecRequest::new(["true"])).await, Err(ClientError::Closed)));
    assert!(client.is_closed());
    assert!(matches!(client.poweroff().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn test_an_error_after_the_start_refuses_one_request_not_the_exec() {
    let (client_io, mut agent) = tokio::io::duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        expect(&mut agent).await;
        write_frame(&mut agent, 0, &welcome()).await.unwrap();
        let (stream, _) = expect(&mut agent).await;
        write_frame(&mut agent, stream, &Message::ExecStarted { pid: 8 }).await.unwrap();
        // The process is reaped, its exit not yet sent, when the client's stdin close arrives.
        assert!(matches!(expect(&mut agent).await, (s, Message::ExecStdinClose) if s == stream));
        let err = Message::Error(ErrorMessage { code: ErrorCode::UnknownStream, message: "no running exec".into() });
        write_frame(&mut agent, stream, &err).await.unwrap();
        let exited = Message::ExecExited(Exited { code: Some(3), signal: None, timed_out: false });
        write_frame(&mut agent, stream, &exited).await.unwrap();
        // Until the client hangs up.
        while let Ok(Some(_)) = read_frame(&mut agent).await {}
    });
    let (client, _) = AgentClient::connect(client_io).await.unwrap();
    let exec = client.exec(ExecRequest::new(["true"]).stdin(true)).await.unwrap();
    exec.stdin().close().await.unwrap();
    let out = tokio::time::timeout(LIMIT, exec.output()).await.unwrap().unwrap();
    assert_eq!((out.pid, out.status.code), (Some(8), Some(3)));
    drop(client);
    fake.await.unwrap();
}

#[tokio::test]
async fn test_handshake_refusal_is_agent_error() {
    let (client_io, mut agent) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        expect(&mut agent).await;
        let err = Message::Error(ErrorMessage { code: ErrorCode::UnsupportedVersion, message: "no".into() });
        write_frame(&mut agent, 0, &err).await.unwrap();
        expect(&mut agent).await;
    });
    match AgentClient::connect(client_io).await {
        Err(ClientError::Agent { code, message }) => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert_eq!(message, "no");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn test_refused_exec_is_agent_error_and_pending_exec_sees_close() {
    let (client_io, mut agent) = tokio::io::duplex(4096);
    let fake = tokio::spawn(async move {
        expect(&mut agent).await;
        write_frame(&mut agent, 0, &welcome()).await.unwrap();
        let (stream, _) = expect(&mut agent).await;
        let err = Message::Error(ErrorMessage { code: ErrorCode::BadRequest, message: "argv is empty".into() });
        write_frame(&mut agent, stream, &err).await.unwrap();
        // Second exec: never answered; the connection just ends.
        expect(&mut agent).await;
    });
    let (client, _) = AgentClient::connect(client_io).await.unwrap();
    match client.exec(ExecRequest::default()).await {
        Err(ClientError::Agent { code, .. }) => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("unexpected {other:?}"),
    }
    let pending = client.exec(ExecRequest::new(["true"]));
    let (res, _) = tokio::join!(pending, fake);
    assert!(matches!(res, Err(ClientError::Closed)));
}

#[tokio::test]
async fn test_v1_agent_gets_no_v2_requests() {
    let (client_io, mut agent) = tokio::io::duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        match expect(&mut agent).await {
            (0, Message::Hello(h)) => assert_eq!((h.min_version, h.max_version), (1, PROTOCOL_VERSION)),
            other => panic!("expected hello, got {other:?}"),
        }
        write_frame(&mut agent, 0, &welcome_v(1)).await.unwrap();
        // The refused requests never reach the wire: the next frame is the plain exec.
        let (stream, msg) = expect(&mut agent).await;
        match msg {
            Message::ExecStart(s) => assert_eq!((s.argv, s.tty, s.user), (vec!["true".to_string()], None, None)),
            other => panic!("expected exec.start, got {other:?}"),
        }
        write_frame(&mut agent, stream, &Message::ExecStarted { pid: 5 }).await.unwrap();
        let exited = Message::ExecExited(Exited { code: Some(0), signal: None, timed_out: false });
        write_frame(&mut agent, stream, &exited).await.unwrap();
        expect(&mut agent).await
    });
    let (client, w) = AgentClient::connect(client_io).await.unwrap();
    assert_eq!((w.version, client.version()), (1, 1));
    match client.exec(ExecRequest::new(["sh"]).tty(24, 80)).await {
        Err(ClientError::Unsupported { feature: "tty", needed: 2, agent: 1 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    match client.exec(ExecRequest::new(["id"]).user("1000")).await {
        Err(ClientError::Unsupported { feature: "user", needed: 2, agent: 1 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let exec = client.exec(ExecRequest::new(["true"])).await.unwrap();
    assert!(matches!(exec.resize(10, 10).await, Err(ClientError::NoTty)));
    assert!(exec.output().await.unwrap().status.success());
    client.poweroff().await.unwrap();
    assert!(matches!(tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap(), (0, Message::GuestPoweroff)));
}

#[tokio::test]
async fn test_resize_goes_out_on_the_exec_stream() {
    let (client_io, mut agent) = tokio::io::duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        expect(&mut agent).await;
        write_frame(&mut agent, 0, &welcome_v(2)).await.unwrap();
        let (stream, msg) = expect(&mut agent).await;
        assert!(matches!(msg, Message::ExecStart(ref s) if s.tty == Some(TtySize { rows: 24, cols: 80 })), "{msg:?}");
        write_frame(&mut agent, stream, &Message::ExecStarted { pid: 9 }).await.unwrap();
        let first = expect(&mut agent).await;
        let second = expect(&mut agent).await;
        (stream, first, second)
    });
    let (client, _) = AgentClient::connect(client_io).await.unwrap();
    assert_eq!(client.version(), 2);
    let exec = client.exec(ExecRequest::new(["sh"]).tty(24, 80).stdin(true)).await.unwrap();
    exec.resize(50, 132).await.unwrap();
    // The stdin handle resizes too (a SIGWINCH task holds one while the exec is consumed).
    exec.stdin().resize(10, 20).await.unwrap();
    let (stream, first, second) = tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap();
    assert_eq!(stream, exec.stream_id());
    assert_eq!(first, (stream, Message::ExecResize(TtySize { rows: 50, cols: 132 })));
    assert_eq!(second, (stream, Message::ExecResize(TtySize { rows: 10, cols: 20 })));
}
