//! `dify-bench suite`: starts the fast upstream, dify-bff and nginx on loopback, pinned with
//! `taskset`, runs scenarios (a)–(d) and prints a Markdown report with every figure and ratio.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;

use crate::procstat;
use crate::stats::{Summary, ms, summarize};
use crate::{json, sse};

pub const API_KEY: &str = "app-BENCHKEY00000000000000000";
const USER: &str = "bench-user";

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// A few seconds per scenario, 200 capacity streams for 5 s: keeps the harness working.
    #[arg(long)]
    pub smoke: bool,
    /// The dify-bff release binary.
    #[arg(long)]
    pub bff_bin: PathBuf,
    #[arg(long, default_value = "nginx")]
    pub nginx_bin: String,
    /// The oha binary; when it is missing the harness's own keep-alive client is used.
    #[arg(long, default_value = "oha")]
    pub oha_bin: String,
    /// CPU for the load generator and the upstream.
    #[arg(long, default_value = "0")]
    pub load_cpu: String,
    /// CPU for the proxy under test (nginx or dify-bff).
    #[arg(long, default_value = "1")]
    pub proxy_cpu: String,
    /// Do not pin anything.
    #[arg(long)]
    pub no_pin: bool,
    /// Scenarios to run, any of a, b, c, d (default all).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d")]
    pub scenarios: Vec<String>,
    /// Concurrent streams for (b).
    #[arg(long, value_delimiter = ',')]
    pub sse_levels: Option<Vec<usize>>,
    /// Rounds of (b): each round runs every level, every path once per level in a rotated
    /// order; the table gives each path's median round (default 3; smoke: 1).
    #[arg(long)]
    pub sse_rounds: Option<usize>,
    /// Write each (b) run's per-event samples (`stamp_ns<TAB>delay_ns`) into this folder,
    /// one file per level, round and path.
    #[arg(long)]
    pub sse_dump: Option<PathBuf>,
    /// Streams held open in (c).
    #[arg(long)]
    pub capacity_streams: Option<usize>,
    /// Seconds the (c) streams are held.
    #[arg(long)]
    pub hold_secs: Option<u64>,
    /// Also hold the (c) streams through nginx and the stack floor (default: yes, except in
    /// smoke mode).
    #[arg(long)]
    pub nginx_capacity: Option<bool>,
    /// Seconds of each (a) measurement.
    #[arg(long)]
    pub json_secs: Option<u64>,
    /// Rounds of (a): each round measures every path once, in a rotated order, and the table
    /// gives each path's median round (default 3; smoke: 1).
    #[arg(long)]
    pub json_rounds: Option<usize>,
    /// Rounds of (d)'s bulk workload: each round measures nginx, dify-bff and the floor once,
    /// in a rotated order; the table gives each path's median round (default 5; smoke: 1).
    #[arg(long)]
    pub bulk_rounds: Option<usize>,
    /// Label for this run (shown in the report and its file name).
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Where to write the Markdown report (default bench/target/results/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Extra environment for dify-bff, `NAME=value` (repeatable).
    #[arg(long = "bff-env")]
    pub bff_env: Vec<String>,
    /// Extra environment for the stack floor, `NAME=value` (repeatable), e.g.
    /// `FLOOR_CLIENT=hyper`.
    #[arg(long = "floor-env")]
    pub floor_env: Vec<String>,
}

/// `NAME=value` arguments of `flag` as pairs.
fn pairs(args: &[String], flag: &str) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .map(|arg| {
            arg.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("{flag} {arg:?} is not NAME=value"))
        })
        .collect()
}

impl Options {
    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// A child process we started; stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill on the id of a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

struct Spawn<'a> {
    name: &'static str,
    cpu: Option<&'a str>,
    program: &'a str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    clear_env: bool,
    dir: &'a Path,
}

fn spawn(s: Spawn<'_>) -> Result<Proc, String> {
    let log = std::fs::File::create(s.dir.join(format!("{}.log", s.name)))
        .map_err(|e| format!("log file for {}: {e}", s.name))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = match s.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(s.program);
            c
        }
        None => Command::new(s.program),
    };
    command
        .args(&s.args)
        .current_dir(s.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if s.clear_env {
        command.env_clear();
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
    }
    command.envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", s.name))?;
    Ok(Proc {
        name: s.name,
        child,
    })
}

async fn wait_for_port(addr: SocketAddr, what: &str, proc: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!("{what} exited early: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what} did not listen on {addr} in time"))
}

/// One GET: status, headers, body.
async fn fetch(
    addr: SocketAddr,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<(hyper::StatusCode, hyper::HeaderMap, bytes::Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let mut request = hyper::Request::get(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    for (n, v) in headers {
        request.headers_mut().insert(n.clone(), v.clone());
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    conn.abort();
    Ok((status, headers, body))
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Direct,
    Nginx,
    Bff,
    /// `floor-proxy`: the fixed stack relaying with nothing of dify-bff's own.
    Floor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Nginx => "nginx",
            Kind::Bff => "dify-bff",
            Kind::Floor => "stack floor",
        }
    }
}

struct Endpoint {
    kind: Kind,
    addr: SocketAddr,
    json_path: String,
    chat_path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The processes under measurement and how to reach them.
struct Bed {
    opts: Options,
    upstream: Proc,
    bff: Proc,
    nginx: Proc,
    floor: Proc,
    endpoints: Vec<Endpoint>,
    report: String,
    /// Where the processes' logs are (dify-bff's access log among them).
    work: PathBuf,
}

impl Bed {
    /// Puts dify-bff's access log on disk before a measurement, so that the kernel's
    /// write-back of an earlier measurement's lines (30 s after they were written) does not
    /// land in this one's window, on whichever path is measured then.
    fn settle(&self) {
        if let Ok(log) = std::fs::File::open(self.work.join("dify-bff.log")) {
            let _ = log.sync_data();
        }
    }

    fn endpoint(&self, kind: Kind) -> &Endpoint {
        self.endpoints
            .iter()
            .find(|e| e.kind == kind)
            .expect("every kind has an endpoint")
    }

    /// Processes whose CPU counts as the proxy's: dify-bff, or nginx's master and workers.
    fn proxy_pids(&self, kind: Kind) -> Vec<u32> {
        match kind {
            Kind::Direct => vec![],
            Kind::Bff => vec![self.bff.pid()],
            Kind::Floor => vec![self.floor.pid()],
            Kind::Nginx => {
                let mut pids = vec![self.nginx.pid()];
                pids.extend(procstat::children(self.nginx.pid()));
                pids
            }
        }
    }

    fn all_pids(&self) -> Vec<u32> {
        let mut pids = vec![
            std::process::id(),
            self.upstream.pid(),
            self.bff.pid(),
            self.floor.pid(),
        ];
        pids.extend(self.proxy_pids(Kind::Nginx));
        pids
    }

    fn line(&mut self, text: &str) {
        println!("{text}");
        self.report.push_str(text);
        self.report.push('\n');
    }
}

fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|&p| procstat::cpu_time(p)).sum()
}

