//! The HTTP endpoint Prometheus scrapes: `/metrics` (derived series, text or OpenMetrics by
//! `Accept`), `/-/metrics` (logmill's own telemetry), `/-/healthy`, `/-/ready`; with candidate
//! rules, `/-/shadow` (their comparison with the live rules, text or JSON by `Accept`) and
//! `/-/shadow/metrics` (their series).
//!
//! With `http.playground` (and in `demo`) also the playground page (`sink::playground`): `/`,
//! its assets, `POST /-/playground/eval` and `/-/playground/teams`.
//!
//! HTTP/1.1 by hyper, one request per connection, bounded request head and time; our own
//! accept loop, for its backoff. Rendering happens under a short lock on the exported state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::derive::Aggregates;
use crate::derive::shadow::Shadow;
use crate::rules::Program;
use crate::sink::exposition::{ExpositionFormat, render};

/// What `/metrics` shows: a program and the aggregates it renders. Shared by reference, so a
/// scrape renders without holding the lock and a checkpoint applies its changes in place
/// (copying only if a scrape is rendering at that moment).
#[derive(Clone)]
pub struct Published {
    pub program: Arc<Program>,
    pub aggs: Aggregates,
}

/// What the endpoint serves. In both delivery modes `/metrics` changes only after a durable
/// checkpoint.
pub struct Exported {
    state: Mutex<Arc<Published>>,
    /// The last checkpoint is restored: until then `/metrics` answers 503, since an empty
    /// exposition would read as every series gone (or, for a restarted exporter, reset).
    pub loaded: AtomicBool,
    /// Partitions the instance owns; with the checkpoint's age and failures this makes
    /// `/-/ready`.
    pub assigned: AtomicU64,
    /// When the assignment last grew: ready again only after a checkpoint since.
    pub assigned_at_ms: AtomicU64,
    /// When the last checkpoint succeeded; ready only while it is recent (`ready_window_ms`),
    /// so a stalled broker shows as not ready even while a checkpoint is blocked.
    pub last_checkpoint_ms: AtomicU64,
    pub ready_window_ms: AtomicU64,
    /// A standing reason not to be ready (a state topic that is not compacted).
    pub blocker: Mutex<Option<String>>,
    /// Checkpoints failed in a row, and why the last one did.
    pub failed_checkpoints: AtomicU64,
    pub failure: Mutex<String>,
    /// The processing loop is alive: it stamps `heartbeat_ms` every turn. Zero means no loop
    /// watches this state (replay, tests): healthy.
    pub heartbeat_ms: AtomicU64,
    /// Serve the playground page at `/` (`http.playground`; always in `demo`).
    pub playground: AtomicBool,
    /// The candidate rules' shadow (`rules_candidate`), or why there is none.
    shadow: Mutex<(Option<Shadow>, Option<String>)>,
    telemetry: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Self-telemetry rendered here rather than through the `metrics` facade, which cannot
    /// remove a series: by metric name, its exposition lines as they are now (the rules in
    /// force, the lag of the partitions owned now).
    extra: Mutex<std::collections::BTreeMap<&'static str, String>>,
    now_ms: fn() -> u64,
}

/// Checkpoints failed in a row before the instance says it is not ready.
pub const FAILURES_BEFORE_NOT_READY: u64 = 3;

/// Set by the panic hook: a process that panicked is never healthy, for the moment it has
/// left before it exits.
pub static PANICKED: AtomicBool = AtomicBool::new(false);

