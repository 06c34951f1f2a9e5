//! A cap on the gRPC server's connections: each accepted connection holds a
//! slot until it closes, and one that arrives when every slot is taken is
//! closed at once, so thousands of idle or slow clients cannot take every
//! file descriptor and task of the coordinator. (TLS handshakes are bounded
//! by `ServerTlsConfig::timeout`, idle HTTP/2 connections by keepalive
//! pings: `node.rs`, `server_builder`.)
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection and its slot (given back when it is dropped).
pub struct Capped {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// `incoming` with at most `max` connections open at once.
pub fn capped<S>(incoming: S, max: usize) -> impl Stream<Item = io::Result<Capped>>
where
    S: Stream<Item = io::Result<TcpStream>>,
{
    let slots = Arc::new(Semaphore::new(max.max(1)));
    incoming.filter_map(move |conn| {
        let slots = slots.clone();
        async move {
            match conn {
                Err(e) => Some(Err(e)),
                Ok(io) => match slots.try_acquire_owned() {
                    Ok(slot) => Some(Ok(Capped { io, _slot: slot })),
                    Err(_) => {
                        tracing::debug!(peer = ?io.peer_addr().ok(), max, "connection limit reached (security.max_connections); closing a new connection");
                        None
                    }
                },
            }
        }
    })
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
