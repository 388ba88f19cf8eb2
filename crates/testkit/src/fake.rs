//! The Unix-socket server shared by the fake hypervisors: it checks every request against the
//! hypervisor's spec, hands conforming ones to the fake's state machine, and records both the
//! requests and every spec violation for the test to inspect.
//!
//! A request that breaks the spec (unknown method/path, body that does not validate, body
//! that is not JSON) never reaches the state machine: it is answered with the fake's own error
//! shape (built by the `violation` function the fake supplies, whose message starts with
//! "spec violation:") and lands in [`FakeServer::violations`]. A 2xx reply of the fake itself
//! that breaks the spec's response schema is also recorded as a violation (a bug in the fake).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use nestbox_uds_http::server::{Handler, Reply, Request, Server};
use serde_json::Value;

use crate::spec::SpecValidator;

/// Prefix of every violation message, and of the fault text a violating request receives.
pub const VIOLATION_PREFIX: &str = "spec violation:";

/// One request a fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The method, upper case.
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The body: `None` when empty, the parsed JSON, or (when not JSON) its text as a string.
    pub body: Option<Value>,
    /// The status the fake answered with.
    pub status: u16,
}

/// A fake's state machine as the server calls it: `(method, path, body) → reply`.
pub type FakeHandler = Arc<dyn Fn(&str, &str, &[u8]) -> Reply + Send + Sync>;

#[derive(Debug, Default)]
struct Log {
    requests: Vec<Recorded>,
    violations: Vec<String>,
}

/// A fake hypervisor API served on a Unix socket; stops and removes the socket when shut
/// down or dropped.
#[derive(Debug)]
pub struct FakeServer {
    server: Server,
    log: Arc<Mutex<Log>>,
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    // A panic while holding the log cannot leave it inconsistent (pushes only).
    log.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeServer {
    /// Serves `handler` on `socket`, checking requests and replies against `spec`;
    /// `violation` turns a violation message into the reply the client gets.
    pub async fn bind(
        socket: &Path,
        spec: SpecValidator,
        handler: FakeHandler,
        violation: fn(&str) -> Reply,
    ) -> io::Result<FakeServer> {
        let log = Arc::new(Mutex::new(Log::default()));
        let server_log = Arc::clone(&log);
        let handler: Handler = Arc::new(move |req: Request| {
            let (reply, recorded, violations) = exchange(&spec, &handler, violation, &req);
            let mut log = lock(&server_log);
            log.requests.push(recorded);
            log.violations.extend(violations);
            reply
        });
        let server = Server::bind(socket, handler).await?;
        Ok(FakeServer { server, log })
    }

    /// The socket served.
    pub fn socket(&self) -> &Path {
        self.server.socket()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log).requests.clone()
    }

    /// Every spec violation so far (requests the client sent wrong, replies the fake got wrong).
    pub fn violations(&self) -> Vec<String> {
        lock(&self.log).violations.clone()
    }

    /// Stops serving and removes the socket.
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

/// Handles one request: spec check, state machine, reply check. Pure apart from `handler`.
pub fn exchange(
    spec: &SpecValidator,
    handler: &FakeHandler,
    violation: fn(&str) -> Reply,
    req: &Request,
) -> (Reply, Recorded, Vec<String>) {
    let mut violations = Vec::new();
    let body = parse_body(&req.body);
    let checked = match &body {
        Err(text) => Err(format!("{} {}: body is not JSON: {text}", req.method, req.path)),
        Ok(value) => spec.check_request(&req.method, &req.path, value.as_ref()),
    };
    let reply = match checked {
        Err(message) => {
            let message = format!("{VIOLATION_PREFIX} {message}");
            violations.push(message.clone());
            violation(&message)
        }
        Ok(()) => {
            let reply = handler(&req.method, &req.path, &req.body);
            if (200..300).contains(&reply.status) {
                let answer = match parse_body(&reply.body) {
                    Ok(v) => spec.check_response(&req.method, &req.path, reply.status, v.as_ref()),
                    Err(text) => Err(format!("reply body is not JSON: {text}")),
                };
                if let Err(message) = answer {
                    violations.push(format!("{VIOLATION_PREFIX} fake reply: {message}"));
                }
            }
            reply
        }
    };
    let recorded = Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        body: match body {
            Ok(v) => v,
            Err(text) => Some(Value::String(text)),
        },
        status: reply.status,
    };
    (reply, recorded, violations)
}

/// `Ok(None)` for an empty body, `Ok(Some(json))`, or `Err(text)` when it is not JSON.
fn parse_body(body: &[u8]) -> Result<Option<Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|_| String::from_utf8_lossy(body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fault(message: &str) -> Reply {
        Reply::json(400, json!({ "fault_message": message }).to_string())
    }

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request { method: method.into(), path: path.into(), body: body.as_bytes().to_vec().into() }
    }

    #[test]
    fn violations_do_not_reach_the_handler() {
        let calls = Arc::new(Mutex::new(0));
        let seen = Arc::clone(&calls);
        let handler: FakeHandler = Arc::new(move |_, _, _| {
            *seen.lock().unwrap() += 1;
            Reply::empty(204)
        });
        let spec = SpecValidator::firecracker();
        let (reply, rec, v) = exchange(&spec, &handler, fault, &req("PATCH", "/vm", r#"{"state":"Nap"}"#));
        assert_eq!(reply.status, 400);
        assert!(String::from_utf8_lossy(&reply.body).contains("spec violation:"));
        assert_eq!(v.len(), 1);
        assert_eq!(rec.body, Some(json!({"state": "Nap"})));
        assert_eq!(*calls.lock().unwrap(), 0);

        let (_, rec, v) = exchange(&spec, &handler, fault, &req("PATCH", "/vm", "{nope"));
        assert_eq!(rec.body, Some(Value::String("{nope".into())));
        assert!(v[0].contains("not JSON"), "{v:?}");

        let (reply, rec, v) = exchange(&spec, &handler, fault, &req("PATCH", "/vm", r#"{"state":"Paused"}"#));
        assert_eq!((reply.status, rec.status), (204, 204));
        assert!(v.is_empty());
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[test]
    fn bad_replies_of_the_fake_are_violations() {
        let handler: FakeHandler = Arc::new(|_, _, _| Reply::json(200, r#"{"id":"x"}"#));
        let (reply, _, v) = exchange(&SpecValidator::firecracker(), &handler, fault, &req("GET", "/", ""));
        assert_eq!(reply.status, 200);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("fake reply"), "{v:?}");
    }
}
