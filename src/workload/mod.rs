//! The reference workload (nginx access and JSON service logs, a mix with bad records, and
//! multi-service traces), deterministic for a seed, so tests and benches run without anything
//! outside the repository. The first three follow `../shared/bench/gen_logs.py`; the bytes
//! differ (own PRNG).

use std::io::Write;

pub mod traces;
mod truth;

pub use traces::ERROR_SHARE;
pub use truth::{EdgeStats, TraceSummary, TraceTruth, trace_truth};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*: fast and good enough for synthetic logs.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gauss(&mut self) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u32 = items.iter().map(|(_, w)| w).sum();
        let mut r = self.below(total as u64) as u32;
        for (item, w) in items {
            if r < *w {
                return item;
            }
            r -= w;
        }
        &items[0].0
    }
}

const METHODS: &[(&str, u32)] = &[
    ("GET", 72),
    ("POST", 15),
    ("PUT", 4),
    ("DELETE", 2),
    ("PATCH", 2),
    ("HEAD", 3),
    ("OPTIONS", 2),
];
const STATUS: &[(u32, u32)] = &[
    (200, 780),
    (201, 20),
    (204, 20),
    (206, 2),
    (301, 8),
    (302, 20),
    (304, 40),
    (400, 20),
    (401, 15),
    (403, 10),
    (404, 40),
    (405, 2),
    (408, 2),
    (429, 5),
    (499, 5),
    (500, 5),
    (502, 3),
    (503, 2),
    (504, 1),
];
const ROUTES: &[(&str, u32)] = &[
    ("/", 30),
    ("/healthz", 20),
    ("/static/js/app.{hash}.js", 10),
    ("/api/v1/users/{id}", 25),
    ("/api/v1/orders/{id}", 15),
    ("/api/v1/products/{sku}", 20),
    ("/api/v1/cart", 10),
    ("/api/v1/checkout", 4),
    ("/search?q=shoes", 6),
    ("/login", 4),
    ("/api/v2/feed", 10),
    ("/graphql", 2),
    ("/wp-login.php", 1),
    ("/metrics", 4),
];
const UAS: &[(&str, u32)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
        30,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
        8,
    ),
    ("curl/7.68.0", 4),
    ("kube-probe/1.29", 6),
    ("okhttp/4.12.0", 6),
];
const REFERERS: &[(&str, u32)] = &[
    ("-", 70),
    ("https://shop.example.com/", 10),
    ("https://www.google.com/", 7),
];
const SERVICES: &[(&str, u32)] = &[
    ("checkout", 10),
    ("cart", 12),
    ("payments", 6),
    ("inventory", 8),
    ("users", 14),
    ("search", 10),
    ("gateway", 25),
    ("shipping", 5),
    ("notifications", 5),
    ("recommendations", 5),
];
const LEVELS: &[(&str, u32)] = &[("debug", 10), ("info", 75), ("warn", 10), ("error", 5)];
const MSGS: &[&str] = &[
    "request completed",
    "order created",
    "payment authorized",
    "slow query detected",
    "upstream connect error",
    "deprecated API used by \\\"legacy-app\\\"",
];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn route(rng: &mut Rng) -> String {
    rng.weighted(ROUTES)
        .replace("{id}", &(1 + rng.below(200_000)).to_string())
        .replace("{sku}", &format!("SKU-{:05}", rng.below(100_000)))
        .replace("{hash}", &format!("{:08x}", rng.below(1 << 32)))
}

pub fn nginx_line(rng: &mut Rng, i: u64, out: &mut Vec<u8>) {
    let secs = i / 550;
    let (h, m, s) = (12 + secs / 3600 % 12, secs / 60 % 60, secs % 60);
    let method = rng.weighted(METHODS);
    let status = *rng.weighted(STATUS);
    let size = if status == 204 || status == 304 || *method == "HEAD" {
        0
    } else {
        (900.0 * (1.4 * rng.gauss()).exp()) as u64
    };
    let mut lat = 0.018 * (1.1 * rng.gauss()).exp();
    if status >= 500 && rng.unit() < 0.5 {
        lat += 1.0 + 29.0 * rng.unit();
    }
    let ip = if rng.below(4) == 0 {
        format!(
            "10.{}.{}.{}",
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        )
    } else {
        format!(
            "{}.{}.{}.{}",
            1 + rng.below(223),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        )
    };
    let _ = writeln!(
        out,
        "{ip} - - [10/{}/2024:{h:02}:{m:02}:{s:02} +0000] \"{method} {} HTTP/1.1\" {status} {size} \"{}\" \"{}\" {:.3}",
        MONTHS[2],
        route(rng),
        rng.weighted(REFERERS),
        rng.weighted(UAS),
        lat.min(60.0)
    );
}

