//! A connection to a Redis node that refuses a reply larger than a bound.
//!
//! The `redis` crate buffers each reply whole, with no size limit. A broken
//! or malicious image could then make the operator allocate without end
//! (a bulk string header says 512 MB, and more follows). This stream
//! counts the bytes read since the operator last wrote: they are the
//! replies to what it sent, so a bound on them bounds each reply (and each
//! pipeline's replies together). Past the bound, reads fail, the connection
//! is dropped, and the step reports which node did it. Time is bounded
//! apart from this, by each command's timeout.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most a node may send in reply to one write: room for a pipeline of
/// `CLUSTER GETKEYSINSLOT` over 64 slots, 100 keys each, of 5 KiB names.
pub const MAX_REPLY_BYTES: usize = 32 << 20;

/// The most one read takes from the socket.
const READ_CHUNK: usize = 64 << 10;

/// `inner`, with reads bounded to `cap` bytes after each write.
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    cap: usize,
    read_since_write: usize,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, cap: usize) -> Self {
        Bounded {
            inner,
            cap,
            read_since_write: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read_since_write >= this.cap {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the node sent more than {} MiB in reply: connection dropped",
                    this.cap >> 20
                ),
            )));
        }
        // Never read past the bound, so the refusal comes before the bytes.
        // (Safe code: the part read into is initialised first, at most a
        // chunk at a time so that a large free capacity is not zeroed.)
        let want = (this.cap - this.read_since_write)
            .min(buf.remaining())
            .min(READ_CHUNK);
        let n = {
            let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
            match Pin::new(&mut this.inner).poll_read(cx, &mut part) {
                Poll::Ready(Ok(())) => part.filled().len(),
                other => return other,
            }
        };
        buf.advance(n);
        this.read_since_write += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            this.read_since_write = 0;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_past_the_bound_fail_and_a_write_resets_it() {
        let (ours, mut node) = tokio::io::duplex(1 << 16);
        let mut ours = Bounded::new(ours, 10);
        ours.write_all(b"PING").await.unwrap();
        node.write_all(b"0123456789abc").await.unwrap();
        let mut got = Vec::new();
        let err = loop {
            let mut buf = [0u8; 4];
            match ours.read(&mut buf).await {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(got, b"0123456789", "up to the bound, not a byte more");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "the node sent more than 0 MiB in reply: connection dropped"
        );
        // The next command's reply may be as large again.
        ours.write_all(b"PING").await.unwrap();
        let mut buf = [0u8; 3];
        ours.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"abc");
    }
}
