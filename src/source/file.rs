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
/// `spare` gives back the buffers of chunks done with: reading into one costs no fresh pages.
pub fn read_chunks(
    inputs: &[PathBuf],
    tx: &SyncSender<Chunk>,
    mut spare: impl FnMut() -> Option<Vec<u8>>,
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
            // A long line being read goes on in its own buffer; else the carried start of
            // a line goes into a spare one.
            let reuse = (carry.len() <= CHUNK_BYTES / 2).then(&mut spare).flatten();
            let mut buf = match reuse {
                Some(mut b) => {
                    b.clear();
                    b.extend_from_slice(&carry);
                    carry.clear();
                    b
                }
                None => std::mem::take(&mut carry),
            };
            let start = buf.len();
            let want = start.max(CHUNK_BYTES / 2) + CHUNK_BYTES - start;
            buf.reserve(want);
            // Into the spare capacity as it is: `read_to_end` does not zero it first.
            let filled = start + (&mut reader).take(want as u64).read_to_end(&mut buf)?;
            let eof = filled < start + want;
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
        let total = read_chunks(&[path], &tx, || None, |_| {}).unwrap();
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

    /// Spare buffers, whatever they held, give the same chunks as fresh ones: with a line
    /// longer than a chunk, and a carried line start.
    #[test]
    fn spare_buffers_give_the_same_chunks() {
        let dir = std::env::temp_dir().join(format!("logmill-spare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.log");
        let mut text = String::new();
        for i in 0..40_000 {
            let n = if i % 9_999 == 0 {
                3 * CHUNK_BYTES
            } else {
                i % 250
            };
            text.push_str(&"y".repeat(n));
            text.push_str(if i % 7 == 0 { "\r\n" } else { "\n" });
        }
        std::fs::write(&path, &text).unwrap();
        let read = |spare: &mut dyn FnMut() -> Option<Vec<u8>>| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1_000);
            let total = read_chunks(std::slice::from_ref(&path), &tx, spare, |_| {}).unwrap();
            drop(tx);
            let chunks: Vec<(u64, u64, Vec<u8>)> =
                rx.iter().map(|c| (c.id, c.offset, c.data)).collect();
            (total, chunks)
        };
        let fresh = read(&mut || None);
        let mut junk = || Some(vec![b'z'; 777]);
        let spared = read(&mut junk);
        assert_eq!(fresh.0, text.len() as u64);
        assert!(fresh.1.len() > 5, "{}", fresh.1.len());
        assert!(fresh == spared, "spare buffers changed the chunks");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
