//! A real `redis-server` for the shared-state tests, on a free port, with nothing persisted:
//! plain, or TLS only (`rediss://`) with a CA and certificate made for it by the `openssl`
//! command. Without either program the tests say so loudly and skip, unless `CI=true`, where
//! they fail.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    tls: Option<Tls>,
    child: Option<Child>,
}

/// A TLS server's files, in a folder of its own that goes with it.
struct Tls {
    dir: PathBuf,
    password: &'static str,
}

/// The password a TLS server requires (managed Redis services require one too).
pub const TLS_PASSWORD: &str = "tls-redis-password-never-logged";

impl RedisServer {
    /// `None` (after a loud note) when `redis-server` is not installed and CI is not set.
    pub fn start() -> Option<RedisServer> {
        if !installed("redis-server", "--version") {
            return skip("redis-server is not installed (apt-get install -y redis-server)");
        }
        let mut server = RedisServer {
            port: free_port(),
            tls: None,
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 signed by a CA made for
    /// this test alone (so trusted by nothing unless told: [`RedisServer::ca_file`]), and a
    /// password. `None` (after a loud note) without `redis-server` or `openssl`, unless CI.
    pub fn start_tls() -> Option<RedisServer> {
        if !installed("redis-server", "--version") {
            return skip("redis-server is not installed (apt-get install -y redis-server)");
        }
        if !installed("openssl", "version") {
            return skip("openssl is not installed (apt-get install -y openssl)");
        }
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("dify-bff-redis-tls-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the certificates");
        make_certificates(&dir);
        let mut server = RedisServer {
            port,
            tls: Some(Tls {
                dir,
                password: TLS_PASSWORD,
            }),
            child: None,
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some(tls) => format!("rediss://:{}@127.0.0.1:{}/0", tls.password, self.port),
        }
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> String {
        let tls = self.tls.as_ref().expect("a TLS server");
        tls.dir.join("ca.crt").to_string_lossy().into_owned()
    }

    /// Kills the server (its data goes with it: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]);
        match &self.tls {
            None => {
                command.args(["--port", &port]);
            }
            Some(tls) => {
                let file = |name: &str| tls.dir.join(name).to_string_lossy().into_owned();
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-cert-file", &file("server.crt")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.crt")])
                    .args(["--tls-auth-clients", "no"])
                    .args(["--requirepass", tls.password])
                    .args(["--logfile", &file("redis.log")]);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server exited ({status}) instead of listening{}",
                    log_tail(self.tls.as_ref())
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server listens within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(tls) = &self.tls {
            let _ = std::fs::remove_dir_all(&tls.dir);
        }
    }
}

/// A TLS server's log, for a failure message (a plain server logs nowhere).
fn log_tail(tls: Option<&Tls>) -> String {
    tls.and_then(|tls| std::fs::read_to_string(tls.dir.join("redis.log")).ok())
        .map(|log| format!("; its log (it needs TLS support, as Debian's has):\n{log}"))
        .unwrap_or_default()
}

fn installed(program: &str, version_arg: &str) -> bool {
    Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(why: &str) -> Option<RedisServer> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why}; CI must run the shared-state tests"
    );
    eprintln!("\n!!! SKIPPING a shared-state test: {why} !!!\n");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A CA (`ca.crt`) and a server certificate it signed for 127.0.0.1 and localhost
/// (`server.crt`, `server.key`), valid for two days, as a private CA would issue them.
fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        dir,
        &[&["req", "-x509", "-nodes", "-days", "2"], &ec[..]].concat(),
        &[
            "-subj",
            "/CN=dify-bff test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[&["req", "-nodes"], &ec[..]].concat(),
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("the extensions file is written");
    openssl(
        dir,
        &["x509", "-req", "-days", "2", "-in", "server.csr"],
        &[
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

fn openssl(dir: &Path, args: &[&str], more: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .args(more)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
