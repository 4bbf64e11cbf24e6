//! The router under test: the release `switchyard run`, a process of its own, so that its
//! CPU time and memory can be read from /proc apart from the broker and the stand-ins.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RouterProcess {
    child: Child,
    admin: SocketAddr,
}

impl RouterProcess {
    /// Starts `switchyard run --config config` with `env` (the overrides), logging to `log`.
    pub fn spawn(
        config: &Path,
        env: &[(String, String)],
        admin: SocketAddr,
        log: &Path,
    ) -> std::io::Result<RouterProcess> {
        let log = std::fs::File::create(log)?;
        // SWITCHYARD_BENCH_WRAP runs the router under a profiler, e.g. "valgrind
        // --tool=callgrind" (its CPU and RSS numbers are then the profiler's, not the router's).
        let wrap = std::env::var("SWITCHYARD_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let bin = env!("CARGO_BIN_EXE_switchyard");
        let mut command = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(RouterProcess { child, admin })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU seconds the router has used so far (all its threads).
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        cpu_seconds(&self.pid().to_string())
    }

    /// The peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Result<u64, String> {
        switchyard_testkit::probe::peak_rss_bytes(self.pid())
            .ok_or_else(|| "no VmHWM in the router's /proc status".to_string())
    }

    /// Waits until the consumer has partitions assigned (its fetching starts then), asking
    /// the admin server's /metrics every 10 ms.
    pub fn wait_assigned(&mut self, patience: Duration) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("the router exited early ({status}); see its log"));
            }
            if assigned(self.admin).unwrap_or(0) > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no partitions assigned within {patience:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for a clean exit (the final commit happens on the way out).
    pub fn stop(mut self) -> Result<(), String> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the router exited with {status} on SIGTERM"))
        }
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User plus system CPU seconds of process `pid` ("self" for this one) so far.
pub fn cpu_seconds(pid: &str) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(format!("unexpected /proc stat line: {stat}"));
    };
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((user + system) as f64 / hz)
}

/// `switchyard_assigned_partitions` from /metrics, over a bare HTTP/1.0 request.
fn assigned(admin: SocketAddr) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    switchyard_testkit::probe::metric(&text, "switchyard_assigned_partitions").map(|v| v as u64)
}
