//! Shared helpers: running the binary, temp dirs, expectations that refresh with UPDATE_EXPECT=1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: this build's, or `LOGMILL_BIN` (to show that a regression test fails
/// on an older build).
pub fn logmill() -> Command {
    Command::new(logmill_path())
}

pub fn logmill_path() -> PathBuf {
    std::env::var_os("LOGMILL_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_logmill")),
        PathBuf::from,
    )
}

pub fn run(args: &[&str]) -> Output {
    logmill()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("logmill runs")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the clone, when it is there.
pub fn shared() -> Option<PathBuf> {
    let p = repo().join("../shared");
    p.join("README.md").exists().then_some(p)
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("logmill-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compares `actual` with the file's contents, or rewrites the file under UPDATE_EXPECT=1.
/// Returns a description of the mismatch.
pub fn expect_file(path: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(path, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return None;
    }
    let mut msg = format!(
        "{} differs (UPDATE_EXPECT=1 refreshes it):\n",
        path.display()
    );
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for l in &e {
        if !a.contains(l) {
            msg.push_str(&format!("- {l}\n"));
        }
    }
    for l in &a {
        if !e.contains(l) {
            msg.push_str(&format!("+ {l}\n"));
        }
    }
    Some(msg)
}

/// Is a peer program installed? In CI it must be (`.ci/run` installs it); elsewhere a test that
/// needs it says so and passes.
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed, and CI must have it (.ci/run installs it)"
        );
        eprintln!("skipped: {program} is not installed");
    }
    found
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The child's exit status, once it exits within `within`; past that it is killed and the test
/// fails.
pub fn exited(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the process did not stop within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
