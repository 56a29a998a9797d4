//! The HTTP endpoint Prometheus scrapes: `/metrics` (derived series, text or OpenMetrics by
//! `Accept`), `/-/metrics` (logmill's own telemetry), `/-/healthy`, `/-/ready`.
//!
//! A deliberately small HTTP/1.1 server: GET only, one request per connection, bounded request
//! size and read time. Rendering happens under a short lock on the exported state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::derive::Aggregates;
use crate::rules::Program;
use crate::sink::exposition::{ExpositionFormat, render};

/// What `/metrics` shows. In exactly-once mode it is replaced only after a durable checkpoint.
pub struct Exported {
    state: Mutex<(Arc<Program>, Aggregates)>,
    /// The consumer has its assignment; with `last_checkpoint_ms` this makes `/-/ready`.
    pub ready: AtomicBool,
    /// When the last checkpoint succeeded; ready only while it is recent (`ready_window_ms`),
    /// so a stalled broker shows as not ready even while a checkpoint is blocked.
    pub last_checkpoint_ms: AtomicU64,
    pub ready_window_ms: AtomicU64,
    /// The processing loop is alive: it stamps `heartbeat_ms` every turn. Zero means no loop
    /// watches this state (replay, tests): healthy.
    pub heartbeat_ms: AtomicU64,
    telemetry: Option<metrics_exporter_prometheus::PrometheusHandle>,
    now_ms: fn() -> u64,
}

impl Exported {
    pub fn new(
        program: Arc<Program>,
        aggs: Aggregates,
        telemetry: Option<metrics_exporter_prometheus::PrometheusHandle>,
        now_ms: fn() -> u64,
    ) -> Exported {
        Exported {
            state: Mutex::new((program, aggs)),
            ready: AtomicBool::new(false),
            last_checkpoint_ms: AtomicU64::new(0),
            ready_window_ms: AtomicU64::new(u64::MAX),
            heartbeat_ms: AtomicU64::new(0),
            telemetry,
            now_ms,
        }
    }

    pub fn publish(&self, program: Arc<Program>, aggs: Aggregates) {
        *self
            .state
            .lock()
            .expect("never poisoned: rendering does not panic") = (program, aggs);
    }

    pub fn render(&self, format: ExpositionFormat) -> String {
        let state = self
            .state
            .lock()
            .expect("never poisoned: rendering does not panic");
        render(&state.0, &state.1, format, (self.now_ms)())
    }

    /// logmill's own metrics, text format; `None` when self-telemetry is off.
    pub fn telemetry(&self) -> Option<String> {
        self.telemetry.as_ref().map(|h| h.render())
    }

    /// A loop that has not turned for 30 s is stuck: restart it.
    pub fn is_healthy(&self) -> bool {
        let beat = self.heartbeat_ms.load(Ordering::Relaxed);
        beat == 0 || (self.now_ms)().saturating_sub(beat) < 30_000
    }

    pub fn is_ready(&self) -> bool {
        let age = (self.now_ms)().saturating_sub(self.last_checkpoint_ms.load(Ordering::Relaxed));
        self.ready.load(Ordering::Relaxed) && age <= self.ready_window_ms.load(Ordering::Relaxed)
    }

    fn respond(&self, path: &str, accept: &str) -> (u16, &'static str, String) {
        match path {
            "/metrics" => {
                let format = ExpositionFormat::from_accept(accept);
                (200, format.content_type(), self.render(format))
            }
            "/-/metrics" => match self.telemetry() {
                Some(text) => (200, ExpositionFormat::Text.content_type(), text),
                None => (404, "text/plain", "self-telemetry is off\n".into()),
            },
            "/-/healthy" if self.is_healthy() => (200, "text/plain", "healthy\n".into()),
            "/-/healthy" => (503, "text/plain", "unhealthy\n".into()),
            "/-/ready" if self.is_ready() => (200, "text/plain", "ready\n".into()),
            "/-/ready" => (503, "text/plain", "not ready\n".into()),
            _ => (404, "text/plain", "not found\n".into()),
        }
    }
}

const MAX_REQUEST: usize = 16 * 1024;

/// Serves until `stop` turns true. Cancel-safe: dropping the future closes the listener.
pub async fn serve(
    listener: TcpListener,
    state: Arc<Exported>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, &state)).await;
                    });
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

async fn handle(mut stream: TcpStream, state: &Exported) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("/"),
    );
    let path = target.split('?').next().unwrap_or("/");
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let (status, content_type, body) = if method == "GET" || method == "HEAD" {
        state.respond(path, &accept)
    } else {
        (405, "text/plain", "only GET\n".to_string())
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

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
            0,
            0,
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
        assert_eq!(get(addr, "/-/ready", "").unwrap().0, 503);
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(addr, "/-/ready", "").unwrap().0, 200);
        assert_eq!(get(addr, "/-/healthy", "").unwrap().0, 200);
        assert_eq!(get(addr, "/nope", "").unwrap().0, 404);
        stop_tx.send(true).unwrap();
        server.join().unwrap();
    }
}
