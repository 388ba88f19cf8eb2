//! Round trips between `UdsClient` and `server::Server`, plus raw sockets for the misbehaving
//! servers (never answers, stalls mid-body, hangs up) the real server module cannot imitate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use nestbox_uds_http::server::{Handler, Reply, Request, Server};
use nestbox_uds_http::{HttpError, UdsClient};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// A temporary directory and a socket path inside it.
fn socket() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("api.sock");
    (dir, path)
}

/// A server answering `reply` to everything and recording each request.
async fn recording(path: &Path, reply: Reply) -> (Server, Arc<Mutex<Vec<Request>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler: Handler = Arc::new(move |request| {
        log.lock().unwrap().push(request);
        reply.clone()
    });
    (Server::bind(path, handler).await.expect("bind"), seen)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Info {
    id: String,
    state: String,
    vcpus: u8,
}

#[tokio::test]
async fn test_get_json_decodes_2xx_body() {
    let (_dir, path) = socket();
    let (_server, seen) = recording(&path, Reply::json(200, r#"{"id":"vm1","state":"Running","vcpus":2}"#)).await;
    let info: Info = UdsClient::new(&path).get_json("/vm/config").await.unwrap();
    assert_eq!(info, Info { id: "vm1".into(), state: "Running".into(), vcpus: 2 });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/vm/config");
    assert!(seen[0].body.is_empty());
}

#[tokio::test]
async fn test_put_json_sends_serialized_body() {
    let (_dir, path) = socket();
    let (_server, seen) = recording(&path, Reply::empty(204)).await;
    let body = Info { id: "a".into(), state: "b".into(), vcpus: 1 };
    let response = UdsClient::new(&path).put_json("/machine-config", &body).await.unwrap();
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, "/machine-config");
    assert_eq!(serde_json::from_slice::<Info>(&seen[0].body).unwrap(), body);
}

#[tokio::test]
async fn test_patch_json_sends_method_and_body() {
    let (_dir, path) = socket();
    let (_server, seen) = recording(&path, Reply::empty(204)).await;
    UdsClient::new(&path).patch_json("/vm", &serde_json::json!({"state": "Paused"})).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(seen[0].path, "/vm");
    assert_eq!(&seen[0].body[..], br#"{"state":"Paused"}"#);
}

#[tokio::test]
async fn test_put_empty_sends_no_body() {
    let (_dir, path) = socket();
    let (_server, seen) = recording(&path, Reply::empty(204)).await;
    let response = UdsClient::new(&path).put_empty("/api/v1/vm.boot").await.unwrap();
    assert_eq!(response.status, 204);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, "/api/v1/vm.boot");
    assert!(seen[0].body.is_empty());
}

#[tokio::test]
async fn test_request_returns_any_status_and_keeps_query() {
    let (_dir, path) = socket();
    let (_server, seen) = recording(&path, Reply::text(404, "no such thing")).await;
    let response = UdsClient::new(&path).request(Method::GET, "/x?y=1&z=2", None).await.unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(&response.body[..], b"no such thing");
    assert_eq!(seen.lock().unwrap()[0].path, "/x?y=1&z=2");
}

#[tokio::test]
async fn test_400_fault_message_kept_verbatim() {
    let (_dir, path) = socket();
    let fault = r#"{"fault_message":"The requested operation is not supported after starting the microVM."}"#;
    let (_server, _) = recording(&path, Reply::json(400, fault)).await;
    let err = UdsClient::new(&path).put_json("/boot-source", &serde_json::json!({})).await.unwrap_err();
    match &err {
        HttpError::Status { method, path, status, body } => {
            assert_eq!(method, "PUT");
            assert_eq!(path, "/boot-source");
            assert_eq!(*status, 400);
            assert_eq!(body, fault);
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.body(), Some(fault));
    assert!(err.to_string().contains(fault), "{err}");
}

#[tokio::test]
async fn test_get_json_non_2xx_is_status_not_decode() {
    let (_dir, path) = socket();
    let (_server, _) = recording(&path, Reply::text(500, "VM is not booted")).await;
    let err = UdsClient::new(&path).get_json::<Info>("/api/v1/vm.info").await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.body(), Some("VM is not booted"));
}

#[tokio::test]
async fn test_non_json_200_is_decode_with_body() {
    let (_dir, path) = socket();
    let (_server, _) = recording(&path, Reply::text(200, "not json at all")).await;
    let err = UdsClient::new(&path).get_json::<Info>("/").await.unwrap_err();
    assert!(matches!(&err, HttpError::Decode { body, .. } if body == "not json at all"), "{err:?}");
    assert_eq!(err.body(), Some("not json at all"));
    assert!(err.to_string().contains("not json at all"), "{err}");
}

#[tokio::test]
async fn test_missing_socket_is_connect() {
    let (_dir, path) = socket();
    let err = UdsClient::new(&path).get_json::<Info>("/").await.unwrap_err();
    match err {
        HttpError::Connect { socket, source } => {
            assert_eq!(socket, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

#[tokio::test]
async fn test_server_that_never_answers_times_out_within_deadline() {
    let (_dir, path) = socket();
    let listener = UnixListener::bind(&path).unwrap();
    // Accept and hold the connection open without ever writing.
    let holder = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    });
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let err = UdsClient::new(&path).with_timeout(deadline).get_json::<Info>("/").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, HttpError::Timeout { method, path, after } if method == "GET" && path == "/" && *after == deadline),
        "{err:?}"
    );
    assert!(took >= deadline && took < deadline + Duration::from_secs(2), "took {took:?}");
    holder.abort();
}

#[tokio::test]
async fn test_deadline_covers_the_whole_body() {
    let (_dir, path) = socket();
    let listener = UnixListener::bind(&path).unwrap();
    // Headers and part of the body, then silence.
    let holder = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":").await.unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    });
    let deadline = Duration::from_millis(300);
    let err = UdsClient::new(&path).with_timeout(deadline).request(Method::GET, "/", None).await.unwrap_err();
    assert!(matches!(err, HttpError::Timeout { .. }), "{err:?}");
    holder.abort();
}