pub fn json_line(rng: &mut Rng, i: u64, out: &mut Vec<u8>) {
    let ms = i * 2;
    let level = *rng.weighted(LEVELS);
    let status = match level {
        "debug" | "info" => 200,
        "warn" => [400, 404, 409, 429][rng.below(4) as usize],
        _ => [500, 502, 503, 504][rng.below(4) as usize],
    };
    let dur = ((12.0 * (1.2 * rng.gauss()).exp()).min(60000.0) * 10.0).round() / 10.0;
    let _ = writeln!(
        out,
        "{{\"ts\":\"2024-03-10T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{level}\",\"service\":\"{}\",\"msg\":\"{}\",\"trace_id\":\"{:016x}{:016x}\",\"span_id\":\"{:016x}\",\"duration_ms\":{dur:?},\"status\":{status},\"route\":\"{}\"}}",
        12 + ms / 3_600_000 % 12,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000,
        rng.weighted(SERVICES),
        MSGS[rng.below(MSGS.len() as u64) as usize],
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        route(rng),
    );
}

/// What a shared topic looks like in practice: mostly the two services, some logfmt from a job
/// runner, and the records every pipeline must survive (truncated JSON, binary junk, blanks).
pub fn mixed_line(rng: &mut Rng, i: u64, out: &mut Vec<u8>) {
    match rng.below(100) {
        0..=44 => nginx_line(rng, i, out),
        45..=89 => json_line(rng, i, out),
        90..=95 => {
            let job = ["backup", "reindex", "vacuum", "report"][rng.below(4) as usize];
            let level = ["info", "info", "warn", "error"][rng.below(4) as usize];
            let _ = writeln!(
                out,
                "ts={i} level={level} job={job} duration={}ms msg=\"run finished\"",
                rng.below(5000)
            );
        }
        96 => out
            .extend_from_slice(b"{\"level\":\"error\",\"service\":\"cart\",\"msg\":\"truncated\n"),
        97 => out.extend_from_slice(b"\xfe\xff binary junk \x00\x01\n"),
        98 => out.extend_from_slice(b"\n"),
        _ => out.extend_from_slice(b"kernel: [ 1234.5678] eth0: link up, 1000Mbps, full-duplex\n"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Json,
    Mixed,
    /// Multi-service traces as log lines; see [`traces`].
    Traces,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "nginx" => Ok(Kind::Nginx),
            "json" => Ok(Kind::Json),
            "mixed" => Ok(Kind::Mixed),
            "traces" => Ok(Kind::Traces),
            other => Err(format!(
                "unknown workload `{other}` (expected nginx, json, mixed or traces)"
            )),
        }
    }
}

/// A workload as a stream of lines. Traces span many lines and interleave, so a line is not a
/// function of its index alone: the stream holds the traces still open.
pub struct Workload {
    rng: Rng,
    i: u64,
    shape: Shape,
}

enum Shape {
    Lines(fn(&mut Rng, u64, &mut Vec<u8>)),
    Traces(traces::Traces),
}

impl Workload {
    pub fn new(kind: Kind, seed: u64) -> Workload {
        let shape = match kind {
            Kind::Nginx => Shape::Lines(nginx_line),
            Kind::Json => Shape::Lines(json_line),
            Kind::Mixed => Shape::Lines(mixed_line),
            Kind::Traces => Shape::Traces(traces::Traces::new()),
        };
        Workload {
            rng: Rng::new(seed),
            i: 0,
            shape,
        }
    }

    /// Appends the next line, with its newline, to `out`.
    pub fn line(&mut self, out: &mut Vec<u8>) {
        match &mut self.shape {
            Shape::Lines(line) => line(&mut self.rng, self.i, out),
            Shape::Traces(traces) => traces.line(&mut self.rng, out),
        }
        self.i += 1;
    }
}

/// `n` lines of the workload as one buffer.
pub fn generate(kind: Kind, n: u64, seed: u64) -> Vec<u8> {
    let mut workload = Workload::new(kind, seed);
    let mut buf = Vec::with_capacity(n as usize * 240);
    for _ in 0..n {
        workload.line(&mut buf);
    }
    buf
}

/// Streams `n` lines to `out`.
pub fn write(kind: Kind, n: u64, seed: u64, out: &mut dyn Write) -> std::io::Result<()> {
    let mut workload = Workload::new(kind, seed);
    let mut buf = Vec::with_capacity(1 << 20);
    for _ in 0..n {
        workload.line(&mut buf);
        if buf.len() > 1 << 20 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_name() {
        let cases = [
            ("nginx", Ok(Kind::Nginx)),
            ("json", Ok(Kind::Json)),
            ("mixed", Ok(Kind::Mixed)),
            ("traces", Ok(Kind::Traces)),
            (
                "trace",
                Err("unknown workload `trace` (expected nginx, json, mixed or traces)".to_string()),
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(name.parse::<Kind>(), expected, "{name}");
        }
    }
}