fn rss_of(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| procstat::rss_kib(p)).sum()
}

/// CPU use over one measurement: the proxy's, and everyone else's on the machine (other
/// engineers' builds, say), from /proc/stat minus our own processes.
struct CpuWindow {
    started: Instant,
    proxy: Duration,
    ours: Duration,
    busy: Duration,
    children: Duration,
    proxy_pids: Vec<u32>,
    all_pids: Vec<u32>,
}

struct CpuUse {
    elapsed: Duration,
    proxy: Duration,
    /// Cores' worth of CPU used by processes that are not part of the benchmark.
    foreign_cores: f64,
}

impl CpuWindow {
    fn start(bed: &Bed, kind: Kind) -> CpuWindow {
        let proxy_pids = bed.proxy_pids(kind);
        let all_pids = bed.all_pids();
        CpuWindow {
            started: Instant::now(),
            proxy: cpu_of(&proxy_pids),
            ours: cpu_of(&all_pids),
            busy: procstat::machine_busy(),
            children: procstat::children_cpu(),
            proxy_pids,
            all_pids,
        }
    }

    fn stop(self) -> CpuUse {
        let elapsed = self.started.elapsed();
        let proxy = cpu_of(&self.proxy_pids).saturating_sub(self.proxy);
        let ours = cpu_of(&self.all_pids).saturating_sub(self.ours)
            + procstat::children_cpu().saturating_sub(self.children);
        let busy = procstat::machine_busy().saturating_sub(self.busy);
        CpuUse {
            elapsed,
            proxy,
            foreign_cores: busy.saturating_sub(ours).as_secs_f64() / elapsed.as_secs_f64(),
        }
    }
}

