//! Reads inputs (files or `-` for stdin) as chunks of whole lines.

use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;

/// A run of whole lines from one input.
pub struct Chunk {
    pub id: u64,
    pub input: usize,
    /// Byte offset of `data` in its input.
    pub offset: u64,
    pub data: Vec<u8>,
}

pub const CHUNK_BYTES: usize = 1 << 20;

/// Sends every input's lines as chunks, in order; returns the bytes read.
/// Lines longer than a chunk are sent whole (the decoder's size limit judges them).
pub fn read_chunks(
    inputs: &[PathBuf],
    tx: &SyncSender<Chunk>,
    mut progress: impl FnMut(u64),
) -> std::io::Result<u64> {
    let mut id = 0;
    let mut total = 0;
    for (input, path) in inputs.iter().enumerate() {
        let mut reader: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })?)
        };
        let mut carry: Vec<u8> = Vec::new();
        let mut offset = 0u64;
        loop {
            let mut buf = std::mem::take(&mut carry);
            let start = buf.len();
            buf.resize(start.max(CHUNK_BYTES / 2) + CHUNK_BYTES, 0);
            let mut filled = start;
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let eof = filled < buf.len();
            buf.truncate(filled);
            progress((filled - start) as u64);
            total += (filled - start) as u64;
            if !eof {
                match memchr::memrchr(b'\n', &buf) {
                    // A CRI line's parts go in one chunk: they are joined within a batch.
                    Some(nl) => {
                        carry = buf.split_off(crate::decode::cri::whole_line_cut(&buf, nl) + 1)
                    }
                    None => {
                        // One line longer than the buffer: keep reading it.
                        carry = buf;
                        continue;
                    }
                }
            }
            if !buf.is_empty() {
                let len = buf.len() as u64;
                if tx
                    .send(Chunk {
                        id,
                        input,
                        offset,
                        data: buf,
                    })
                    .is_err()
                {
                    return Ok(total);
                }
                id += 1;
                offset += len;
            }
            if eof {
                break;
            }
        }
    }
    Ok(total)
}

/// Splits a chunk into lines, with their offsets: each as the event (without `\n` or a
/// trailing `\r`, so `$` in a pattern works on CRLF files) and as read (with the `\r`, so
/// kept events and dead letters are byte-exact).
pub fn lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8], &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let line_start = start;
        let raw = &data[start..end];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        start = end + 1;
        Some((line_start, line, raw))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_empty_ones_and_strip_cr_from_the_event_only() {
        let v: Vec<_> = lines(b"a\r\n\nb").collect();
        assert_eq!(
            v,
            vec![
                (0, &b"a"[..], &b"a\r"[..]),
                (3, &b""[..], &b""[..]),
                (4, &b"b"[..], &b"b"[..])
            ]
        );
    }

    #[test]
    fn chunks_end_on_line_boundaries() {
        let dir = std::env::temp_dir().join(format!("logmill-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.log");
        let line = "x".repeat(99) + "\n";
        std::fs::write(&path, line.repeat(30_000)).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(100);
        let total = read_chunks(&[path], &tx, |_| {}).unwrap();
        drop(tx);
        let chunks: Vec<Chunk> = rx.iter().collect();
        assert_eq!(total, 3_000_000);
        assert!(chunks.len() > 1);
        let mut offset = 0;
        for c in &chunks {
            assert_eq!(c.offset, offset);
            assert!(c.data.ends_with(b"\n"));
            offset += c.data.len() as u64;
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
