//! The connections a gRPC server accepts: at most a configured number at
//! once (more wait in the kernel's backlog, so memory and file descriptors
//! stay bounded whatever a client opens), each with TCP keepalive, and each
//! closed if it sends nothing within [`FIRST_BYTES_WITHIN`] of being
//! accepted (a connection opened and left idle before the TLS handshake or
//! the HTTP/2 preface holds its place for no longer).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// How soon an accepted connection must send its first bytes.
pub const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(10);
/// TCP keepalive of accepted connections: a peer that vanished is noticed.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// An accepted connection, holding its place among the admitted ones until
/// it closes.
pub struct Admitted {
    stream: TcpStream,
    /// Until the first bytes arrive; `None` after.
    first_bytes: Option<Pin<Box<Sleep>>>,
    _place: OwnedSemaphorePermit,
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.first_bytes = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .first_bytes
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no bytes within {FIRST_BYTES_WITHIN:?} of connecting"),
                    )))
                } else {
                    Poll::Pending
                }
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections `listener` accepts, at most `limit` open at once.
pub fn admitted(listener: TcpListener, limit: usize) -> impl Stream<Item = io::Result<Admitted>> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let places = Arc::new(Semaphore::new(limit.max(1)));
    futures::stream::unfold((incoming, places), |(mut incoming, places)| async move {
        // While every place is taken, nothing more is accepted.
        let place = Arc::clone(&places).acquire_owned().await.ok()?;
        let next = incoming.next().await?;
        let admitted = next.map(|stream| Admitted {
            stream,
            first_bytes: Some(Box::pin(tokio::time::sleep(FIRST_BYTES_WITHIN))),
            _place: place,
        });
        Some((admitted, (incoming, places)))
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_and_a_talking_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = Box::pin(admitted(listener, 2));
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let mut silent = accepted.next().await.expect("one").expect("accepted");
        let mut talking_client = TcpStream::connect(addr).await.expect("connect");
        let mut talking = accepted.next().await.expect("two").expect("accepted");
        talking_client.write_all(b"hi").await.expect("write");
        let mut buf = [0; 2];
        talking.read_exact(&mut buf).await.expect("read");
        let error = silent.read(&mut [0; 8]).await.expect_err("closed");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // The talking one has no deadline any more.
        let idle = tokio::time::timeout(FIRST_BYTES_WITHIN * 3, talking.read(&mut buf)).await;
        assert!(idle.is_err(), "still open, just idle");
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_limit_is_accepted_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = Box::pin(admitted(listener, 1));
        let _first_client = TcpStream::connect(addr).await.expect("connect");
        let first = accepted.next().await.expect("one").expect("accepted");
        let _second_client = TcpStream::connect(addr).await.expect("connect (backlog)");
        // The backlog holds it; the (paused) clock moves on only once
        // nothing else can happen.
        let waiting = tokio::time::timeout(Duration::from_secs(60), accepted.next()).await;
        assert!(waiting.is_err(), "the second waits while the first is open");
        drop(first);
        let second = accepted.next().await.expect("two");
        assert!(second.is_ok(), "admitted once the first closed");
    }
}
