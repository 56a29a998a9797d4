//! Issue 12: the real rsyslog, with its `omkafka` output and no template (what users run),
//! sends into the mock cluster, and `logmill run` reads the topic declared `syslog`.

use std::fmt::Write;
use std::os::unix::net::UnixDatagram;
use std::process::Command;

use super::*;

const SYSLOG_RULES: &str = "team: ops
envelopes:
  logs: syslog
rules:
  - name: sshd
    match: {fields: {appname: {equals: sshd}}}
    extract:
      - regex: '^(?P<result>Accepted|Failed) (?P<method>\\S+) for (?P<user>\\S+)'
        from: message
    metrics:
      - {name: sshd_logins_total, type: counter, help: Logins., labels: {result: result, method: method, procid: procid}}
  - name: any
    metrics:
      - {name: syslog_apps_total, type: counter, help: Events by app., labels: {app: appname}}
";

/// rsyslogd in the foreground with its own socket and work directory, killed when dropped.
struct Rsyslogd(std::process::Child);

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn issue12_rsyslog_omkafka_default_template_is_read_as_syslog() {
    if !have("rsyslogd") {
        return;
    }
    let c = cluster(1);
    let tmp = TempDir::new("svc-rsyslog");
    let socket = tmp.path("log.sock");
    let conf = tmp.path("rsyslog.conf");
    // No `template` on the action: omkafka's default, RSYSLOG_FileFormat.
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\n\
             module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             module(load=\"omkafka\")\n\
             input(type=\"imuxsock\" Socket=\"{sock}\" RateLimit.Interval=\"0\")\n\
             action(type=\"omkafka\" broker=[\"{broker}\"] topic=\"logs\" confParam=[\"queue.buffering.max.ms=10\"])\n",
            dir = tmp.0.display(),
            sock = socket.display(),
            broker = c.bootstrap,
        ),
    )
    .unwrap();
    let check = Command::new("rsyslogd")
        .args(["-N1", "-f", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "rsyslogd -N1: {}", stderr(&check));
    let _rsyslogd = Rsyslogd(
        Command::new("rsyslogd")
            .args(["-n", "-f", conf.to_str().unwrap()])
            .args(["-i", tmp.path("rsyslogd.pid").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path("rsyslogd.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(Duration::from_secs(20), || socket.exists()),
        "rsyslogd did not open its socket: {}",
        std::fs::read_to_string(tmp.path("rsyslogd.log")).unwrap_or_default()
    );
    let lines = [
        "<38>Nov 26 22:00:01 sshd[812]: Accepted publickey for deploy from 10.0.0.7 port 52214 ssh2",
        "<38>Nov 26 22:00:02 sshd[815]: Failed password for root from 203.0.113.9 port 40022 ssh2",
        "<38>Nov 26 22:00:03 sshd[812]: Accepted password for alice from 10.0.0.8 port 50000 ssh2",
        "<30>Nov 26 22:00:04 systemd[1]: Started Session 42 of user deploy.",
    ];
    let client = UnixDatagram::unbound().unwrap();
    for l in lines {
        client.send_to(l.as_bytes(), &socket).unwrap();
    }
    std::fs::write(tmp.path("rules.yaml"), SYSLOG_RULES).unwrap();
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "rsyslog-0", port);
    let _child = start(&cfg);
    let want: BTreeMap<String, f64> = [
        (
            r#"sshd_logins_total{method="publickey",procid="812",result="Accepted"}"#,
            1.0,
        ),
        (
            r#"sshd_logins_total{method="password",procid="815",result="Failed"}"#,
            1.0,
        ),
        (
            r#"sshd_logins_total{method="password",procid="812",result="Accepted"}"#,
            1.0,
        ),
        (r#"syslog_apps_total{app="sshd"}"#, 3.0),
        (r#"syslog_apps_total{app="systemd"}"#, 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut last = BTreeMap::new();
    let ok = wait_for(Duration::from_secs(60), || {
        last = scrape(port).unwrap_or_default();
        want.iter().all(|(k, v)| last.get(k) == Some(v))
    });
    let records = consume_all(&c.bootstrap, "logs");
    let texts: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.0).into_owned())
        .collect();
    let mut log = std::fs::read_to_string(tmp.path("rsyslogd.log")).unwrap_or_default();
    let _ = writeln!(log, "\nlogmill: {}", log_of(&cfg));
    assert!(
        ok,
        "wanted {want:?}\ngot {last:?}\nrecords {texts:?}\n{log}"
    );
    // What omkafka sent: RSYSLOG_FileFormat, an RFC 3339 time, the host and the tag, no
    // priority.
    assert_eq!(texts.len(), lines.len(), "{texts:?}");
    for t in &texts {
        let (time, rest) = t.split_once(' ').unwrap();
        assert!(time.len() >= 25 && time.as_bytes()[10] == b'T', "{t}");
        assert!(!t.starts_with('<'), "{t}");
        assert!(rest.split_once(' ').unwrap().1.contains("]: "), "{t}");
    }
}
