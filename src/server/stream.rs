//! A socket to PostgreSQL or from a client: TCP, unix domain or TLS over TCP, behind one AsyncRead/AsyncWrite type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// TLS over TCP, either side (pgmux as TLS server for clients, as TLS client to PostgreSQL).
pub type TlsIo = tokio_rustls::TlsStream<TcpStream>;

/// A TLS connection split once into halves, so reads and writes can be in flight together.
#[derive(Debug)]
pub struct TlsConn {
    pub r: tokio::io::ReadHalf<TlsIo>,
    pub w: tokio::io::WriteHalf<TlsIo>,
    pub local: (String, u16),
    /// The peer's certificate chain (DER), end entity first, if it sent one.
    pub peer_certs: Vec<Vec<u8>>,
    /// Our own certificate (DER), for SCRAM channel binding (tls-server-end-point).
    pub own_cert: Option<Vec<u8>>,
}

#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsConn>),
}

fn noop_cx<R>(f: impl FnOnce(&mut Context<'_>) -> R) -> R {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    f(&mut cx)
}

impl Stream {
    pub fn tls(io: TlsIo) -> Stream {
        let local = io
            .get_ref()
            .0
            .local_addr()
            .map(|a| (a.ip().to_string(), a.port()))
            .unwrap_or_default();
        let (peer_certs, own_cert) = match &io {
            tokio_rustls::TlsStream::Server(s) => (
                s.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default(),
                None,
            ),
            tokio_rustls::TlsStream::Client(c) => (
                c.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default(),
                None,
            ),
        };
        let (r, w) = tokio::io::split(io);
        Stream::Tls(Box::new(TlsConn {
            r,
            w,
            local,
            peer_certs,
            own_cert,
        }))
    }

    /// Register the socket with the current runtime's I/O driver (it is registered with another
    /// shard's): a duplicate of the descriptor is registered here, then the original is dropped,
    /// which deregisters it there. A TLS stream stays where it is (it works from any runtime,
    /// with cross-thread wake-ups). On error nothing changes.
    pub fn rehome(&mut self) -> io::Result<()> {
        use std::os::fd::AsFd;
        match self {
            Stream::Tcp(s) => {
                let fd = s.as_fd().try_clone_to_owned()?;
                *self = Stream::Tcp(TcpStream::from_std(fd.into())?);
            }
            Stream::Unix(s) => {
                let fd = s.as_fd().try_clone_to_owned()?;
                *self = Stream::Unix(UnixStream::from_std(fd.into())?);
            }
            Stream::Tls(_) => {}
        }
        Ok(())
    }

    /// Non-blocking read used to check an idle connection before reuse.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read(buf),
            Stream::Unix(s) => s.try_read(buf),
            Stream::Tls(t) => {
                let mut rb = ReadBuf::new(buf);
                match noop_cx(|cx| Pin::new(&mut t.r).poll_read(cx, &mut rb)) {
                    Poll::Ready(Ok(())) => Ok(rb.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Best-effort non-blocking write (used for a Terminate before closing).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
            Stream::Tls(t) => noop_cx(|cx| {
                let n = match Pin::new(&mut t.w).poll_write(cx, buf) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
                };
                let _ = Pin::new(&mut t.w).poll_flush(cx);
                Ok(n)
            }),
        }
    }

    /// Local address and port (`unix` and 0 for a unix socket).
    pub fn local_addr(&self) -> (String, u16) {
        match self {
            Stream::Tcp(s) => s
                .local_addr()
                .map(|a| (a.ip().to_string(), a.port()))
                .unwrap_or_default(),
            Stream::Unix(_) => ("unix".into(), 0),
            Stream::Tls(t) => t.local.clone(),
        }
    }

    /// Ready when the socket has data (or EOF), without reading; TLS streams report ready at
    /// once (rustls may hold decrypted bytes already).
    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }

    /// Forget read readiness seen earlier (the next data to arrive is reported anew), so a
    /// waker registered next is woken by it. Data already in the socket is not lost: it is read
    /// with the next.
    pub fn clear_read_ready(&self) {
        let nothing = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
        let _ = match self {
            Stream::Tcp(s) => s.try_io(tokio::io::Interest::READABLE, nothing),
            Stream::Unix(s) => s.try_io(tokio::io::Interest::READABLE, nothing),
            Stream::Tls(_) => Ok(()),
        };
    }

    /// Read into the spare capacity of `buf` (as `AsyncReadExt::read_buf`, without a future).
    #[inline]
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut bytes::BytesMut,
    ) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(&mut t.r).poll_read(cx, buf),
        }
    }
}

/// AsyncWrite delegating each call to the variant's writer.
impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(t) => Pin::new(&mut t.w).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(t) => Pin::new(&mut t.w).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(&mut t.w).poll_shutdown(cx),
        }
    }
}