impl Exported {
    pub fn new(
        program: Arc<Program>,
        aggs: Aggregates,
        telemetry: Option<metrics_exporter_prometheus::PrometheusHandle>,
        now_ms: fn() -> u64,
    ) -> Exported {
        Exported {
            state: Mutex::new(Arc::new(Published { program, aggs })),
            loaded: AtomicBool::new(true),
            assigned: AtomicU64::new(0),
            assigned_at_ms: AtomicU64::new(0),
            last_checkpoint_ms: AtomicU64::new(0),
            ready_window_ms: AtomicU64::new(u64::MAX),
            failed_checkpoints: AtomicU64::new(0),
            blocker: Mutex::new(None),
            failure: Mutex::new(String::new()),
            heartbeat_ms: AtomicU64::new(0),
            playground: AtomicBool::new(false),
            shadow: Mutex::new((None, None)),
            telemetry,
            extra: Mutex::new(std::collections::BTreeMap::new()),
            now_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Published>> {
        // Nothing panics while holding it; were it poisoned, the data is still whole (it is
        // replaced or changed in place only between complete states).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn publish(&self, program: Arc<Program>, aggs: Aggregates) {
        *self.lock() = Arc::new(Published { program, aggs });
        self.loaded.store(true, Ordering::Relaxed);
    }

    /// Applies a checkpoint's changes to what is shown.
    pub fn apply(&self, program: &Arc<Program>, changes: &crate::derive::Changes) {
        let mut state = self.lock();
        let p = Arc::make_mut(&mut state);
        p.program = Arc::clone(program);
        p.aggs.apply_changes(program, changes);
    }

    fn lock_shadow(&self) -> std::sync::MutexGuard<'_, (Option<Shadow>, Option<String>)> {
        self.shadow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new shadow (`None`: none, with `error` saying why when the candidate has
    /// errors).
    pub fn set_shadow(&self, shadow: Option<Shadow>, error: Option<String>) {
        *self.lock_shadow() = (shadow, error);
    }

    /// The live rules the shadow compares with.
    pub fn shadow_live(&self) -> Option<Arc<Program>> {
        let s = self.lock_shadow();
        s.0.as_ref().map(|s| Arc::clone(&s.live.program))
    }

    pub fn merge_shadow(&self, delta: crate::derive::shadow::Delta, now_ms: u64) {
        if let Some(s) = self.lock_shadow().0.as_mut() {
            s.merge(delta, now_ms);
        }
    }

    /// `/-/shadow` and `/-/shadow/metrics`.
    fn shadow_response(&self, path: &str, accept: &str) -> (u16, &'static str, String) {
        let s = self.lock_shadow();
        let shadow = match &*s {
            (Some(shadow), _) => shadow,
            (None, Some(error)) => {
                return (
                    503,
                    "text/plain",
                    format!("the candidate rules have errors:\n{error}\n"),
                );
            }
            (None, None) => {
                return (
                    404,
                    "text/plain",
                    "no candidate rules: set `rules_candidate` in the config\n".into(),
                );
            }
        };
        let now = (self.now_ms)();
        if path == "/-/shadow/metrics" {
            let format = ExpositionFormat::from_accept(accept);
            return (200, format.content_type(), shadow.exposition(format, now));
        }
        let report = shadow.report();
        if accept.contains("application/json") {
            let json = report.json(crate::derive::shadow::EXAMPLES);
            let head = format!(
                "{{\"live\":\"{:016x}\",\"candidate\":\"{:016x}\",\"since_ms\":{},",
                shadow.live.program.hash, shadow.candidate.program.hash, shadow.since_ms
            );
            return (200, "application/json", head + &json[1..]);
        }
        let head = format!(
            "candidate rules {:016x} against live rules {:016x}, over the events of the last {} s on this instance\n",
            shadow.candidate.program.hash,
            shadow.live.program.hash,
            now.saturating_sub(shadow.since_ms) / 1000
        );
        (200, "text/plain; charset=utf-8", head + &report.text(5))
    }

    /// What is shown now (the last checkpoint's values).
    pub fn current(&self) -> Arc<Published> {
        Arc::clone(&self.lock())
    }

    pub fn render(&self, format: ExpositionFormat) -> String {
        let state = self.current();
        render(&state.program, &state.aggs, format, (self.now_ms)())
    }

    /// logmill's own metrics, text format; `None` when self-telemetry is off.
    pub fn telemetry(&self) -> Option<String> {
        self.telemetry.as_ref().map(|h| {
            let mut text = h.render();
            for block in self
                .extra
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(block);
            }
            text
        })
    }

    /// Replaces the exposition lines of one self-metric rendered outside the facade.
    pub fn set_extra(&self, name: &'static str, lines: String) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, lines);
    }

    /// A loop that has not turned for 30 s is stuck: restart it.
    pub fn is_healthy(&self) -> bool {
        let beat = self.heartbeat_ms.load(Ordering::Relaxed);
        !PANICKED.load(Ordering::Relaxed)
            && (beat == 0 || (self.now_ms)().saturating_sub(beat) < 30_000)
    }

    /// Ready: partitions assigned, a checkpoint since, recent, and checkpoints not failing.
    /// `Err` says why not.
    pub fn readiness(&self) -> Result<(), String> {
        let now = (self.now_ms)();
        let last = self.last_checkpoint_ms.load(Ordering::Relaxed);
        let failed = self.failed_checkpoints.load(Ordering::Relaxed);
        if let Some(why) = &*self.blocker.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(why.clone());
        }
        if self.assigned.load(Ordering::Relaxed) == 0 {
            return Err("no partitions assigned".into());
        }
        if failed >= FAILURES_BEFORE_NOT_READY {
            let why = self
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return Err(format!("{failed} checkpoints failed in a row: {why}"));
        }
        if last < self.assigned_at_ms.load(Ordering::Relaxed) {
            return Err("no checkpoint since the partitions were assigned".into());
        }
        let age = now.saturating_sub(last);
        if age > self.ready_window_ms.load(Ordering::Relaxed) {
            return Err(format!(
                "the last checkpoint is {:.1} s old",
                age as f64 / 1000.0
            ));
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    fn respond(&self, path: &str, accept: &str) -> (u16, &'static str, String) {
        match path {
            "/metrics" if !self.loaded.load(Ordering::Relaxed) => {
                (503, "text/plain", "restoring the last checkpoint\n".into())
            }
            "/metrics" => {
                let format = ExpositionFormat::from_accept(accept);
                (200, format.content_type(), self.render(format))
            }
            "/-/metrics" => match self.telemetry() {
                Some(text) => (200, ExpositionFormat::Text.content_type(), text),
                None => (404, "text/plain", "self-telemetry is off\n".into()),
            },
            "/-/shadow" | "/-/shadow/metrics" => self.shadow_response(path, accept),
            "/-/healthy" if self.is_healthy() => (200, "text/plain", "healthy\n".into()),
            "/-/healthy" => (503, "text/plain", "unhealthy\n".into()),
            "/-/ready" => match self.readiness() {
                Ok(()) => (200, "text/plain", "ready\n".into()),
                Err(why) => (503, "text/plain", format!("not ready: {why}\n")),
            },
            _ => (404, "text/plain", "not found\n".into()),
        }
    }
}

/// The most a request's head may take; a playground evaluation's body is bounded apart
/// (`playground::max_body`).
const MAX_REQUEST: usize = 16 * 1024;

/// Serves until `stop` turns true. Cancel-safe: dropping the future closes the listener.
///
/// A failed accept (out of file descriptors, most often) is counted and waited out with a
/// growing pause, up to a second: retrying at once would spin a core while nothing frees a
/// descriptor (issue 10, item 4). Each connection is served by hyper (HTTP/1.1, one request
/// per connection) for at most 10 s.
pub async fn serve(
    listener: TcpListener,
    state: Arc<Exported>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => {
                        backoff = Duration::from_millis(5);
                        let state = Arc::clone(&state);
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, state)).await;
                        });
                    }
                    Err(e) => {
                        crate::telemetry::accept_failed(&e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn handle(stream: TcpStream, state: Arc<Exported>) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(route(req, state).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
}

type Response = hyper::Response<http_body_util::Full<hyper::body::Bytes>>;

fn response(status: u16, content_type: &str, body: impl Into<hyper::body::Bytes>) -> Response {
    let mut r = hyper::Response::new(http_body_util::Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_str(content_type).expect("a valid content type"),
    );
    r
}

async fn route(req: hyper::Request<hyper::body::Incoming>, state: Arc<Exported>) -> Response {
    use hyper::Method;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if state.playground.load(Ordering::Relaxed)
        && let Some(r) = playground_route(req, &state, &method, &path).await
    {
        return r;
    }
    if method != Method::GET && method != Method::HEAD {
        return response(405, "text/plain", "only GET\n");
    }
    let (status, content_type, body) = state.respond(&path, &accept);
    response(status, content_type, body)
}

/// The playground's routes: the page and its assets, the evaluation, the teams view. `None`:
/// not a playground route.
async fn playground_route(
    req: hyper::Request<hyper::body::Incoming>,
    state: &Arc<Exported>,
    method: &hyper::Method,
    path: &str,
) -> Option<Response> {
    use crate::sink::playground as pg;
    use hyper::Method;
    let get = *method == Method::GET || *method == Method::HEAD;
    Some(match path {
        "/" | "/index.html" if get => response(200, "text/html; charset=utf-8", pg::INDEX_HTML),
        "/playground.js" if get => {
            response(200, "text/javascript; charset=utf-8", pg::PLAYGROUND_JS)
        }
        "/playground.css" if get => response(200, "text/css; charset=utf-8", pg::PLAYGROUND_CSS),
        "/-/playground/teams" if get => {
            let published = state.current();
            let telemetry = state.telemetry();
            let mut json = pg::teams(&published, telemetry.as_deref());
            if state.shadow_live().is_some() {
                // Candidate rules run beside these: the page links their comparison.
                json.insert_str(1, "\"shadow\":true,");
            }
            response(200, "application/json", json)
        }
        "/-/playground/eval" if *method == Method::POST => {
            use http_body_util::BodyExt;
            let bounds = pg::Bounds::default();
            let limited = http_body_util::Limited::new(req.into_body(), pg::max_body(&bounds));
            let body = match limited.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return Some(response(
                        413,
                        "text/plain",
                        format!("the request is over {} bytes\n", pg::max_body(&bounds)),
                    ));
                }
            };
            // One evaluation at a time: the page evaluates as its user types, and the
            // service's own work must not wait behind a queue of them.
            let Ok(permit) = EVALUATIONS.clone().try_acquire_owned() else {
                return Some(response(
                    429,
                    "text/plain",
                    "an evaluation is running; retry\n",
                ));
            };
            let now = (state.now_ms)();
            let out = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                pg::evaluate_body(&body, &bounds, now)
            })
            .await;
            match out {
                Ok(json) => response(200, "application/json", json),
                Err(_) => response(500, "text/plain", "the evaluation failed\n"),
            }
        }
        _ => return None,
    })
}

