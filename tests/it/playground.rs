//! The playground page in a real browser (issue 9): headless Chromium driven through WebDriver
//! (`chromedriver`, Debian's `chromium-driver`; `.ci/run` installs both), against
//! `logmill playground`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::{have, logmill, repo};

/// A child process killed when the test ends, however it ends. Started in its own process
/// group (`grouped`), the whole group goes: chromedriver's Chromium too, even when a failed
/// test never closed its session.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command in a process group of its own, which `Killed` ends as a whole.
fn grouped(mut c: Command) -> Command {
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `logmill playground` on a free port, with `rules` loaded; its page's URL.
fn start_playground(rules: &Path) -> (Killed, String) {
    let mut child = logmill()
        .args(["playground", "--listen", "127.0.0.1:0"])
        .arg(rules)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("logmill runs");
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    assert!(url.starts_with("http://"), "no address printed: {url:?}");
    (Killed(child), url.trim().to_string())
}

fn start_chromedriver() -> (Killed, String) {
    let port = free_port();
    let child = grouped(Command::new("chromedriver"))
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs");
    let guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

async fn browser(webdriver: &str) -> Client {
    let chromium = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut options = serde_json::json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1000"]
    });
    if !chromium.is_empty() {
        options["binary"] = chromium.into();
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a WebDriver session")
}

/// Polls `what` until it gives `Some`, for up to 20 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the page has shown the evaluation of its latest edit.
async fn settled(c: &Client) {
    eventually("the evaluation of the last edit", || async {
        let e = c.find(Locator::Id("status")).await.ok()?;
        (e.attr("data-pending").await.ok()?? == "0").then_some(())
    })
    .await;
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Where screenshots go: the target dir, beside the test binary.
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playground");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    // The editors scrolled back to their first column, as a person would look at them.
    c.execute(
        "document.activeElement.blur(); for (const e of document.querySelectorAll('.editor')) e.scrollLeft = 0;",
        vec![],
    )
    .await
    .unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = shots().join(name);
    std::fs::write(&path, png).unwrap();
    path
}

const LINES: &[&str] = &[
    r#"10.0.0.1 - - [26/Nov/2026:18:00:01 +0000] "GET /api/users HTTP/1.1" 200 512"#,
    r#"10.0.0.2 - - [26/Nov/2026:18:00:02 +0000] "POST /api/login HTTP/1.1" 401 64"#,
    r#"10.0.0.1 - - [26/Nov/2026:18:00:03 +0000] "GET /api/users HTTP/1.1" 200 498"#,
    r#"10.0.0.3 - - [26/Nov/2026:18:00:04 +0000] "GET /health HTTP/1.1" 200 2"#,
    "worker 3 restarted after panic: index out of range",
];

/// A rule file in which line 10 misspells `labels`.
const BROKEN: &str = "team: web
rules:
  - name: requests
    match: {contains: HTTP/}
    extract:
      regex: '\"(?P<method>[A-Z]+) \\S+ HTTP/[0-9.]+\" (?P<status>\\d+) (?P<bytes>\\d+)'
    metrics:
      - name: http_requests_total
        type: counter
        lables: {method: method, status: status}
    then: drop
";

#[test]
fn issue9_playground_diagnostic_at_its_line_then_series_in_chromium() {
    if !have("chromium") || !have("chromedriver") {
        return;
    }
    let (_server, page) = start_playground(&repo().join("rules"));
    let (_driver, webdriver) = start_chromedriver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&webdriver).await;
        c.set_window_size(1440, 1000).await.unwrap();
        c.goto(&page).await.unwrap();
        // The page starts with an example, evaluated at once.
        settled(&c).await;
        eventually("the example's series", || async {
            text_of(&c, "#series")
                .await
                .contains("http_requests_total")
                .then_some(())
        })
        .await;

        let input = c.find(Locator::Id("input")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(&LINES.join("\n")).await.unwrap();
        let rules = c.find(Locator::Id("rules")).await.unwrap();
        rules.clear().await.unwrap();
        rules.send_keys(BROKEN).await.unwrap();
        settled(&c).await;

        // The diagnostic names the line and column of `lables`, and the line is marked in the editor.
        let (line, col) = BROKEN
            .lines()
            .enumerate()
            .find_map(|(i, l)| l.find("lables").map(|c| (i + 1, c + 1)))
            .unwrap();
        let diag = eventually("the diagnostic", || async {
            let e = c
                .find(Locator::Css("#diagnostics li.error"))
                .await
                .ok()?;
            Some((
                e.attr("data-line").await.unwrap(),
                e.attr("data-col").await.unwrap(),
                e.text().await.unwrap(),
            ))
        })
        .await;
        assert_eq!(
            (diag.0, diag.1),
            (Some(line.to_string()), Some(col.to_string())),
            "{}",
            diag.2
        );
        assert!(
            diag.2.contains(&format!("rules.yaml:{line}:{col}"))
                && diag.2.contains("unknown key")
                && diag.2.contains("hint: did you mean `labels`"),
            "{}",
            diag.2
        );
        let marked = c
            .find_all(Locator::Css("#rules-mirror .line.error"))
            .await
            .unwrap();
        assert_eq!(marked.len(), 1);
        assert_eq!(
            marked[0].attr("data-line").await.unwrap(),
            Some(line.to_string())
        );
        let underlined = text_of(&c, "#rules-mirror .line.error .col").await;
        assert_eq!(underlined, "l", "the column's character is underlined");
        assert_eq!(
            text_of(&c, "#series").await,
            "(no series)",
            "a rule with an error is left out"
        );
        screenshot(&c, "1-diagnostic.png").await;

        // Fix the key where it is: select it and type over it, as a person would.
        let at = BROKEN.find("lables").unwrap();
        c.execute(
            "const r = document.getElementById('rules'); r.focus(); r.setSelectionRange(arguments[0], arguments[1]);",
            vec![at.into(), (at + "lables".len()).into()],
        )
        .await
        .unwrap();
        rules.send_keys("labels").await.unwrap();
        settled(&c).await;

        // The series, counted here from the lines themselves.
        let mut want: Vec<String> = Vec::new();
        let mut counts = std::collections::BTreeMap::new();
        for l in LINES.iter().filter(|l| l.contains("HTTP/")) {
            let quoted = l.split('"').nth(1).unwrap();
            let method = quoted.split(' ').next().unwrap();
            let status = l.split('"').nth(2).unwrap().split_whitespace().next().unwrap();
            *counts.entry((method, status)).or_insert(0) += 1;
        }
        for ((method, status), n) in &counts {
            want.push(format!(
                "http_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
            ));
        }
        let series = eventually("the series after the fix", || async {
            let s = text_of(&c, "#series").await;
            want.iter().all(|w| s.contains(w.as_str())).then_some(s)
        })
        .await;
        assert_eq!(
            series.lines().count(),
            want.len(),
            "exactly the series the lines make: {series}"
        );
        assert_eq!(
            text_of(&c, "#diagnostics").await,
            "no problems in rules.yaml"
        );
        assert!(
            c.find_all(Locator::Css("#rules-mirror .line.error"))
                .await
                .unwrap()
                .is_empty()
        );
        // Keep/drop per line: the rule drops what it counted; the rest is kept.
        let mut decisions = Vec::new();
        for row in c
            .find_all(Locator::Css("#events tbody tr td:nth-child(2)"))
            .await
            .unwrap()
        {
            decisions.push(row.text().await.unwrap());
        }
        let expected: Vec<&str> = LINES
            .iter()
            .map(|l| if l.contains("HTTP/") { "drop" } else { "keep" })
            .collect();
        assert_eq!(decisions, expected);
        let explain = text_of(&c, "#events tbody tr:last-child").await;
        assert!(
            explain.contains("web/requests: the event does not contain \"HTTP/\""),
            "{explain}"
        );
        let shot = screenshot(&c, "2-series.png").await;
        let docs = repo().join("docs/playground.png");
        if std::env::var_os("UPDATE_EXPECT").is_some() || !docs.exists() {
            std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
            std::fs::copy(&shot, &docs).unwrap();
        }

        // The loaded rules, per file, with each file's hash.
        c.find(Locator::Id("tab-teams"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let nginx = repo().join("rules/nginx.yaml");
        let heading = eventually("the loaded rule files", || async {
            let e = c
                .find(Locator::Css(".file[data-file$='nginx.yaml'] h3"))
                .await
                .ok()?;
            e.text().await.ok()
        })
        .await;
        let text = std::fs::read_to_string(&nginx).unwrap();
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut h);
            format!("{:016x}", h.finish())
        };
        assert!(heading.contains(&hash), "{heading} lacks {hash}");
        let summary = text_of(&c, "#teams-summary").await;
        assert!(summary.contains("self-telemetry is off: no counts"), "{summary}");
        screenshot(&c, "3-teams.png").await;
        eprintln!("screenshots in {}", shots().display());
        c.close().await.unwrap();
    });
}

