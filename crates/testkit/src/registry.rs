//! A real OCI distribution registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry), started on a loopback port with its storage in a temporary directory,
//! optionally behind htpasswd auth; killed on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry's program name, found on `PATH`.
pub const PROGRAM: &str = "docker-registry";
/// The realm of the htpasswd auth.
pub const REALM: &str = "nestbox-test";
/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A registry process.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry, behind htpasswd auth with the `USER:BCRYPT` line `htpasswd` when given;
    /// `None` when [`PROGRAM`] is not installed. Panics (with the registry's log) if it does not
    /// come up.
    pub fn start(htpasswd: Option<&str>) -> Option<Self> {
        let program = find_on_path(PROGRAM)?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        if let Some(line) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{line}\n")).expect("write htpasswd");
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: {REALM}\n    path: {}\n", file.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("create the registry log");
        let child = Command::new(program)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Self { child, host, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(&registry.host).is_err() {
            if let Some(status) = registry.child.try_wait().expect("wait for docker-registry") {
                panic!("docker-registry exited ({status}): {}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}: {}",
                registry.host,
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(registry)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(program)).find(|p| p.is_file())
}