pub async fn run(opts: Options) -> Result<(), String> {
    let started = Instant::now();
    let work = crate::bench_dir().join("target").join("run");
    let nginx_prefix = work.join("nginx");
    for dir in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(nginx_prefix.join(dir)).map_err(|e| e.to_string())?;
    }
    let pin = |cpu: &str| (!opts.no_pin).then(|| cpu.to_owned());
    let load_cpu = pin(&opts.load_cpu);
    let proxy_cpu = pin(&opts.proxy_cpu);
    let self_exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let self_exe = self_exe.to_string_lossy().into_owned();

    let up_port = free_port()?;
    let bff_port = free_port()?;
    let ngx_port = free_port()?;
    let floor_port = free_port()?;
    let up_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, up_port));
    let bff_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, bff_port));
    let ngx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ngx_port));
    let floor_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, floor_port));

    let mut upstream = spawn(Spawn {
        name: "upstream",
        cpu: load_cpu.as_deref(),
        program: &self_exe,
        args: vec![
            "upstream".into(),
            "--listen".into(),
            up_addr.to_string(),
            "--key".into(),
            API_KEY.into(),
        ],
        env: vec![],
        clear_env: false,
        dir: &work,
    })?;
    wait_for_port(up_addr, "the upstream", &mut upstream).await?;

    let mut bff_env: Vec<(String, String)> = [
        ("DIFY_BASE_URL", format!("http://{up_addr}/v1")),
        ("DIFY_API_KEY", API_KEY.to_owned()),
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", bff_port.to_string()),
        ("RATE_LIMIT_PER_MINUTE", "0".to_owned()),
        ("MAX_STREAMS_PER_IDENTITY", "100000".to_owned()),
        ("MAX_CONCURRENT_STREAMS", "10000".to_owned()),
        (
            "SESSION_SECRET",
            "bench-secret-0123456789abcdef0123456789".to_owned(),
        ),
        // All load comes from one address (127.0.0.1), standing in for many browsers.
        ("MAX_CONNECTIONS_PER_PEER", "0".to_owned()),
        ("SHUTDOWN_GRACE_SECS", "1".to_owned()),
        // No RUST_LOG: the default level (INFO, one access-log line per request, to a file),
        // as deployed; `--bff-env RUST_LOG=warn` measures without the access log.
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    bff_env.extend(pairs(&opts.bff_env, "--bff-env")?);
    let bff_bin = std::fs::canonicalize(&opts.bff_bin)
        .map_err(|e| format!("{}: {e}", opts.bff_bin.display()))?
        .to_string_lossy()
        .into_owned();
    let mut bff = spawn(Spawn {
        name: "dify-bff",
        cpu: proxy_cpu.as_deref(),
        program: &bff_bin,
        args: vec![],
        env: bff_env,
        clear_env: true,
        dir: &work,
    })?;
    wait_for_port(bff_addr, "dify-bff", &mut bff).await?;

    let template = std::fs::read_to_string(crate::bench_dir().join("nginx.conf"))
        .map_err(|e| format!("reading bench/nginx.conf: {e}"))?;
    let conf = template
        .replace("@PREFIX@", &nginx_prefix.to_string_lossy())
        .replace("@UPSTREAM_PORT@", &up_port.to_string())
        .replace("@NGINX_PORT@", &ngx_port.to_string())
        .replace("@API_KEY@", API_KEY);
    let conf_path = nginx_prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let mut nginx = spawn(Spawn {
        name: "nginx",
        cpu: proxy_cpu.as_deref(),
        program: &opts.nginx_bin,
        args: vec![
            "-p".into(),
            nginx_prefix.to_string_lossy().into_owned(),
            "-e".into(),
            nginx_prefix
                .join("error.log")
                .to_string_lossy()
                .into_owned(),
            "-c".into(),
            conf_path.to_string_lossy().into_owned(),
        ],
        env: vec![],
        clear_env: false,
        dir: &work,
    })?;
    wait_for_port(ngx_addr, "nginx", &mut nginx).await?;

    let floor_bin = std::path::Path::new(&self_exe).with_file_name("floor-proxy");
    let mut floor = spawn(Spawn {
        name: "floor-proxy",
        cpu: proxy_cpu.as_deref(),
        program: &floor_bin.to_string_lossy(),
        args: vec![
            floor_addr.to_string(),
            format!("http://{up_addr}/v1"),
            API_KEY.into(),
        ],
        env: pairs(&opts.floor_env, "--floor-env")?,
        clear_env: true,
        dir: &work,
    })?;
    wait_for_port(floor_addr, "floor-proxy", &mut floor).await?;

    // dify-bff gives a fresh identity (and cookie) to a request without one; a browser keeps
    // its cookie, so the load does too.
    let (status, headers, bff_body) = fetch(bff_addr, "/conversations", &[]).await?;
    if status != 200 {
        return Err(format!("dify-bff GET /conversations: {status}"));
    }
    let cookie = headers
        .get(hyper::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("dify-bff gave no cookie")?
        .to_owned();
    let auth = (
        hyper::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {API_KEY}")).map_err(|e| e.to_string())?,
    );
    let user_query = format!("?user={USER}");
    let endpoints = vec![
        Endpoint {
            kind: Kind::Direct,
            addr: up_addr,
            json_path: format!("/v1/conversations{user_query}"),
            chat_path: "/v1/chat-messages".into(),
            headers: vec![auth],
        },
        Endpoint {
            kind: Kind::Nginx,
            addr: ngx_addr,
            json_path: format!("/conversations{user_query}"),
            chat_path: "/chat".into(),
            headers: vec![],
        },
        Endpoint {
            kind: Kind::Bff,
            addr: bff_addr,
            json_path: "/conversations".into(),
            chat_path: "/chat".into(),
            headers: vec![(
                hyper::header::COOKIE,
                HeaderValue::from_str(&cookie).map_err(|e| e.to_string())?,
            )],
        },
        Endpoint {
            kind: Kind::Floor,
            addr: floor_addr,
            json_path: "/conversations".into(),
            chat_path: "/chat".into(),
            headers: vec![],
        },
    ];
    let mut bed = Bed {
        opts: opts.clone(),
        upstream,
        bff,
        nginx,
        floor,
        endpoints,
        report: String::new(),
        work: work.clone(),
    };

    // Every route answers the same bytes through every path.
    for kind in [Kind::Direct, Kind::Nginx, Kind::Floor] {
        let e = bed.endpoint(kind);
        let (status, _, body) = fetch(e.addr, &e.json_path, &e.headers).await?;
        if status != 200 || body != bff_body {
            return Err(format!(
                "{} GET conversations differs from dify-bff's ({status}, {} bytes vs {})",
                kind.name(),
                body.len(),
                bff_body.len()
            ));
        }
    }

    header(&mut bed, up_addr, bff_addr, ngx_addr, bff_body.len());
    if opts.wants("a") {
        scenario_a(&mut bed).await?;
    }
    let mut sse_1000 = None;
    if opts.wants("b") {
        sse_1000 = scenario_b(&mut bed).await?;
    }
    if opts.wants("c") {
        scenario_c(&mut bed).await?;
    }
    if opts.wants("d") {
        scenario_d(&mut bed, sse_1000).await?;
    }
    let load = procstat::load1();
    bed.line(&format!(
        "\nFinished in {:.0} s; load average (1 min) at the end: {load:.2}.",
        started.elapsed().as_secs_f64()
    ));

    let out = match &opts.out {
        Some(path) => path.clone(),
        None => {
            let dir = crate::bench_dir().join("target").join("results");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            dir.join(format!(
                "{}-{}{}.md",
                crate::unix_nanos() / 1_000_000_000,
                opts.label,
                if opts.smoke { "-smoke" } else { "" }
            ))
        }
    };
    std::fs::write(&out, &bed.report).map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!("\nReport written to {}", out.display());
    Ok(())
}

fn header(bed: &mut Bed, up: SocketAddr, bff: SocketAddr, ngx: SocketAddr, json_len: usize) {
    let opts = bed.opts.clone();
    bed.line(&format!(
        "# dify-bench {} ({})\n",
        opts.label,
        if opts.smoke { "smoke" } else { "full" }
    ));
    bed.line(&format!(
        "upstream {up}, dify-bff {bff}, nginx {ngx}; JSON answer {json_len} bytes; pinning: {}; load average (1 min) at start {:.2}.",
        if opts.no_pin {
            "none".to_owned()
        } else {
            format!(
                "load generator + upstream on CPU {}, proxy under test on CPU {}",
                opts.load_cpu, opts.proxy_cpu
            )
        },
        procstat::load1()
    ));
    bed.line(
        "\"other CPU\" = cores' worth of CPU used during the measurement by processes outside the benchmark (should be ~0).",
    );
}

/// The proxy's CPU time per request of one measurement, in µs.
fn cpu_per_request(r: &JsonResult) -> f64 {
    r.cpu.proxy.as_secs_f64() * 1e6 / (r.rps * r.cpu.elapsed.as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

struct JsonResult {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    cpu: CpuUse,
}

fn oha_available(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn json_load(
    bed: &Bed,
    kind: Kind,
    connections: usize,
    secs: u64,
    use_oha: bool,
) -> Result<JsonResult, String> {
    let e = bed.endpoint(kind);
    bed.settle();
    let window = CpuWindow::start(bed, kind);
    if use_oha {
        let url = format!("http://{}{}", e.addr, e.json_path);
        let mut command = Command::new(&bed.opts.oha_bin);
        command.args([
            "-c",
            &connections.to_string(),
            "-z",
            &format!("{secs}s"),
            "--no-tui",
            "--output-format",
            "json",
        ]);
        for (n, v) in &e.headers {
            command
                .arg("-H")
                .arg(format!("{}: {}", n, v.to_str().unwrap_or_default()));
        }
        command.arg(&url);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("running oha: {e}"))?;
        let cpu = window.stop();
        if !output.status.success() {
            return Err(format!(
                "oha failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("oha output is not JSON: {e}"))?;
        let ok = v["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
        let all: u64 = v["statusCodeDistribution"]
            .as_object()
            .map(|m| m.values().filter_map(|x| x.as_u64()).sum())
            .unwrap_or(0);
        // Requests cut off by the end of the run (`-z`) are not errors.
        let failed: u64 = v["errorDistribution"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !k.contains("aborted due to deadline"))
                    .filter_map(|(_, x)| x.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        let pct = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
        Ok(JsonResult {
            rps: ok as f64 / cpu.elapsed.as_secs_f64().max(secs as f64),
            p50: pct("p50"),
            p99: pct("p99"),
            errors: all - ok + failed,
            cpu,
        })
    } else {
        let target = Arc::new(json::Target {
            addr: e.addr,
            path_and_query: e.json_path.clone(),
            headers: e.headers.clone(),
        });
        let o = json::run(target, connections, Duration::from_secs(secs)).await;
        let cpu = window.stop();
        Ok(JsonResult {
            rps: o.rps(),
            p50: o.latency.p50 as f64 / 1e6,
            p99: o.latency.p99 as f64 / 1e6,
            errors: o.errors,
            cpu,
        })
    }
}

async fn scenario_a(bed: &mut Bed) -> Result<(), String> {
    let smoke = bed.opts.smoke;
    let secs = bed.opts.json_secs.unwrap_or(if smoke { 2 } else { 10 });
    let warm = if smoke { 1 } else { 2 };
    let use_oha = oha_available(&bed.opts.oha_bin);
    let tool = if use_oha {
        "oha"
    } else {
        "dify-bench's own keep-alive client (oha not found)"
    };
    bed.line(&format!(
        "\n## (a) JSON relay: GET /conversations (~2 KB), 64 connections, {secs} s each, load from {tool}\n"
    ));
    bed.line(&format!(
        "load average (1 min) before: {:.2}\n",
        procstat::load1()
    ));
    let rounds = bed
        .opts
        .json_rounds
        .unwrap_or(if smoke { 1 } else { 5 })
        .max(1);
    let kinds = [Kind::Direct, Kind::Nginx, Kind::Bff, Kind::Floor];
    for kind in kinds {
        json_load(bed, kind, 64, warm, use_oha).await?;
    }
    let mut rounds_of: BTreeMap<Kind, Vec<JsonResult>> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..kinds.len() {
            let kind = kinds[(i + round) % kinds.len()];
            let r = json_load(bed, kind, 64, secs, use_oha).await?;
            rounds_of.entry(kind).or_default().push(r);
        }
    }
    let column = |kind: Kind| rounds_of[&kind].iter();
    let per_round = column(Kind::Direct)
        .zip(column(Kind::Nginx))
        .zip(column(Kind::Bff).zip(column(Kind::Floor)));
    let (mut rps_ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    let (mut bff_added, mut floor_added) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for (round, ((direct, nginx), (bff, floor))) in per_round.enumerate() {
        let (bff_cpu, floor_cpu) = (cpu_per_request(bff), cpu_per_request(floor));
        let (bff_p99, floor_p99) = (bff.p99 - direct.p99, floor.p99 - direct.p99);
        rps_ratios.push(bff.rps / floor.rps);
        cpu_ratios.push(bff_cpu / floor_cpu);
        bff_added.push(bff_p99);
        floor_added.push(floor_p99);
        rows.push(format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {bff_cpu:.1} | {floor_cpu:.1} | {:.2}× | {bff_p99:.3} | {floor_p99:.3} |",
            round + 1,
            direct.rps,
            nginx.rps,
            bff.rps,
            floor.rps,
            bff.rps / floor.rps,
            bff_cpu / floor_cpu
        ));
    }
    let (rps_ratio, cpu_ratio) = (median(&mut rps_ratios), median(&mut cpu_ratios));
    let (added_bff, added_floor) = (median(&mut bff_added), median(&mut floor_added));
    if rounds > 1 {
        bed.line(&format!(
            "{rounds} rounds of {secs} s per path, each round in a rotated order (direct, nginx, dify-bff, floor, then starting one later); requests/s per round, and the added p99 (the path's p99 minus the same round's direct p99):\n"
        ));
        bed.line("| round | direct | nginx | dify-bff | stack floor | dify-bff / floor | dify-bff CPU µs/request | floor CPU µs/request | CPU dify-bff / floor | dify-bff added p99 ms | floor added p99 ms |");
        bed.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &rows {
            bed.line(row);
        }
        bed.line(&format!(
            "\nMedian of the rounds' ratios dify-bff / floor: requests/s {rps_ratio:.2}×, CPU per request {cpu_ratio:.2}×. Median of the rounds' added p99: dify-bff {added_bff:.3} ms, floor {added_floor:.3} ms."
        ));
        bed.line("\nEach path's median round (by requests/s):\n");
    }
    let mut results = BTreeMap::new();
    for (kind, mut runs) in rounds_of {
        runs.sort_by(|x, y| x.rps.total_cmp(&y.rps));
        let median = runs.swap_remove(runs.len() / 2);
        results.insert(kind, median);
    }
    bed.line("| path | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors | proxy CPU (cores) | proxy CPU µs/request | other CPU |");
    bed.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for kind in kinds {
        let r = &results[&kind];
        let (added50, added99) = match results.get(&Kind::Direct) {
            Some(d) if kind != Kind::Direct => (
                format!("{:.3}", r.p50 - d.p50),
                format!("{:.3}", r.p99 - d.p99),
            ),
            _ => ("–".into(), "–".into()),
        };
        let requests = r.rps * r.cpu.elapsed.as_secs_f64();
        let per_request = if kind == Kind::Direct {
            "–".to_owned()
        } else {
            format!("{:.1}", r.cpu.proxy.as_secs_f64() * 1e6 / requests)
        };
        let proxy_cores = if kind == Kind::Direct {
            "–".to_owned()
        } else {
            format!(
                "{:.2}",
                r.cpu.proxy.as_secs_f64() / r.cpu.elapsed.as_secs_f64()
            )
        };
        bed.line(&format!(
            "| {} | {:.0} | {:.3} | {:.3} | {added50} | {added99} | {} | {proxy_cores} | {per_request} | {:.2} |",
            kind.name(),
            r.rps,
            r.p50,
            r.p99,
            r.errors,
            r.cpu.foreign_cores
        ));
    }
    let (d, n, b, f) = (
        &results[&Kind::Direct],
        &results[&Kind::Nginx],
        &results[&Kind::Bff],
        &results[&Kind::Floor],
    );
    bed.line(&format!(
        "\nRatios: dify-bff/nginx requests/s **{:.2}×**; nginx/direct {:.2}×; dify-bff/direct {:.2}×; added p99: dify-bff {:.3} ms vs nginx {:.3} ms. The stack floor (no dify-bff code) reaches {:.2}× nginx; dify-bff reaches {:.2}× the floor.",
        b.rps / n.rps,
        n.rps / d.rps,
        b.rps / d.rps,
        b.p99 - d.p99,
        n.p99 - d.p99,
        f.rps / n.rps,
        b.rps / f.rps
    ));
    let met = b.rps >= n.rps && (b.p99 - d.p99) <= (n.p99 - d.p99) && b.errors == 0;
    bed.line(&format!(
        "Goal (a) throughput ≥ 1.0× nginx and added p99 ≤ nginx's: **{}**",
        if met { "met" } else { "not met" }
    ));
    let own = rps_ratio >= 0.95 && added_bff <= 1.1 * added_floor && b.errors == 0;
    bed.line(&format!(
        "Our own overhead (issue 20), medians over the rounds: dify-bff {rps_ratio:.2}× the floor's requests/s (goal ≥ 0.95×), added p99 {added_bff:.3} ms against the floor's {added_floor:.3} (goal ≤ +10 %): **{}**",
        if own { "met" } else { "not met" }
    ));
    Ok(())
}

struct SseRun {
    outcome: sse::Outcome,
    /// The per-event delays, in the order of `outcome.stamps`.
    delays: Vec<u64>,
    ttfe: Summary,
    delay: Summary,
    cpu: CpuUse,
}

async fn sse_load(bed: &Bed, kind: Kind, load: sse::Load) -> SseRun {
    let e = bed.endpoint(kind);
    let target = Arc::new(sse::Target {
        addr: e.addr,
        path: e.chat_path.clone(),
        headers: e.headers.clone(),
    });
    bed.settle();
    let window = CpuWindow::start(bed, kind);
    let mut outcome = sse::run(target, load, Arc::default()).await;
    let cpu = window.stop();
    let ttfe = summarize(std::mem::take(&mut outcome.ttfe));
    let delays = std::mem::take(&mut outcome.delays);
    let delay = summarize(delays.clone());
    SseRun {
        outcome,
        delays,
        ttfe,
        delay,
        cpu,
    }
}

pub fn print_sse_outcome(o: &sse::Outcome) {
    let ttfe = summarize(o.ttfe.clone());
    let delay = summarize(o.delays.clone());
    println!(
        "{} streams completed, {} errors, {} events, {} bytes in {:.1} s",
        o.completed,
        o.errors.len(),
        o.events,
        o.bytes,
        o.elapsed.as_secs_f64()
    );
    println!(
        "time to first event ms: p50 {} p99 {} max {}",
        ms(ttfe.p50),
        ms(ttfe.p99),
        ms(ttfe.max)
    );
    println!(
        "per-event delay ms ({} samples): p50 {} p99 {} p99.9 {} max {}",
        delay.n,
        ms(delay.p50),
        ms(delay.p99),
        ms(delay.p999),
        ms(delay.max)
    );
    if let Some(e) = o.errors.first() {
        println!("first error: {e}");
    }
}

/// Writes one (b) run's samples, `stamp_ns<TAB>delay_ns` a line, in the order received per stream.
fn dump_samples(dir: &Path, name: &str, o: &sse::Outcome, delays: &[u64]) -> Result<(), String> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut text = String::with_capacity(delays.len() * 32);
    for (t, d) in o.stamps.iter().zip(delays) {
        let _ = writeln!(text, "{t}\t{d}");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The round whose `key` is the median of `runs`' (the lower middle one for an even count).
fn median_round<T>(runs: &[T], key: impl Fn(&T) -> f64) -> usize {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&x, &y| key(&runs[x]).total_cmp(&key(&runs[y])));
    order[(order.len() - 1) / 2]
}

/// One level's runs of one round, by path.
type Round = BTreeMap<Kind, SseRun>;

/// The added p99 of `kind` in `round` (its p99 minus the same round's direct p99), in ms.
fn added_p99(round: &Round, kind: Kind) -> f64 {
    (round[&kind].delay.p99 as f64 - round[&Kind::Direct].delay.p99 as f64) / 1e6
}

/// Returns the 1,000-stream (or largest) level's median-round runs of each path for (d).
/// The top level of (b), for (d): each path's median round, and every round's CPU per MB.
struct TokenRuns {
    streams: usize,
    chosen: BTreeMap<Kind, SseRun>,
    per_mb: Vec<BTreeMap<Kind, f64>>,
}

/// The proxy's CPU time per relayed MB of one run, in ms.
fn cpu_per_mb(run: &SseRun) -> f64 {
    run.cpu.proxy.as_secs_f64() * 1e3 / (run.outcome.bytes as f64 / 1e6).max(1e-9)
}

async fn scenario_b(bed: &mut Bed) -> Result<Option<TokenRuns>, String> {
    let smoke = bed.opts.smoke;
    let levels = bed.opts.sse_levels.clone().unwrap_or(if smoke {
        vec![1, 100]
    } else {
        vec![1, 100, 1000]
    });
    let rounds = bed
        .opts
        .sse_rounds
        .unwrap_or(if smoke { 1 } else { 3 })
        .max(1);
    // 5 events/s per stream: at 1,000 streams that is 5,000 events/s, which CPU 0 (load
    // generator + upstream) sustains on this machine with room to spare (20/s saturated it).
    let interval = Duration::from_millis(if smoke { 20 } else { 200 });
    let answer_bytes = 16;
    bed.line(&format!(
        "\n## (b) SSE relay: time to first event and per-event delay\n\nEach stream is a fresh connection; the upstream sends message events every {} ms ({} B answers, ~330 B events) and message_end; delay = client receive time − the upstream's send stamp. \"added\" = the same percentile minus the direct path's in the same round. {rounds} round(s): each round runs every level, and at each level every path once, in a rotated order (direct, nginx, dify-bff, floor, then starting one later).\n",
        interval.as_millis(),
        answer_bytes
    ));
    bed.line(&format!(
        "load average (1 min) before: {:.2}\n",
        procstat::load1()
    ));
    let kinds = [Kind::Direct, Kind::Nginx, Kind::Bff, Kind::Floor];
    // by level: the rounds, each a map by path
    let mut by_level: BTreeMap<usize, Vec<Round>> = BTreeMap::new();
    for round in 0..rounds {
        for &streams in &levels {
            let (repeat, events, ramp) = match (smoke, streams) {
                (true, 1) => (3, 10, Duration::ZERO),
                (true, _) => (1, 15, Duration::from_millis(200)),
                // Five single streams per path in all, whatever the rounds.
                (false, 1) => (5usize.div_ceil(rounds), 15, Duration::ZERO),
                (false, _) => (1, 15, Duration::from_secs(2)),
            };
            let load = sse::Load {
                streams,
                repeat,
                events,
                interval,
                answer_bytes,
                ramp,
            };
            let mut runs = Round::new();
            for i in 0..kinds.len() {
                let kind = kinds[(i + round) % kinds.len()];
                let run = sse_load(bed, kind, load.clone()).await;
                if let Some(dir) = &bed.opts.sse_dump {
                    let name = format!(
                        "{}-{streams}-r{}-{}.tsv",
                        bed.opts.label,
                        round + 1,
                        kind.name().replace(' ', "-")
                    );
                    dump_samples(dir, &name, &run.outcome, &run.delays)?;
                }
                runs.insert(kind, run);
            }
            by_level.entry(streams).or_default().push(runs);
        }
    }
    if rounds > 1 {
        bed.line("Added per-event delay p99 (ms) in each round (direct: its own p99):\n");
        bed.line("| streams | round | direct p99 | nginx | dify-bff | stack floor | dify-bff − floor | errors |");
        bed.line("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (&streams, level) in &by_level {
            for (i, round) in level.iter().enumerate() {
                let errors: usize = round.values().map(|r| r.outcome.errors.len()).sum();
                bed.line(&format!(
                    "| {streams} | {} | {} | {:.3} | {:.3} | {:.3} | {:+.3} | {errors} |",
                    i + 1,
                    ms(round[&Kind::Direct].delay.p99),
                    added_p99(round, Kind::Nginx),
                    added_p99(round, Kind::Bff),
                    added_p99(round, Kind::Floor),
                    added_p99(round, Kind::Bff) - added_p99(round, Kind::Floor),
                ));
            }
        }
        bed.line("\nEach path's median round at each level (by added p99; direct by its p99), with the direct run of that same round:\n");
    }
    bed.line("| streams | path | round | streams done | errors | TTFE p50 ms | TTFE p99 ms | delay p50 ms | delay p99 ms | delay p99.9 ms | delay max ms | added p50 ms | added p99 ms | proxy CPU (cores) | other CPU |");
    bed.line("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let max_level = levels.iter().copied().max().unwrap_or(0);
    let mut goal = None;
    let mut last = None;
    for (streams, mut level) in by_level {
        let mut chosen = BTreeMap::new();
        for kind in kinds {
            let i = if kind == Kind::Direct {
                median_round(&level, |r| r[&Kind::Direct].delay.p99 as f64)
            } else {
                median_round(&level, |r| added_p99(r, kind))
            };
            chosen.insert(kind, i);
            let round = &level[i];
            let run = &round[&kind];
            let direct = &round[&Kind::Direct].delay;
            let added = |f: fn(&Summary) -> u64| {
                if kind == Kind::Direct {
                    "–".to_owned()
                } else {
                    format!("{:.3}", (f(&run.delay) as f64 - f(direct) as f64) / 1e6)
                }
            };
            let proxy_cores = if kind == Kind::Direct {
                "–".to_owned()
            } else {
                format!(
                    "{:.2}",
                    run.cpu.proxy.as_secs_f64() / run.cpu.elapsed.as_secs_f64()
                )
            };
            bed.line(&format!(
                "| {streams} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {proxy_cores} | {:.2} |",
                kind.name(),
                i + 1,
                run.outcome.completed,
                run.outcome.errors.len(),
                ms(run.ttfe.p50),
                ms(run.ttfe.p99),
                ms(run.delay.p50),
                ms(run.delay.p99),
                ms(run.delay.p999),
                ms(run.delay.max),
                added(|s| s.p50),
                added(|s| s.p99),
                run.cpu.foreign_cores
            ));
        }
        for (i, round) in level.iter().enumerate() {
            for (kind, run) in round {
                if let Some(e) = run.outcome.errors.first() {
                    bed.line(&format!(
                        "\n{} (round {}) first error: {e}\n",
                        kind.name(),
                        i + 1
                    ));
                }
            }
        }
        if streams == max_level {
            let errors: usize = level
                .iter()
                .flat_map(|round| round.values())
                .map(|r| r.outcome.errors.len())
                .sum();
            let bff = added_p99(&level[chosen[&Kind::Bff]], Kind::Bff);
            let floor = added_p99(&level[chosen[&Kind::Floor]], Kind::Floor);
            let nginx = added_p99(&level[chosen[&Kind::Nginx]], Kind::Nginx);
            let mut differences: Vec<f64> = level
                .iter()
                .map(|r| added_p99(r, Kind::Bff) - added_p99(r, Kind::Floor))
                .collect();
            let within = differences.iter().filter(|&&d| d <= 1.0).count();
            goal = Some((
                streams,
                bff,
                floor,
                nginx,
                median(&mut differences),
                within,
                errors,
            ));
            let per_mb = level
                .iter()
                .map(|round| round.iter().map(|(k, run)| (*k, cpu_per_mb(run))).collect())
                .collect();
            let mut runs = BTreeMap::new();
            for (kind, i) in chosen {
                if let Some(run) = level[i].remove(&kind) {
                    runs.insert(kind, run);
                }
            }
            last = Some(TokenRuns {
                streams,
                chosen: runs,
                per_mb,
            });
        }
    }
    if let Some((streams, bff, floor, nginx, difference, within, errors)) = goal {
        let verdict = |met: bool| {
            if streams < 1000 {
                "not measured at 1,000 (smoke)"
            } else if met && errors == 0 {
                "met"
            } else {
                "not met"
            }
        };
        bed.line(&format!(
            "\nGoal (b), issue 20: added per-event p99 at 1,000 streams ≤ the floor's + 1 ms. At {streams} streams, median rounds: dify-bff {bff:.3} ms, floor {floor:.3} ms ({:+.3} ms), {errors} errors: **{}**. The rounds' own differences dify-bff − floor: median {difference:+.3} ms, ≤ +1 ms in {within} of {rounds}.",
            bff - floor,
            verdict(bff <= floor + 1.0)
        ));
        bed.line(&format!(
            "Stretch: added p99 ≤ nginx's ({nginx:.3} ms, median round): **{}**",
            verdict(bff <= nginx)
        ));
    }
    Ok(last)
}

async fn scenario_c(bed: &mut Bed) -> Result<(), String> {
    let smoke = bed.opts.smoke;
    let streams = bed
        .opts
        .capacity_streams
        .unwrap_or(if smoke { 200 } else { 9000 });
    let hold = Duration::from_secs(bed.opts.hold_secs.unwrap_or(if smoke { 5 } else { 60 }));
    let ramp = Duration::from_millis(if smoke { 1000 } else { 20_000 });
    let with_nginx = bed.opts.nginx_capacity.unwrap_or(!smoke);
    bed.line(&format!(
        "\n## (c) Capacity: {streams} concurrent streams, one event per second each, held {} s\n\nStreams open over {} s (the hold starts once all are open, at most 10 s later), are all held open for {} s, then end with message_end. Memory: VmRSS from /proc/PID/status (nginx: master + worker). Per stream = (RSS while holding − RSS before) / streams.\n",
        hold.as_secs(),
        ramp.as_secs(),
        hold.as_secs()
    ));
    bed.line(&format!(
        "load average (1 min) before: {:.2}\n",
        procstat::load1()
    ));
    bed.line("| path | streams | errors | RSS before MiB | RSS held MiB (max) | KiB per stream | total RSS / stream KiB | CPU while holding (cores) | CPU µs/event | delay p50 ms | delay p99 ms | other CPU |");
    bed.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut kinds = vec![Kind::Bff];
    if with_nginx {
        kinds.extend([Kind::Nginx, Kind::Floor]);
    }
    let mut bff_result = None;
    for kind in kinds {
        let pids = bed.proxy_pids(kind);
        let before = rss_of(&pids);
        let e = bed.endpoint(kind);
        let target = Arc::new(sse::Target {
            addr: e.addr,
            path: e.chat_path.clone(),
            headers: e.headers.clone(),
        });
        // Streams last long enough to cover the ramp, up to 10 s of waiting for the last
        // ones to open, and the hold.
        let settle = Duration::from_secs(10);
        let events = (ramp + settle + hold).as_secs() + 5;
        let load = sse::Load {
            streams,
            repeat: 1,
            events,
            interval: Duration::from_secs(1),
            answer_bytes: 16,
            ramp,
        };
        let progress = Arc::new(sse::Progress::default());
        let task = tokio::spawn(sse::run(target, load, progress.clone()));
        let ramp_end = Instant::now() + ramp;
        tokio::time::sleep_until(ramp_end.into()).await;
        while progress.open.load(Ordering::Relaxed) + progress.errors.load(Ordering::Relaxed)
            < streams
            && ramp_end.elapsed() < settle
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let open_at_start = progress.open.load(Ordering::Relaxed);
        let window = CpuWindow::start(bed, kind);
        let events_before = progress.events.load(Ordering::Relaxed);
        let mut peak = 0;
        let hold_end = Instant::now() + hold;
        let mut min_open = open_at_start;
        while Instant::now() < hold_end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak = peak.max(rss_of(&pids));
            min_open = min_open.min(progress.open.load(Ordering::Relaxed));
        }
        let held = rss_of(&pids);
        peak = peak.max(held);
        let events_held = progress.events.load(Ordering::Relaxed) - events_before;
        let cpu = window.stop();
        let mut outcome = task.await.map_err(|e| e.to_string())?;
        let delay = summarize(std::mem::take(&mut outcome.delays));
        let mut errors = outcome.errors.len();
        if min_open < streams {
            bed.line(&format!(
                "\n{}: only {min_open} of {streams} streams were open throughout the hold (at its start {open_at_start}).\n",
                kind.name()
            ));
            errors = errors.max(streams - min_open.min(streams));
        }
        let per_stream = (held.saturating_sub(before)) as f64 / streams as f64;
        let total_per_stream = held as f64 / streams as f64;
        bed.line(&format!(
            "| {} | {} | {errors} | {:.1} | {:.1} ({:.1}) | **{per_stream:.1}** | {total_per_stream:.1} | {:.3} | {:.1} | {} | {} | {:.2} |",
            kind.name(),
            outcome.completed,
            before as f64 / 1024.0,
            held as f64 / 1024.0,
            peak as f64 / 1024.0,
            cpu.proxy.as_secs_f64() / cpu.elapsed.as_secs_f64(),
            cpu.proxy.as_secs_f64() * 1e6 / events_held.max(1) as f64,
            ms(delay.p50),
            ms(delay.p99),
            cpu.foreign_cores
        ));
        if let Some(e) = outcome.errors.first() {
            bed.line(&format!(
                "\n{} first error ({} in all): {e}\n",
                kind.name(),
                outcome.errors.len()
            ));
        }
        if kind == Kind::Bff {
            bff_result = Some((errors, per_stream));
        }
        // Let the last streams' sockets close before the next run.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some((errors, per_stream)) = bff_result {
        let limit = 20_000u64;
        bed.line(&format!(
            "\nGoal (c) {streams} streams with 0 errors and ≤ 15 KiB per stream: dify-bff {errors} errors, {per_stream:.1} KiB per stream: **{}**. With the open-file limit at {limit}, one process holds (limit − 64) / 2 = {} streams; memory at this rate would allow ≈ {:.0} streams per GiB.",
            if errors == 0 && per_stream <= 15.0 && streams >= 9000 {
                "met"
            } else if streams < 9000 {
                "not measured at 9,000 (smoke)"
            } else {
                "not met"
            },
            (limit - 64) / 2,
            1024.0 * 1024.0 / per_stream.max(0.001)
        ));
    }
    Ok(())
}

async fn scenario_d(bed: &mut Bed, sse: Option<TokenRuns>) -> Result<(), String> {
    let smoke = bed.opts.smoke;
    bed.line("\n## (d) CPU time per relayed MB of stream\n");
    bed.line(&format!(
        "load average (1 min) before: {:.2}\n",
        procstat::load1()
    ));
    bed.line("| workload | path | MB relayed | events | proxy CPU s | CPU ms per MB | CPU µs per event | errors | other CPU |");
    bed.line("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let row = |bed: &mut Bed, workload: &str, kind: Kind, run: &SseRun| {
        let mb = run.outcome.bytes as f64 / 1e6;
        bed.line(&format!(
            "| {workload} | {} | {mb:.1} | {} | {:.3} | {:.1} | {:.2} | {} | {:.2} |",
            kind.name(),
            run.outcome.events,
            run.cpu.proxy.as_secs_f64(),
            run.cpu.proxy.as_secs_f64() * 1e3 / mb.max(1e-9),
            run.cpu.proxy.as_secs_f64() * 1e6 / run.outcome.events.max(1) as f64,
            run.outcome.errors.len(),
            run.cpu.foreign_cores
        ));
    };
    if let Some(token) = &sse {
        for kind in [Kind::Nginx, Kind::Bff, Kind::Floor] {
            if let Some(run) = token.chosen.get(&kind) {
                let streams = run.outcome.completed + run.outcome.errors.len();
                row(
                    bed,
                    &format!("(b) {streams} streams, token events"),
                    kind,
                    run,
                );
            }
        }
    }
    let load = sse::Load {
        streams: 100,
        repeat: 1,
        events: if smoke { 100 } else { 400 },
        interval: Duration::from_millis(5),
        answer_bytes: 4096,
        ramp: Duration::from_millis(100),
    };
    let rounds = bed
        .opts
        .bulk_rounds
        .unwrap_or(if smoke { 1 } else { 5 })
        .max(1);
    let paths = [Kind::Nginx, Kind::Bff, Kind::Floor];
    let mut runs: Vec<BTreeMap<Kind, SseRun>> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut this = BTreeMap::new();
        for i in 0..paths.len() {
            let kind = paths[(round + i) % paths.len()];
            this.insert(kind, sse_load(bed, kind, load.clone()).await);
        }
        runs.push(this);
    }
    for kind in paths {
        let at = median_round(&runs, |r| cpu_per_mb(&r[&kind]));
        row(
            bed,
            &format!(
                "bulk: 100 streams, 4 KiB events every 5 ms (median of {rounds} rounds: round {})",
                at + 1
            ),
            kind,
            &runs[at][&kind],
        );
    }
    bed.line(&format!(
        "\nBulk, {rounds} round(s), each in a rotated order (nginx, dify-bff, floor, then starting one later); CPU ms per MB per round:\n"
    ));
    bed.line("| round | nginx | dify-bff | stack floor | dify-bff / floor |");
    bed.line("|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::with_capacity(rounds);
    for (i, r) in runs.iter().enumerate() {
        let ratio = cpu_per_mb(&r[&Kind::Bff]) / cpu_per_mb(&r[&Kind::Floor]);
        ratios.push(ratio);
        bed.line(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {ratio:.2}× |",
            i + 1,
            cpu_per_mb(&r[&Kind::Nginx]),
            cpu_per_mb(&r[&Kind::Bff]),
            cpu_per_mb(&r[&Kind::Floor])
        ));
    }
    let median_of = |kind: Kind| {
        median(
            &mut runs
                .iter()
                .map(|r| cpu_per_mb(&r[&kind]))
                .collect::<Vec<_>>(),
        )
    };
    let (nginx, bff, floor) = (
        median_of(Kind::Nginx),
        median_of(Kind::Bff),
        median_of(Kind::Floor),
    );
    let ratio = median(&mut ratios.clone());
    let met = ratios.iter().filter(|&&r| r <= 1.05).count();
    bed.line(&format!(
        "\nBulk CPU per MB, medians of the rounds: dify-bff/nginx {:.2}×; stack floor/nginx {:.2}×; dify-bff/floor {:.2}×.",
        bff / nginx,
        floor / nginx,
        bff / floor
    ));
    bed.line(&format!(
        "Goal (d) bulk, issue 20: CPU per MB ≤ 1.05× the floor's: the median of the rounds' ratios {ratio:.2}× (≤ 1.05× in {met} of {rounds}): **{}**",
        if ratio <= 1.05 { "met" } else { "not met" }
    ));
    if let Some(token) = &sse {
        token_rounds(bed, token.streams, &token.per_mb);
    }
    Ok(())
}

/// (d)'s token events in every round of (b)'s top level, and the goal on their median ratio.
fn token_rounds(bed: &mut Bed, streams: usize, rounds: &[BTreeMap<Kind, f64>]) {
    bed.line(&format!(
        "\nToken events, each of (b)'s {} round(s) at {streams} streams; CPU ms per MB per round:\n",
        rounds.len()
    ));
    bed.line("| round | nginx | dify-bff | stack floor | dify-bff / floor |");
    bed.line("|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::with_capacity(rounds.len());
    for (i, round) in rounds.iter().enumerate() {
        let of = |kind: Kind| round.get(&kind).copied().unwrap_or(f64::NAN);
        let ratio = of(Kind::Bff) / of(Kind::Floor);
        ratios.push(ratio);
        bed.line(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {ratio:.2}× |",
            i + 1,
            of(Kind::Nginx),
            of(Kind::Bff),
            of(Kind::Floor)
        ));
    }
    let met = ratios.iter().filter(|&&r| r <= 1.05).count();
    let ratio = median(&mut ratios);
    bed.line(&format!(
        "Goal (d) token events, issue 20: CPU per MB ≤ 1.05× the floor's: the median of the rounds' ratios {ratio:.2}× (≤ 1.05× in {met} of {}): **{}**",
        rounds.len(),
        if streams < 1000 {
            "not measured at 1,000 (smoke)"
        } else if ratio <= 1.05 {
            "met"
        } else {
            "not met"
        }
    ));
}
