//! Throwaway dependency servers a test may stop and start without touching the Redis and
//! PostgreSQL other tests share: a `redis-server` and a private PostgreSQL cluster, each on a
//! free loopback port, removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The `redis-server` binary, when installed.
pub fn redis_binary() -> Option<&'static str> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// A `redis-server` of this test only (no persistence), on its own port; killed on drop.
pub struct ThrowawayRedis {
    binary: &'static str,
    /// Its port on 127.0.0.1 (kept across [`ThrowawayRedis::start`]).
    pub port: u16,
    child: Option<Child>,
}

impl ThrowawayRedis {
    /// Starts one on a free port; None when no `redis-server` binary is installed.
    pub fn spawn() -> Option<Self> {
        let mut r = ThrowawayRedis {
            binary: redis_binary()?,
            port: free_port(),
            child: None,
        };
        r.start();
        Some(r)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): clients see their connections drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts it on the same port and waits until it listens.
    pub fn start(&mut self) {
        self.stop();
        let child = Command::new(self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        assert!(
            wait_listening(self.port, Duration::from_secs(10)),
            "redis-server did not listen on {}",
            self.port
        );
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest PostgreSQL server binaries directory (`/usr/lib/postgresql/N/bin`).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

/// A PostgreSQL cluster of this test only: `initdb` in a temporary directory, started with
/// `pg_ctl` on a free loopback port (trust authentication, `fsync` off), so the test can
/// really stop and restart the server. As root the cluster belongs to the `postgres` user
/// (PostgreSQL refuses to run as root). Stopped and removed on drop.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl PrivatePostgres {
    /// Creates and starts a cluster; None when no PostgreSQL server binaries are installed.
    pub fn spawn() -> Option<Self> {
        let bin = postgres_bin_dir()?;
        let dir =
            std::env::temp_dir().join(format!("orrery_pg_{}_{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
            let gid = Command::new("id").args(["-g", "postgres"]).output().ok()?;
            let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            let gid: u32 = String::from_utf8_lossy(&gid.stdout).trim().parse().ok()?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let pg = PrivatePostgres {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data();
        let status = pg
            .tool("initdb")
            .args(["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed in {}", pg.dir.display());
        pg.start();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        let status = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(
            status.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (`-m fast`: sessions are terminated, new connections refused).
    pub fn stop(&self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// A fresh database on this cluster; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sea_orm::ConnectionTrait;
        let conn = sea_orm::Database::connect(self.admin_url())
            .await
            .expect("connect to the private PostgreSQL");
        conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        conn.close().await.ok();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