static EVALUATIONS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(1)));

/// A blocking GET for tests and the demo's status line: `(status, body)`.
pub fn get(addr: std::net::SocketAddr, path: &str, accept: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{SourceFile, compile};

    #[test]
    fn serves_metrics_by_accept_and_probes() {
        let (program, _) = compile(&[SourceFile {
            name: "t".into(),
            text:
                "team: t\nrules:\n  - name: r\n    metrics: [{name: lines_total, type: counter}]\n"
                    .into(),
        }]);
        let program = Arc::new(program);
        let mut aggs = Aggregates::new(&program);
        aggs.update(
            0,
            &program.families[0],
            &[],
            crate::rules::program::Op::CounterAdd,
            3.0,
            crate::derive::Stamp::default(),
        );
        let state = Arc::new(Exported::new(program, aggs, None, || 0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = std::thread::spawn({
            let state = Arc::clone(&state);
            move || rt.block_on(serve(listener, state, stop_rx))
        });
        let (status, body) = get(addr, "/metrics", "text/plain").unwrap();
        assert_eq!(
            (status, body.contains("lines_total 3")),
            (200, true),
            "{body}"
        );
        let (_, om) = get(
            addr,
            "/metrics",
            "application/openmetrics-text; version=1.0.0",
        )
        .unwrap();
        assert!(
            om.ends_with("# EOF\n") && om.contains("# TYPE lines counter"),
            "{om}"
        );
        let (status, why) = get(addr, "/-/ready", "").unwrap();
        assert_eq!(
            (status, why.as_str()),
            (503, "not ready: no partitions assigned\n")
        );
        state.assigned.store(1, Ordering::Relaxed);
        state.last_checkpoint_ms.store(1, Ordering::Relaxed);
        assert_eq!(get(addr, "/-/ready", "").unwrap().0, 200);
        state.failed_checkpoints.store(3, Ordering::Relaxed);
        *state.failure.lock().unwrap() = "state topic down".into();
        let (status, why) = get(addr, "/-/ready", "").unwrap();
        assert_eq!(
            (status, why.as_str()),
            (
                503,
                "not ready: 3 checkpoints failed in a row: state topic down\n"
            )
        );
        assert_eq!(get(addr, "/-/healthy", "").unwrap().0, 200);
        assert_eq!(get(addr, "/nope", "").unwrap().0, 404);
        stop_tx.send(true).unwrap();
        server.join().unwrap();
    }
}
