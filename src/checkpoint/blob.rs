//! Blobs: bytes compressed (zstd) and cut into chunks that each fit in one Kafka record, and
//! put together again with every chunk's checksum and the total length checked.

use super::manifest::ChunkRef;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    #[error("chunk {0} is missing from the state topic (offset {1})")]
    Missing(usize, i64),
    #[error("chunk {0} does not match its checksum")]
    Checksum(usize),
    #[error("the blob does not decompress: {0}")]
    Decompress(String),
    #[error("the blob has {got} bytes, its commit says {want}")]
    Length { got: u64, want: u64 },
}

/// zstd's fastest levels compress snapshots 4–6× at several hundred MB/s: the write volume
/// matters more than the last few percent of ratio.
const LEVEL: i32 = 1;

/// Compresses `raw` and cuts the result into pieces of at most `max_chunk` bytes.
pub fn split(raw: &[u8], max_chunk: usize) -> Vec<Vec<u8>> {
    let compressed = zstd::bulk::compress(raw, LEVEL).expect("compressing to memory cannot fail");
    compressed
        .chunks(max_chunk.max(1))
        .map(<[u8]>::to_vec)
        .collect()
}

pub fn checksum(chunk: &[u8]) -> u32 {
    crc32fast::hash(chunk)
}

/// Puts a blob together from its chunks, in the order of `refs`; `chunks[i]` is the payload
/// read at `refs[i]`, `None` when it was not found.
pub fn join(
    refs: &[ChunkRef],
    chunks: &[Option<Vec<u8>>],
    raw_len: u64,
) -> Result<Vec<u8>, BlobError> {
    let mut compressed = Vec::with_capacity(refs.iter().map(|r| r.len as usize).sum());
    for (i, (r, c)) in refs.iter().zip(chunks).enumerate() {
        let c = c.as_ref().ok_or(BlobError::Missing(i, r.offset))?;
        if c.len() != r.len as usize || checksum(c) != r.crc {
            return Err(BlobError::Checksum(i));
        }
        compressed.extend_from_slice(c);
    }
    if chunks.len() < refs.len() {
        return Err(BlobError::Missing(chunks.len(), refs[chunks.len()].offset));
    }
    // The commit says how long the blob is: a bound for the decompressor, and a check.
    let capacity = usize::try_from(raw_len).map_err(|_| BlobError::Length {
        got: 0,
        want: raw_len,
    })?;
    let raw = zstd::bulk::decompress(&compressed, capacity)
        .map_err(|e| BlobError::Decompress(e.to_string()))?;
    if raw.len() as u64 != raw_len {
        return Err(BlobError::Length {
            got: raw.len() as u64,
            want: raw_len,
        });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(chunks: &[Vec<u8>]) -> Vec<ChunkRef> {
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| ChunkRef {
                offset: i as i64,
                len: c.len() as u32,
                crc: checksum(c),
            })
            .collect()
    }

    #[test]
    fn split_and_join() {
        // Noise compresses to about its own size: several chunks.
        let mut x = 0x2545f4914f6cdd1du64;
        let raw: Vec<u8> = (0..20_000)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let chunks = split(&raw, 4096);
        assert!(chunks.len() > 1 && chunks.iter().all(|c| c.len() <= 4096));
        let r = refs(&chunks);
        let found: Vec<Option<Vec<u8>>> = chunks.iter().cloned().map(Some).collect();
        assert_eq!(join(&r, &found, raw.len() as u64).unwrap(), raw);
        let mut missing = found.clone();
        missing[1] = None;
        assert_eq!(
            join(&r, &missing, raw.len() as u64),
            Err(BlobError::Missing(1, 1))
        );
        let mut flipped = found.clone();
        flipped[0].as_mut().unwrap()[3] ^= 1;
        assert_eq!(
            join(&r, &flipped, raw.len() as u64),
            Err(BlobError::Checksum(0))
        );
        assert!(join(&r, &found, raw.len() as u64 - 1).is_err());
    }
}