/// The evaluation endpoint is bounded and apart from the service: an oversized body is refused
/// with 413, a request over the rule bound with a message, and neither changes `/metrics`.
#[test]
fn issue9_playground_requests_are_bounded() {
    let (_server, page) = start_playground(&repo().join("rules"));
    let addr: std::net::SocketAddr = page
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let post = |body: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /-/playground/eval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        // The server may answer before it has read an oversized body.
        let _ = s.write_all(body.as_bytes());
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (
            status,
            resp.split_once("\r\n\r\n")
                .map_or(String::new(), |(_, b)| b.to_string()),
        )
    };
    let before = logmill::sink::http::get(addr, "/metrics", "text/plain").unwrap();
    let (status, body) =
        post(&serde_json::json!({"rules": "#".repeat(100 * 1024), "input": ""}).to_string());
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"refused\":\"the rule file is 102400 bytes"),
        "{body}"
    );
    let (status, _) = post(&"x".repeat(2 * 1024 * 1024));
    assert_eq!(status, 413);
    let (status, body) = post(
        &serde_json::json!({"rules": BROKEN.replace("lables", "labels"), "input": "GET /a 200"})
            .to_string(),
    );
    assert_eq!(status, 200);
    assert!(body.contains("\"diagnostics\":[]"), "{body}");
    assert_eq!(
        logmill::sink::http::get(addr, "/metrics", "text/plain").unwrap(),
        before,
        "an evaluation never changes what the service exports"
    );
    assert_eq!(
        logmill::sink::http::get(addr, "/", "").unwrap().0,
        200,
        "the page is served"
    );
}