#[tokio::test]
async fn test_hang_up_without_answer_is_transport() {
    let (_dir, path) = socket();
    let listener = UnixListener::bind(&path).unwrap();
    let closer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        drop(stream);
    });
    let err = UdsClient::new(&path).request(Method::GET, "/", None).await.unwrap_err();
    assert!(matches!(&err, HttpError::Transport { method, path, .. } if method == "GET" && path == "/"), "{err:?}");
    closer.await.unwrap();
}

#[tokio::test]
async fn test_invalid_path_is_invalid_request() {
    let err = UdsClient::new("/nonexistent.sock").request(Method::GET, "/a b", None).await.unwrap_err();
    assert!(matches!(err, HttpError::InvalidRequest { .. }), "{err:?}");
}

/// Reads one raw request: head, then `Content-Length` bytes of body.
async fn read_raw_request(stream: &mut tokio::net::UnixStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "eof before the end of the head");
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "eof before the end of the body");
        data.extend_from_slice(&buf[..n]);
    }
    (head, data[head_end..].to_vec())
}

#[tokio::test]
async fn test_headers_on_the_wire() {
    let (_dir, path) = socket();
    let listener = UnixListener::bind(&path).unwrap();
    let heads = tokio::spawn(async move {
        let mut heads = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (head, body) = read_raw_request(&mut stream).await;
            stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            heads.push((head.to_ascii_lowercase(), body));
        }
        heads
    });
    let client = UdsClient::new(&path);
    client.put_json("/actions", &serde_json::json!({"action_type": "InstanceStart"})).await.unwrap();
    client.put_empty("/api/v1/vm.boot").await.unwrap();
    let heads = heads.await.unwrap();

    let (head, body) = &heads[0];
    assert!(head.starts_with("put /actions http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: localhost\r\n"), "{head}");
    assert!(head.contains("\r\naccept: application/json\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
    assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
    assert_eq!(body, br#"{"action_type":"InstanceStart"}"#);

    let (head, body) = &heads[1];
    assert!(head.starts_with("put /api/v1/vm.boot http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: localhost\r\n"), "{head}");
    assert!(head.contains("\r\naccept: application/json\r\n"), "{head}");
    assert!(!head.contains("content-type"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(body.is_empty());
}

#[tokio::test]
async fn test_large_bodies_both_ways() {
    let (_dir, path) = socket();
    let echo: Handler = Arc::new(|request: Request| Reply::json(200, request.body.to_vec()));
    let _server = Server::bind(&path, echo).await.unwrap();
    let big: String = (0..1024 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let response = UdsClient::new(&path).put_json("/echo", &big).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), big.len() + 2);
    let back: String = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(back, big);
}

#[tokio::test]
async fn test_concurrent_calls_each_get_their_own_answer() {
    let (_dir, path) = socket();
    let echo: Handler = Arc::new(|request: Request| Reply::json(200, format!("{:?}", request.path)));
    let _server = Server::bind(&path, echo).await.unwrap();
    let client = UdsClient::new(&path);
    let calls = (0..32).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.get_json::<String>(&format!("/n/{i}")).await })
    });
    for (i, call) in calls.collect::<Vec<_>>().into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), format!("/n/{i}"));
    }
}

#[tokio::test]
async fn test_server_shutdown_removes_socket_and_refuses() {
    let (_dir, path) = socket();
    let (server, _) = recording(&path, Reply::empty(204)).await;
    assert!(path.exists());
    assert_eq!(server.socket(), path);
    UdsClient::new(&path).put_empty("/").await.unwrap();
    server.shutdown();
    assert!(!path.exists());
    let err = UdsClient::new(&path).put_empty("/").await.unwrap_err();
    assert!(matches!(err, HttpError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn test_server_bind_refuses_existing_path() {
    let (_dir, path) = socket();
    std::fs::write(&path, b"").unwrap();
    let handler: Handler = Arc::new(|_| Reply::empty(204));
    let err = Server::bind(&path, handler).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}
