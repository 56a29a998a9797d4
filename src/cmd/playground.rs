//! `logmill playground`: the playground page alone, without Kafka, for writing rules locally.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use logmill::derive::Aggregates;
use logmill::sink::http::{Exported, serve};

pub fn run(listen: SocketAddr, rules: &[PathBuf]) -> Result<()> {
    let program = if rules.is_empty() {
        logmill::rules::Program::empty()
    } else {
        super::service::load_program(rules, &Default::default())?
    };
    let program = Arc::new(program);
    let exported = Arc::new(Exported::new(
        Arc::clone(&program),
        Aggregates::new(&program),
        None,
        logmill::service::now_ms,
    ));
    exported.playground.store(true, Ordering::Relaxed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    // The address on stdout alone, so a script (or a test) can read it; the rest on stderr.
    println!("http://{addr}/");
    std::io::stdout().flush()?;
    eprintln!(
        "logmill playground at http://{addr}/ ({} rule file(s) loaded for the \"Loaded rules\" view); Ctrl-C stops it.",
        program.files.len()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    rt.spawn(serve(listener, exported, stop_rx));
    rt.block_on(tokio::signal::ctrl_c())?;
    let _ = stop_tx.send(true);
    Ok(())
}
